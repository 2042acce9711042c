"""HTTP/2 for the client (``http_versions=("h2", "http/1.1")``), on the ``h2`` library.

When ALPN picks ``h2`` the pooled connection (client connection)
hands its bytes to an :class:`H2ClientConnection`; each request is one stream. A stream
looks to the rest of the client like Twisted's HTTP/1.1 response: it has
``code``, ``headers`` and ``deliverBody(protocol)``, and the body protocol's
transport can be paused. Backpressure: received DATA is acknowledged (the flow
control window reopened) only once the body's reader accepted it, so a paused
stream stops its sender without stopping the other streams. Request bodies are sent
only while the peer's window has room (the producer is paused otherwise).

Cancelling a request resets its stream (``RST_STREAM CANCEL``); the connection and
its other streams carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web._newclient import Request, RequestNotSent, ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from aleph_tx.errors import ConnectionLostError, ProtocolError

__all__ = ["H2ClientConnection", "H2ClientStream"]

#: Headers that are connection-specific in HTTP/1.1 and forbidden in HTTP/2 (RFC 9113, 8.2.2).
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host", b"te"}
)

#: Our receive window per stream: 1 MiB lets one stream run at full speed on a
#: fast link while a paused stream holds at most this much in memory.
_WINDOW = 1 << 20


@implementer(IConsumer)
class _BodySender:
    """The consumer a request body producer writes to: DATA frames within the peer's window."""

    def __init__(self, stream: H2ClientStream) -> None:
        self._stream = stream
        self._producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802
        self._producer = producer

    def unregisterProducer(self) -> None:  # noqa: N802
        self._producer = None

    def write(self, data: bytes) -> None:
        self._stream.pending_out.append(data)
        self._stream.flush()


