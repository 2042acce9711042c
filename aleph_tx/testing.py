"""Helpers for users' own tests, built from the production code, with no sockets.

- :func:`stream_pair`: two connected duplex streams in memory.
- :func:`request`: run a Ring handler through the real HTTP/1.1 protocol over an
  in-memory transport.
- :func:`check_stream`: the stream contract as a reusable conformance suite
  (trio's ``check_two_way_stream`` is the model), run by aleph_tx on every stream
  kind it has, and usable on streams of your own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from aleph_tx.errors import BackpressureError
from aleph_tx.http._server.testing import request
from aleph_tx.stream import MAX_PENDING, SplicedStream, Stream, splice

__all__ = ["DESCRIPTION_KEYS", "MakePair", "check_stream", "request", "stream_pair"]

#: The keys every stream's ``description()`` has.
DESCRIPTION_KEYS = frozenset(
    {"buffer_size", "buffer_count", "pending_puts", "pending_takes", "closed", "drained", "type"}
)


def stream_pair(buffer_size: int = 0) -> tuple[SplicedStream, SplicedStream]:
    """Two connected duplex streams: what is put into one is taken from the other.

    Closing one closes the other's input (it drains once everything put was taken).
    """
    ab, ba = Stream(buffer_size), Stream(buffer_size)
    return splice(ab, ba), splice(ba, ab)


_END = object()
_TIMED_OUT = object()
#: ``make_pair()`` returns ``(a, b)``, or a Deferred or coroutine firing with it.
MakePair = Callable[[], Any]


class _Checker:
    """Runs the rules one by one, each on a fresh pair; names the first broken rule."""

    def __init__(self, make_pair: MakePair, seconds: float, reactor: IReactorTime | None) -> None:
        self.make_pair = make_pair
        self.seconds = seconds
        self._reactor = reactor
        self.rule = ""

    @property
    def reactor(self) -> IReactorTime:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    async def wait(self, d: Deferred[Any], what: str) -> Any:
        """Await ``d`` for at most ``seconds`` on the reactor's clock."""
        if d.called:
            return await d
        call = self.reactor.callLater(self.seconds, d.cancel)
        try:
            return await d
        except CancelledError:
            raise AssertionError(f"{self.rule}: timed out waiting for {what}") from None
        finally:
            if call.active():
                call.cancel()

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            raise AssertionError(f"{self.rule}: {message}")

    async def pair(self) -> tuple[Any, Any]:
        pair: tuple[Any, Any] = await maybeDeferred(self.make_pair)
        return pair

    async def read_all(self, b: Any, n: int) -> bytes:
        """Take from ``b`` until ``n`` bytes arrived (messages may be split or merged)."""
        got = b""
        while len(got) < n:
            msg = await self.wait(b.take(_END), f"byte {len(got)} of {n}")
            self.check(msg is not _END, f"drained after {len(got)} of {n} bytes")
            got += bytes(msg)
        return got

    async def run(self) -> None:
        for rule in (
            self.order,
            self.put_none,
            self.description_keys,
            self.close_and_drain,
            self.callbacks_once,
            self.backpressure,
            self.try_take_timeout,
            self.try_put_timeout,
            self.pending_limit,
        ):
            self.rule = (rule.__doc__ or rule.__name__).strip()
            await rule()

    async def order(self) -> None:
        """messages put are taken in order, each exactly once"""
        a, b = await self.pair()
        msgs = [bytes([i]) * (i + 1) for i in range(50)]
        expected = b"".join(msgs)
        reader = Deferred.fromCoroutine(self.read_all(b, len(expected)))
        for m in msgs:
            ok = await self.wait(a.put(m), "a put to be accepted")
            self.check(ok is True, f"put fired {ok!r}, not True")
        got = await self.wait(reader, "the messages put")
        self.check(got == expected, f"took {got[:40]!r}..., not the messages in order")
        a.close()
        b.close()

    async def put_none(self) -> None:
        """put(None) raises ValueError at once"""
        a, b = await self.pair()
        try:
            a.put(None)
        except ValueError:
            pass
        else:
            self.check(False, "put(None) did not raise ValueError")
        a.close()
        b.close()

    async def description_keys(self) -> None:
        """description() has the keys of the contract"""
        a, b = await self.pair()
        for st in (a, b):
            desc = st.description()
            missing = DESCRIPTION_KEYS - set(desc)
            self.check(not missing, f"description() lacks {sorted(missing)}")
            self.check(desc["closed"] is False, f"closed is {desc['closed']!r} on an open stream")
        a.close()
        b.close()

    async def close_and_drain(self) -> None:
        """closing delivers what was put, then the peer drains; later puts fire False"""
        a, b = await self.pair()
        reader = Deferred.fromCoroutine(self.read_all(b, 3))
        ok = await self.wait(a.put(b"abc"), "a put before close")
        self.check(ok is True, f"put before close fired {ok!r}")
        a.close()
        a.close()  # idempotent
        self.check(a.closed, "closed is False after close()")
        late = await self.wait(a.put(b"late"), "a put after close")
        self.check(late is False, f"put after close fired {late!r}, not False")
        got = await self.wait(reader, "the data put before close")
        self.check(got == b"abc", f"took {got!r} before draining")
        end = await self.wait(b.take(_END), "the peer to drain")
        self.check(end is _END, f"took {end!r} after everything was taken, not the default")
        self.check(b.drained, "drained is False once closed and empty")
        again = await self.wait(b.take("default"), "a take on a drained stream")
        self.check(again == "default", f"take on a drained stream fired {again!r}")
        b.close()

    async def callbacks_once(self) -> None:
        """on_closed and on_drained run once, and at once when registered late"""
        a, b = await self.pair()
        calls: list[str] = []
        a.on_closed(lambda: calls.append("closed"))
        b.on_drained(lambda: calls.append("drained"))
        a.close()
        await self.wait(b.take(_END), "the peer to drain")
        b.close()
        a.close()
        self.check(calls.count("closed") == 1, f"on_closed ran {calls.count('closed')} times")
        self.check(calls.count("drained") == 1, f"on_drained ran {calls.count('drained')} times")
        late: list[str] = []
        a.on_closed(lambda: late.append("closed"))
        b.on_drained(lambda: late.append("drained"))
        self.check(late == ["closed", "drained"], f"late registrations ran {late!r}")

    async def backpressure(self) -> None:
        """puts wait while nobody takes (memory stays bounded)"""
        a, b = await self.pair()
        chunk = b"x" * 65536
        sent = 0
        pending = None
        for _ in range(1024):  # at most 64 MiB before a put must wait
            d = a.put(chunk)
            if not d.called:
                pending = d
                break
            sent += 1
            await self.wait(d, "a put")
        self.check(pending is not None, f"{sent} puts of 64 KiB were accepted with nothing taking")
        total = (sent + 1) * len(chunk)
        await self.read_all(b, total)
        ok = await self.wait(pending, "the waiting put once the peer took")  # type: ignore[arg-type]
        self.check(ok is True, f"the waiting put fired {ok!r}")
        a.close()
        b.close()

    async def try_take_timeout(self) -> None:
        """try_take fires timeout_value in time and withdraws the take"""
        a, b = await self.pair()
        clock = Clock()
        d = b.try_take(1.0, "default", "timeout", clock=clock)
        if d.called:
            self.check(False, f"try_take on an empty stream fired {d.result!r} at once")
        clock.advance(1.0)
        self.check(d.called and d.result == "timeout", "try_take did not fire timeout_value")
        self.check(not clock.getDelayedCalls(), "try_take left a timer behind")
        reader = Deferred.fromCoroutine(self.read_all(b, 2))
        await self.wait(a.put(b"ok"), "a put after a withdrawn take")
        got = await self.wait(reader, "a message after a withdrawn take")
        self.check(got == b"ok", f"took {got!r} after a withdrawn take")
        a.close()
        b.close()

    async def try_put_timeout(self) -> None:
        """try_put either is accepted or fires timeout_value and withdraws the message"""
        a, b = await self.pair()
        clock = Clock()
        chunk = b"y" * 65536
        withdrawn = False
        for _ in range(1024):
            d = a.try_put(chunk, 1.0, "timeout", clock=clock)
            if not d.called:
                clock.advance(1.0)
                self.check(d.called and d.result == "timeout", "try_put did not fire timeout_value")
                withdrawn = True
                break
            await self.wait(d, "a put")
        self.check(not clock.getDelayedCalls(), "try_put left a timer behind")
        self.check(withdrawn, "try_put never had to wait with nothing taking")
        a.close()
        b.close()

    async def pending_limit(self) -> None:
        """more than MAX_PENDING pending takes fail with BackpressureError"""
        a, b = await self.pair()
        takes = [b.take() for _ in range(MAX_PENDING)]
        over = b.take()
        self.check(over.called, "the take over the limit did not fail at once")
        failure = over.result
        over.addErrback(lambda f: None)
        self.check(
            getattr(failure, "check", lambda *_: False)(BackpressureError),
            f"the take over the limit fired {failure!r}",
        )
        for d in takes:
            d.addErrback(lambda f: f.trap(CancelledError))
            d.cancel()
        a.close()
        b.close()


def check_stream(
    make_pair: MakePair, seconds: float = 5.0, reactor: IReactorTime | None = None
) -> Deferred[None]:
    """Check the stream contract on pairs from ``make_pair()``.

    :param make_pair: returns, or fires with, ``(a, b)`` where what is put into ``a``
        is taken from ``b`` (``(st, st)`` for a single stream); called once per rule.
        Messages are ``bytes``; their concatenation is compared, so streams that
        split or merge chunks (TCP) pass.
    :param seconds: how long each wait may take on the reactor's clock.
    :returns: fires ``None`` when every rule holds, or fails with
        :class:`AssertionError` naming the first rule broken.
    """
    return Deferred.fromCoroutine(_Checker(make_pair, seconds, reactor).run())
