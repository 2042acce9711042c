"""HTTP/2 for the client (``http_versions=("h2", "http/1.1")``), on the ``h2`` library.

When ALPN picks ``h2``, the pooled TLS connection's bytes go to an
:class:`H2ClientConnection` (a multiplexed
:class:`~aleph_tx.http._client.pool.PooledConnection`); each request is an
:class:`H2ClientStream` (a :class:`~aleph_tx.http._client.body.ResponseHandle`),
so the rest of the client treats both protocols alike.

Backpressure: received DATA is acknowledged (the flow control window reopened) only
once the body's reader took it, so a paused stream stops its sender without
stopping the other streams. Request bodies go through the same
:class:`~aleph_tx._pump.Pump` as on HTTP/1.1, paused while the peer's window is
closed. Cancelling a request resets its stream (``RST_STREAM CANCEL``, RFC 9113
§6.4); the connection and its other streams carry on.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure

from aleph_tx._chunks import ChunkSource
from aleph_tx._pump import Pump
from aleph_tx.errors import ConnectionLostError, ProtocolError
from aleph_tx.http._client.body import BodySink
from aleph_tx.http._client.pool import ClientRequest, PoolEvents, lost_error

__all__ = ["H2ClientConnection", "H2ClientStream"]

#: Headers that are connection-specific in HTTP/1.1 and forbidden in HTTP/2 (RFC 9113 §8.2.2).
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host", b"te"}
)

#: Our receive window per stream: 1 MiB lets one stream run at full speed on a
#: fast link while a paused stream holds at most this much in memory.
_WINDOW = 1 << 20


class H2ClientStream:
    """One request/response on an :class:`H2ClientConnection` (a ``ResponseHandle``)."""

    def __init__(self, conn: H2ClientConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.retryable = False
        self.refused = False
        self.head: Deferred[H2ClientStream] = Deferred(lambda _: self.abort(CancelledError()))
        self.pending_out: collections.deque[bytes] = collections.deque()
        self.end_sent = False
        self._pump: Pump | None = None
        self._body_done = False  # the request body was fully handed over
        self._sink: BodySink | None = None
        self._in: collections.deque[tuple[bytes, int]] = collections.deque()
        self._paused = False
        self._ended = False  # the response ended on the wire
        self._error: BaseException | None = None
        self._finished = False  # the sink was told

    # -- the request body (a PumpSink) ------------------------------------------------

    def start_body(self, source: ChunkSource, reactor: Any) -> None:
        self._pump = Pump(source, self, reactor)
        self._pump.start()

    def write(self, data: bytes) -> None:
        """A chunk of the request body: sent within the peer's window, else queued."""
        self.pending_out.append(data)
        self.flush()

    def pump_done(self) -> None:
        self._pump = None
        self._body_done = True
        self.flush()

    def pump_failed(self, failure: Failure) -> None:
        self._pump = None
        self.abort(failure.value)

    def flush(self) -> None:
        """Send what the body gave, as far as the flow control windows allow."""
        conn = self.conn
        if self._error is not None or conn.lost is not None or self.end_sent:
            return
        h2c = conn.h2
        out = self.pending_out
        while out:
            data = out[0]
            window = h2c.local_flow_control_window(self.stream_id)
            if window <= 0:
                break
            size = min(window, h2c.max_outbound_frame_size, len(data))
            h2c.send_data(self.stream_id, data[:size])
            if size == len(data):
                out.popleft()
            else:
                out[0] = data[size:]
        pump = self._pump
        if out:
            if pump is not None:
                pump.pauseProducing()
        else:
            if pump is not None:
                pump.resumeProducing()
            elif self._body_done:
                self.end_sent = True
                h2c.end_stream(self.stream_id)
        conn.send_pending()

    # -- the response ------------------------------------------------------------------

    def got_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        status = 0
        out = []
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif not name.startswith(b":"):
                out.append((name.decode("latin-1"), value.decode("latin-1")))
        if status < 200:
            return  # an interim response (RFC 9110 §15.2)
        self.status = status
        self.headers = out
        if not self.head.called:
            self.head.callback(self)

    def got_data(self, data: bytes, flow_length: int) -> None:
        if self._sink is None or self._paused or self._in:
            self._in.append((data, flow_length))
            return
        self._sink.body_data(data)
        self._ack(flow_length)

    def _ack(self, n: int) -> None:
        if n and self.conn.lost is None and not self._ended:
            self.conn.h2.acknowledge_received_data(n, self.stream_id)
            self.conn.send_pending()

    def ended(self) -> None:
        """The response ended on the wire: the stream's slot is free."""
        if self._ended or self._error is not None:
            return
        self._ended = True
        self._stop_pump()
        self.conn.stream_done(self)
        if not self.head.called:
            self.fail(ProtocolError("the HTTP/2 stream ended without a response"))
        else:
            self._drain()

    def deliver_body(self, sink: BodySink) -> None:
        """Hand the body to ``sink``; reading this stream can be paused."""
        self._sink = sink
        if self._error is not None:
            self._finished = True
            sink.body_failed(self._error)
            return
        self._drain()

    def _drain(self) -> None:
        sink = self._sink
        if sink is None:
            return
        while self._in and not self._paused:
            data, n = self._in.popleft()
            sink.body_data(data)
            self._ack(n)
        if not self._in and self._ended and not self._finished and self._error is None:
            self._finished = True
            self._sink = None  # (no cycle left holding the body once it is delivered)
            error = sink.body_ending()
            if error is not None:
                self._error = error
                sink.body_failed(error)
            else:
                sink.body_done()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._drain()

    # -- endings ----------------------------------------------------------------------

    def abort(self, reason: BaseException | None = None) -> None:
        """Give up on this request: reset the stream; the connection carries on."""
        if self._finished or self._error is not None:
            return
        if not self._ended:
            self._ended = True
            self.conn.reset(self, h2.errors.ErrorCodes.CANCEL)
        self._stop_pump()
        self.fail(reason if reason is not None else CancelledError())

    def fail(self, reason: BaseException) -> None:
        if self._error is not None or self._finished:
            return
        self._error = reason
        self._stop_pump()
        if not self._ended:
            self._ended = True
            self.conn.stream_done(self)
        if not self.head.called:
            self.head.errback(reason)
        elif self._sink is not None:
            self._finished = True
            sink, self._sink = self._sink, None
            sink.body_failed(reason)

    def _stop_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.abandon()


