"""HTTP/3 server connections (RFC 9114) on aioquic, on a Twisted UDP port.

One :class:`H3ServerConnection` per QUIC connection (created by a
:class:`~aleph_tx.http._quic.endpoint.QuicEndpoint`, see :func:`listen_h3`). Each
request stream becomes a Ring request dict (``protocol`` ``"HTTP/3"``), built by
the same pure builder as every other front, and runs in an
:class:`~aleph_tx.http._server.exchange.Exchange` (the one handler runner: results,
``error_handler``, compression, ``continue_handler``, abandonment) whose sink is
the stream's :class:`ResponseSink`.

Backpressure, both ways, on QUIC flow control (RFC 9000 §4):

- request body: data goes into the body :class:`~aleph_tx.stream.Stream` through
  a :class:`~aleph_tx._receiver.Receiver`; while one of its puts is pending the
  stream's receive credit is held (no ``MAX_STREAM_DATA``), so a client stops
  once it used the window: memory per request stays below one window;
- response body: :meth:`ResponseSink.write` queues in aioquic's stream buffer;
  past :data:`~aleph_tx.http._quic.h3.HIGH_WATER` unsent bytes the registered producer (a
  :class:`~aleph_tx._adapter.Pump`) is paused, and resumed below
  :data:`~aleph_tx.http._quic.h3.LOW_WATER` once datagrams went out. A client that reads nothing stops
  extending our credit, nothing more is sent, the producer stays paused.

Limits answered here, before the handler: **414** (``:method`` + ``:path`` longer
than ``max_initial_line_length``), **431** (the decoded field section, counted as
HTTP/1.1 ``name: value\\r\\n`` lines, larger than ``max_header_size``), **413**
(``content-length`` or the bytes received past ``max_request_body_size``; once the
response has started, the stream is reset). :meth:`H3ServerConnection.graceful_close`
sends GOAWAY (RFC 9114 §5.2), lets the requests in flight finish, refuses newer
streams with ``H3_REQUEST_REJECTED`` and then closes the connection;
:meth:`H3ServerConnection.abort` cuts it. ``header_timeout``: a connection with no
request in flight for that long (from its start or the end of its last response)
is closed that way, after a **408** on each stream whose head was still arriving.
"""

from __future__ import annotations

import typing
from typing import Any

from aioquic.h3 import events as h3events
from aioquic.h3.connection import ErrorCode
from aioquic.quic import events as qevents
from twisted.logger import Logger

from aleph_tx._receiver import Receiver
from aleph_tx._time import Timer
from aleph_tx.http._quic.config import server_configuration
from aleph_tx.http._quic.endpoint import QuicDriver, QuicEndpoint, QuicPort, listen_quic
from aleph_tx.http._quic.h3 import CONNECTION_FIELDS, H3, BodyWriter, CreditProducer, WriterState
from aleph_tx.http._ring.limits import check_content_length, check_header_size, check_request_line
from aleph_tx.http._ring.request import build_request, headers_dict
from aleph_tx.http._ring.response import NO_BODY_STATUSES, http_date, status_line
from aleph_tx.http._server.exchange import Exchange, Runner
from aleph_tx.stream import Stream

__all__ = ["H3ServerConnection", "ResponseSink", "alt_svc", "listen_beside", "listen_h3"]

_log = Logger()


def alt_svc(port: int, max_age: int = 86400) -> str:
    """The ``alt-svc`` field value that advertises HTTP/3 on UDP ``port`` (RFC 7838 §3,
    RFC 9114 §3.1.1), for the server's HTTP/1.1 and HTTP/2 responses."""
    return f'h3=":{port}"; ma={max_age}'


class Tracker(typing.Protocol):
    """What connections report to (:class:`aleph_tx._server.Server`)."""

    def track(self, conn: Any) -> None: ...

    def untrack(self, conn: Any) -> None: ...


