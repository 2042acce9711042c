"""aleph_tx.deferred: every documented helper, without a reactor (except clock=None)."""

from __future__ import annotations

import asyncio
import builtins
import gc
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from _helpers import failure_of, result_of
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from aleph_tx import deferred as ad
from aleph_tx import errors


def pending(d: Deferred[Any]) -> bool:
    return not d.called or bool(d.paused)


class Tracked:
    """A Deferred whose cancellation is recorded."""

    def __init__(self) -> None:
        self.cancelled = False
        self.d: Deferred[Any] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled = True


# -- NOTHING, success, error ------------------------------------------------------


def test_nothing_is_a_singleton_distinct_from_none() -> None:
    assert ad.NOTHING is ad.NOTHING
    assert ad.NOTHING is not None
    assert repr(ad.NOTHING) == "NOTHING"
    assert not isinstance(ad.NOTHING, type(None))


def test_success_fires_at_once() -> None:
    assert result_of(ad.success(42)) == 42
    assert result_of(ad.success(None)) is None


def test_error_fails_at_once_with_the_instance() -> None:
    exc = ValueError("boom")
    assert failure_of(ad.error(exc)).value is exc
    f = Failure(KeyError("k"))
    assert failure_of(ad.error(f)).value is f.value


def test_error_refuses_a_non_exception() -> None:
    with pytest.raises(TypeError, match="'boom'"):
        ad.error("boom")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ValueError"):
        ad.error(ValueError)  # type: ignore[arg-type]


# -- to_deferred ------------------------------------------------------------------


def test_to_deferred_value() -> None:
    assert result_of(ad.to_deferred(3)) == 3
    assert result_of(ad.to_deferred(None)) is None


def test_to_deferred_deferred_is_returned_as_is() -> None:
    d: Deferred[int] = Deferred()
    assert ad.to_deferred(d) is d


def test_to_deferred_failure() -> None:
    f = Failure(ZeroDivisionError())
    assert failure_of(ad.to_deferred(f)).check(ZeroDivisionError)


def test_to_deferred_coroutine_waits_for_what_it_awaits() -> None:
    inner: Deferred[int] = Deferred()

    async def co() -> int:
        return (await inner) + 1

    d = ad.to_deferred(co())
    assert pending(d)
    inner.callback(1)
    assert result_of(d) == 2


def test_to_deferred_coroutine_that_raises() -> None:
    async def co() -> None:
        raise KeyError("x")

    assert failure_of(ad.to_deferred(co())).check(KeyError)


class Awaitable:
    def __init__(self, d: Deferred[Any]) -> None:
        self.d = d

    def __await__(self) -> Generator[Any, Any, Any]:
        value = yield from self.d.__await__()
        return ("awaited", value)


def test_to_deferred_awaitable() -> None:
    inner: Deferred[int] = Deferred()
    d = ad.to_deferred(Awaitable(inner))
    assert pending(d)
    inner.callback(7)
    assert result_of(d) == ("awaited", 7)


def test_to_deferred_asyncio_future() -> None:
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        d = ad.to_deferred(fut)
        assert pending(d)
        fut.set_result("done")
        loop.run_until_complete(asyncio.sleep(0))
        assert result_of(d) == "done"

        bad = loop.create_future()
        d2 = ad.to_deferred(bad)
        bad.set_exception(OSError("no"))
        loop.run_until_complete(asyncio.sleep(0))
        assert failure_of(d2).check(OSError)
    finally:
        loop.close()


# -- chain ------------------------------------------------------------------------


def test_chain_threads_the_value() -> None:
    assert result_of(ad.chain(2, lambda x: x + 1, lambda x: x * 10)) == 30
    assert result_of(ad.chain(5)) == 5


def test_chain_awaits_deferreds_and_coroutines() -> None:
    start: Deferred[int] = Deferred()
    mid: Deferred[int] = Deferred()

    async def double(x: int) -> int:
        return x * 2

    d = ad.chain(start, lambda x: mid.addCallback(lambda m: m + x), double, str)
    assert pending(d)
    start.callback(1)
    assert pending(d)
    mid.callback(10)
    assert result_of(d) == "22"