class H2ClientConnection:
    """The HTTP/2 side of one pooled TLS connection (a multiplexed ``PooledConnection``).

    :param transport: the TLS transport.
    :param events: the pool.
    :param key: the pool key.
    :param max_header_size: announced as ``SETTINGS_MAX_HEADER_LIST_SIZE``.
    :param reactor: for the turns an iterator request body yields.
    """

    multiplexed = True
    protocol = "h2"

    def __init__(
        self,
        transport: Any,
        events: PoolEvents,
        key: Hashable,
        max_header_size: int = 65536,
        reactor: Any = None,
    ) -> None:
        self.transport = transport
        self.events = events
        self.key = key
        self.reactor = reactor
        self.requests = 0
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
        self._closed: list[Deferred[None]] = []
        self.send_pending()

    # -- PooledConnection -------------------------------------------------------------

    def can_take(self) -> bool:
        """Whether another request may start on this connection now."""
        if self.lost is not None or self.goaway:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return len(self.streams) < min(limit, 1000)

    def in_use(self) -> bool:
        """Whether a stream is open."""
        return bool(self.streams)

    def send(self, request: ClientRequest) -> H2ClientStream:
        """Start ``request`` on a new stream; its ``head`` fires at the response headers."""
        self.requests += 1
        stream_id = self.h2.get_next_available_stream_id()
        stream = H2ClientStream(self, stream_id)
        self.streams[stream_id] = stream
        headers = [
            (b":method", request.method),
            (b":scheme", request.scheme),
            (b":authority", request.authority),
            (b":path", request.path),
        ]
        for name, value in request.headers:
            lname = name.lower()
            if lname not in _HOP_BY_HOP:
                headers.append((lname, value))
        body = request.body
        if isinstance(body, bytes):
            headers.append((b"content-length", b"%d" % len(body)))
        elif body is not None and request.length is not None:
            headers.append((b"content-length", b"%d" % request.length))
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.H2Error as e:
            self._give_up()
            stream.fail(ProtocolError(f"cannot send the request over HTTP/2: {e!r}"))
            return stream
        if isinstance(body, bytes):
            if body:
                stream.pending_out.append(body)
                stream.pump_done()
        elif body is not None:
            stream.start_body(body, self.reactor)
        self.send_pending()
        return stream

    def close(self) -> Deferred[None]:
        """Close the connection; fires once it is closed."""
        self._give_up()
        if self.lost is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        self.transport.loseConnection()
        return d

    def abort(self) -> None:
        """Cut the connection now."""
        self._give_up()
        if self.lost is None:
            self.transport.abortConnection()

    def _give_up(self) -> None:
        """No new streams on this connection: the pool forgets it."""
        if not self.goaway:
            self.goaway = True
            self.events.connection_gone(self)

    # -- streams ----------------------------------------------------------------------

    def send_pending(self) -> None:
        data = self.h2.data_to_send()
        if data and self.lost is None:
            self.transport.write(data)

    def reset(self, stream: H2ClientStream, code: int) -> None:
        """Reset ``stream`` (RST_STREAM)."""
        if self.lost is None:
            try:
                self.h2.reset_stream(stream.stream_id, code)
            except h2.exceptions.H2Error:
                pass
            self.send_pending()
        self.stream_done(stream)

    def stream_done(self, stream: H2ClientStream) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if self.goaway:
            if not self.streams and self.lost is None:
                self.transport.loseConnection()
            return
        self.events.connection_reusable(self)

    # -- bytes from the TLS transport --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self._give_up()
            self.send_pending()
            self._fail_all(ProtocolError(f"HTTP/2 protocol error: {e!r}"))
            self.transport.loseConnection()
            return
        for event in events:
            self._event(event)
        self.send_pending()

    def _event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived):
            if stream is not None:
                stream.got_headers(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream.got_data(event.data, event.flow_controlled_length)
            else:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None:
                stream.ended()
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                stream.fail(
                    ConnectionLostError(f"the server reset the stream (error code {event.error_code!r})")
                )
        elif isinstance(event, h2.events.WindowUpdated):
            targets = list(self.streams.values()) if not event.stream_id else [stream] if stream else []
            for st in targets:
                st.flush()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._give_up()
            last = event.last_stream_id or 0
            for st in list(self.streams.values()):
                if st.stream_id > last:
                    # RFC 9113 §6.8: the server did not process it
                    st.retryable = st.refused = True
                    st.fail(ConnectionLostError("the server closed the HTTP/2 connection (GOAWAY)"))

    def _fail_all(self, reason: BaseException) -> None:
        for st in list(self.streams.values()):
            st.fail(reason)

    def connection_lost(self, reason: Failure) -> None:
        self.lost = reason
        self._give_up()
        self._fail_all(lost_error(reason))
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)
