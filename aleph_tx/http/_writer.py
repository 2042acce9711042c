"""Streams one response body onto a transport, as a streaming producer.

:class:`BodyWriter` takes a chunk from its :class:`~aleph_tx.http._body.ChunkSource`
only while the transport is not paused (Twisted calls ``pauseProducing`` when its
send buffer is full), so a client that reads nothing stops the takes and the
producer's puts wait. If the client goes away the source is closed (a ``Stream``
body's producers see ``on_closed``).

States (``BodyWriter.state``): ``RUNNING`` (taking and writing) ↔ ``PAUSED`` (the
transport's buffer is full); both → ``DONE`` (the body ended, failed, or the
connection went away). Events in ``DONE`` are ignored: every way out is final.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx.http._body import ChunkSource, Gzipper, SourceKind, to_chunk

if TYPE_CHECKING:
    from aleph_tx.http._h1 import HTTP11Protocol, _Exchange

__all__ = ["BodyWriter", "WriterState"]

_log = Logger()

_END = object()
_EMPTY = object()


class WriterState(enum.Enum):
    """See the module docstring."""

    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"


def _chunk_frame(data: bytes) -> bytes:
    # RFC 9112 §7.1: chunk = chunk-size CRLF chunk-data CRLF
    return b"%x\r\n%b\r\n" % (len(data), data)


@implementer(IPushProducer)
class BodyWriter:
    """Writes ``source`` to ``proto``'s transport, chunked or with a known length.

    :param proto: the connection's protocol (``_write``, ``_body_done``, ``_body_failed``).
    :param ex: the exchange this body answers.
    :param source: the chunks.
    :param chunked: frame with chunked encoding (RFC 9112 §7.1).
    :param length: the declared ``content-length`` (extra bytes are cut and the
        connection closed; too few bytes close the connection).
    :param gzip: a :class:`Gzipper` when the body is compressed.
    """

    __slots__ = (
        "_box",
        "_sync",
        "_waiting",
        "chunked",
        "ex",
        "gzip",
        "proto",
        "remaining",
        "source",
        "state",
    )

    def __init__(
        self,
        proto: HTTP11Protocol,
        ex: _Exchange,
        source: ChunkSource,
        chunked: bool,
        length: int | None,
        gzip: Gzipper | None,
    ) -> None:
        self.proto = proto
        self.ex = ex
        self.source = source
        self.chunked = chunked
        self.remaining = length
        self.gzip = gzip
        self.state = WriterState.RUNNING
        self._waiting: Deferred[Any] | None = None
        self._sync = False
        self._box: Any = _EMPTY

    # -- IPushProducer -----------------------------------------------------------

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The transport's buffer is full: stop taking."""
        if self.state is WriterState.RUNNING:
            self.state = WriterState.PAUSED

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The transport has room again: take on."""
        if self.state is WriterState.PAUSED:
            self.state = WriterState.RUNNING
            if self._waiting is None:
                self.pump()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The connection is going away: close the source."""
        self.abandon()

    # -- the pump ---------------------------------------------------------------

    def pump(self) -> None:
        """Take and write chunks while the transport accepts them (a trampoline, no recursion)."""
        if self.source.kind is SourceKind.ITERATOR:
            it = self.source.source
            while self.state is WriterState.RUNNING:
                try:
                    chunk = next(it)
                except StopIteration:
                    self.finish()
                    return
                except Exception:
                    self.fail(Failure())
                    return
                self.send(chunk)
            return
        while self.state is WriterState.RUNNING and self._waiting is None:
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
        if self.state is WriterState.DONE:
            return
        self._handle(value)
        self.pump()

    def _error(self, failure: Failure) -> None:
        self._waiting = None
        if self.state is not WriterState.DONE:
            self.fail(failure)

    def _handle(self, value: Any) -> None:
        if value is _END:
            self.finish()
        else:
            self.send(value)

    def send(self, chunk: Any) -> None:
        """Write one chunk (framed when chunked)."""
        try:
            data = to_chunk(chunk)
        except TypeError:
            self.fail(Failure())
            return
        if not data:
            return  # an empty chunk would end a chunked body (RFC 9112 §7.1)
        if self.gzip is not None:
            data = self.gzip.chunk(data)
            if not data:
                return
        overflow = False
        if self.remaining is not None:
            if len(data) > self.remaining:
                data = data[: self.remaining]
                overflow = True
            self.remaining -= len(data)
        if data:
            self.proto._write(_chunk_frame(data) if self.chunked else data)
        if overflow:
            _log.warn(
                "response body longer than its content-length; cut, connection closed ({uri})",
                uri=self.ex.req.get("uri"),
            )
            self.finish()

    def finish(self) -> None:
        """The body ended: write the last chunk and hand the connection back."""
        if self.state is WriterState.DONE:
            return
        self.state = WriterState.DONE
        self.source.close()
        tail = b""
        if self.gzip is not None:
            end = self.gzip.finish()
            tail = _chunk_frame(end) if self.chunked else end
        if self.chunked:
            tail += b"0\r\n\r\n"
        if tail:
            self.proto._write(tail)
        complete = not self.remaining  # None (no declared length) or 0
        self.proto._body_done(self.ex, complete)

    def fail(self, failure: Failure) -> None:
        """The source failed after the head was sent: log it and cut the connection."""
        if self.state is WriterState.DONE:
            return
        self.state = WriterState.DONE
        _log.failure("response body failed ({uri})", failure, uri=self.ex.req.get("uri"))
        self._close_source()
        self.proto._body_failed(self.ex)

    def abandon(self) -> None:
        """The client went away: close the source, cancel a pending take."""
        if self.state is WriterState.DONE:
            return
        self.state = WriterState.DONE
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.addErrback(lambda _: None)
            waiting.cancel()
        self._close_source()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            _log.failure("closing a response body failed")
