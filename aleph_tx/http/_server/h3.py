"""HTTP/3 server connections (RFC 9114) on aioquic, on a Twisted UDP port.

One :class:`H3ServerConnection` per QUIC connection (created by a
:class:`~aleph_tx.http._quic.endpoint.QuicEndpoint`, see :func:`listen_h3`). Each
request stream becomes a Ring request dict (``protocol`` ``"HTTP/3"``), built by
the same pure builder as every other front, and is handed with its
:class:`ResponseSink` to the handler runner: ``run(request, sink)``.

Backpressure, both ways, on QUIC flow control (RFC 9000 §4):

- request body: data goes into the body :class:`~aleph_tx.stream.Stream` through
  a :class:`~aleph_tx._adapter.Receiver`; while one of its puts is pending the
  stream's receive credit is held (no ``MAX_STREAM_DATA``), so a client stops
  once it used the window: memory per request stays below one window;
- response body: :meth:`ResponseSink.write` queues in aioquic's stream buffer;
  past :data:`HIGH_WATER` unsent bytes the registered producer (a
  :class:`~aleph_tx._adapter.Pump`) is paused, and resumed below
  :data:`LOW_WATER` once datagrams went out. A client that reads nothing stops
  extending our credit, nothing more is sent, the producer stays paused.

Limits answered here, before the handler: **414** (``:method`` + ``:path`` longer
than ``max_initial_line_length``), **431** (the decoded field section, counted as
HTTP/1.1 ``name: value\\r\\n`` lines, larger than ``max_header_size``), **413**
(``content-length`` or the bytes received past ``max_request_body_size``; once the
response has started, the stream is reset). :meth:`H3ServerConnection.graceful_close`
sends GOAWAY (RFC 9114 §5.2), lets the requests in flight finish, refuses newer
streams with ``H3_REQUEST_REJECTED`` and then closes the connection;
:meth:`H3ServerConnection.abort` cuts it.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable
from typing import Any

from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3events
from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.quic import events as qevents
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from aleph_tx._adapter import Receiver
from aleph_tx.http._limits import check_content_length, check_header_size, check_request_line
from aleph_tx.http._quic.endpoint import QuicDriver, QuicEndpoint, QuicPort, listen_quic
from aleph_tx.http._ring import build_request, headers_dict
from aleph_tx.stream import Stream

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "H3ServerConnection",
    "ResponseSink",
    "Runner",
    "SinkState",
    "listen_h3",
]

_log = Logger()

#: Unsent response bytes per stream above which the body's producer is paused.
HIGH_WATER = 1 << 20
#: ... and below which it is resumed (after datagrams went out).
LOW_WATER = 256 << 10

#: RFC 9114 §4.2: connection-specific fields are malformed in HTTP/3.
_CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class Runner(typing.Protocol):
    """The handler runner: runs the handler for ``request`` and answers through ``sink``."""

    def __call__(self, request: dict[str, Any], sink: ResponseSink) -> object: ...


class Tracker(typing.Protocol):
    """What connections report to (:class:`aleph_tx._server.Server`)."""

    def track(self, conn: Any) -> None: ...

    def untrack(self, conn: Any) -> None: ...


class _H3(H3Connection):
    """aioquic's ``H3Connection`` plus GOAWAY sending and stream forgetting."""

    goaway_received = False

    def send_goaway(self, stream_id: int) -> None:
        """Send GOAWAY (RFC 9114 §5.2, §7.2.6) on our control stream."""
        control = self._local_control_stream_id
        assert control is not None
        self._quic.send_stream_data(control, encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id)))

    def forget(self, stream_id: int) -> None:
        """Drop the HTTP/3 state of a stream we reset (aioquic keeps it otherwise)."""
        self._stream.pop(stream_id, None)

    def _check_control_frame_type(self, frame_type: int) -> None:
        super()._check_control_frame_type(frame_type)
        if frame_type == FrameType.GOAWAY:
            self.goaway_received = True


class SinkState(enum.Enum):
    """States of a :class:`ResponseSink`.

    ``OPEN`` (nothing sent) → ``STARTED`` (head sent) → ``FINISHED`` (end of
    stream sent); ``OPEN``/``STARTED`` → ``ABORTED`` (reset by us with
    :meth:`ResponseSink.abort`, by the client, or the connection is gone).
    ``FINISHED`` and ``ABORTED`` are final: later writes are dropped.
    """

    OPEN = "open"
    STARTED = "started"
    FINISHED = "finished"
    ABORTED = "aborted"


