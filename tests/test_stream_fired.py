"""The Deferreds a stream returns already fired (the put/take fast path) behave as
``succeed`` ones: each is its own Deferred, whatever callbacks do to another."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed

from aleph_tx import stream as s
from aleph_tx.stream import _fired


def test_the_fast_path_is_on_with_this_twisted() -> None:
    # if a Twisted release changes Deferred's internals, the import-time check
    # falls back to succeed(): this test says so rather than slowing down silently
    assert _fired.FAST
    assert type(s.stream(1).put(1)).__name__ == "_FiredTrue"


def test_fired_puts_are_independent_deferreds() -> None:
    st = s.stream(4)
    a, b = st.put(1), st.put(2)
    got: list[Any] = []
    a.addCallback(lambda ok: "changed")
    a.addCallback(got.append)
    b.addCallback(got.append)
    assert got == ["changed", True]
    assert a.result is None and b.result is None  # got.append returned None
    c = st.put(3)
    assert c.result is True and c.called and isinstance(c, Deferred)
    assert not vars(c)  # nothing allocated for a put nobody looks at


def test_fired_takes_are_independent_deferreds() -> None:
    st = s.stream(4)
    for i in range(3):
        st.put(i)
    a, b, c = st.take(), st.take(), st.take()
    a.addCallback(lambda v: v + 10)
    assert [a.result, b.result, c.result] == [10, 1, 2]


def test_a_callback_returning_a_deferred_pauses_only_that_chain() -> None:
    st = s.stream(2)
    inner: Deferred[str] = Deferred()
    got: list[Any] = []
    st.put("x").addCallback(lambda _: inner).addCallback(got.append)
    st.put("y").addCallback(got.append)
    assert got == [True]
    inner.callback("later")
    assert got == [True, "later"]


def test_await_cancel_and_combinators() -> None:
    st = s.stream(3)
    d = st.put(1)
    d.cancel()  # a fired Deferred ignores cancel
    assert d.result is True

    async def both() -> list[Any]:
        return [await st.put(2), await st.take()]

    out: list[Any] = []
    Deferred.fromCoroutine(both()).addCallback(out.append)
    gatherResults([st.take(), succeed("z")]).addCallback(out.append)
    DeferredList([st.put(9), st.take()]).addCallback(out.append)
    assert out == [[True, 1], [2, "z"], [(True, True), (True, 9)]]


def test_errors_in_callbacks_stay_in_their_chain() -> None:
    st = s.stream(2)
    failed: list[Any] = []
    st.put(1).addCallback(lambda _: 1 / 0).addErrback(failed.append)
    assert failed[0].check(ZeroDivisionError)
    assert st.put(2).result is True