class ResponseSink(BodyWriter):
    """The response side of one request stream.

    ``start(status, header_lines)`` sends the head (``inform`` an interim 1xx
    before it); ``write``, ``finish``,
    ``abort``, ``on_lost`` and the ``IConsumer`` methods are
    :class:`~aleph_tx.http._quic.h3.BodyWriter`'s: a registered streaming
    producer is paused while the client does not read, and stopped (with the
    ``on_lost`` callbacks: the runner cancels the handler) if the client resets
    the stream or the connection goes away.
    """

    __slots__ = ()

    def start(self, status: int, header_lines: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        """Send the response head (``:status`` and the fields, names lower-cased).

        Connection-specific fields (RFC 9114 §4.2) are left out. No-op once lost.

        :raises RuntimeError: if the head was already sent.
        """
        if self.state is not WriterState.OPEN:
            if self.state is WriterState.ABORTED:
                return
            raise RuntimeError(f"response head already sent on stream {self.stream_id}")
        headers = [(b":status", b"%d" % status)]
        for name, value in header_lines:
            name = name.lower()
            if name not in CONNECTION_FIELDS:
                headers.append((name, value))
        self.state = WriterState.FINISHED if end_stream else WriterState.STARTED
        owner = self._owner
        owner.h3.send_headers(self.stream_id, headers, end_stream)
        owner.driver.transmit_soon()
        if end_stream:
            owner.writer_done(self)

    def inform(self, status: int, header_lines: list[tuple[bytes, bytes]] | None = None) -> None:
        """Send an interim (1xx) response before the head: ``100`` for
        ``expect: 100-continue``, ``103`` Early Hints (RFC 9114 §4.1). No-op once the head went."""
        if not 100 <= status < 200 or status == 101:
            raise ValueError(f"an interim response status is 100, 102 or 103..199, not {status!r}")
        if self.state is not WriterState.OPEN:
            return
        head = [(b":status", b"%d" % status)]
        head += [(n.lower(), v) for n, v in header_lines or () if n.lower() not in CONNECTION_FIELDS]
        owner = self._owner
        owner.h3.send_headers(self.stream_id, head)
        owner.driver.transmit_soon()

    # -- the exchange's sink (aleph_tx.http._server.exchange.ResponseSink) ---------------

    def respond_whole(
        self, ex: Exchange, status: int, lines: list[bytes], seen: dict[str, str], body: bytes
    ) -> None:
        """The head, ``content-length`` and the body, then the end of the stream."""
        fields = _fields(lines, seen)
        if status not in NO_BODY_STATUSES:
            length = len(body)
            declared = seen.get("content-length")
            if ex.head and not body and declared is not None and declared.isdigit():
                length = int(declared)
            fields.append((b"content-length", b"%d" % length))
        send = body if body and not ex.head and status not in NO_BODY_STATUSES else b""
        self.start(status, fields, end_stream=not send)
        if send:
            self.write(send)
            self.finish()

    def respond_head(
        self, ex: Exchange, status: int, lines: list[bytes], seen: dict[str, str], length: int | None
    ) -> bool:
        """The head of a streamed body; ``False`` (stream ended) when no body goes out."""
        fields = _fields(lines, seen)
        if length is not None and status not in NO_BODY_STATUSES:
            fields.append((b"content-length", b"%d" % length))
        if ex.head or status in NO_BODY_STATUSES:
            self.start(status, fields, end_stream=True)
            return False
        self.start(status, fields)
        return True

    def respond_error(self, ex: Exchange, status: int) -> None:
        """A plain-text error, then the end of the stream (reset if the head went out)."""
        if self.state is not WriterState.OPEN:
            self.abort()
            return
        text = status_line(status).split(b" ", 2)[2].strip()  # the reason phrase, as HTTP/1.1's
        head = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(text))]
        self.start(status, _fields([], {}) + head)
        self.write(text)
        self.finish()

    def send_continue(self, ex: Exchange) -> None:
        """``100 Continue`` (RFC 9110 §10.1.1) as an interim response."""
        self.inform(100)

    def body_done(self, ex: Exchange, complete: bool) -> None:
        """The body is over: end the stream (reset it if shorter than announced)."""
        if complete:
            self.finish()
        else:
            self.abort()

    def body_failed(self, ex: Exchange) -> None:
        """The body failed after the head: reset the stream."""
        self.abort()

    def refuse(self, status: int) -> None:
        """Take the response over from the runner: it is told first (``on_lost``), then
        the stream answers ``status`` with an empty body; reset if the head was sent."""
        if self.state is not WriterState.OPEN:
            self.abort()
            return
        self.abandon()
        owner = self._owner
        head = [(b":status", b"%d" % status), (b"content-length", b"0")]
        owner.h3.send_headers(self.stream_id, head, end_stream=True)
        owner.driver.transmit_soon()
        owner.writer_done(self)


