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

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx._adapter import Pump, PumpState
from aleph_tx._chunks import ChunkSource
from aleph_tx.http._body import Gzipper

if TYPE_CHECKING:
    from aleph_tx.http._h1 import HTTP11Protocol, _Exchange

__all__ = ["BodyWriter"]

_log = Logger()


def _chunk_frame(data: bytes) -> bytes:
    # RFC 9112 §7.1: chunk = chunk-size CRLF chunk-data CRLF
    return b"%x\r\n%b\r\n" % (len(data), data)


@implementer(IPushProducer)
class BodyWriter:
    """Writes ``source`` to ``proto``'s transport, chunked or with a known length.

    The :class:`~aleph_tx._adapter.Pump` takes the chunks; this is its sink: it
    compresses, frames and counts them.

    :param proto: the connection's protocol (``_write``, ``_body_done``, ``_body_failed``).
    :param ex: the exchange this body answers.
    :param source: the chunks.
    :param chunked: frame with chunked encoding (RFC 9112 §7.1).
    :param length: the declared ``content-length`` (extra bytes are cut and the
        connection closed; too few bytes close the connection).
    :param gzip: a :class:`Gzipper` when the body is compressed.
    """

    __slots__ = ("_pump", "chunked", "ex", "gzip", "proto", "remaining")

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
        self.chunked = chunked
        self.remaining = length
        self.gzip = gzip
        self._pump = Pump(source, self, getattr(proto, "clock", None))

    @property
    def state(self) -> PumpState:
        """The pump's state."""
        return self._pump.state

    # -- IPushProducer -----------------------------------------------------------

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The transport's buffer is full: stop taking."""
        self._pump.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The transport has room again: take on."""
        self._pump.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The connection is going away: drop the source."""
        self._pump.abandon()

    def pump(self) -> None:
        """Start taking and writing."""
        self._pump.start()

    def abandon(self) -> None:
        """The client went away: drop the source (a stream's pending puts fire ``False``)."""
        self._pump.abandon()

    # -- PumpSink -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write one chunk (compressed, cut to the declared length, framed when chunked)."""
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
            if self._pump.stop():
                self.pump_done()

    def pump_done(self) -> None:
        """The body ended: write the last chunk and hand the connection back."""
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

    def pump_failed(self, failure: Failure) -> None:
        """The source failed after the head was sent: log it and cut the connection."""
        _log.failure("response body failed ({uri})", failure, uri=self.ex.req.get("uri"))
        self.proto._body_failed(self.ex)
