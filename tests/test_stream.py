"""aleph_tx.stream: the Stream contract and every operator, with no reactor."""

from __future__ import annotations

from typing import Any

import pytest
from _helpers import failure_of, result_of
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock

from aleph_tx import stream as s
from aleph_tx.errors import BackpressureError
from aleph_tx.testing import check_stream, stream_pair

# -- Stream members -------------------------------------------------------------


def test_unbuffered_put_fires_when_taken() -> None:
    st_ = s.stream()
    d = st_.put("a")
    assert not d.called
    assert result_of(st_.take()) == "a"
    assert result_of(d) is True


def test_take_before_put_receives_it() -> None:
    st_ = s.stream()
    t = st_.take()
    assert not t.called
    assert result_of(st_.put(1)) is True
    assert result_of(t) == 1


def test_buffered_put_fires_on_acceptance_then_waits() -> None:
    st_ = s.stream(buffer_size=2)
    assert result_of(st_.put(1)) is True
    assert result_of(st_.put(2)) is True
    third = st_.put(3)
    assert not third.called
    assert result_of(st_.take()) == 1
    assert result_of(third) is True  # moved into the freed room
    assert [result_of(st_.take()) for _ in range(2)] == [2, 3]


def test_put_none_raises_at_once() -> None:
    with pytest.raises(ValueError, match="None"):
        s.stream().put(None)


def test_negative_buffer_size_raises() -> None:
    with pytest.raises(ValueError, match="-1"):
        s.stream(buffer_size=-1)


def test_put_on_closed_fires_false() -> None:
    st_ = s.stream(4)
    st_.close()
    assert result_of(st_.put(1)) is False


def test_close_keeps_buffered_and_pending_messages_in_order() -> None:
    st_ = s.stream(1)
    result_of(st_.put("buffered"))
    pending = st_.put("pending")
    st_.close()
    assert st_.closed and not st_.drained
    assert result_of(st_.take()) == "buffered"
    assert not pending.called or result_of(pending) is True
    assert result_of(st_.take()) == "pending"
    assert result_of(pending) is True
    assert st_.drained
    assert result_of(st_.take("dflt")) == "dflt"


def test_close_is_idempotent_and_callbacks_fire_once() -> None:
    st_ = s.stream()
    calls: list[str] = []
    st_.on_closed(lambda: calls.append("closed"))
    st_.on_drained(lambda: calls.append("drained"))
    st_.close()
    st_.close()
    assert calls == ["closed", "drained"]
    st_.on_closed(lambda: calls.append("late-closed"))
    st_.on_drained(lambda: calls.append("late-drained"))
    assert calls == ["closed", "drained", "late-closed", "late-drained"]


def test_close_fires_pending_takes_with_their_defaults() -> None:
    st_ = s.stream()
    t1, t2 = st_.take("x"), st_.take("y")
    st_.close()
    assert (result_of(t1), result_of(t2)) == ("x", "y")


def test_callback_error_is_logged_not_raised() -> None:
    st_ = s.stream()

    def boom() -> None:
        raise RuntimeError("boom")

    st_.on_closed(boom)
    st_.close()  # does not raise
    assert st_.closed


def test_try_put_times_out_and_withdraws() -> None:
    clock = Clock()
    st_ = s.stream()
    d = st_.try_put("m", 2.0, timeout_value="late", clock=clock)
    clock.advance(1.9)
    assert not d.called
    clock.advance(0.1)
    assert result_of(d) == "late"
    assert st_.description()["pending_puts"] == 0
    assert not clock.getDelayedCalls()
    t = st_.take()
    assert not t.called  # the message was withdrawn


def test_try_put_accepted_cancels_timer() -> None:
    clock = Clock()
    st_ = s.stream()
    d = st_.try_put("m", 2.0, clock=clock)
    assert result_of(st_.take()) == "m"
    assert result_of(d) is True
    assert not clock.getDelayedCalls()


def test_try_take_times_out_and_withdraws() -> None:
    clock = Clock()
    st_ = s.stream()
    d = st_.try_take(1.0, default="d", timeout_value="t", clock=clock)
    clock.advance(1.0)
    assert result_of(d) == "t"
    assert not clock.getDelayedCalls()
    p = st_.put("after")
    assert not p.called  # no stale take swallowed it
    assert result_of(st_.take()) == "after"


