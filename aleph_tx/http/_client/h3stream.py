"""One request/response of an HTTP/3 client connection (RFC 9114).

:class:`H3ClientStream` is the :class:`~aleph_tx.http._client.body.ResponseHandle`
of one request stream: the response head, its body handed to a
:class:`~aleph_tx.http._client.body.BodySink` (bytes of one reactor turn in one
piece), the reader's pauses mapped onto the stream's receive credit, and the
endings (complete, reset, cancelled, cut). It asks its connection for what touches
QUIC through :class:`StreamCarrier`. :class:`RequestBodySink` is where the
:class:`~aleph_tx._pump.Pump` of a request body writes; :class:`EndedStreamer` is
the body of :meth:`~aleph_tx.http._client.h3.H3ClientConnection.request`.
"""

from __future__ import annotations

import typing
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from aleph_tx.errors import ConnectionLostError
from aleph_tx.http._client.body import BodySink, BodyStreamer
from aleph_tx.http._quic.h3 import BodyWriter

__all__ = ["EndedStreamer", "H3ClientStream", "RequestBodySink", "StreamCarrier"]


class StreamCarrier(typing.Protocol):
    """What an :class:`H3ClientStream` asks of its connection."""

    def batched(self, stream: H3ClientStream) -> None:
        """``stream`` has body bytes to hand on at the end of this turn (``flush``)."""

    def flow(self, stream_id: int, flowing: bool) -> None:
        """Let the stream's receive credit slide (``True``) or hold it."""

    def reset(self, stream: H3ClientStream) -> None:
        """Reset the stream both ways; it is over."""

    def stream_done(self, stream: H3ClientStream) -> None:
        """The stream is over on the wire: its slot is free."""


class RequestBodySink:
    """A Pump's sink for a request body: the stream's BodyWriter, its length checked."""

    __slots__ = ("left", "stream", "writer")

    def __init__(self, stream: H3ClientStream, writer: BodyWriter, length: int | None) -> None:
        self.stream = stream
        self.writer = writer
        self.left = length  # bytes still due (None: no length announced)

    def write(self, data: bytes) -> None:
        if self.left is not None:
            self.left -= len(data)
            if self.left < 0:
                self.stream.abort(
                    ValueError(f"the request body is longer than its length (by {-self.left} bytes)")
                )
                return
        self.writer.write(data)

    def pump_done(self) -> None:
        self.writer.unregisterProducer()
        if self.left:
            self.stream.abort(
                ValueError(f"the request body is shorter than its length (by {self.left} bytes)")
            )
            return
        self.writer.finish()

    def pump_failed(self, failure: Failure) -> None:
        self.writer.unregisterProducer()
        self.stream.abort(failure.value)