def test_chain_stops_at_the_first_error() -> None:
    calls: list[Any] = []

    def boom(x: Any) -> Any:
        raise ValueError(x)

    d = ad.chain(1, boom, calls.append)
    assert failure_of(d).check(ValueError)
    assert calls == []


def test_chain_of_a_failed_start() -> None:
    calls: list[Any] = []
    assert failure_of(ad.chain(ad.error(KeyError()), calls.append)).check(KeyError)
    assert calls == []


# -- catch ------------------------------------------------------------------------


def test_catch_gives_the_handler_the_exception_instance() -> None:
    exc = ValueError("bad")
    seen: list[BaseException] = []

    def handler(e: BaseException) -> str:
        seen.append(e)
        return "recovered"

    assert result_of(ad.catch(ad.error(exc), ValueError, handler)) == "recovered"
    assert seen == [exc]


def test_catch_lets_other_exceptions_pass() -> None:
    d = ad.catch(ad.error(KeyError("k")), ValueError, lambda e: "no")
    assert failure_of(d).check(KeyError)


def test_catch_subclasses_and_tuples() -> None:
    d = ad.catch(ad.error(errors.TimeoutError("t")), builtins.TimeoutError, lambda e: type(e).__name__)
    assert result_of(d) == "TimeoutError"
    d2 = ad.catch(ad.error(KeyError("k")), (ValueError, LookupError), lambda e: "caught")
    assert result_of(d2) == "caught"


def test_catch_leaves_success_alone() -> None:
    assert result_of(ad.catch(ad.success(1), Exception, lambda e: 2)) == 1


def test_catch_pending_and_async_handler() -> None:
    d: Deferred[Any] = Deferred()
    later: Deferred[str] = Deferred()

    async def handler(e: BaseException) -> str:
        return await later + str(e)

    out = ad.catch(d, ValueError, handler)
    d.errback(ValueError("x"))
    assert pending(out)
    later.callback("got ")
    assert result_of(out) == "got x"


def test_catch_handler_that_raises_fails_with_its_error() -> None:
    def handler(e: BaseException) -> None:
        raise RuntimeError("again")

    assert failure_of(ad.catch(ad.error(ValueError()), ValueError, handler)).check(RuntimeError)


def test_catch_without_a_type_catches_every_exception() -> None:
    assert result_of(ad.catch(ad.error(OSError()), lambda e: "any")) == "any"


def test_catch_refuses_bad_arguments_at_once() -> None:
    with pytest.raises(TypeError, match="'ValueError'"):
        ad.catch(ad.success(1), "ValueError", lambda e: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler"):
        ad.catch(ad.success(1), ValueError, 3)  # type: ignore[arg-type]


# -- finally_ ---------------------------------------------------------------------


def test_finally_on_success_passes_the_result() -> None:
    calls: list[str] = []
    d = ad.finally_(ad.success(5), lambda: calls.append("f"))
    assert result_of(d) == 5
    assert calls == ["f"]


def test_finally_on_failure_passes_the_failure() -> None:
    calls: list[str] = []
    d = ad.finally_(ad.error(KeyError("k")), lambda: calls.append("f"))
    assert failure_of(d).check(KeyError)
    assert calls == ["f"]


def test_finally_waits_for_pending_input_and_for_its_deferred() -> None:
    src: Deferred[int] = Deferred()
    cleanup: Deferred[None] = Deferred()
    calls: list[str] = []

    def fn() -> Deferred[None]:
        calls.append("f")
        return cleanup

    d = ad.finally_(src, fn)
    assert calls == []
    src.callback(9)
    assert calls == ["f"]
    assert pending(d)
    cleanup.callback(None)
    assert result_of(d) == 9


def test_finally_fn_raising_replaces_the_result() -> None:
    def fn() -> None:
        raise RuntimeError("cleanup failed")

    assert failure_of(ad.finally_(ad.success(1), fn)).check(RuntimeError)


# -- zip --------------------------------------------------------------------------


def test_zip_in_argument_order_whatever_the_firing_order() -> None:
    a: Deferred[str] = Deferred()
    b: Deferred[str] = Deferred()
    d = ad.zip(a, 1, b)
    b.callback("b")
    assert pending(d)
    a.callback("a")
    assert result_of(d) == ["a", 1, "b"]


def test_zip_of_nothing() -> None:
    assert result_of(ad.zip()) == []


@given(st.permutations(list(range(6))))
def test_zip_any_firing_order(order: list[int]) -> None:
    ds: list[Deferred[int]] = [Deferred() for _ in range(6)]
    out = ad.zip(*ds)
    for i in order:
        assert pending(out)
        ds[i].callback(i * i)
    assert result_of(out) == [i * i for i in range(6)]


def test_zip_fails_fast_and_cancels_the_rest() -> None:
    slow = Tracked()
    a: Deferred[int] = Deferred()
    d = ad.zip(a, slow.d)
    a.errback(ValueError("first"))
    f = failure_of(d)
    assert f.check(ValueError) and str(f.value) == "first"
    assert slow.cancelled


class ZipConsumesTests(SynchronousTestCase):
    def test_no_unhandled_error_logged(self) -> None:
        a: Deferred[int] = Deferred()
        b: Deferred[int] = Deferred()
        d = ad.zip(a, b)
        a.errback(ValueError("first"))
        self.failureResultOf(d, ValueError)
        del a, b, d
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])


