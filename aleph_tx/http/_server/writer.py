"""Response bodies to a :class:`BodySink`: compressed, counted, with backpressure.

:class:`BodyWriter` is the :class:`~aleph_tx._adapter.PumpSink` of a response body:
the :class:`~aleph_tx._adapter.Pump` takes a chunk only while the front's consumer
has room (a client that reads nothing stops the takes, so the producer's puts
wait); the writer gzips it when asked, cuts it to the declared ``content-length``
(a longer body is cut and the connection closed: the client could not tell where
the next response starts), and gives it to the front's sink, which frames it
(chunked encoding on HTTP/1.1, DATA frames on HTTP/2 and HTTP/3).
"""

from __future__ import annotations

import typing
from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx._chunks import ChunkSource
from aleph_tx._pump import Pump, PumpState
from aleph_tx.http._ring.coding import Gzipper

__all__ = ["BodyEnds", "BodySink", "BodyWriter"]

_log = Logger()


class BodySink(typing.Protocol):
    """Where a response body goes (a front's connection, request or stream)."""

    def write(self, data: bytes) -> None:
        """A piece of the body (non-empty; the sink frames it)."""

    def body_done(self, ex: Any, complete: bool) -> None:
        """``ex``'s body is over; ``complete`` is ``False`` if it was shorter than its length."""

    def body_failed(self, ex: Any) -> None:
        """The body failed after the head went out: cut the connection (or stream)."""

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:  # noqa: N802
        """The writer produces for this sink (Twisted's IConsumer)."""

    def unregisterProducer(self) -> None:  # noqa: N802
        """The writer is done."""


class BodyEnds(typing.Protocol):
    """Who is told how a body ended (the exchange)."""

    def body_written(self, complete: bool) -> None:
        """The whole body went out (``complete``: as long as it said)."""

    def failed(self, failure: Failure) -> None:
        """The body's source failed after the head went out."""


@implementer(IPushProducer)
class BodyWriter:
    """Takes the chunks of ``source`` (through a Pump) and writes them to ``sink``.

    :param ex: told when the body is written (``body_written``) or failed (``failed``).
    :param sink: the front's body sink (also the Pump's consumer).
    :param source: the chunks.
    :param length: the declared length (``None``: unknown).
    :param gzip: a :class:`Gzipper` when the body is compressed.
    :param clock: for the Pump's next turn of an iterator source.
    """

    __slots__ = ("_pump", "ex", "gzip", "remaining", "sink")

    def __init__(
        self,
        ex: BodyEnds,
        sink: BodySink,
        source: ChunkSource,
        length: int | None,
        gzip: Gzipper | None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.ex = ex
        self.sink = sink
        self.remaining = length
        self.gzip = gzip
        self._pump = Pump(source, self, clock)

    @property
    def state(self) -> PumpState:
        """The pump's state."""
        return self._pump.state

    def start(self) -> None:
        """Start taking and writing."""
        self._pump.start()

    def abandon(self) -> None:
        """The client went away: drop the source (a stream's pending puts fire ``False``)."""
        self._pump.abandon()

    # IPushProducer: the consumer's flow control, passed to the pump

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The consumer is full."""
        self._pump.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The consumer has room."""
        self._pump.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The consumer went away."""
        self._pump.abandon()

    # PumpSink

    def write(self, data: bytes) -> None:
        """One chunk: compressed, cut to the declared length, to the sink."""
        if self.gzip is not None:
            data = self.gzip.chunk(data)
            if not data:
                return
        overflow = False
        remaining = self.remaining
        if remaining is not None:
            if len(data) > remaining:
                data = data[:remaining]
                overflow = True
            self.remaining = remaining - len(data)
        if data:
            self.sink.write(data)
        if overflow:
            _log.warn("response body longer than its content-length: cut, connection closed")
            if self._pump.stop():
                self.pump_done()

    def pump_done(self) -> None:
        """The source ended: flush the compressor; the body is written."""
        if self.gzip is not None:
            tail = self.gzip.finish()
            if tail:
                self.sink.write(tail)
        self.sink.unregisterProducer()
        self.ex.body_written(not self.remaining)  # None (no declared length) or 0

    def pump_failed(self, failure: Failure) -> None:
        """The source failed after the head went out."""
        self.sink.unregisterProducer()
        self.ex.failed(failure)
