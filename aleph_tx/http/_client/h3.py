"""HTTP/3 client connections (RFC 9114) on aioquic, on a Twisted UDP port.

:func:`connect_h3` opens one QUIC connection (its own UDP port) and fires with an
:class:`H3ClientConnection` once the handshake is done, or fails with
:class:`~aleph_tx.errors.ConnectionTimeout` past ``connection_timeout`` (name
resolution plus the QUIC handshake) or :class:`~aleph_tx.errors.ConnectionLostError`.

The connection is a multiplexed
:class:`~aleph_tx.http._client.pool.PooledConnection`: each request is an
:class:`H3ClientStream` (a :class:`~aleph_tx.http._client.body.ResponseHandle`),
so the pool and the rest of the client treat it as they treat HTTP/1.1 and HTTP/2.
Backpressure: while a body's reader is full the stream's receive credit is held
(:mod:`aleph_tx.http._quic.flow`), so the server stops sending that response and
the other streams go on; request bodies go through the one
:class:`~aleph_tx._pump.Pump`, paused while the stream's send buffer is full.

Cancelling a request, or closing its body before the end, resets the stream
(``H3_REQUEST_CANCELLED``, RFC 9114 §4.1.1) and stops reading it; the connection
and its other requests go on. After the server's GOAWAY (RFC 9114 §5.2), or a
malformed response, the connection takes no new requests (the pool forgets it)
and closes once its requests ended; a request it refuses, or that the server
rejected (``H3_REQUEST_REJECTED``), was not processed and may go on another
connection whatever its method (``refused``).

:meth:`H3ClientConnection.request` is the same without the pool: it fires with the
response head as a dict whose ``body`` is a :class:`~aleph_tx.stream.Stream`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from typing import Any

from aioquic.h3 import events as h3events
from aioquic.h3.connection import ErrorCode
from aioquic.quic import events as qevents
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.python.failure import Failure

from aleph_tx._chunks import ChunkSource
from aleph_tx._pump import Pump
from aleph_tx._time import arm_timeout, get_clock, get_reactor
from aleph_tx.errors import ConnectionLostError, ConnectionTimeout, ProtocolError
from aleph_tx.http._client.altsvc import AltService, parse_alt_svc
from aleph_tx.http._client.h3stream import EndedStreamer, H3ClientStream, RequestBodySink
from aleph_tx.http._client.pool import DEFAULT_MAX_RESPONSE_HEADER_SIZE, ClientRequest, PoolEvents
from aleph_tx.http._quic.config import client_configuration
from aleph_tx.http._quic.endpoint import QuicDriver, QuicEndpoint
from aleph_tx.http._quic.h3 import CONNECTION_FIELDS, H3, BodyWriter, WriterState

__all__ = ["AltService", "H3ClientConnection", "H3ClientStream", "connect_h3", "parse_alt_svc"]

#: Request fields that HTTP/3 carries as pseudo-headers or forbids (RFC 9114 §4.2, §4.3.1).
_DROP_FIELDS = CONNECTION_FIELDS | {b"host", b"te", b"content-length"}


class H3ClientConnection:
    """One HTTP/3 connection of the client (a multiplexed ``PooledConnection`` and the
    ``ConnectionHandler`` of its QUIC driver).

    :param driver: the QUIC connection.
    :param udp_port: its own UDP port, stopped when the connection is gone.
    :param events: the pool (``None``: a connection used on its own).
    :param key: the pool key.
    :param max_header_size: the response header block limit (``max_response_header_size``).
    :ivar ready: fires ``None`` once the handshake is done; fails if the connection
        ends first.
    """

    multiplexed = True
    protocol = "h3"

    def __init__(
        self,
        driver: QuicDriver,
        udp_port: Any = None,
        events: PoolEvents | None = None,
        key: Hashable = None,
        max_header_size: int = DEFAULT_MAX_RESPONSE_HEADER_SIZE,
    ) -> None:
        self.driver = driver
        self.h3 = H3(driver.quic)
        self.ready: Deferred[None] = Deferred()
        self.events = events
        self.key = key
        self.max_header_size = max_header_size
        self.requests = 0
        self.lost_reason: str | None = None
        self._udp_port = udp_port
        self._streams: dict[int, H3ClientStream] = {}
        self._paused: set[BodyWriter] = set()
        self._batched: list[H3ClientStream] = []
        self._closing = False  # takes no new requests: closed once the last one ended
        self._gone = False  # the pool was told
        self._closed: list[Deferred[None]] = []
        self._limit_seen = 0  # the server's stream limit when last looked at

    # -- state -----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether a new request may start here (handshake done, no GOAWAY, not closing)."""
        return (
            self.ready.called
            and self.lost_reason is None
            and not self.h3.goaway_received
            and not self._closing
            and not self.driver.terminated
        )

    @property
    def active_requests(self) -> int:
        """Requests whose response has not ended."""
        return len(self._streams)

    # -- PooledConnection --------------------------------------------------------------------

    def can_take(self) -> bool:
        """Whether a request may start now: available, and a stream ID within the
        server's ``MAX_STREAMS`` (beyond it a request would wait for credit)."""
        if not self.available:
            return False
        limit = self._stream_limit()
        if limit is None:
            return len(self._streams) < 100
        return self.driver.quic.get_next_available_stream_id() // 4 < limit

    def _stream_limit(self) -> int | None:
        """How many request streams the server allows so far (``MAX_STREAMS``, RFC 9000
        §4.6), read from aioquic; ``None`` if this aioquic does not say."""
        limit = getattr(self.driver.quic, "_remote_max_streams_bidi", None)
        return limit if isinstance(limit, int) else None

    def in_use(self) -> bool:
        """Whether a request is in flight."""
        return bool(self._streams)

    def send(self, request: ClientRequest) -> H3ClientStream:
        """Start ``request`` on a new stream; its ``head`` fires at the response head.

        On a connection that takes no new requests the stream fails at once with
        :class:`~aleph_tx.errors.ConnectionLostError`, ``refused`` (nothing was sent).
        """
        if not self.available:
            refused = H3ClientStream(self, -1)
            refused.retryable = refused.refused = True
            refused.fail(
                ConnectionLostError("the HTTP/3 connection takes no new requests: the request was not sent")
            )
            return refused
        self.requests += 1
        quic = self.driver.quic
        sid = quic.get_next_available_stream_id()
        stream = H3ClientStream(self, sid, self.requests > 1)
        self._streams[sid] = stream
        fields = [
            (b":method", request.method),
            (b":scheme", request.scheme),
            (b":authority", request.authority),
            (b":path", request.path or b"/"),
        ]
        for name, value in request.headers:
            name = name.lower()
            if name not in _DROP_FIELDS:
                fields.append((name, value))
        body = request.body
        if isinstance(body, bytes):
            if body:
                fields.append((b"content-length", b"%d" % len(body)))
        elif body is not None and request.length is not None:
            fields.append((b"content-length", b"%d" % request.length))
        self.h3.send_headers(sid, fields, end_stream=not body)
        if isinstance(body, bytes):
            if body:
                self.h3.send_data(sid, body, end_stream=True)
        elif body is not None:
            writer = stream.writer = BodyWriter(self, sid, WriterState.STARTED)
            pump = Pump(body, RequestBodySink(stream, writer, request.length), self.driver.clock)
            writer.registerProducer(pump, True)
            pump.start()
        self.driver.transmit_soon()
        return stream

    def close(self) -> Deferred[None]:
        """Take no new requests; close once the ones in flight have ended. Fires once
        the connection is gone (after QUIC's closing period, RFC 9000 §10.2)."""
        if self.driver.terminated:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        self._retire()
        return d

    def abort(self) -> None:
        """Cut the connection now: requests in flight fail."""
        self.driver.abort(error_code=ErrorCode.H3_NO_ERROR, reason="client closed")

    # -- requests -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        authority: str,
        path: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | bytearray | memoryview | ChunkSource | None = None,
        scheme: str = "https",
    ) -> Deferred[dict[str, Any]]:
        """Send a request; fires with ``{"status", "headers", "body", "ended"}``.

        :param authority: ``host[:port]`` (the ``:authority`` pseudo-header).
        :param path: the request target (``/path?query``).
        :param headers: ``(name, value)`` fields; connection-specific ones and
            ``host`` are left out (RFC 9114 §4.2).
        :param body: bytes, or a :class:`~aleph_tx._chunks.ChunkSource` sent with
            backpressure.
        :returns: fails with :class:`~aleph_tx.errors.ConnectionLostError` if the
            connection cannot take the request or is lost before the response head,
            :class:`~aleph_tx.errors.ProtocolError` for a malformed response;
            cancelling it resets the stream. ``body`` is a ``Stream`` read with
            backpressure (closing it early resets the stream); ``ended`` fires
            ``None`` once the whole body arrived, or fails with
            :class:`~aleph_tx.errors.ConnectionLostError`.
        """
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        request = ClientRequest(
            method.upper().encode("ascii"),
            scheme.encode("ascii"),
            authority.encode("idna"),
            b"",
            path.encode("latin-1"),
            list(headers or ()),
            body or None,
        )
        stream = self.send(request)

        def with_head(stream: H3ClientStream) -> dict[str, Any]:
            streamer = EndedStreamer(stream, self.driver.clock)
            fields: dict[str, str] = {}
            for name, value in stream.headers:
                old = fields.get(name)
                fields[name] = value if old is None else f"{old}, {value}"  # RFC 9110 §5.3
            return {
                "status": stream.status,
                "headers": fields,
                "body": streamer.stream,
                "ended": streamer.ended,
            }

        return stream.head.addCallback(with_head)

    # -- what streams ask of the connection ---------------------------------------------------------

    def batched(self, stream: H3ClientStream) -> None:
        """``stream`` has body bytes to hand on at the end of this turn."""
        self._batched.append(stream)

    def flow(self, stream_id: int, flowing: bool) -> None:
        """Let the stream's receive credit slide (``True``) or hold it."""
        if self.driver.terminated:
            return
        if flowing:
            self.driver.quic.flow(stream_id)
            self.driver.transmit_soon()
        else:
            self.driver.quic.hold(stream_id)

    def reset(self, stream: H3ClientStream) -> None:
        """Reset ``stream`` both ways (``H3_REQUEST_CANCELLED``, RFC 9114 §4.1.1)."""
        sid = stream.stream_id
        writer = stream.writer
        if writer is not None:
            self._paused.discard(writer)
            writer.abandon()
        if sid in self._streams and not self.driver.terminated:
            quic = self.driver.quic
            quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            try:
                quic.stop_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            except ValueError:
                pass
            quic.hold(sid)
            self.h3.forget(sid)
            self.driver.transmit_soon()
        self.stream_done(stream)

    def stream_done(self, stream: H3ClientStream) -> None:
        """``stream`` is over on the wire: its slot is free."""
        if self._streams.pop(stream.stream_id, None) is None:
            return
        writer = stream.writer
        if writer is not None and writer.state is WriterState.STARTED:
            # RFC 9114 §4.1.1: a complete response ends the request; stop sending its body
            self._paused.discard(writer)
            writer.abort(ErrorCode.H3_NO_ERROR)
        if self._closing:
            self._maybe_close()
        elif self.events is not None and self.available:
            self.events.connection_reusable(self)

    # -- ConnectionHandler ---------------------------------------------------------------------

    def quic_event_received(self, event: qevents.QuicEvent) -> None:
        """Hand the event to HTTP/3 and act on what it makes of it."""
        kind = type(event)
        if kind is qevents.HandshakeCompleted:
            if not self.ready.called:
                self.ready.callback(None)
        elif kind is qevents.StreamReset:
            self._reset_by_peer(event.stream_id, event.error_code)  # type: ignore[attr-defined]
        elif kind is qevents.StopSendingReceived:
            self._stop_sending(event.stream_id)  # type: ignore[attr-defined]
        for h3event in self.h3.handle_event(event):
            h3kind = type(h3event)
            if h3kind is h3events.DataReceived:
                self._data(h3event)  # type: ignore[arg-type]
            elif h3kind is h3events.HeadersReceived:
                self._headers(h3event)  # type: ignore[arg-type]
        if self.h3.goaway_received and not self._closing:
            self._retire()  # RFC 9114 §5.2: no new requests here

    def connection_terminated(self, event: qevents.ConnectionTerminated) -> None:
        """Every open request fails; the pool forgets the connection; the UDP port is released."""
        reason = event.reason_phrase or f"error code {event.error_code:#x}"
        self.lost_reason = f"the HTTP/3 connection was closed ({reason})"
        if not self.ready.called:
            self.ready.errback(ConnectionLostError(self.lost_reason))
        self._tell_gone()
        streams, self._streams = self._streams, {}
        self._paused.clear()
        self._batched = []
        for stream in streams.values():
            if stream.writer is not None:
                stream.writer.lost()
            # a reused connection closed before any byte of the response: maybe the
            # peer's idle close crossed our request (retried for idempotent methods only)
            stream.retryable = stream.reused and not stream.status
            stream.fail(ConnectionLostError(self.lost_reason))
        if self._udp_port is not None:
            port, self._udp_port = self._udp_port, None
            port.stopListening()
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)

    def transmitting(self) -> None:
        """Hand on the body bytes received this turn (one piece per stream and turn,
        not one per QUIC packet)."""
        if self._batched:
            batched, self._batched = self._batched, []
            for stream in batched:
                stream.flush()

    def transmitted(self) -> None:
        """Resume the request-body producers whose streams have room again; tell the
        pool when the server allowed more streams (requests may be waiting for one)."""
        if self._paused:
            for writer in list(self._paused):
                if not writer.check_room():
                    self._paused.discard(writer)
        if not self._closing and getattr(self.driver.quic, "_close_event", None) is not None:
            # CONNECTION_CLOSE sent or received: QUIC ends the connection after its
            # closing or draining period (RFC 9000 §10.2), and takes nothing new now
            self._retire()
            return
        limit = self._stream_limit()
        if limit is not None and limit > self._limit_seen:
            self._limit_seen = limit
            if self.events is not None and self.available:
                self.events.connection_reusable(self)

    # -- responses ----------------------------------------------------------------------------------

    def _headers(self, event: h3events.HeadersReceived) -> None:
        sid = event.stream_id
        stream = self._streams.get(sid)
        if stream is None:
            return
        if stream.status:
            # trailers (RFC 9114 §4.1): not passed on; they may end the body
            if event.stream_ended:
                stream.end()
            return
        status = -1
        fields: list[tuple[str, str]] = []
        size = 0
        for name, value in event.headers:
            if name == b":status":
                try:
                    status = int(value)
                except ValueError:
                    status = -1
            elif name[:1] != b":":
                size += len(name) + len(value) + 4  # as "name: value\r\n" (RFC 9112 §5)
                fields.append((name.decode("latin-1"), value.decode("latin-1")))
        if not 100 <= status <= 999:
            self._malformed(stream, ProtocolError(f"malformed HTTP/3 response status on stream {sid}"))
        elif size > self.max_header_size:
            self._malformed(
                stream,
                ProtocolError(
                    f"response header block larger than max_response_header_size={self.max_header_size}"
                ),
            )
        elif status >= 200:
            stream.got_head(status, fields, event.stream_ended)
        # else: an interim response (RFC 9114 §4.1)

    def _malformed(self, stream: H3ClientStream, error: ProtocolError) -> None:
        """A malformed response: the request fails; the connection is not reused."""
        self._retire()
        stream.abort(error)

    def _data(self, event: h3events.DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None or not stream.status:
            return
        if event.data:
            stream.got_data(event.data)
        if event.stream_ended:
            stream.end()

    def _stop_sending(self, sid: int) -> None:
        """The server wants no more of the request body (RFC 9114 §4.1.1): the
        response may still come whole (an early 413, say)."""
        stream = self._streams.get(sid)
        if stream is not None and stream.writer is not None:
            self._paused.discard(stream.writer)
            stream.writer.abandon()

    def _reset_by_peer(self, sid: int, code: int) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            return
        if stream.writer is not None:
            self._paused.discard(stream.writer)
            stream.writer.lost()
        self.h3.forget(sid)
        if code == ErrorCode.H3_REQUEST_REJECTED and not stream.status:
            # RFC 9114 §4.1.1: not processed; safe to send again, whatever the method
            stream.retryable = stream.refused = True
            stream.fail(ConnectionLostError("the server rejected the request (H3_REQUEST_REJECTED)"))
        else:
            stream.fail(ConnectionLostError(f"the server reset the stream (error code {code:#x})"))

    # -- WriterOwner --------------------------------------------------------------------------------

    def writer_paused(self, writer: BodyWriter) -> None:
        """A request body paused its producer: check it after each send."""
        self._paused.add(writer)

    def writer_done(self, writer: BodyWriter) -> None:
        """A request body was sent (or reset)."""
        self._paused.discard(writer)

    # -- closing ------------------------------------------------------------------------------------

    def _retire(self) -> None:
        """Take no new requests (GOAWAY, a malformed response, ``close``): the pool
        forgets the connection, which closes once its requests ended."""
        self._closing = True
        self._tell_gone()
        self._maybe_close()

    def _tell_gone(self) -> None:
        if not self._gone:
            self._gone = True
            if self.events is not None:
                self.events.connection_gone(self)

    def _maybe_close(self) -> None:
        if self._closing and not self._streams and not self.driver.terminated:
            self.driver.close(error_code=ErrorCode.H3_NO_ERROR, reason="client closed")

    def __repr__(self) -> str:
        return f"<H3ClientConnection {self.driver!r} requests={len(self._streams)}>"


def _is_ip(host: str) -> int:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0


def connect_h3(
    host: str,
    port: int,
    server_name: str | None = None,
    ssl_context: Any = None,
    insecure: bool = False,
    connection_timeout: float | None = None,
    reactor: Any = None,
    clock: Any = None,
    max_header_size: int = DEFAULT_MAX_RESPONSE_HEADER_SIZE,
) -> Deferred[H3ClientConnection]:
    """Open an HTTP/3 connection to ``host:port``.

    :param server_name: for SNI and certificate checks (default ``host``).
    :param ssl_context: ``None`` (certifi's CAs) or :func:`aleph_tx.tls.client_context`.
    :param connection_timeout: seconds for name resolution plus the QUIC handshake.
    :param reactor: for the UDP port, name resolution and QUIC's own timers.
    :param clock: for ``connection_timeout`` only (``None``: ``reactor``).
    :param max_header_size: the response header block limit.
    :returns: fires with the connection once its handshake is done; fails with
        :class:`~aleph_tx.errors.ConnectionTimeout` or
        :class:`~aleph_tx.errors.ConnectionLostError`; cancelling it aborts the attempt.
    """
    try:
        config = client_configuration(server_name or host, ssl_context, insecure)
    except (TypeError, ValueError) as e:
        return fail(e)
    reactor = get_reactor(reactor)
    state: dict[str, Any] = {}

    def abort_attempt() -> None:
        conn = state.get("conn")
        if conn is not None:
            conn.driver.abort(reason="connection attempt abandoned")  # releases its UDP port

    def cancel(d: Deferred[H3ClientConnection]) -> None:
        d.errback(CancelledError())
        abort_attempt()

    result: Deferred[H3ClientConnection] = Deferred(cancel)

    def expire() -> None:
        if not result.called:
            result.errback(
                ConnectionTimeout(
                    f"the QUIC handshake with {host}:{port} took longer than connection_timeout={connection_timeout!r}"
                )
            )
            abort_attempt()

    arm_timeout(result, connection_timeout, expire, get_clock(clock or reactor))

    def start(address: str) -> None:
        if result.called:
            return
        endpoint = QuicEndpoint(config, None, clock=reactor)
        udp = reactor.listenUDP(0, endpoint, interface="::" if _is_ip(address) == 6 else "")
        driver = endpoint.connect((address, port))
        conn = state["conn"] = H3ClientConnection(driver, udp, max_header_size=max_header_size)
        driver.handler = conn
        conn.ready.addCallbacks(lambda _: None if result.called else result.callback(conn), failed)

    def failed(f: Failure) -> None:
        if not result.called:
            result.errback(f)

    if _is_ip(host):
        start(host)
    else:
        reactor.resolve(host).addCallbacks(start, failed)
    return result
