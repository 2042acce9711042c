"""Helpers for users' own tests, built from the production code, with no sockets.

- :func:`stream_pair`: two connected duplex streams in memory.
- :func:`request`: run a Ring handler through the real HTTP/1.1 protocol over an
  in-memory transport.
- :func:`check_stream`: the stream contract as a reusable conformance suite
  (trio's ``check_two_way_stream`` is the model, its ``clogged_stream_maker`` too),
  run by aleph_tx on every stream kind it has, and usable on streams of your own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from aleph_tx.errors import BackpressureError
from aleph_tx.stream import MAX_PENDING, SplicedStream, Stream, splice

if TYPE_CHECKING:
    from aleph_tx.http._server.testing import request

__all__ = [
    "BURST_SIZE",
    "DESCRIPTION_KEYS",
    "Burst",
    "KillPeer",
    "MakePair",
    "check_stream",
    "request",
    "stream_pair",
]


def __getattr__(name: str) -> Any:
    """``request`` is imported on first use: the HTTP server (and what it imports)
    is not loaded by tests that only check streams."""
    if name == "request":
        from aleph_tx.http._server.testing import request

        return request
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
#: ``make_pair()`` returns ``(a, b)``, or a Deferred or coroutine firing with it.
MakePair = Callable[[], Any]
#: ``burst(a, b, messages)`` delivers ``messages`` to ``b`` in one read (or one call),
#: with nobody taking; it may return a Deferred firing once they were sent.
Burst = Callable[[Any, Any, list[bytes]], Any]
#: ``kill_peer(a, b)`` makes the connection under the pair go away for good (an
#: abort, as a peer that crashed); it may return a Deferred firing once done.
KillPeer = Callable[[Any, Any], Any]

#: Messages in the burst rule: more than the pending-put limit.
BURST_SIZE = MAX_PENDING + 1616
_CHUNK = 65536


class _Checker:
    """Runs the rules one by one, each on a fresh pair; names the first broken rule."""

    def __init__(
        self,
        make_pair: MakePair,
        seconds: float,
        reactor: IReactorTime | None,
        burst: Burst | None = None,
        kill_peer: KillPeer | None = None,
        clogged: MakePair | None = None,
        datagram: bool = False,
    ) -> None:
        self.make_pair = make_pair
        self.make_clogged = clogged or make_pair
        self.seconds = seconds
        self._reactor = reactor
        self.burst = burst
        self.kill_peer = kill_peer
        self.datagram = datagram
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

    async def pair(self, clogged: bool = False) -> tuple[Any, Any]:
        pair: tuple[Any, Any] = await maybeDeferred(self.make_clogged if clogged else self.make_pair)
        return pair

    async def call(self, fn: Callable[..., Any], what: str, *args: Any) -> None:
        """Call a caller-supplied hook; its failure fails the rule, naming it."""
        try:
            await self.wait(maybeDeferred(fn, *args), what)
        except AssertionError:
            raise
        except Exception as e:
            raise AssertionError(f"{self.rule}: {what} failed: {e!r}") from e

    async def pause(self, seconds: float) -> None:
        """Let the reactor run for ``seconds`` (a peer reading what was sent)."""
        d: Deferred[None] = Deferred()
        self.reactor.callLater(seconds, d.callback, None)
        await d

    async def clog(self, a: Any) -> tuple[int, Deferred[Any]]:
        """Put 64 KiB chunks into ``a`` until a put waits (nobody takes).

        :returns: the bytes put (the waiting chunk included) and the waiting put.
        """
        chunk = b"c" * _CHUNK
        for n in range(1, 1025):  # at most 64 MiB before a put must wait
            d = a.put(chunk)
            if not d.called:
                return n * _CHUNK, d
            ok = await self.wait(d, "a put")
            self.check(ok is True, f"a put fired {ok!r} with the peer there")
        raise AssertionError(f"{self.rule}: 1024 puts of 64 KiB were accepted with nothing taking")

    async def read_to_end(self, b: Any) -> bytes:
        """Take from ``b`` until it drains."""
        got = bytearray()
        while True:
            msg = await self.wait(b.take(_END), f"the peer to drain (after {len(got)} bytes)")
            if msg is _END:
                return bytes(got)
            got += msg

    async def read_all(self, b: Any, n: int) -> bytes:
        """Take from ``b`` until ``n`` bytes arrived (messages may be split or merged)."""
        got = b""
        while len(got) < n:
            msg = await self.wait(b.take(_END), f"byte {len(got)} of {n}")
            self.check(msg is not _END, f"drained after {len(got)} of {n} bytes")
            got += bytes(msg)
        return got

    async def run(self) -> None:
        rules = [self.order, self.put_none, self.description_keys]
        if not self.datagram:
            rules += [self.close_and_drain, self.callbacks_once, self.backpressure]
        rules += [self.try_take_timeout]
        if not self.datagram:
            rules += [self.try_put_timeout, self.clogged_close, self.clogged_try_put]
        rules += [self.pending_limit]
        if self.burst is not None:
            rules.append(self.burst_in_one_read)
        if self.kill_peer is not None:
            rules.append(self.dead_peer)
        for rule in rules:
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
        sent, pending = await self.clog(a)
        await self.read_all(b, sent)
        ok = await self.wait(pending, "the waiting put once the peer took")
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

    async def clogged_close(self) -> None:
        """closing a clogged stream delivers every message put, in order, then the peer drains"""
        a, b = await self.pair(clogged=True)
        sent, waiting = await self.clog(a)
        last = a.put(b"END")
        a.close()
        got = await self.read_to_end(b)
        self.check(len(got) == sent + 3, f"took {len(got)} bytes, not the {sent + 3} put before close")
        self.check(got.endswith(b"END") and got.count(b"c") == sent, "took other bytes than were put")
        for d in (waiting, last):
            ok = await self.wait(d, "a put waiting when the stream was closed")
            self.check(ok is True, f"a put waiting at close fired {ok!r}, though its message was taken")
        b.close()

    async def clogged_try_put(self) -> None:
        """a try_put that timed out on a clogged stream is withdrawn: its message never arrives"""
        a, b = await self.pair(clogged=True)
        sent, waiting = await self.clog(a)
        clock = Clock()
        d = a.try_put(b"WITHDRAWN", 1.0, "timeout", clock=clock)
        if d.called:
            self.check(False, f"try_put on a clogged stream fired {d.result!r} at once")
        clock.advance(1.0)
        self.check(d.called and d.result == "timeout", "try_put did not fire timeout_value")
        after = a.put(b"AFTER")
        a.close()
        got = await self.read_to_end(b)
        self.check(b"WITHDRAWN" not in got, "the message of a try_put that timed out was delivered")
        self.check(got == b"c" * sent + b"AFTER", f"took {len(got)} bytes, not the {sent + 5} put")
        for p in (waiting, after):
            ok = await self.wait(p, "a put after a withdrawn one")
            self.check(ok is True, f"a put after a withdrawn one fired {ok!r}")
        b.close()

    async def burst_in_one_read(self) -> None:
        """a burst of more than MAX_PENDING messages in one read arrives whole and in order"""
        assert self.burst is not None
        a, b = await self.pair()
        msgs = [b"%d," % i for i in range(BURST_SIZE)]
        await self.call(self.burst, "burst(a, b, messages)", a, b, msgs)
        await self.pause(0.05)  # the peer reads it, nobody taking
        expected = b"".join(msgs)
        got = await self.read_all(b, len(expected))
        if got != expected:
            at = next(i for i, (x, y) in enumerate(zip(got, expected, strict=False)) if x != y)
            self.check(False, f"took {got[at : at + 30]!r} at byte {at}, not {expected[at : at + 30]!r}")
        self.check(not b.drained, "the stream ended after a burst")
        a.close()
        b.close()

    async def dead_peer(self) -> None:
        """when the peer is gone for good, pending puts fire False and the peer's side drains"""
        assert self.kill_peer is not None
        a, b = await self.pair()
        for _ in range(200):  # a put that waits only until the transport flushes is no clog
            _, waiting = await self.clog(a)
            await self.pause(0.05)
            if not waiting.called:
                break
        more = [a.put(b"more") for _ in range(3)]
        pending = [d for d in (waiting, *more) if not d.called]
        self.check(bool(pending), "no put was waiting when the peer was killed")
        await self.call(self.kill_peer, "kill_peer(a, b)", a, b)
        for d in pending:
            ok = await self.wait(d, "a pending put once the peer was gone")
            self.check(ok is False, f"a pending put fired {ok!r} once the peer was gone, not False")
        late = await self.wait(a.put(b"late"), "a put once the peer was gone")
        self.check(late is False, f"a put once the peer was gone fired {late!r}, not False")
        self.check(a.closed, "closed is False once the peer was gone")
        await self.read_to_end(b)
        self.check(b.drained, "drained is False on the side of a dead connection")
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
    make_pair: MakePair,
    seconds: float = 5.0,
    reactor: IReactorTime | None = None,
    *,
    burst: Burst | None = None,
    kill_peer: KillPeer | None = None,
    clogged: MakePair | None = None,
    datagram: bool = False,
) -> Deferred[None]:
    """Check the stream contract on pairs from ``make_pair()``.

    The rules: put/take order, exactly once; ``put(None)`` raises; ``description()``
    keys; close and drain in every state; ``on_closed``/``on_drained`` once;
    backpressure (puts wait while nobody takes); ``try_take``/``try_put`` timeouts on
    a ``Clock``; on a clogged pair (puts waiting), closing still delivers every
    message in order and a ``try_put`` that timed out is never delivered; more than
    ``MAX_PENDING`` pending takes fail. With ``burst``: more than ``MAX_PENDING``
    messages arriving at once, nobody taking, all arrive in order. With
    ``kill_peer``: once the connection is gone for good, every pending put fires
    ``False`` and the other side drains.

    :param make_pair: returns, or fires with, ``(a, b)`` where what is put into ``a``
        is taken from ``b`` (``(st, st)`` for a single stream); called once per rule.
        Messages are ``bytes``; their concatenation is compared, so streams that
        split or merge chunks (TCP) pass.
    :param seconds: how long each wait may take on the reactor's clock.
    :param reactor: the reactor whose clock bounds the waits (``None``: the global one).
    :param burst: ``burst(a, b, messages)`` delivers ``messages`` (``bytes``, more
        than ``MAX_PENDING`` of them) to ``b`` at once, as one read from the network
        or one call, while nobody takes (e.g. by writing WebSocket frames below the
        stream); it may return a Deferred. Without it the burst rule is not run.
    :param kill_peer: ``kill_peer(a, b)`` makes the connection under the pair go
        away for good (an abort); it may return a Deferred. Without it the dead-peer
        rule is not run (memory streams have no peer to lose).
    :param clogged: like ``make_pair``, for pairs whose transport accepts nothing
        until the reader reads (trio's ``clogged_stream_maker``); without it the
        clogged rules clog pairs from ``make_pair`` by putting until a put waits.
    :param datagram: the pair is connectionless and lossy (UDP): only the rules that
        hold for datagrams run (order on a few small messages, ``put(None)``,
        description keys, ``try_take``, the pending limit, and ``burst``).
    :returns: fires ``None`` when every rule holds, or fails with
        :class:`AssertionError` naming the first rule broken.
    """
    checker = _Checker(make_pair, seconds, reactor, burst, kill_peer, clogged, datagram)
    return Deferred.fromCoroutine(checker.run())