class H2ClientStream:
    """One request/response on an HTTP/2 connection (quacks like Twisted's ``Response``).

    :ivar code: the response status.
    :ivar headers: the response headers (``Headers``; pseudo-headers removed).
    """

    def __init__(self, conn: H2ClientConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.code = 0
        self.headers = Headers()
        self.length: Any = UNKNOWN_LENGTH
        self.response_d: Deferred[Any] = Deferred(self._cancel_before_response)
        self.pending_out: list[bytes] = []
        self._body_done = False  # request body fully handed over
        self._end_sent = False
        self._producer: Any = None
        self._paused_producer = False
        self._protocol: Any = None
        self._in: list[tuple[bytes, int]] = []
        self._unacked = 0
        self._ended: Failure | None = None
        self._reading_paused = False
        self.finished = False

    # -- sending the request ---------------------------------------------------

    def start_body(self, producer: Any) -> None:
        self._producer = producer
        sender = _BodySender(self)
        d = producer.startProducing(sender)
        d.addCallbacks(self._body_produced, self._body_failed)

    def _body_produced(self, _: Any) -> None:
        self._body_done = True
        self.flush()

    def _body_failed(self, f: Failure) -> None:
        self.reset(h2.errors.ErrorCodes.CANCEL)
        self._fail(f)

    def flush(self) -> None:
        """Send what the producer wrote, as far as the flow control windows allow."""
        conn = self.conn
        if self.finished or conn.lost is not None:
            return
        h2c = conn.h2
        while self.pending_out:
            data = self.pending_out[0]
            window = h2c.local_flow_control_window(self.stream_id)
            if window <= 0:
                break
            size = min(window, h2c.max_outbound_frame_size, len(data))
            h2c.send_data(self.stream_id, data[:size])
            if size == len(data):
                self.pending_out.pop(0)
            else:
                self.pending_out[0] = data[size:]
        if self.pending_out:
            if not self._paused_producer and self._producer is not None:
                self._paused_producer = True
                self._producer.pauseProducing()
        else:
            if self._paused_producer and self._producer is not None:
                self._paused_producer = False
                self._producer.resumeProducing()
            if self._body_done and not self._end_sent:
                self._end_sent = True
                h2c.end_stream(self.stream_id)
        conn.send_pending()

    # -- receiving the response --------------------------------------------------

    def got_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        for name, value in headers:
            if name == b":status":
                self.code = int(value)
            elif not name.startswith(b":"):
                self.headers.addRawHeader(name, value)
        cl = self.headers.getRawHeaders(b"content-length")
        if cl:
            try:
                self.length = int(cl[0])
            except ValueError:
                pass
        d = self.response_d
        if not d.called:
            d.callback(self)

    def got_data(self, data: bytes, flow_length: int) -> None:
        if self._protocol is None or self._reading_paused:
            self._in.append((data, flow_length))
            return
        self._protocol.dataReceived(data)
        self._ack(flow_length)

    def _ack(self, n: int) -> None:
        if n and self.conn.lost is None:
            self.conn.h2.acknowledge_received_data(n, self.stream_id)
            self.conn.send_pending()

    def ended(self, reason: Failure) -> None:
        """The stream ended (cleanly: ``ResponseDone``) or failed."""
        if self._ended is not None:
            return
        self._ended = reason
        self._stop_producer()
        d = self.response_d
        if not d.called:
            d.errback(reason)
            self._finish()
            return
        if self._protocol is not None and not self._in:
            self._finish()
            self._protocol.connectionLost(reason)

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.conn.stream_done(self)

    def _stop_producer(self) -> None:
        if self._producer is not None and not self._body_done:
            self._producer.stopProducing()
        self._producer = None

    # The Response-like surface used by the client.

    def deliverBody(self, protocol: Any) -> None:  # noqa: N802
        """Deliver the body to ``protocol``; its transport can pause this stream."""
        self._protocol = protocol
        protocol.makeConnection(_StreamTransport(self))
        self._drain()

    def _drain(self) -> None:
        while self._in and not self._reading_paused and self._protocol is not None:
            data, n = self._in.pop(0)
            self._protocol.dataReceived(data)
            self._ack(n)
        if not self._in and self._ended is not None and self._protocol is not None and not self.finished:
            self._finish()
            self._protocol.connectionLost(self._ended)

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        self._drain()

    # -- cancelling ------------------------------------------------------------------

    def _cancel_before_response(self, d: Deferred[Any]) -> None:
        self.reset(h2.errors.ErrorCodes.CANCEL)
        self._stop_producer()
        self._finish()

    def reset(self, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Reset this stream (the connection carries on)."""
        if self._ended is None:
            self._ended = Failure(CancelledError())
        if not self.finished and self.conn.lost is None:
            try:
                self.conn.h2.reset_stream(self.stream_id, code)
            except h2.exceptions.H2Error:
                pass
            self.conn.send_pending()
        self._stop_producer()
        self._finish()

    def abort(self) -> None:
        """Abort this request: reset the stream."""
        self.reset(h2.errors.ErrorCodes.CANCEL)

    def _fail(self, f: Failure) -> None:
        self.ended(f)


class _StreamTransport:
    """The body protocol's transport: pause/resume reading one stream."""

    def __init__(self, stream: H2ClientStream) -> None:
        self._stream = stream

    def pauseProducing(self) -> None:  # noqa: N802
        self._stream.pause_reading()

    def resumeProducing(self) -> None:  # noqa: N802
        self._stream.resume_reading()

    def stopProducing(self) -> None:  # noqa: N802
        self._stream.abort()

    def loseConnection(self) -> None:  # noqa: N802
        self._stream.abort()


class H2ClientConnection:
    """The HTTP/2 side of one pooled TLS connection (after ALPN chose ``h2``).

    :param transport: the TLS transport.
    :param on_stream_done: called with the connection when a stream finishes.
    """

    def __init__(
        self,
        transport: Any,
        on_stream_done: Callable[[H2ClientConnection], None],
        max_header_size: int,
    ) -> None:
        self.transport = transport
        self._on_stream_done = on_stream_done
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_size,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            }
        )
        self.h2.decoder.max_header_list_size = max_header_size
        self.h2.increment_flow_control_window(16 * _WINDOW)
        self.streams: dict[int, H2ClientStream] = {}
        self.lost: Failure | None = None
        self.goaway = False
        self.send_pending()

    @property
    def active_streams(self) -> int:
        return len(self.streams)

    def can_take(self) -> bool:
        """Whether another request may start on this connection now."""
        if self.lost is not None or self.goaway:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return len(self.streams) < min(limit, 1000)

    def send_pending(self) -> None:
        data = self.h2.data_to_send()
        if data and self.lost is None:
            self.transport.write(data)

    def request(self, request: Request, scheme: bytes, authority: bytes) -> H2ClientStream:
        """Start ``request``; the returned stream's ``response_d`` fires at the headers."""
        stream_id = self.h2.get_next_available_stream_id()
        stream = H2ClientStream(self, stream_id)
        self.streams[stream_id] = stream
        headers = [
            (b":method", request.method),
            (b":scheme", scheme),
            (b":authority", authority),
            (b":path", request.uri),
        ]
        for name, values in request.headers.getAllRawHeaders():
            lname = name.lower()
            if lname in _HOP_BY_HOP:
                continue
            for v in values:
                headers.append((lname, v))
        producer = request.bodyProducer
        if producer is not None and producer.length is not UNKNOWN_LENGTH:
            headers.append((b"content-length", str(producer.length).encode("ascii")))
        try:
            self.h2.send_headers(stream_id, headers, end_stream=producer is None)
        except h2.exceptions.H2Error as e:
            self.goaway = True
            del self.streams[stream_id]
            stream.finished = True
            stream.response_d.errback(ProtocolError(f"cannot send the request over HTTP/2: {e!r}"))
            return stream
        self.send_pending()
        if producer is not None:
            stream.start_body(producer)
        return stream

    def stream_done(self, stream: H2ClientStream) -> None:
        if self.streams.pop(stream.stream_id, None) is not None:
            self._on_stream_done(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.goaway = True  # never start another stream on it
            self.send_pending()
            self._fail_all(Failure(ResponseFailed([Failure(ProtocolError(f"HTTP/2 protocol error: {e!r}"))])))
            self.transport.loseConnection()
            return
        for event in events:
            self._event(event)
        self.send_pending()

    def _event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived):
            if stream is not None:
                stream.got_headers(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream.got_data(event.data, event.flow_controlled_length)
            else:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None:
                stream.ended(Failure(ResponseDone()))
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                err = ConnectionLostError(f"the server reset the stream (error code {event.error_code!r})")
                stream.ended(Failure(ResponseFailed([Failure(err)])))
        elif isinstance(event, h2.events.WindowUpdated):
            targets = list(self.streams.values()) if not event.stream_id else [stream] if stream else []
            for st in targets:
                st.flush()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            last = event.last_stream_id or 0
            for st in list(self.streams.values()):
                if st.stream_id > last:
                    # RFC 9113 section 6.8: the server did not process it: safe to retry
                    st.ended(Failure(RequestNotSent()))

    def _fail_all(self, reason: Failure) -> None:
        for st in list(self.streams.values()):
            st.ended(reason)

    def connection_lost(self, reason: Failure) -> None:
        self.lost = reason
        self._fail_all(Failure(ResponseFailed([reason])))