def test_try_take_default_when_drained() -> None:
    clock = Clock()
    st_ = s.stream()
    st_.close()
    assert result_of(st_.try_take(1.0, default="d", clock=clock)) == "d"
    assert not clock.getDelayedCalls()


def test_negative_timeout_raises() -> None:
    with pytest.raises(ValueError, match="-1"):
        s.stream().try_take(-1)
    with pytest.raises(ValueError, match="-1"):
        s.stream().try_put("x", -1)


def test_cancel_pending_take_and_put_withdraws_them() -> None:
    st_ = s.stream()
    t = st_.take()
    t.addErrback(lambda f: f.trap(CancelledError))
    t.cancel()
    assert st_.description()["pending_takes"] == 0
    p = st_.put("x")
    p.addErrback(lambda f: f.trap(CancelledError))
    p.cancel()
    assert st_.description()["pending_puts"] == 0


def test_pending_limits_fail_with_backpressure_error() -> None:
    st_ = s.stream()
    puts = [st_.put(i) for i in range(s.MAX_PENDING)]
    assert not any(d.called for d in puts)
    assert failure_of(st_.put("one too many")).check(BackpressureError)
    other = s.stream()
    for _ in range(s.MAX_PENDING):
        other.take()
    assert failure_of(other.take()).check(BackpressureError)


def test_description_keys_and_values() -> None:
    st_ = s.stream(3, description={"peer": "x"})
    result_of(st_.put(1))
    st_.take()
    st_.take()
    desc = st_.description()
    assert desc == {
        "type": "stream",
        "buffer_size": 3,
        "buffer_count": 0,
        "pending_puts": 0,
        "pending_takes": 1,
        "closed": False,
        "drained": False,
        "peer": "x",
    }


def test_xform_expands_puts() -> None:
    st_ = s.stream(10, xform=lambda m: [m, m * 10])
    assert result_of(st_.put(1)) is True
    assert result_of(s.collect(_closed_after(st_))) == [1, 10]


def test_xform_put_waits_for_its_last_message() -> None:
    st_ = s.stream(1, xform=lambda m: [m, m + 1, m + 2])
    d = st_.put(1)
    assert not d.called
    assert result_of(st_.take()) == 1
    assert not d.called
    assert result_of(st_.take()) == 2
    assert result_of(st_.take()) == 3
    assert result_of(d) is True


def test_xform_put_of_more_than_the_pending_limit_is_one_put() -> None:
    # the limit counts puts, the caller's calls: one put expanding into a burst is
    # taken whole and in order; further puts are refused while the burst waits
    n = s.MAX_PENDING + 100
    st_ = s.stream(2, xform=lambda m: range(m))
    d = st_.put(n)
    assert not d.called
    assert failure_of(st_.put(1)).check(BackpressureError)
    assert st_.description()["pending_puts"] == n - 2
    assert [result_of(st_.take()) for _ in range(n)] == list(range(n))
    assert result_of(d) is True
    assert result_of(st_.put(1)) is True  # room again


def test_xform_error_closes_stream_with_error() -> None:
    def bad(m: Any) -> list[Any]:
        raise ValueError("bad xform")

    st_ = s.stream(xform=bad)
    assert result_of(st_.put(1)) is False
    assert st_.closed
    assert isinstance(st_.description()["error"], ValueError)


def _closed_after(st_: s.Stream) -> s.Stream:
    st_.close()
    return st_


def test_async_for_iterates_until_drained() -> None:
    src = s.from_iterable([1, 2, 3])

    async def run() -> list[int]:
        return [m async for m in src]

    assert result_of(Deferred.fromCoroutine(run())) == [1, 2, 3]


def test_buffer_metric_weighs_messages() -> None:
    src = s.stream()
    buf = s.buffer(10, src, metric=len)
    assert result_of(src.put(b"x" * 6)) is True
    assert result_of(src.put(b"y" * 6)) is True  # accepted: 6 < 10
    assert result_of(src.put(b"z")) is True  # taken by connect, held: 12 >= 10, the buffer is full
    waiting = src.put(b"w")
    assert not waiting.called
    assert buf.description()["buffer_weight"] == 12
    assert result_of(buf.take()) == b"x" * 6
    assert buf.description()["buffer_weight"] == 8  # z moved in, then w (7 < 10)
    assert result_of(waiting) is True


# -- connect --------------------------------------------------------------------