def _fields(lines: list[bytes], seen: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """``name: value\\r\\n`` header lines (validated by the exchange) as HTTP/3
    fields, with ``date`` unless the handler gave one (RFC 9110 §6.6.1)."""
    fields = []
    for line in lines:
        name, _, value = line[:-2].partition(b": ")
        fields.append((name, value))
    if "date" not in seen:
        fields.append((b"date", http_date()))
    return fields


class _Request:
    """One request stream: its body's receiving half and its response sink."""

    __slots__ = ("batch", "body", "exchange", "length", "received", "receiver", "sink")

    def __init__(self, sink: ResponseSink) -> None:
        self.sink = sink
        self.body: Stream | None = None
        self.receiver: Receiver | None = None
        self.length: int | None = None
        self.received = 0
        self.batch: list[bytes] | None = None  # body bytes of this reactor turn
        self.exchange: Exchange | None = None


def _flush(req: _Request) -> None:
    batch, req.batch = req.batch, None
    if batch and req.receiver is not None:
        req.receiver.write(batch[0] if len(batch) == 1 else b"".join(batch))


class H3ServerConnection:
    """One HTTP/3 connection of the server (a ``ConnectionHandler`` of its QUIC driver).

    :param driver: the QUIC connection.
    :param run: the handler runner.
    :param server_port: for the request's ``server_port``.
    :param tracker: a :class:`aleph_tx._server.Server` (``track``/``untrack``), or ``None``.
    """

    def __init__(
        self,
        driver: QuicDriver,
        runner: Runner,
        server_port: int,
        tracker: Tracker | None = None,
    ) -> None:
        self.driver = driver
        self.h3 = H3(driver.quic)
        self._runner = runner
        self._port = server_port
        self._tracker = tracker
        options = runner.options
        self._max_body = options.max_request_body_size
        self._max_header = options.max_header_size
        self._max_line = options.max_initial_line_length
        header_timeout = options.header_timeout
        self._requests: dict[int, _Request] = {}
        self._paused: set[BodyWriter] = set()
        self._batched: list[_Request] = []
        self._next_stream = 0  # the lowest client stream ID not seen yet
        self._goaway: int | None = None
        self._closing = False  # CONNECTION_CLOSE sent
        # header_timeout: armed while no request is in flight (from the connection's
        # start, then from the end of the last response)
        self._head_timer = Timer(header_timeout, self._head_timeout, driver.clock)
        self._head_timer.start()
        if tracker is not None:
            tracker.track(self)

    # -- ConnectionHandler ---------------------------------------------------------------------

    def quic_event_received(self, event: qevents.QuicEvent) -> None:
        """Hand the event to HTTP/3 and act on what it makes of it."""
        kind = type(event)
        if kind is qevents.StreamReset or kind is qevents.StopSendingReceived:
            self._stream_lost(event.stream_id)  # type: ignore[attr-defined]
        self.h3.dispatch(event, self)

    def connection_terminated(self, event: qevents.ConnectionTerminated) -> None:
        """Every open stream is lost; the tracker forgets this connection."""
        self._head_timer.stop()
        requests, self._requests = self._requests, {}
        self._paused.clear()
        for req in requests.values():
            req.sink.lost()
            self._drop_body(req)
        if self._tracker is not None:
            self._tracker.untrack(self)

    def transmitting(self) -> None:
        """Put the body bytes received this turn into the body streams (one put per
        stream and turn, not one per QUIC packet)."""
        if self._batched:
            batched, self._batched = self._batched, []
            for req in batched:
                _flush(req)

    def transmitted(self) -> None:
        """Resume the response producers whose streams have room again."""
        if self._paused:
            for sink in list(self._paused):
                if not sink.check_room():
                    self._paused.discard(sink)
        if self._goaway is not None and not self._closing:
            self._maybe_close()

    # -- requests ----------------------------------------------------------------------------

    def headers_received(self, event: h3events.HeadersReceived) -> None:
        """A request head (or trailers) arrived: answer a limit, or run the handler."""
        sid = event.stream_id
        req = self._requests.get(sid)
        if req is not None:
            # trailers (RFC 9114 §4.1): not passed on; they may end the body
            if event.stream_ended and req.receiver is not None:
                _flush(req)
                req.receiver.finish()
            return
        if sid >= self._next_stream:
            self._next_stream = sid + 4
        if self._goaway is not None and sid >= self._goaway:
            self._refuse_stream(sid, ErrorCode.H3_REQUEST_REJECTED)
            return
        sink = ResponseSink(self, sid)
        req = _Request(sink)
        if not self._requests:
            self._head_timer.stop()
        self._requests[sid] = req
        method = path = authority = b""
        fields: list[tuple[bytes, bytes]] = []
        cookies: list[bytes] = []
        size = 0
        for name, value in event.headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            size += len(name) + len(value) + 4  # as "name: value\r\n" (RFC 9112 §5)
            if name == b"cookie":
                cookies.append(value)  # RFC 9114 §4.2.1: split cookies join with "; "
            else:
                fields.append((name, value))
        status = check_request_line(len(method), len(path), self._max_line) or check_header_size(
            size, self._max_header
        )
        if status is not None:
            self._answer(req, status, event.stream_ended)
            return
        if cookies:
            fields.append((b"cookie", b"; ".join(cookies)))
        headers = headers_dict(fields)
        if "host" not in headers and authority:
            headers["host"] = authority.decode("latin-1")  # RFC 9114 §4.3.1
        length = headers.get("content-length")
        if length is not None:
            try:
                req.length = int(length)
            except ValueError:
                req.length = None
            if check_content_length(req.length, 0, self._max_body) is not None:
                self._answer(req, 413, event.stream_ended)
                return
        if not event.stream_ended and req.length != 0:
            body = req.body = Stream()
            req.receiver = Receiver(body.put, body.close, CreditProducer(self.driver, sid))
            self.driver.quic.flow(sid)
        elif not event.stream_ended:
            self._stop_reading(sid)
        peer = self.driver.peer_address
        request = build_request(
            method.decode("latin-1"),
            path,
            headers,
            req.body,
            scheme="https",
            server_name="localhost",
            server_port=self._port,
            remote_addr=str(peer[0]) if peer else "",
            protocol="HTTP/3",
            keep_alive=True,
        )
        ex = req.exchange = Exchange(self._runner, sink, request, req.body)
        ex.head = method == b"HEAD"
        ex.expect = req.body is not None and headers.get("expect", "").lower() == "100-continue"
        sink.on_lost(ex.abandon)
        ex.run()

    def data_received(self, event: h3events.DataReceived) -> None:
        """Request body bytes (or the end of the body) arrived."""
        req = self._requests.get(event.stream_id)
        if req is None or req.receiver is None:
            return
        data = event.data
        if data:
            req.received += len(data)
            if self._max_body is not None and req.received > self._max_body:
                self._too_large(req)
                return
            if req.batch is None:
                req.batch = [data]
                self._batched.append(req)
            else:
                req.batch.append(data)
        if event.stream_ended:
            _flush(req)
            if req.receiver is not None:
                req.receiver.finish()

    def _too_large(self, req: _Request) -> None:
        """413 while the body streams: the handler is cancelled before its body closes;
        the stream is reset instead if the response had started."""
        self._drop_body(req)
        if req.exchange is not None:
            req.exchange.interrupt(413)
        else:
            req.sink.refuse(413)

    def _answer(self, req: _Request, status: int, ended: bool) -> None:
        """Answer ``status`` with an empty body from here; stop reading the request unless ``ended``."""
        sink = req.sink
        sink.start(status, [(b"content-length", b"0")])
        sink.finish()
        if not ended:
            self._stop_reading(sink.stream_id)

    def _refuse_stream(self, sid: int, code: int) -> None:
        quic = self.driver.quic
        quic.reset_stream(sid, code)
        self._stop_reading(sid, code)
        self.h3.forget(sid)
        self.driver.transmit_soon()

    def _stop_reading(self, sid: int, code: int = ErrorCode.H3_NO_ERROR) -> None:
        # RFC 9114 §4.1.1: once the response is complete, the rest of the request
        # may be refused with STOP_SENDING(H3_NO_ERROR)
        try:
            self.driver.quic.stop_stream(sid, code)
        except ValueError:
            pass

    def _stream_lost(self, sid: int) -> None:
        req = self._requests.pop(sid, None)
        if req is not None:
            self._paused.discard(req.sink)
            req.sink.lost()
            self._drop_body(req)
            self._maybe_close()

    def _drop_body(self, req: _Request) -> None:
        receiver, req.receiver = req.receiver, None
        body = req.body
        if receiver is not None and not receiver.finished and body is not None:
            body._drop()
            self.driver.quic.hold(req.sink.stream_id)

    # -- WriterOwner ------------------------------------------------------------------------------

    def writer_paused(self, writer: BodyWriter) -> None:
        """A response paused its producer: check it after each send."""
        self._paused.add(writer)

    def writer_done(self, writer: BodyWriter) -> None:
        """The response ended (finished or reset): forget the request; stop its unread body."""
        self._paused.discard(writer)
        sid = writer.stream_id
        req = self._requests.pop(sid, None)
        if req is not None and req.receiver is not None and not req.receiver.finished:
            self._stop_reading(sid)
            self._drop_body(req)
        self._maybe_close()

    # -- closing ----------------------------------------------------------------------------------

    def graceful_close(self) -> None:
        """GOAWAY now; close once the requests already received have their responses."""
        self._head_timer.stop()
        if self._goaway is None and not self.driver.terminated:
            self._goaway = self._next_stream
            self.h3.send_goaway(self._goaway)
            self.driver.transmit_soon()  # the close follows once GOAWAY is acknowledged

    def abort(self) -> None:
        """Cut the connection now (CONNECTION_CLOSE, state forgotten)."""
        self.driver.abort(error_code=ErrorCode.H3_NO_ERROR, reason="server shutdown")

    def _head_timeout(self) -> None:
        """No request head within ``header_timeout``: 408 on the streams whose head is
        still coming, then close (silently, with GOAWAY, if none was)."""
        for sid in self.h3.partial_requests():
            try:
                head = [(b":status", b"408"), (b"content-length", b"0")]
                self.h3.send_headers(sid, head, end_stream=True)
            except Exception:  # the stream cannot take a head now: cut it
                self.driver.quic.reset_stream(sid, ErrorCode.H3_REQUEST_INCOMPLETE)
            self._stop_reading(sid, ErrorCode.H3_REQUEST_INCOMPLETE)
            self.h3.forget(sid)
        self.graceful_close()

    def _maybe_close(self) -> None:
        if not self._requests and self._goaway is None and not self.driver.terminated:
            self._head_timer.start()
        # after GOAWAY, once every response was sent and acknowledged (a CONNECTION_CLOSE
        # would end what is still unsent, RFC 9000 §10.2)
        driver = self.driver
        if (
            self._goaway is not None
            and not self._closing
            and not self._requests
            and not driver.terminated
            and driver.quic.sends_done()
        ):
            self._closing = True
            driver.close(error_code=ErrorCode.H3_NO_ERROR, reason="server shutdown")

    def __repr__(self) -> str:
        return f"<H3ServerConnection {self.driver!r} requests={len(self._requests)}>"


def listen_h3(
    runner: Runner,
    configuration: Any,
    port: int = 0,
    interface: str = "",
    tracker: Tracker | None = None,
    reactor: Any = None,
    retry: bool = False,
    reuse_port: bool = False,
) -> QuicPort:
    """Serve HTTP/3 on a new UDP port.

    :param runner: the server's handler runner (its options give the limits and
        ``header_timeout``; its clock drives the QUIC timers).
    :param configuration: a server ``QuicConfiguration``
        (:func:`aleph_tx.http._quic.config.server_configuration`).
    :param port: the UDP port (normally the TCP port of the server's TLS listener).
    :param tracker: the :class:`aleph_tx._server.Server` that tracks connections;
        it may also be set later as the returned port's ``tracker`` (the Server is
        made from its ports).
    :param retry: validate client addresses with a Retry first (RFC 9000 §8.1.2).
    :param reuse_port: bind with ``SO_REUSEPORT`` (``--workers``; docs/http3.rst).
    :returns: the listening port (its ``stopListening`` waits for open connections).
    :raises twisted.internet.error.CannotListenError: if the port cannot be bound.
    """
    holder: list[QuicPort] = []

    def accept(driver: QuicDriver) -> H3ServerConnection:
        quic_port = holder[0]
        return H3ServerConnection(driver, runner, int(quic_port.getHost().port), quic_port.tracker)

    endpoint = QuicEndpoint(configuration, accept, retry=retry, clock=runner.clock)
    quic_port = listen_quic(
        endpoint, port, interface, reactor if reactor is not None else runner.reactor, reuse_port=reuse_port
    )
    quic_port.tracker = tracker
    holder.append(quic_port)
    return quic_port


def listen_beside(
    runner: Runner,
    tls_options: Any,
    port: int,
    interface: str = "",
    reactor: Any = None,
    reuse_port: bool = False,
) -> QuicPort:
    """HTTP/3 on UDP ``port``, beside a TLS listener on the same TCP port, with its certificate.

    :param tls_options: the listener's ``CertificateOptions`` (``ssl_context``, or the
        one an ``ssl:`` description made).
    :raises ValueError: for TLS options that do not give their certificate and key.
    :raises twisted.internet.error.CannotListenError: if the UDP port cannot be bound.
    """
    config = server_configuration(tls_options, idle_timeout=runner.options.idle_timeout)
    return listen_h3(runner, config, port, interface, reactor=reactor, reuse_port=reuse_port)
