"""HTTP/3 client connections (RFC 9114) on aioquic, on a Twisted UDP port.

:func:`connect_h3` opens one QUIC connection (its own UDP port) and fires with an
:class:`H3ClientConnection` once the handshake is done, or fails with
:class:`~aleph_tx.errors.ConnectionTimeout` past ``connection_timeout`` (name
resolution plus the QUIC handshake) or :class:`~aleph_tx.errors.ConnectionLostError`.
Requests are multiplexed on it: :meth:`H3ClientConnection.request` fires with the
response head as a dict, whose ``body`` is a :class:`~aleph_tx.stream.Stream` of
``bytes`` with backpressure (while a put into it is pending the stream's receive
credit is held, so the server stops sending that response; the other streams go
on). ``ended`` in that dict fires ``None`` once the whole body arrived, or fails
with :class:`~aleph_tx.errors.ConnectionLostError` if the server reset the stream
or the connection died (the body stream is then closed short).

Cancelling the request's Deferred, or closing the body stream before its end,
resets the stream (``H3_REQUEST_CANCELLED``) and stops reading it; the connection
and its other requests go on. After the server's GOAWAY the connection takes no
new requests (:attr:`H3ClientConnection.available`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any

from aioquic.h3 import events as h3events
from aioquic.h3.connection import ErrorCode
from aioquic.quic import events as qevents
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from aleph_tx._adapter import Receiver
from aleph_tx._chunks import ChunkSource
from aleph_tx._pump import Pump
from aleph_tx._time import arm_timeout, get_clock, get_reactor
from aleph_tx.errors import ConnectionLostError, ConnectionTimeout, ProtocolError
from aleph_tx.http._quic.config import client_configuration
from aleph_tx.http._quic.endpoint import QuicDriver, QuicEndpoint
from aleph_tx.http._quic.h3 import CONNECTION_FIELDS, H3, BodyWriter, CreditProducer, WriterState
from aleph_tx.http._ring.request import headers_dict
from aleph_tx.stream import Stream

__all__ = ["AltService", "H3ClientConnection", "connect_h3", "parse_alt_svc"]

#: Request fields that HTTP/3 carries as pseudo-headers or forbids (RFC 9114 §4.2, §4.3.1).
_DROP_FIELDS = CONNECTION_FIELDS | {b"host", b"te"}


class _BodySink:
    """A Pump's sink for a request body: the stream's BodyWriter."""

    __slots__ = ("writer",)

    def __init__(self, writer: BodyWriter) -> None:
        self.writer = writer

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def pump_done(self) -> None:
        self.writer.unregisterProducer()
        self.writer.finish()

    def pump_failed(self, failure: Failure) -> None:
        self.writer.unregisterProducer()
        self.writer.abort(ErrorCode.H3_REQUEST_CANCELLED)


class _Exchange:
    """One request stream."""

    __slots__ = ("batch", "body", "ended", "head", "receiver", "response", "writer")

    def __init__(self, response: Deferred[dict[str, Any]]) -> None:
        self.response = response
        self.head = False
        self.body: Stream | None = None
        self.receiver: Receiver | None = None
        self.ended: Deferred[None] = Deferred()
        self.writer: BodyWriter | None = None
        self.batch: list[bytes] | None = None  # body bytes of this reactor turn

    def flush(self) -> None:
        batch, self.batch = self.batch, None
        if batch and self.receiver is not None:
            self.receiver.write(batch[0] if len(batch) == 1 else b"".join(batch))


class H3ClientConnection:
    """One HTTP/3 connection of the client (a ``ConnectionHandler`` of its QUIC driver).

    :ivar ready: fires ``None`` once the handshake is done; fails if the connection
        ends first.
    """

    def __init__(self, driver: QuicDriver, udp_port: Any = None) -> None:
        self.driver = driver
        self.h3 = H3(driver.quic)
        self.ready: Deferred[None] = Deferred()
        self._udp_port = udp_port
        self._exchanges: dict[int, _Exchange] = {}
        self._paused: set[BodyWriter] = set()
        self._batched: list[_Exchange] = []
        self._closing = False
        self.lost_reason: str | None = None

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
        return len(self._exchanges)

    # -- requests ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        authority: str,
        path: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | ChunkSource | None = None,
        scheme: str = "https",
    ) -> Deferred[dict[str, Any]]:
        """Send a request; fires with ``{"status", "headers", "body", "ended"}``.

        :param authority: ``host[:port]`` (the ``:authority`` pseudo-header).
        :param path: the request target (``/path?query``).
        :param headers: ``(name, value)`` fields; connection-specific ones and
            ``host`` are left out (RFC 9114 §4.2).
        :param body: ``bytes``, or a :class:`~aleph_tx._chunks.ChunkSource` sent with
            backpressure.
        :returns: fails with :class:`~aleph_tx.errors.ConnectionLostError` if the
            connection cannot take the request or is lost before the response head,
            :class:`~aleph_tx.errors.ProtocolError` for a malformed response;
            cancelling it resets the stream.
        """
        if not self.available:
            return fail(ConnectionLostError("the HTTP/3 connection takes no new requests"))
        quic = self.driver.quic
        sid = quic.get_next_available_stream_id()
        fields = [
            (b":method", method.upper().encode("ascii")),
            (b":scheme", scheme.encode("ascii")),
            (b":authority", authority.encode("idna")),
            (b":path", path.encode("latin-1") or b"/"),
        ]
        for name, value in headers or ():
            name = name.lower()
            if name not in _DROP_FIELDS:
                fields.append((name, value))
        d: Deferred[dict[str, Any]] = Deferred(lambda _: self._cancel(sid))
        ex = _Exchange(d)
        self._exchanges[sid] = ex
        no_body = body is None or body == b""
        self.h3.send_headers(sid, fields, end_stream=no_body)
        if isinstance(body, (bytes, bytearray, memoryview)) and body:
            self.h3.send_data(sid, bytes(body), end_stream=True)
        elif isinstance(body, ChunkSource):
            writer = ex.writer = BodyWriter(self, sid, WriterState.STARTED)
            pump = Pump(body, _BodySink(writer), self.driver.clock)
            writer.registerProducer(pump, True)
            pump.start()
        self.driver.transmit_soon()
        return d

    def _cancel(self, sid: int) -> None:
        ex = self._exchanges.pop(sid, None)
        if ex is None:
            return
        self._stop(sid, ex)
        self._end_body(ex, ConnectionLostError("the request was cancelled"))

    def _stop(self, sid: int, ex: _Exchange) -> None:
        """Reset our side and stop reading theirs (H3_REQUEST_CANCELLED, RFC 9114 §4.1.1)."""
        quic = self.driver.quic
        writer = ex.writer
        if writer is not None:
            self._paused.discard(writer)
            writer.abandon()
        quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
        try:
            quic.stop_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
        except ValueError:
            pass
        quic.hold(sid)
        self.h3.forget(sid)
        self.driver.transmit_soon()

    # -- ConnectionHandler ---------------------------------------------------------------------

    def quic_event_received(self, event: qevents.QuicEvent) -> None:
        """Hand the event to HTTP/3 and act on what it makes of it."""
        kind = type(event)
        if kind is qevents.HandshakeCompleted:
            if not self.ready.called:
                self.ready.callback(None)
        elif kind is qevents.StreamReset:
            self._stream_lost(event.stream_id, "the server reset the stream")  # type: ignore[attr-defined]
        elif kind is qevents.StopSendingReceived:
            self._stop_sending(event.stream_id)  # type: ignore[attr-defined]
        for h3event in self.h3.handle_event(event):
            h3kind = type(h3event)
            if h3kind is h3events.DataReceived:
                self._data(h3event)  # type: ignore[arg-type]
            elif h3kind is h3events.HeadersReceived:
                self._headers(h3event)  # type: ignore[arg-type]

    def connection_terminated(self, event: qevents.ConnectionTerminated) -> None:
        """Every open request fails; the UDP port is released."""
        reason = event.reason_phrase or f"error code {event.error_code:#x}"
        self.lost_reason = f"the HTTP/3 connection was closed ({reason})"
        if not self.ready.called:
            self.ready.errback(ConnectionLostError(self.lost_reason))
        exchanges, self._exchanges = self._exchanges, {}
        self._paused.clear()
        for ex in exchanges.values():
            if ex.writer is not None:
                ex.writer.lost()
            self._fail(ex, self.lost_reason)
        if self._udp_port is not None:
            port, self._udp_port = self._udp_port, None
            port.stopListening()

    def transmitting(self) -> None:
        """Put the body bytes received this turn into the body streams (one put per
        stream and turn, not one per QUIC packet)."""
        if self._batched:
            batched, self._batched = self._batched, []
            for ex in batched:
                ex.flush()

    def transmitted(self) -> None:
        """Resume the request-body producers whose streams have room again."""
        if self._paused:
            for writer in list(self._paused):
                if not writer.check_room():
                    self._paused.discard(writer)

    # -- responses ----------------------------------------------------------------------------------

    def _headers(self, event: h3events.HeadersReceived) -> None:
        sid = event.stream_id
        ex = self._exchanges.get(sid)
        if ex is None:
            return
        if ex.head:
            # trailers (RFC 9114 §4.1): not passed on; they may end the body
            if event.stream_ended:
                self._finished(sid, ex)
            return
        status = -1
        fields: list[tuple[bytes, bytes]] = []
        for name, value in event.headers:
            if name == b":status":
                try:
                    status = int(value)
                except ValueError:
                    status = -1
            elif name[:1] != b":":
                fields.append((name, value))
        if not 100 <= status <= 999:
            self._exchanges.pop(sid, None)
            self._stop(sid, ex)
            ex.response.errback(ProtocolError(f"malformed HTTP/3 response status on stream {sid}"))
            return
        if status < 200:
            return  # interim response (RFC 9114 §4.1)
        ex.head = True
        body = ex.body = Stream()
        if event.stream_ended:
            body.close()
        else:
            ex.receiver = Receiver(body.put, body.close, CreditProducer(self.driver, sid))
            self.driver.quic.flow(sid)
            body.on_closed(lambda: self._body_closed(sid))
        response = {"status": status, "headers": headers_dict(fields), "body": body, "ended": ex.ended}
        if event.stream_ended:
            self._finished(sid, ex)
        ex.response.callback(response)

    def _data(self, event: h3events.DataReceived) -> None:
        sid = event.stream_id
        ex = self._exchanges.get(sid)
        if ex is None or ex.receiver is None:
            return
        data = event.data
        if data:
            if ex.batch is None:
                ex.batch = [data]
                self._batched.append(ex)
            else:
                ex.batch.append(data)
        if event.stream_ended:
            self._finished(sid, ex)

    def _finished(self, sid: int, ex: _Exchange) -> None:
        """The response body arrived whole."""
        self._exchanges.pop(sid, None)
        writer = ex.writer
        if writer is not None and writer.state is WriterState.STARTED:
            # RFC 9114 §4.1.1: a complete response ends the request; stop sending its body
            self._paused.discard(writer)
            writer.abort(ErrorCode.H3_NO_ERROR)
        ex.flush()
        receiver, ex.receiver = ex.receiver, None
        if receiver is not None:
            receiver.finish()
        if not ex.ended.called:
            ex.ended.callback(None)
        self._maybe_close()

    def _body_closed(self, sid: int) -> None:
        ex = self._exchanges.get(sid)
        if ex is not None and ex.receiver is not None and not ex.receiver.finished:
            # the user closed the body before its end: stop the stream
            self._exchanges.pop(sid, None)
            ex.receiver = None
            self._stop(sid, ex)
            self._end_body(ex, ConnectionLostError("the response body was closed before its end"))

    def _stop_sending(self, sid: int) -> None:
        """The server wants no more of the request body (RFC 9114 §4.1.1): the
        response may still come whole (an early 413, say)."""
        ex = self._exchanges.get(sid)
        if ex is not None and ex.writer is not None:
            self._paused.discard(ex.writer)
            ex.writer.abandon()

    def _stream_lost(self, sid: int, why: str) -> None:
        ex = self._exchanges.pop(sid, None)
        if ex is None:
            return
        if ex.writer is not None:
            self._paused.discard(ex.writer)
            ex.writer.lost()
        self.h3.forget(sid)
        self._fail(ex, why)
        self._maybe_close()

    def _fail(self, ex: _Exchange, why: str) -> None:
        if not ex.response.called:
            ex.response.errback(ConnectionLostError(why))
        else:
            self._end_body(ex, ConnectionLostError(why))

    def _end_body(self, ex: _Exchange, error: Exception) -> None:
        receiver, ex.receiver = ex.receiver, None
        if receiver is not None and ex.body is not None:
            ex.body._drop()
        if not ex.ended.called:
            ex.ended.errback(error)

    # -- WriterOwner --------------------------------------------------------------------------------

    def writer_paused(self, writer: BodyWriter) -> None:
        """A request body paused its producer: check it after each send."""
        self._paused.add(writer)

    def writer_done(self, writer: BodyWriter) -> None:
        """A request body was sent (or reset)."""
        self._paused.discard(writer)
        ex = self._exchanges.get(writer.stream_id)
        if ex is not None and writer.state is WriterState.ABORTED:
            self._exchanges.pop(writer.stream_id, None)
            self._stop(writer.stream_id, ex)
            self._fail(ex, "the request body failed")

    # -- closing ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Take no new requests; close once the ones in flight have ended."""
        self._closing = True
        self._maybe_close()

    def abort(self) -> None:
        """Cut the connection now: requests in flight fail."""
        self.driver.abort(error_code=ErrorCode.H3_NO_ERROR, reason="client closed")

    def _maybe_close(self) -> None:
        if self._closing and not self._exchanges and not self.driver.terminated:
            self.driver.close(error_code=ErrorCode.H3_NO_ERROR, reason="client closed")

    def __repr__(self) -> str:
        return f"<H3ClientConnection {self.driver!r} requests={len(self._exchanges)}>"