def test_connect_pumps_in_order_and_closes_downstream() -> None:
    src, dst = s.stream(), s.stream()
    s.connect(src, dst)
    results: list[Any] = []
    d = s.consume(results.append, dst)
    for i in range(5):
        assert result_of(src.put(i)) is True
    src.close()
    assert result_of(d) is True
    assert results == list(range(5))
    assert dst.drained


def test_connect_downstream_false_keeps_sink_open() -> None:
    src, dst = s.from_iterable([1]), s.stream(5)
    s.connect(src, dst, downstream=False)
    assert not dst.closed
    assert result_of(dst.take()) == 1


def test_connect_upstream_closes_source_when_sink_closes() -> None:
    src, dst = s.stream(), s.stream()
    s.connect(src, dst, upstream=True)
    dst.close()
    assert src.closed  # at once, not at the next message


def test_connect_upstream_waits_for_other_sinks() -> None:
    src, a, b = s.stream(), s.stream(), s.stream()
    s.connect(src, a, upstream=True)
    s.connect(src, b, upstream=True)
    a.close()
    assert not src.closed
    b.close()
    assert src.closed


def test_connect_without_upstream_leaves_source_and_loses_nothing() -> None:
    src, dst = s.stream(), s.stream()
    s.connect(src, dst)
    dst.close()
    assert not src.closed
    p = src.put("kept")
    assert not p.called  # the pump's take was withdrawn: nothing swallowed the message
    assert result_of(src.take()) == "kept"


def test_connect_fans_out_at_the_pace_of_the_slowest() -> None:
    src, fast, slow = s.stream(), s.stream(100), s.stream()
    s.connect(src, fast)
    s.connect(src, slow)
    first = src.put(1)
    assert result_of(first) is True  # taken by the pump, offered to both
    second = src.put(2)
    assert not second.called  # the pump holds 1 until slow accepts it
    assert result_of(slow.take()) == 1
    assert result_of(second) is True
    assert result_of(fast.take()) == 1
    assert result_of(fast.take()) == 2


def test_connect_timeout_cuts_off_slow_sink() -> None:
    clock = Clock()
    src, slow, fast = s.stream(), s.stream(), s.stream(100)
    s.connect(src, slow, timeout=1.0, clock=clock)
    s.connect(src, fast)
    result_of(src.put(1))
    clock.advance(1.0)
    assert slow.closed
    assert not clock.getDelayedCalls()
    assert result_of(src.put(2)) is True
    assert [result_of(fast.take()), result_of(fast.take())] == [1, 2]


def test_connect_to_closed_sink_and_from_drained_source() -> None:
    dst = s.stream()
    dst.close()
    src = s.stream()
    s.connect(src, dst)
    assert not src.put(1).called  # nothing took it
    drained = s.stream()
    drained.close()
    sink = s.stream()
    s.connect(drained, sink)
    assert sink.closed


def test_connect_long_synchronous_chain_uses_no_recursion() -> None:
    src = s.from_iterable(range(50_000))
    dst = s.stream(10)
    s.connect(src, dst)
    assert result_of(s.reduce(lambda a, b: a + b, dst)) == sum(range(50_000))


def test_connect_negative_timeout_raises() -> None:
    with pytest.raises(ValueError):
        s.connect(s.stream(), s.stream(), timeout=-1)


def test_splice_routes_puts_and_takes() -> None:
    sink, source = s.stream(5), s.stream(5)
    dup = s.splice(sink, source)
    result_of(dup.put("out"))
    result_of(source.put("in"))
    assert result_of(sink.take()) == "out"
    assert result_of(dup.take()) == "in"
    dup.close()
    assert sink.closed and dup.closed and not source.closed
    desc = dup.description()
    assert desc["type"] == "splice" and desc["sink"]["closed"] is True


def test_drain_into_fires_when_drained_and_keeps_sink_open() -> None:
    sink = s.stream(10)
    d = s.drain_into(s.from_iterable([1, 2]), sink)
    assert result_of(d) is True
    assert not sink.closed
    assert [result_of(sink.take()), result_of(sink.take())] == [1, 2]


def test_drain_into_fires_false_when_sink_closes_first() -> None:
    src, sink = s.stream(), s.stream()
    d = s.drain_into(src, sink)
    sink.close()
    assert result_of(d) is False


# -- operators ------------------------------------------------------------------