class H3ClientStream:
    """One request/response on an :class:`H3ClientConnection` (a ``ResponseHandle``).

    :ivar head: fires with the stream once the final response head arrived.
    :ivar refused: the request was not processed (refused before sending, or
        rejected by the server): it may be sent again on another connection.
    """

    __slots__ = (
        "_chunks",
        "_ended",
        "_error",
        "_finished",
        "_paused",
        "_sink",
        "batch",
        "conn",
        "head",
        "headers",
        "refused",
        "retryable",
        "reused",
        "status",
        "stream_id",
        "writer",
    )

    def __init__(self, conn: StreamCarrier, stream_id: int, reused: bool = False) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.reused = reused
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.retryable = False
        self.refused = False
        self.head: Deferred[Any] = Deferred(lambda _: self.abort(CancelledError()))
        self.writer: BodyWriter | None = None
        self.batch: list[bytes] | None = None  # body bytes of this reactor turn
        self._chunks: list[bytes] = []  # body bytes before a sink took the body
        self._sink: BodySink | None = None
        self._paused = False
        self._ended = False  # the stream is over on the wire (ended, reset or cut)
        self._error: BaseException | None = None
        self._finished = False  # the sink was told

    # -- from the connection ------------------------------------------------------------

    def got_head(self, status: int, headers: list[tuple[str, str]], ended: bool) -> None:
        self.status = status
        self.headers = headers
        if ended:
            self.end()
        self.head.callback(self)

    def got_data(self, data: bytes) -> None:
        if self.batch is None:
            self.batch = [data]
            self.conn.batched(self)
        else:
            self.batch.append(data)

    def flush(self) -> None:
        """Hand the bytes of this turn on (one piece per stream and turn)."""
        batch, self.batch = self.batch, None
        if not batch or self._finished or self._error is not None:
            return
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        if self._sink is not None:
            self._sink.body_data(data)
        else:
            self._chunks.append(data)

    def end(self) -> None:
        """The response ended on the wire: the stream's slot is free."""
        if self._ended or self._error is not None:
            return
        self.flush()
        self._ended = True
        self.conn.stream_done(self)
        self._finish()

    def _finish(self) -> None:
        sink = self._sink
        if sink is None or self._finished or self._error is not None:
            return
        self._finished = True
        self._sink = None  # (no cycle left holding the body once it is delivered)
        error = sink.body_ending()
        if error is not None:
            self._error = error
            sink.body_failed(error)
        else:
            sink.body_done()

    # -- ResponseHandle ---------------------------------------------------------------------

    def deliver_body(self, sink: BodySink) -> None:
        """Hand what arrived to ``sink``, then the rest as it comes."""
        self._sink = sink
        chunks, self._chunks = self._chunks, []
        for data in chunks:
            if self._finished or self._error is not None:
                break
            sink.body_data(data)
        if self._finished:
            return
        if self._error is not None:
            self._finished = True
            self._sink = None
            sink.body_failed(self._error)
        elif self._ended:
            self._finish()
        elif not self._paused:
            self.conn.flow(self.stream_id, True)

    def pause_reading(self) -> None:
        """Hold the stream's receive credit: the server stops sending this response."""
        if not self._paused:
            self._paused = True
            if not self._ended:
                self.conn.flow(self.stream_id, False)

    def resume_reading(self) -> None:
        """Let the credit slide again."""
        if self._paused:
            self._paused = False
            if not self._ended and self._sink is not None:
                self.conn.flow(self.stream_id, True)

    def abort(self, reason: BaseException | None = None) -> None:
        """Give up on this request: reset the stream; the connection carries on."""
        if self._finished or self._error is not None:
            return
        if not self._ended:
            self._ended = True
            self.conn.reset(self)
        self.fail(reason if reason is not None else CancelledError())

    def fail(self, reason: BaseException) -> None:
        """The request failed (stream reset, connection lost, protocol error, cancel, timeout)."""
        if self._error is not None or self._finished:
            return
        self._error = reason
        self.batch = None
        if not self._ended:
            self._ended = True
            self.conn.stream_done(self)
        if not self.head.called:
            self.head.errback(reason)
        elif self._sink is not None:
            self._finished = True
            sink, self._sink = self._sink, None
            sink.body_failed(reason)

    def __repr__(self) -> str:
        return f"<H3ClientStream {self.stream_id} status={self.status}>"


class EndedStreamer(BodyStreamer):
    """The body of :meth:`H3ClientConnection.request`: a stream, and ``ended``."""

    def __init__(self, handle: H3ClientStream, clock: Any) -> None:
        self.ended: Deferred[None] = Deferred()
        super().__init__(handle, None, clock)

    def body_done(self) -> None:
        super().body_done()
        if not self.ended.called:
            self.ended.callback(None)

    def body_failed(self, reason: BaseException) -> None:
        super().body_failed(reason)
        if not self.ended.called:
            if not isinstance(reason, ConnectionLostError):
                reason = ConnectionLostError(f"the response body ended early: {reason!r}", reason)
            self.ended.errback(reason)
