"""The outbound half for pulled sources: take chunks only while the consumer has room.

:class:`Pump` (an ``IPushProducer``) takes chunks from a
:class:`~aleph_tx._chunks.ChunkSource` (a stream, an iterator, an async iterator)
only while its consumer (a transport, an HTTP/2 or HTTP/3 stream) has not paused
it, and writes them to a :class:`PumpSink`: response bodies on every server front
and request bodies of the client. So a peer that reads nothing stops the takes,
and a stream's producers see their puts wait.
"""

from __future__ import annotations

import enum
import time
import typing
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx._chunks import ChunkSource, SourceKind, to_chunk
from aleph_tx._time import get_clock

__all__ = ["Pump", "PumpSink", "PumpState"]

_log = Logger()

_EMPTY: Any = object()  # nothing in the box yet
_END: Any = object()  # the source is drained


class PumpSink(typing.Protocol):
    """Where a :class:`Pump` delivers: a transport-like object of the front's choosing."""

    def write(self, data: bytes) -> None:
        """One non-empty chunk."""

    def pump_done(self) -> None:
        """The source ended (it is closed already)."""

    def pump_failed(self, failure: Failure) -> None:
        """The source failed, or gave something that is not a chunk (it is closed already)."""


class PumpState(enum.Enum):
    """States of a :class:`Pump`.

    ``RUNNING`` (taking and writing) ⇄ ``PAUSED`` (the consumer is full); both →
    ``DONE`` (the source ended or failed, :meth:`Pump.stop`, or the consumer went
    away). ``DONE`` is final: later events are ignored.
    """

    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"


#: The states as module constants, for the per-message paths (docs/internals.rst,
#: "The HTTP/1.1 request path": an Enum class attribute costs about 70 ns).
_RUNNING, _PAUSED, _DONE = PumpState


#: An iterator source (a file, a generator) is advanced for at most this long per
#: reactor turn before the rest waits for the next turn, so a large file or a slow
#: generator never holds the reactor for long (a small body still goes in one turn).
_TURN_SECONDS = 0.005
#: ... after at least this many chunks (1 MiB of 64 KiB reads): a body that small
#: always goes in one turn, whatever the machine's load.
_TURN_CHUNKS = 16


@implementer(IPushProducer)
class Pump:
    """Takes chunks from ``source`` while the consumer has room; writes them to ``sink``.

    Register it as the consumer's streaming producer, then :meth:`start`. A take
    that has already fired is handled in a loop (no recursion for synchronous
    sources); an iterator source is advanced for a bounded time per reactor turn.
    Chunks are converted with :func:`~aleph_tx._chunks.to_chunk`; empty ones are
    skipped. Whatever ends the pump closes the source. If the consumer goes away
    (``stopProducing`` or :meth:`abandon`), a stream source is dropped: its
    producers' pending puts fire ``False``.

    :param source: the chunks.
    :param sink: receives chunks and the end.
    :param clock: for the next turn of an iterator source (``None``: the reactor).
    """

    __slots__ = ("_box", "_clock", "_sync", "_waiting", "sink", "source", "state")

    def __init__(self, source: ChunkSource, sink: PumpSink, clock: IReactorTime | None = None) -> None:
        self.source = source
        self.sink = sink
        self.state = _RUNNING
        self._clock = clock
        self._waiting: Any = None  # a pending take's Deferred, or a scheduled next turn
        self._sync = False
        self._box: Any = _EMPTY

    # -- IPushProducer -----------------------------------------------------------

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The consumer is full: stop taking."""
        if self.state is _RUNNING:
            self.state = _PAUSED

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The consumer has room again: take on."""
        if self.state is _PAUSED:
            self.state = _RUNNING
            if self._waiting is None:
                self.start()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The consumer is going away."""
        self.abandon()

    # -- the loop -----------------------------------------------------------------

    def start(self) -> None:
        """Take and write chunks while the consumer accepts them."""
        if self.source.kind is SourceKind.ITERATOR:
            self._iterate()
            return
        while self.state is _RUNNING and self._waiting is None:
            d = self._next()
            self._sync = True
            self._box = _EMPTY
            d.addCallbacks(self._got, self._error)
            self._sync = False
            if self._box is _EMPTY:
                if not d.called:
                    self._waiting = d
                return
            value, self._box = self._box, _EMPTY
            self._handle(value)

    def _iterate(self) -> None:
        self._waiting = None
        it = self.source.source
        deadline = time.monotonic() + _TURN_SECONDS
        count = 0
        while self.state is _RUNNING:
            try:
                chunk = next(it)
            except StopIteration:
                self._end()
                return
            except Exception:
                self._fail(Failure())
                return
            self._write(chunk)
            count += 1
            if count >= _TURN_CHUNKS and time.monotonic() > deadline:
                break
        if self.state is _RUNNING:
            self._waiting = get_clock(self._clock).callLater(0, self._iterate)

    def _next(self) -> Deferred[Any]:
        if self.source.kind is SourceKind.STREAM:
            d: Deferred[Any] = self.source.source.take(_END)
            return d
        return Deferred.fromCoroutine(self._anext())

    async def _anext(self) -> Any:
        try:
            return await self.source.source.__anext__()
        except StopAsyncIteration:
            return _END

    def _got(self, value: Any) -> None:
        if self._sync:
            self._box = value
            return
        self._waiting = None
        if self.state is _DONE:
            return
        self._handle(value)
        self.start()

    def _error(self, failure: Failure) -> None:
        self._waiting = None
        if self.state is not _DONE:
            self._fail(failure)

    def _handle(self, value: Any) -> None:
        if value is _END:
            self._end()
        else:
            self._write(value)

    def _write(self, chunk: Any) -> None:
        try:
            data = to_chunk(chunk)
        except TypeError:
            self._fail(Failure())
            return
        if data:
            self.sink.write(data)

    # -- endings ------------------------------------------------------------------

    def _end(self) -> None:
        if self.stop():
            self.sink.pump_done()

    def _fail(self, failure: Failure) -> None:
        if self.stop():
            self.sink.pump_failed(failure)

    def stop(self) -> bool:
        """Stop for good and close the source (the sink decided the body is over).

        :returns: ``False`` if the pump had already stopped.
        """
        if self.state is _DONE:
            return False
        self.state = _DONE
        waiting, self._waiting = self._waiting, None
        if isinstance(waiting, Deferred):
            waiting.addErrback(lambda _: None)
            waiting.cancel()
        elif waiting is not None and waiting.active():
            waiting.cancel()
        try:
            self.source.close()
        except Exception:
            _log.failure("closing a body source failed")
        return True

    def abandon(self) -> None:
        """The consumer went away: stop; a stream source's pending puts fire ``False``."""
        if self.stop() and self.source.kind is SourceKind.STREAM:
            drop = getattr(self.source.source, "_drop", None)
            if drop is not None:
                drop()