def test_zip_and_alt_leave_successful_inputs_their_results() -> None:
    a: Deferred[int] = Deferred()
    ad.zip(a, 2)
    a.callback(1)
    assert result_of(a) == 1
    b = ad.success("b")
    ad.alt(b, Deferred())
    assert result_of(b) == "b"


def test_zip_already_failed_inputs_first_in_order() -> None:
    d = ad.zip(ad.success(1), ad.error(KeyError("1st")), ad.error(ValueError("2nd")))
    assert failure_of(d).check(KeyError)


def test_cancelling_zip_cancels_the_inputs() -> None:
    x, y = Tracked(), Tracked()
    d = ad.zip(x.d, y.d, 3)
    d.cancel()
    assert x.cancelled and y.cancelled
    assert failure_of(d).check(CancelledError)


# -- alt --------------------------------------------------------------------------


def test_alt_first_to_fire_wins_the_others_are_cancelled() -> None:
    a, b, c = Tracked(), Tracked(), Tracked()
    d = ad.alt(a.d, b.d, c.d)
    assert pending(d)
    b.d.callback("b")
    assert result_of(d) == "b"
    assert a.cancelled and c.cancelled and not b.cancelled


def test_alt_a_failure_that_comes_first_wins() -> None:
    a, b = Tracked(), Tracked()
    d = ad.alt(a.d, b.d)
    a.d.errback(OSError("down"))
    assert failure_of(d).check(OSError)
    assert b.cancelled


def test_alt_already_fired_first_in_order() -> None:
    later = Tracked()
    d = ad.alt(later.d, "now", ad.success("also now"))
    assert result_of(d) == "now"
    assert later.cancelled


def test_alt_with_coroutines() -> None:
    gate: Deferred[None] = Deferred()

    async def slow() -> str:
        await gate
        return "slow"

    async def fast() -> str:
        return "fast"

    assert result_of(ad.alt(slow(), fast())) == "fast"


def test_alt_needs_an_argument() -> None:
    with pytest.raises(TypeError):
        ad.alt()


def test_cancelling_alt_cancels_the_inputs() -> None:
    a, b = Tracked(), Tracked()
    d = ad.alt(a.d, b.d)
    d.cancel()
    assert a.cancelled and b.cancelled
    assert failure_of(d).check(CancelledError)


# -- timeout ----------------------------------------------------------------------


def test_timeout_result_in_time_leaves_no_timer() -> None:
    clock = Clock()
    src = Tracked()
    d = ad.timeout(src.d, 5, clock=clock)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(4.9)
    src.d.callback("ok")
    assert result_of(d) == "ok"
    assert clock.getDelayedCalls() == []
    assert not src.cancelled