def test_map_awaits_deferred_results_in_order() -> None:
    src = s.stream()
    waits: list[Deferred[int]] = []

    def f(x: int) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        waits.append(d)
        return d.addCallback(lambda _: x * 2)

    out = s.map(f, src)
    got: list[int] = []
    s.consume(got.append, out)
    src.put(1)
    src.put(2)
    assert len(waits) == 1  # the second is not started before the first is done
    waits[0].callback(None)
    waits[1].callback(None)
    assert got == [2, 4]


def test_map_accepts_coroutines_and_skips_none() -> None:
    async def f(x: int) -> int | None:
        return None if x == 2 else x

    assert result_of(s.collect(s.map(f, s.from_iterable([1, 2, 3])))) == [1, 3]


def test_map_error_closes_derived_stream_and_keeps_error() -> None:
    out = s.map(lambda x: 1 // x, s.from_iterable([1, 0, 2]))
    assert result_of(s.collect(out)) == [1]
    assert isinstance(out.description()["error"], ZeroDivisionError)


def test_map_failed_deferred_closes_derived_stream() -> None:
    out = s.map(lambda x: Deferred.fromCoroutine(_raise(KeyError(x))), s.from_iterable([1]))
    assert result_of(s.collect(out)) == []
    assert isinstance(out.description()["error"], KeyError)


async def _raise(e: Exception) -> None:
    raise e


def test_map_several_sources_zips_them() -> None:
    out = s.map(lambda a, b: a + b, s.from_iterable([1, 2, 3]), s.from_iterable([10, 20]))
    assert result_of(s.collect(out)) == [11, 22]


def test_map_without_source_raises() -> None:
    with pytest.raises(TypeError):
        s.map(lambda x: x)


def test_closing_derived_stream_closes_source() -> None:
    src = s.stream()
    out = s.map(str, src)
    out.close()
    assert src.closed


def test_filter_and_mapcat() -> None:
    assert result_of(s.collect(s.filter(lambda x: x % 2, s.from_iterable(range(6))))) == [1, 3, 5]
    assert result_of(s.collect(s.filter(lambda x: succeed(x > 3), s.from_iterable(range(6))))) == [4, 5]
    assert result_of(s.collect(s.mapcat(lambda x: [x] * x, s.from_iterable([1, 2, 3])))) == [1, 2, 2, 3, 3, 3]


def test_mapcat_backpressure_per_item() -> None:
    src = s.stream()
    out = s.mapcat(lambda x: [x, x], src)
    assert result_of(src.put("a")) is True
    assert not src.put("b").called  # the pump waits for both "a"s to be taken
    assert [result_of(out.take()), result_of(out.take()), result_of(out.take())] == ["a", "a", "b"]


def test_reduce_consume_collect() -> None:
    assert result_of(s.reduce(lambda a, b: a * b, s.from_iterable([1, 2, 3, 4]))) == 24
    assert result_of(s.reduce(lambda a, b: a + b, s.from_iterable([]), 7)) == 7
    assert failure_of(s.reduce(lambda a, b: a, s.from_iterable([]))).check(TypeError)
    assert result_of(s.reduce(lambda a, b: succeed(a + b), s.from_iterable([1, 2]), 0)) == 3
    seen: list[int] = []
    assert result_of(s.consume(seen.append, s.from_iterable([1, 2]))) is True
    assert seen == [1, 2]
    assert result_of(s.collect(s.from_iterable("abc"))) == ["a", "b", "c"]


def test_consume_error_fails_deferred() -> None:
    def bad(x: int) -> None:
        raise RuntimeError("no")

    assert failure_of(s.consume(bad, s.from_iterable([1]))).check(RuntimeError)


def test_consume_waits_for_deferred_results() -> None:
    src = s.from_iterable([1, 2])
    gate: Deferred[None] = Deferred()
    seen: list[int] = []

    def f(x: int) -> Deferred[None] | None:
        seen.append(x)
        return gate if x == 1 else None

    d = s.consume(f, src)
    assert seen == [1] and not d.called
    gate.callback(None)
    assert seen == [1, 2] and result_of(d) is True


def test_batch_by_size_latency_and_drain() -> None:
    clock = Clock()
    src = s.stream()
    out = s.batch(3, 1.0, src, clock=clock)
    got: list[list[int]] = []
    s.consume(got.append, out)
    for i in range(4):
        src.put(i)
    assert got == [[0, 1, 2]]
    clock.advance(0.5)
    src.put(4)
    clock.advance(0.5)  # 1.0 after message 3, the first of its batch
    assert got == [[0, 1, 2], [3, 4]]
    src.put(5)
    src.close()
    assert got == [[0, 1, 2], [3, 4], [5]]
    assert out.drained
    assert not clock.getDelayedCalls()


def test_batch_bad_arguments() -> None:
    with pytest.raises(ValueError):
        s.batch(0, 1, s.stream())
    with pytest.raises(ValueError):
        s.batch(1, -1, s.stream())


def test_throttle_limits_rate_with_bursts_and_never_drops() -> None:
    clock = Clock()
    src = s.from_iterable(range(10))
    out = s.throttle(2, src, clock=clock)
    got: list[tuple[float, int]] = []
    s.consume(lambda m: got.append((clock.seconds(), m)), out)
    assert [m for _, m in got] == [0, 1]  # a burst of max_rate
    for _ in range(8):
        clock.advance(0.5)
    assert [m for _, m in got] == list(range(10))
    assert [t for t, _ in got][2:] == [0.5 * i for i in range(1, 9)]
    assert out.drained


def test_throttle_backpressures_source() -> None:
    clock = Clock()
    src = s.stream()
    s.throttle(1, src, clock=clock)
    assert result_of(src.put(1)) is True  # taken by the throttle, waits for a take of out
    assert not src.put(2).called


def test_throttle_bad_rate() -> None:
    with pytest.raises(ValueError):
        s.throttle(0, s.stream())


def test_periodically_drops_untaken_values() -> None:
    clock = Clock()
    n = iter(range(100))
    out = s.periodically(1.0, lambda: next(n), initial_delay=0.5, clock=clock)
    clock.advance(0.5)
    clock.advance(1.0)
    clock.advance(1.0)
    assert result_of(out.take()) == 2  # 0 and 1 were not taken in time: dropped
    assert out.description()["pending_puts"] == 0
    t = out.take()
    clock.advance(1.0)
    assert result_of(t) == 3
    out.close()
    assert not clock.getDelayedCalls()


def test_periodically_error_closes() -> None:
    clock = Clock()

    def bad() -> int:
        raise OSError("sensor")

    out = s.periodically(1.0, bad, clock=clock)
    clock.advance(0)
    assert out.closed and isinstance(out.description()["error"], OSError)
    assert not clock.getDelayedCalls()


def test_zip_closes_when_any_drains_and_loses_nothing() -> None:
    a, b = s.from_iterable([1, 2, 3]), s.stream(5)
    result_of(b.put("x"))
    b.close()
    assert result_of(s.collect(s.zip(a, b))) == [(1, "x")]


def test_from_iterable_is_lazy_and_stops_when_closed() -> None:
    pulled: list[int] = []

    def gen() -> Any:
        for i in range(1000):
            pulled.append(i)
            yield i

    src = s.from_iterable(gen())
    assert pulled == [0]  # one ahead
    assert result_of(src.take()) == 0
    src.close()
    assert len(pulled) <= 2


def test_from_iterable_error_closes_with_error() -> None:
    def gen() -> Any:
        yield 1
        raise RuntimeError("gen")

    src = s.from_iterable(gen())
    assert result_of(s.collect(src)) == [1]
    assert isinstance(src.description()["error"], RuntimeError)


# -- the contract suite ---------------------------------------------------------


@pytest.mark.parametrize(
    "make_pair",
    [
        lambda: (lambda x: (x, x))(s.stream()),
        lambda: (lambda x: (x, x))(s.stream(16)),
        stream_pair,
        lambda: stream_pair(4),
        lambda: (lambda a, b: (s.splice(a, b), s.splice(b, a)))(s.stream(), s.stream()),
    ],
    ids=["plain", "buffered", "pair", "buffered-pair", "splice"],
)
def test_check_stream_passes_on_memory_streams(make_pair: Any) -> None:
    assert result_of(check_stream(make_pair)) is None


class _Duplicating(s.Stream):
    """A broken stream: delivers every message twice."""

    def __init__(self) -> None:
        super().__init__(100, xform=lambda m: [m, m])


class _Bottomless(s.Stream):
    """A broken stream: never applies backpressure."""

    def __init__(self) -> None:
        super().__init__(buffer_size=10**9)


class _NoLimit(s.Stream):
    """A broken stream: a take over the pending limit never fails."""

    def take(self, default: Any = None) -> Deferred[Any]:
        if self._n_takes >= s.MAX_PENDING:
            return Deferred()
        return super().take(default)


@pytest.mark.parametrize(
    ("broken", "rule"),
    [
        (_Duplicating, "exactly once"),
        (_Bottomless, "puts wait"),
        (_NoLimit, "MAX_PENDING"),
    ],
)
def test_check_stream_names_the_broken_rule(broken: Any, rule: str) -> None:
    def make_pair() -> tuple[s.Stream, s.Stream]:
        x = broken()
        return x, x

    f = failure_of(check_stream(make_pair, seconds=0.01))
    assert f.check(AssertionError)
    assert rule in str(f.value)


# -- properties -----------------------------------------------------------------

_ops = st.lists(
    st.one_of(st.just("put"), st.just("take"), st.just("close"), st.just("cancel")),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, buffer_size=st.integers(0, 4))
def test_interleavings_deliver_each_accepted_message_once_in_order(ops: list[str], buffer_size: int) -> None:
    st_ = s.stream(buffer_size)
    puts: list[tuple[int, Deferred[bool]]] = []
    taken: list[Any] = []
    takes: list[Deferred[Any]] = []
    end = object()
    drained_seen = False
    for i, op in enumerate(ops):
        if op == "put":
            puts.append((i, st_.put(i)))
        elif op == "take":
            t = st_.take(end)
            takes.append(t)
            t.addCallback(taken.append)
        elif op == "close":
            st_.close()
        elif op == "cancel":
            pending = [d for _, d in puts if not d.called]
            if pending:
                pending[0].addErrback(lambda f: f.trap(CancelledError))
                pending[0].cancel()
        if st_.drained:
            drained_seen = True
        elif drained_seen:
            raise AssertionError("drained went back to False")
    st_.close()
    while not st_.drained:
        st_.take(end).addCallback(taken.append)
    messages = [m for m in taken if m is not end]
    accepted = [i for i, d in puts if d.called and d.result is True]
    assert messages == accepted
    # nothing is delivered after the first end marker
    if end in taken:
        assert all(m is end for m in taken[taken.index(end) :])
    assert all(t.called for t in takes)


@settings(max_examples=100, deadline=None)
@given(
    msgs=st.lists(st.integers(), max_size=50),
    buffers=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    downstream=st.booleans(),
)
def test_connect_chain_preserves_order(msgs: list[int], buffers: list[int], downstream: bool) -> None:
    head = s.stream()
    cur = head
    for b in buffers:
        nxt = s.stream(b)
        s.connect(cur, nxt, downstream=downstream)
        cur = nxt
    out: list[int] = []
    done = s.consume(out.append, cur)
    for m in msgs:
        assert result_of(head.put(m)) is True
    assert out == msgs
    head.close()
    assert done.called is downstream
    assert cur.closed is downstream


@settings(max_examples=100, deadline=None)
@given(
    n_sinks=st.integers(1, 4), closes=st.lists(st.booleans(), min_size=4, max_size=4), upstream=st.booleans()
)
def test_connect_upstream_property(n_sinks: int, closes: list[bool], upstream: bool) -> None:
    src = s.stream()
    sinks = [s.stream() for _ in range(n_sinks)]
    for k in sinks:
        s.connect(src, k, upstream=upstream)
    closed = 0
    for k, c in zip(sinks, closes[:n_sinks], strict=True):
        if c:
            k.close()
            closed += 1
    assert src.closed is (upstream and closed == n_sinks)


def test_connect_into_a_sink_past_its_pending_limit_logs_and_disconnects() -> None:
    sink = s.stream()
    for i in range(s.MAX_PENDING):
        sink.put(i)
    src = s.stream(1)
    src.put("x")
    s.connect(src, sink)  # the put raises BackpressureError inside the pump: not out of connect
    assert sink.description()["pending_puts"] == s.MAX_PENDING
    assert src.description()["buffer_count"] == 0  # taken, then the edge was dropped
    assert not src.closed


def test_connect_description_is_listed_by_the_source() -> None:
    src, a, b = s.stream(), s.stream(), s.stream()
    s.connect(src, a, description={"name": "to a"})
    s.connect(src, b, upstream=True)
    sinks = src.description()["sinks"]
    assert sinks[0] == {"name": "to a", "sink": repr(a), "downstream": True, "upstream": False}
    assert sinks[1]["upstream"] is True and "name" not in sinks[1]
    with pytest.raises(TypeError):
        s.connect(src, s.stream(), description="not a dict")  # type: ignore[arg-type]