class _SinkOwner(typing.Protocol):
    h3: _H3
    driver: QuicDriver

    def sink_paused(self, sink: ResponseSink) -> None: ...

    def sink_done(self, sink: ResponseSink) -> None: ...


@implementer(IConsumer)
class ResponseSink:
    """The response side of one request stream.

    ``start`` sends the head, ``write`` body bytes, ``finish`` the end of stream,
    ``abort`` resets the stream. As an ``IConsumer`` it takes one streaming
    producer (a :class:`~aleph_tx._adapter.Pump`), paused while more than
    :data:`HIGH_WATER` bytes wait to be sent and stopped (``stopProducing``) if the
    client resets the stream or the connection goes away; ``on_lost`` callbacks
    run then too (the runner cancels the handler).
    """

    __slots__ = ("_lost", "_owner", "_paused", "producer", "state", "stream_id")

    def __init__(self, owner: _SinkOwner, stream_id: int) -> None:
        self._owner = owner
        self.stream_id = stream_id
        self.state = SinkState.OPEN
        self.producer: IPushProducer | None = None
        self._paused = False
        self._lost: list[Callable[[], object]] = []

    # -- the runner's side -------------------------------------------------------------

    def start(self, status: int, header_lines: list[tuple[bytes, bytes]]) -> None:
        """Send the response head (``:status`` and the fields, names lower-cased).

        :raises RuntimeError: if the head was already sent.
        """
        if self.state is not SinkState.OPEN:
            if self.state is SinkState.ABORTED:
                return
            raise RuntimeError(f"response head already sent on stream {self.stream_id}")
        headers = [(b":status", b"%d" % status)]
        for name, value in header_lines:
            name = name.lower()
            if name not in _CONNECTION_FIELDS:
                headers.append((name, value))
        self.state = SinkState.STARTED
        owner = self._owner
        owner.h3.send_headers(self.stream_id, headers)
        owner.driver.transmit_soon()

    def write(self, data: bytes) -> None:
        """Send ``data`` as body bytes (dropped once finished or aborted)."""
        if self.state is not SinkState.STARTED or not data:
            return
        owner = self._owner
        owner.h3.send_data(self.stream_id, data, False)
        owner.driver.transmit_soon()
        if (
            self.producer is not None
            and not self._paused
            and owner.driver.quic.unsent(self.stream_id) > HIGH_WATER
        ):
            self._paused = True
            owner.sink_paused(self)
            self.producer.pauseProducing()

    def finish(self) -> None:
        """End the stream after what was written (idempotent; no-op after abort)."""
        if self.state is not SinkState.STARTED:
            return
        self.state = SinkState.FINISHED
        owner = self._owner
        owner.h3.send_data(self.stream_id, b"", True)
        owner.driver.transmit_soon()
        owner.sink_done(self)

    def abort(self) -> None:
        """Reset the stream (the client sees an incomplete response). Idempotent."""
        if self.state is SinkState.FINISHED or self.state is SinkState.ABORTED:
            return
        self.state = SinkState.ABORTED
        owner = self._owner
        quic = owner.driver.quic
        quic.reset_stream(self.stream_id, ErrorCode.H3_INTERNAL_ERROR)
        owner.h3.forget(self.stream_id)
        owner.driver.transmit_soon()
        owner.sink_done(self)

    def on_lost(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once if the stream is lost (client reset, connection gone) before its end."""
        self._lost.append(fn)

    @property
    def started(self) -> bool:
        """Whether the head was sent."""
        return self.state is not SinkState.OPEN

    # -- IConsumer -------------------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool = True) -> None:  # noqa: N802
        """Take ``producer`` (a push producer) as the body's source.

        :raises RuntimeError: if a producer is already registered.
        :raises ValueError: for a pull producer.
        """
        if self.producer is not None:
            raise RuntimeError(f"producer {self.producer!r} already registered")
        if not streaming:
            raise ValueError("only streaming (push) producers are supported")
        self.producer = producer  # type: ignore[assignment]
        self._paused = False
        if self.state is SinkState.ABORTED:
            producer.stopProducing()

    def unregisterProducer(self) -> None:  # noqa: N802
        """Forget the producer."""
        self.producer = None
        self._paused = False

    # -- the connection's side -----------------------------------------------------------

    def check_room(self) -> bool:
        """Resume a paused producer if the stream has room; ``True`` if still paused."""
        if not self._paused:
            return False
        if self._owner.driver.quic.unsent(self.stream_id) > LOW_WATER:
            return True
        self._paused = False
        if self.producer is not None:
            self.producer.resumeProducing()
        return False

    def refuse(self, status: int) -> None:
        """Take the response over: the runner is told (``on_lost``) before the stream
        answers ``status`` with an empty body; reset instead if the head was sent."""
        if self.state is not SinkState.OPEN:
            self.abort()
            return
        self._abandon()
        owner = self._owner
        owner.h3.send_headers(self.stream_id, [(b":status", b"%d" % status), (b"content-length", b"0")], True)
        owner.driver.transmit_soon()
        owner.sink_done(self)

    def lost(self) -> None:
        """The client reset the stream or the connection went away."""
        if self.state is SinkState.FINISHED or self.state is SinkState.ABORTED:
            return
        self._abandon()

    def _abandon(self) -> None:
        self.state = SinkState.ABORTED
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        callbacks, self._lost = self._lost, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                _log.failure("an on_lost callback failed")

    def __repr__(self) -> str:
        return f"<ResponseSink stream={self.stream_id} {self.state.value}>"


@implementer(IPushProducer)
class _Credit:
    """The Receiver's producer for one request body: pausing holds the stream's credit."""

    __slots__ = ("_driver", "_stream_id")

    def __init__(self, driver: QuicDriver, stream_id: int) -> None:
        self._driver = driver
        self._stream_id = stream_id

    def pauseProducing(self) -> None:  # noqa: N802
        self._driver.quic.hold(self._stream_id)

    def resumeProducing(self) -> None:  # noqa: N802
        self._driver.quic.flow(self._stream_id)
        self._driver.transmit_soon()

    def stopProducing(self) -> None:  # noqa: N802
        self._driver.quic.hold(self._stream_id)


class _Request:
    """One request stream: its body's receiving half and its response sink."""

    __slots__ = ("body", "length", "received", "receiver", "sink")

    def __init__(self, sink: ResponseSink) -> None:
        self.sink = sink
        self.body: Stream | None = None
        self.receiver: Receiver | None = None
        self.length: int | None = None
        self.received = 0


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
        run: Runner,
        server_port: int,
        tracker: Tracker | None = None,
        max_request_body_size: int | None = None,
        max_header_size: int = 8192,
        max_initial_line_length: int = 8192,
    ) -> None:
        self.driver = driver
        self.h3 = _H3(driver.quic)
        self._run = run
        self._port = server_port
        self._tracker = tracker
        self._max_body = max_request_body_size
        self._max_header = max_header_size
        self._max_line = max_initial_line_length
        self._requests: dict[int, _Request] = {}
        self._paused: set[ResponseSink] = set()
        self._next_stream = 0  # the lowest client stream ID not seen yet
        self._goaway: int | None = None
        if tracker is not None:
            tracker.track(self)

    # -- ConnectionHandler ---------------------------------------------------------------------

    def quic_event_received(self, event: qevents.QuicEvent) -> None:
        """Hand the event to HTTP/3 and act on what it makes of it."""
        kind = type(event)
        if kind is qevents.StreamReset or kind is qevents.StopSendingReceived:
            self._stream_lost(event.stream_id)  # type: ignore[attr-defined]
        for h3event in self.h3.handle_event(event):
            h3kind = type(h3event)
            if h3kind is h3events.DataReceived:
                self._data(h3event)  # type: ignore[arg-type]
            elif h3kind is h3events.HeadersReceived:
                self._headers(h3event)  # type: ignore[arg-type]

    def connection_terminated(self, event: qevents.ConnectionTerminated) -> None:
        """Every open stream is lost; the tracker forgets this connection."""
        requests, self._requests = self._requests, {}
        self._paused.clear()
        for req in requests.values():
            req.sink.lost()
            self._drop_body(req)
        if self._tracker is not None:
            self._tracker.untrack(self)

    def transmitted(self) -> None:
        """Resume the response producers whose streams have room again."""
        if self._paused:
            for sink in list(self._paused):
                if not sink.check_room():
                    self._paused.discard(sink)

    # -- requests ----------------------------------------------------------------------------

    def _headers(self, event: h3events.HeadersReceived) -> None:
        sid = event.stream_id
        req = self._requests.get(sid)
        if req is not None:
            # trailers (RFC 9114 §4.1): not passed on; they may end the body
            if event.stream_ended and req.receiver is not None:
                req.receiver.finish()
            return
        if sid >= self._next_stream:
            self._next_stream = sid + 4
        if self._goaway is not None and sid >= self._goaway:
            self._refuse_stream(sid, ErrorCode.H3_REQUEST_REJECTED)
            return
        sink = ResponseSink(self, sid)
        req = _Request(sink)
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
            self._answer(req, status)
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
                self._answer(req, 413)
                return
        if not event.stream_ended and req.length != 0:
            body = req.body = Stream()
            req.receiver = Receiver(body.put, body.close, _Credit(self.driver, sid))
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
        try:
            self._run(request, sink)
        except Exception:
            _log.failure("the HTTP/3 handler runner failed")
            if sink.state is SinkState.OPEN:
                self._answer(req, 500)
            else:
                sink.abort()

    def _data(self, event: h3events.DataReceived) -> None:
        req = self._requests.get(event.stream_id)
        if req is None or req.receiver is None:
            return
        data = event.data
        if data:
            req.received += len(data)
            if self._max_body is not None and req.received > self._max_body:
                self._too_large(req)
                return
            req.receiver.write(data)
        if event.stream_ended:
            req.receiver.finish()

    def _too_large(self, req: _Request) -> None:
        """413 while the body streams (reset if the response started); the body is cut."""
        req.sink.refuse(413)

    def _answer(self, req: _Request, status: int) -> None:
        """Answer ``status`` with an empty body from here and stop reading the request."""
        sink = req.sink
        sink.start(status, [(b"content-length", b"0")])
        sink.finish()
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

    # -- _SinkOwner ------------------------------------------------------------------------------

    def sink_paused(self, sink: ResponseSink) -> None:
        """``sink`` paused its producer: check it after each send."""
        self._paused.add(sink)

    def sink_done(self, sink: ResponseSink) -> None:
        """The response ended (finished or reset): forget the request; stop its unread body."""
        self._paused.discard(sink)
        sid = sink.stream_id
        req = self._requests.pop(sid, None)
        if req is not None and req.receiver is not None and not req.receiver.finished:
            self._stop_reading(sid)
            self._drop_body(req)
        self._maybe_close()

    # -- closing ----------------------------------------------------------------------------------

    @property
    def open_requests(self) -> int:
        """Requests whose response has not ended."""
        return len(self._requests)

    def graceful_close(self) -> None:
        """GOAWAY now; close once the requests already received have their responses."""
        if self._goaway is None and not self.driver.terminated:
            self._goaway = self._next_stream
            self.h3.send_goaway(self._goaway)
            self.driver.transmit_soon()
            self._maybe_close()

    def abort(self) -> None:
        """Cut the connection now (CONNECTION_CLOSE, state forgotten)."""
        self.driver.abort(error_code=ErrorCode.H3_NO_ERROR, reason="server shutdown")

    def _maybe_close(self) -> None:
        if self._goaway is not None and not self._requests and not self.driver.terminated:
            self.driver.close(error_code=ErrorCode.H3_NO_ERROR, reason="server shutdown")

    def __repr__(self) -> str:
        return f"<H3ServerConnection {self.driver!r} requests={len(self._requests)}>"


def listen_h3(
    run: Runner,
    configuration: Any,
    port: int = 0,
    interface: str = "",
    tracker: Tracker | None = None,
    reactor: Any = None,
    clock: Any = None,
    retry: bool = False,
    **limits: Any,
) -> QuicPort:
    """Serve HTTP/3 on a new UDP port.

    :param run: the handler runner (``run(request, sink)``).
    :param configuration: a server ``QuicConfiguration``
        (:func:`aleph_tx.http._quic.config.server_configuration`).
    :param tracker: the :class:`aleph_tx._server.Server` that tracks connections.
    :param limits: ``max_request_body_size``, ``max_header_size``, ``max_initial_line_length``.
    :returns: the listening port (its ``stopListening`` waits for open connections).
    """
    box: list[int] = []

    def accept(driver: QuicDriver) -> H3ServerConnection:
        return H3ServerConnection(driver, run, box[0], tracker, **limits)

    endpoint = QuicEndpoint(configuration, accept, retry=retry, clock=clock)
    quic_port = listen_quic(endpoint, port, interface, reactor)
    box.append(int(quic_port.getHost().port))
    return quic_port