def test_timeout_failure_in_time_passes_and_leaves_no_timer() -> None:
    clock = Clock()
    src: Deferred[Any] = Deferred()
    d = ad.timeout(src, 5, clock=clock)
    src.errback(KeyError("k"))
    assert failure_of(d).check(KeyError)
    assert clock.getDelayedCalls() == []


def test_timeout_fails_with_timeout_error_and_cancels() -> None:
    clock = Clock()
    src = Tracked()
    d = ad.timeout(src.d, 2.5, clock=clock)
    clock.advance(2.4)
    assert pending(d)
    clock.advance(0.1)
    f = failure_of(d)
    assert f.check(errors.TimeoutError)
    assert isinstance(f.value, builtins.TimeoutError)
    assert isinstance(f.value, errors.AlephError)
    assert src.cancelled
    assert clock.getDelayedCalls() == []


def test_timeout_value_instead_of_failure_and_still_cancels() -> None:
    clock = Clock()
    src = Tracked()
    d = ad.timeout(src.d, 1, timeout_value="late", clock=clock)
    clock.advance(1)
    assert result_of(d) == "late"
    assert src.cancelled


def test_timeout_value_none_is_a_value() -> None:
    clock = Clock()
    d = ad.timeout(Deferred(), 1, timeout_value=None, clock=clock)
    clock.advance(1)
    assert result_of(d) is None


def test_timeout_zero_fires_on_the_next_tick() -> None:
    clock = Clock()
    d = ad.timeout(Deferred(), 0, clock=clock)
    assert pending(d)
    clock.advance(0)
    assert failure_of(d).check(errors.TimeoutError)


def test_timeout_of_an_already_fired_deferred_arms_nothing() -> None:
    clock = Clock()
    d = ad.timeout(ad.success(1), 1, clock=clock)
    assert result_of(d) == 1
    assert clock.getDelayedCalls() == []


def test_timeout_result_after_expiry_is_ignored() -> None:
    clock = Clock()
    src: Deferred[Any] = Deferred(lambda d: None)  # a canceller that does not fire it
    d = ad.timeout(src, 1, clock=clock)
    clock.advance(1)
    assert failure_of(d).check(errors.TimeoutError)
    # src was cancelled: Twisted fired it with CancelledError, which timeout consumed.
    assert result_of(src) is None


@pytest.mark.parametrize("bad", [-1, -0.001, None, "1", float("nan")])
def test_timeout_bad_seconds_raise_at_once(bad: Any) -> None:
    clock = Clock()
    with pytest.raises(ValueError, match="must be a number >= 0"):
        ad.timeout(Deferred(), bad, clock=clock)
    assert clock.getDelayedCalls() == []


def test_cancelling_the_timeout_cancels_source_and_timer() -> None:
    clock = Clock()
    src = Tracked()
    d = ad.timeout(src.d, 1, clock=clock)
    d.cancel()
    assert src.cancelled
    assert failure_of(d).check(CancelledError)
    assert clock.getDelayedCalls() == []


def test_timeout_of_a_coroutine() -> None:
    clock = Clock()
    gate: Deferred[None] = Deferred()

    async def work() -> str:
        await gate
        return "done"

    d = ad.timeout(work(), 3, clock=clock)
    gate.callback(None)
    assert result_of(d) == "done"
    assert clock.getDelayedCalls() == []


@pytest_twisted.inlineCallbacks
def test_timeout_without_clock_uses_the_global_reactor() -> Generator[Any, Any, None]:
    from twisted.internet import reactor

    before = set(reactor.getDelayedCalls())
    src = Tracked()
    with pytest.raises(errors.TimeoutError):
        yield ad.timeout(src.d, 0.01)
    assert src.cancelled

    ok: Deferred[str] = Deferred()
    d = ad.timeout(ok, 30)
    assert len(set(reactor.getDelayedCalls()) - before) == 1
    ok.callback("fine")
    assert (yield d) == "fine"
    assert set(reactor.getDelayedCalls()) - before == set()


def test_helpers_compose_synchronously() -> None:
    clock = Clock()
    d = ad.timeout(ad.zip(ad.alt(Deferred(), 1), succeed(2)), 1, clock=clock)
    assert result_of(d) == [1, 2]
