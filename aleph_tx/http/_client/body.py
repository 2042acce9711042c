"""Response bodies: the handle a connection gives for each request, and its readers.

Every connection kind gives a :class:`ResponseHandle` per request (HTTP/1.1:
:class:`H1Response`; HTTP/2: ``H2ClientStream``; HTTP/3: ``H3ClientStream``, both
:class:`StreamResponse`), all built on :class:`BaseResponse` (the head, a failure,
the end of the body), and delivers the body to a :class:`BodySink`, one of two
kinds: :class:`BodyCollector` gathers the body into ``bytes``; :class:`BodyStreamer`
puts each chunk into a ``Stream`` through an :class:`~aleph_tx._receiver.Receiver`,
which stops the connection's reading while a put waits, so a slow reader never
makes memory grow. Both decode gzip and deflate (:mod:`aleph_tx.http._ring.coding`)
and enforce ``read_timeout`` (the longest stall of the network, not of the reader).
"""

from __future__ import annotations

import typing
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from aleph_tx._receiver import Receiver
from aleph_tx._time import Timer
from aleph_tx.errors import ProtocolError, ReadTimeout
from aleph_tx.http._ring.coding import ContentDecoder
from aleph_tx.stream import Stream

__all__ = [
    "BaseResponse",
    "BodyCollector",
    "BodySink",
    "BodyStreamer",
    "H1Response",
    "ResponseCarrier",
    "ResponseHandle",
    "StreamCarrier",
    "StreamResponse",
]

#: The largest decoded piece put into a stream.
CHUNK = 65536


class BodySink(typing.Protocol):
    """Where a response body goes (the client's collector or stream)."""

    def body_data(self, data: bytes) -> None:
        """A chunk of the body (as it came, before any content decoding)."""

    def body_ending(self) -> BaseException | None:
        """The body is complete: is anything wrong with it (a truncated gzip body)?

        Called before the connection is handed back, without running user code:
        an error keeps the connection from being reused and fails the body.
        """

    def body_done(self) -> None:
        """The body ended completely (the connection is back in the pool)."""

    def body_failed(self, reason: BaseException) -> None:
        """The body ended badly (connection lost, protocol error, cancel, timeout)."""


class ResponseHandle(typing.Protocol):
    """One request's response, on any connection kind.

    :ivar head: fires with the handle once ``status`` and ``headers`` are known.
    :ivar status: the final status code.
    :ivar headers: ``(lower-case name, value)`` pairs, in order, repeats kept.
    :ivar retryable: the request may be sent again on a new connection (a reused
        connection closed by the peer before any byte of the response).
    :ivar refused: the server did not process the request (HTTP/2 or HTTP/3 GOAWAY,
        ``H3_REQUEST_REJECTED``, a connection that took no new request): it may be
        sent again whatever its method.
    """

    head: Deferred[Any]
    status: int
    headers: list[tuple[str, str]]
    retryable: bool
    refused: bool

    def deliver_body(self, sink: BodySink) -> None:
        """Hand the body (what arrived so far, then the rest) to ``sink``."""

    def pause_reading(self) -> None:
        """Stop reading this response's body from the network."""

    def resume_reading(self) -> None:
        """Read on."""

    def abort(self, reason: BaseException | None = None) -> None:
        """Give up: fail with ``reason`` (default :class:`CancelledError`); the
        connection (HTTP/1.1) or the stream (HTTP/2) is cut."""


class ResponseCarrier(typing.Protocol):
    """What an :class:`H1Response` asks of the HTTP/1.1 connection carrying it."""

    def release(self) -> None:
        """The body was taken to its end: back to the pool (or closed)."""

    def abort(self) -> None:
        """Cut the connection; it is never reused."""

    def pause_reading(self) -> None:
        """Stop reading the socket."""

    def resume_reading(self) -> None:
        """Read again."""


# -- one response ---------------------------------------------------------------------------