@dataclasses.dataclass(frozen=True, slots=True)
class AltService:
    """One HTTP/3 alternative of an ``alt-svc`` field (RFC 7838 §3).

    :ivar host: the alternative host (``""``: the origin's own host).
    :ivar port: its UDP port.
    :ivar max_age: seconds it may be remembered (``ma``, default 86400).
    """

    host: str
    port: int
    max_age: int = 86400


_ALT_SVC = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)="([^"]*)"((?:\s*;\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+=(?:"[^"]*"|[^,;\s]*))*)\s*(?:,|$)"""
)
_PARAM = re.compile(r"""\s*;\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=(?:"([^"]*)"|([^,;\s]*))""")


def parse_alt_svc(value: str) -> list[AltService] | None:
    """The ``h3`` alternatives an ``alt-svc`` response field offers, in its order.

    :returns: ``None`` for ``clear`` (forget the alternatives of this origin, RFC 7838
        §3); otherwise the ``h3`` entries (other protocols, such as ``h3-29`` or
        ``h2``, and malformed entries are skipped).
    """
    if value.strip() == "clear":
        return None
    found: list[AltService] = []
    for match in _ALT_SVC.finditer(value):
        protocol, authority, params = match.groups()
        if protocol != "h3":
            continue
        host, sep, port_text = authority.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            continue
        max_age = 86400
        for name, quoted, plain in _PARAM.findall(params):
            text = quoted if quoted else plain
            if name == "ma" and text.isdigit():
                max_age = int(text)
        found.append(AltService(host.strip("[]"), int(port_text), max_age))
    return found


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
) -> Deferred[H3ClientConnection]:
    """Open an HTTP/3 connection to ``host:port``.

    :param server_name: for SNI and certificate checks (default ``host``).
    :param ssl_context: ``None`` (certifi's CAs) or :func:`aleph_tx.tls.client_context`.
    :param connection_timeout: seconds for name resolution plus the QUIC handshake.
    :returns: fires with the connection once its handshake is done; fails with
        :class:`~aleph_tx.errors.ConnectionTimeout` or
        :class:`~aleph_tx.errors.ConnectionLostError`; cancelling it aborts the attempt.
    """
    try:
        config = client_configuration(server_name or host, ssl_context, insecure)
    except (TypeError, ValueError) as e:
        return fail(e)
    reactor = get_reactor(reactor)
    clock = get_clock(clock or reactor)
    state: dict[str, Any] = {}

    def abort_attempt() -> None:
        conn = state.get("conn")
        if conn is not None:
            conn.driver.abort(reason="connection attempt abandoned")  # releases its UDP port

    result: Deferred[H3ClientConnection] = Deferred(lambda _: abort_attempt())

    def expire() -> None:
        if not result.called:
            result.errback(ConnectionTimeout(f"HTTP/3 connection to {host}:{port} timed out"))
            abort_attempt()

    arm_timeout(result, connection_timeout, expire, clock)

    def start(address: str) -> None:
        if result.called:
            return
        endpoint = QuicEndpoint(config, None, clock=clock)
        udp = reactor.listenUDP(0, endpoint, interface="::" if _is_ip(address) == 6 else "")
        driver = endpoint.connect((address, port))
        conn = state["conn"] = H3ClientConnection(driver, udp)
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