class BaseResponse:
    """What every :class:`ResponseHandle` shares: the head, and the two ways a body ends.

    A subclass says how it lets go of its connection: :meth:`_let_go` when the
    response fails, :meth:`_checked` once a complete body was checked by its sink
    (between the sink's ``body_ending`` and its ``body_done`` or ``body_failed``).
    """

    __slots__ = ("_error", "_finished", "_sink", "head", "headers", "refused", "retryable", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.retryable = False
        self.refused = False
        self.head: Deferred[Any] = Deferred(self._cancel)
        self._sink: BodySink | None = None
        self._error: BaseException | None = None
        self._finished = False  # the sink was told the body ended (either way)

    def _cancel(self, d: Deferred[Any]) -> None:
        self.abort(CancelledError())

    def abort(self, reason: BaseException | None = None) -> None:
        """Give up (see :meth:`ResponseHandle.abort`)."""
        raise NotImplementedError

    def _deliver(self, sink: BodySink, chunks: list[bytes], complete: bool) -> bool:
        """Give the body to ``sink``: ``chunks`` (what arrived before it took the body),
        then its end if it ended (``complete``) or failed; ``True`` while more is to come."""
        self._sink = sink
        for data in chunks:
            if self._finished or self._error is not None:
                break  # (the sink gave up on the body)
            sink.body_data(data)
        if self._finished:
            return False
        if self._error is not None:
            self._finished = True
            self._sink = None
            sink.body_failed(self._error)
            return False
        if complete:
            self._finish()
            return False
        return True

    def fail(self, reason: BaseException) -> None:
        """The response failed (connection lost, protocol error, cancel, timeout)."""
        if self._error is not None or self._finished:
            return
        self._error = reason
        self._let_go()
        if not self.head.called:
            self.head.errback(reason)
        elif self._sink is not None:
            self._finished = True
            sink, self._sink = self._sink, None
            sink.body_failed(reason)

    def _finish(self) -> None:
        """The whole body arrived and a sink has it: the sink checks it, the
        connection is let go, then the sink is told how the body ended."""
        sink = self._sink
        if sink is None or self._finished or self._error is not None:
            return
        self._finished = True
        self._sink = None  # (no cycle left holding the body once it is delivered)
        error = sink.body_ending()
        self._checked(error is None)
        if error is not None:
            self._error = error
            sink.body_failed(error)
        else:
            sink.body_done()

    def _let_go(self) -> None:
        """The response failed: stop using the connection (called once)."""

    def _checked(self, ok: bool) -> None:
        """The complete body was checked: ``ok``, or the connection must not be reused."""


class H1Response(BaseResponse):
    """One request/response on an HTTP/1.1 connection (a :class:`ResponseHandle`).

    The connection is handed back once the body is complete *and* a sink took it
    (:meth:`deliver_body`): the sink's ``body_ending`` check runs first, then the
    pool gets the connection, then the sink's ``body_done`` runs user code.
    HTTP/1.1 has no way to say a request was not processed: ``refused`` stays false.
    """

    __slots__ = ("_chunks", "_complete", "_conn", "is_head", "reused")

    def __init__(self, conn: ResponseCarrier, is_head: bool, reused: bool) -> None:
        super().__init__()
        self._conn: ResponseCarrier | None = conn  # None once it let go of the connection
        self.is_head = is_head
        self.reused = reused
        self._chunks: list[bytes] = []
        self._complete = False  # the whole body arrived

    # -- ResponseHandle -------------------------------------------------------------

    def deliver_body(self, sink: BodySink) -> None:
        """Hand what arrived to ``sink``, then the rest as it comes."""
        chunks, self._chunks = self._chunks, []
        self._deliver(sink, chunks, self._complete)

    def pause_reading(self) -> None:
        """Stop reading the socket while the body's reader is full."""
        if self._conn is not None:
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        """Read the socket again."""
        if self._conn is not None:
            self._conn.resume_reading()

    def abort(self, reason: BaseException | None = None) -> None:
        """Fail now with ``reason`` and cut the connection if it still carries this response."""
        if self._finished or self._error is not None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()  # first: the pool forgets it before any callback runs
        self.fail(reason if reason is not None else CancelledError())

    # -- from the connection ------------------------------------------------------------

    def data(self, data: bytes) -> None:
        """A chunk of the body."""
        sink = self._sink
        if sink is not None:
            sink.body_data(data)
        else:
            self._chunks.append(data)

    def complete(self) -> None:
        """The whole response arrived: fire ``head`` if due; finish once a sink has it."""
        if self._error is not None or self._complete:
            return
        self._complete = True
        if not self.head.called:
            self.head.callback(self)
        elif self._sink is not None:
            self._finish()

    def _let_go(self) -> None:
        self._conn = None  # (the connection failed us, or was cut)

    def _checked(self, ok: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if ok:
                conn.release()
            else:
                conn.abort()


class StreamCarrier(typing.Protocol):
    """What a :class:`StreamResponse` asks of its multiplexed connection."""

    def reset(self, stream: Any) -> None:
        """Reset ``stream`` (RFC 9113 §6.4, RFC 9114 §4.1.1); it is over."""

    def stream_done(self, stream: Any) -> None:
        """``stream`` is over on the wire: its slot is free."""


class StreamResponse(BaseResponse):
    """One request/response on a stream of a multiplexed connection (HTTP/2, HTTP/3):
    giving up resets the stream; the connection and its other streams carry on."""

    __slots__ = ("_ended", "_paused", "conn", "stream_id")

    def __init__(self, conn: StreamCarrier, stream_id: int) -> None:
        super().__init__()
        self.conn = conn
        self.stream_id = stream_id
        self._paused = False
        self._ended = False  # the stream is over on the wire (ended, reset or cut)

    def abort(self, reason: BaseException | None = None) -> None:
        """Give up on this request: reset the stream; the connection carries on."""
        if self._finished or self._error is not None:
            return
        if not self._ended:
            self._ended = True
            self.conn.reset(self)
        self.fail(reason if reason is not None else CancelledError())

    def _let_go(self) -> None:
        if not self._ended:
            self._ended = True
            self.conn.stream_done(self)


def _stalled() -> ReadTimeout:
    return ReadTimeout("reading the response body stalled past read_timeout")


class BodyCollector:
    """Collects a response body (a ``BodySink``): :meth:`wait` fires with the ``bytes``.

    A body already complete when the collector is made (the common case: it came
    with the head) is in :attr:`data` at once, with no Deferred and no timer.

    :param handle: the response.
    :param read_timeout: the longest stall allowed between two chunks.
    :param decoder: decodes a gzip or deflate body (``None``: as it arrived).
    :param discard: read and drop the body (a redirect's, to keep the connection).
    :ivar data: the body once complete, else ``None``.
    """

    __slots__ = ("_chunks", "_d", "_decoder", "_discard", "_error", "_handle", "_timer", "data")

    def __init__(
        self,
        handle: ResponseHandle,
        read_timeout: float | None,
        clock: IReactorTime,
        decoder: ContentDecoder | None = None,
        discard: bool = False,
    ) -> None:
        self._chunks: list[bytes] = []
        self._handle = handle
        self._decoder = decoder
        self._discard = discard
        self._d: Deferred[bytes] | None = None
        self._error: BaseException | None = None
        self._timer: Timer | None = None
        self.data: bytes | None = None
        handle.deliver_body(self)  # what already arrived, maybe the whole body
        if self.data is None and self._error is None and read_timeout is not None:
            self._timer = Timer(read_timeout, lambda: handle.abort(_stalled()), clock)
            self._timer.start()

    def wait(self) -> Deferred[bytes]:
        """Fires with the body, or fails; cancelling it aborts the response."""
        if self._d is None:
            self._d = Deferred(lambda _: self._handle.abort())
            if self.data is not None:
                self._d.callback(self.data)
            elif self._error is not None:
                self._d.errback(self._error)
        return self._d

    def body_data(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.start()
        if self._discard:
            return
        if self._decoder is not None:
            self._decoder.feed(data)
            try:
                data = self._decoder.read()
            except ProtocolError as e:
                self._handle.abort(e)
                return
        self._chunks.append(data)

    def body_ending(self) -> BaseException | None:
        if self._decoder is not None and not self._discard:
            try:
                self._decoder.close()
            except ProtocolError as e:
                return e
        return None

    def body_done(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        chunks, self._chunks = self._chunks, []
        self.data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._d is not None and not self._d.called:
            self._d.callback(self.data)

    def body_failed(self, reason: BaseException) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._error = reason
        if self._d is not None and not self._d.called:
            self._d.errback(reason)


@implementer(IPushProducer)
class BodyStreamer:
    """Puts a response body into :attr:`stream` (a ``BodySink``), with backpressure.

    The :class:`~aleph_tx._receiver.Receiver` pauses the connection's reading while
    a put waits. With a ``decoder``, decoded pieces of at most 64 KiB are put one at
    a time, each once the last was accepted: a highly compressed body cannot fill
    memory either. The read timeout runs only while we wait for the network, never
    while the reader is slow. Closing the stream before the end aborts the response.
    """

    def __init__(
        self,
        handle: ResponseHandle,
        read_timeout: float | None,
        clock: IReactorTime,
        decoder: ContentDecoder | None = None,
    ) -> None:
        self._handle = handle
        self._decoder = decoder
        self.error: BaseException | None = None
        self.bytes_received = 0
        self._finished = False  # no more data will be put (ended, failed or closed by the reader)
        self._ended = False  # the body ended cleanly; decoded pieces may still be due
        self._paused = False  # the receiver paused us: a put is pending
        self.stream = Stream(description=self._describe)
        self._receiver = Receiver(self.stream.put, self.stream.close, self)
        self.stream.on_closed(self._closed_by_reader)
        self._timer = Timer(read_timeout, lambda: handle.abort(_stalled()), clock)
        self._timer.start()
        handle.deliver_body(self)

    def _describe(self) -> dict[str, Any]:
        desc: dict[str, Any] = {"type": "http-client-body", "bytes_received": self.bytes_received}
        if self.error is not None:
            desc["error"] = self.error
        return desc

    def _closed_by_reader(self) -> None:
        if not self._finished:
            self._finished = True
            self._timer.stop()
            self._handle.abort()

    # the Receiver's producer: a put is pending / all were accepted

    def pauseProducing(self) -> None:  # noqa: N802
        self._paused = True
        self._timer.stop()
        self._handle.pause_reading()

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        if self._decoder is not None:
            self._pump()
        if not self._paused and not self._finished:
            self._timer.start()
            self._handle.resume_reading()

    def stopProducing(self) -> None:  # noqa: N802
        """Not called by the Receiver."""

    # BodySink

    def body_data(self, data: bytes) -> None:
        if self._finished:
            return
        self.bytes_received += len(data)
        if self._decoder is None:
            self._receiver.write(data)
            if not self._paused:
                self._timer.start()
        else:
            self._decoder.feed(data)
            self._pump()

    def _pump(self) -> None:
        """Put decoded pieces until one has to wait or the input is used up."""
        decoder = self._decoder
        assert decoder is not None
        while not self._paused and not self._finished:
            try:
                piece = decoder.read(CHUNK)
            except ProtocolError as e:
                self._handle.abort(e)
                self.body_failed(e)
                return
            if not piece:
                break
            self._receiver.write(piece)
        if self._ended and not self._paused and not self._finished:
            self._end()

    def body_ending(self) -> BaseException | None:
        decoder = self._decoder
        if decoder is not None and not decoder.pending:
            try:
                decoder.close()
            except ProtocolError as e:
                return e
        return None  # (pieces still to decode: checked when they are)

    def body_done(self) -> None:
        self._timer.stop()
        if self._finished:
            return
        self._ended = True
        if self._decoder is None:
            self._end()
        elif not self._paused:
            self._pump()

    def _end(self) -> None:
        self._finished = True
        if self._decoder is not None:
            try:
                self._decoder.close()
            except ProtocolError as e:
                self.error = e
        self._receiver.finish()

    def body_failed(self, reason: BaseException) -> None:
        self._timer.stop()
        if self._finished:
            return
        self._finished = True
        self.error = reason
        self._receiver.finish()
