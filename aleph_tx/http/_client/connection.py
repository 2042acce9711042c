"""One HTTP/1.1 client connection on the httptools (llhttp) response parser.

:class:`HTTP11ClientConnection` is the Twisted protocol of a pooled connection and
the state machine of its exchanges, in one place (:class:`ConnState`)::

    CONNECTING --ready--> IDLE --send--> SENDING --request written--> AWAITING_HEAD
    SENDING or AWAITING_HEAD --final response head--> READING_BODY --end--> DONE
    DONE --body taken, reusable--> IDLE        DONE --not reusable--> BROKEN
    any state --peer close, protocol error, cancel, timeout, abort--> BROKEN (final)

A connection goes back to the pool (``PoolEvents.connection_reusable``) only when
the whole response was received and handed to its reader, the request was fully
sent, neither side asked for ``Connection: close``, and no byte followed the
response (no pipelining, RFC 9112 §9.3.2). Every other ending is BROKEN: the pool
forgets it at once (``connection_gone``) and it is closed.

Each request is an :class:`~aleph_tx.http._client.body.H1Response` (a
``ResponseHandle``): its ``head`` Deferred fires once the final response head
arrived (1xx responses are skipped, RFC 9110 §15.2), and its body is delivered to a
``BodySink``. Cancelling ``head``
(or aborting the handle at any later stage) fails it at once and aborts the
connection: an exchange is never sent again by this module. ``retryable`` says
whether the pool's caller may send it again on a new connection: only when a reused
connection was closed by the peer before any byte of the response arrived.

Parser callbacks only record what arrived; what runs user code (firing ``head``,
ending a body, handing the connection back) happens once ``feed_data`` returned, so
nothing re-enters the parser.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import Any

import httptools
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx import _eager as eager
from aleph_tx._chunks import ChunkSource
from aleph_tx._pump import Pump
from aleph_tx.errors import ProtocolError
from aleph_tx.http._client.body import H1Response
from aleph_tx.http._client.pool import ClientRequest, PoolEvents, lost_error

__all__ = ["ConnState", "HTTP11ClientConnection"]

_DONE = Failure(ConnectionDone())


# -- the connection ------------------------------------------------------------------------


class ConnState(enum.Enum):
    """The states of an :class:`HTTP11ClientConnection` (see the module docstring)."""

    CONNECTING = "connecting"
    IDLE = "idle"
    SENDING = "sending"
    AWAITING_HEAD = "awaiting head"
    READING_BODY = "reading body"
    DONE = "done"
    BROKEN = "broken"


_BUSY = (ConnState.SENDING, ConnState.AWAITING_HEAD, ConnState.READING_BODY, ConnState.DONE)
_NO_BODY_STATUS = (204, 304)


def _parser(callbacks: Any) -> httptools.HttpResponseParser:
    parser = httptools.HttpResponseParser(callbacks)
    # a bare LF ends a line, as in Python's http.client and curl (RFC 9112 §2.2 allows it)
    parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
    return parser


def _chunk_frame(data: bytes) -> bytes:
    # RFC 9112 §7.1: chunk = chunk-size CRLF chunk-data CRLF
    return b"%x\r\n%b\r\n" % (len(data), data)


@implementer(IHandshakeListener)
class HTTP11ClientConnection(Protocol):
    """A pooled HTTP/1.1 client connection (a :class:`PooledConnection`).

    :param events: the pool.
    :param key: the pool key.
    :param max_header_size: the response header block limit (``max_response_header_size``).
    :param tls: the transport is TLS: the connection is ready after the handshake.
    :param reactor: for the turns an iterator request body yields (``None``: the reactor).
    """

    multiplexed = False
    protocol = "http/1.1"

    def __init__(
        self,
        events: PoolEvents,
        key: Hashable,
        max_header_size: int = 65536,
        tls: bool = False,
        reactor: Any = None,
    ) -> None:
        self.events = events
        self.key = key
        self.max_header_size = max_header_size
        self.tls = tls
        self.reactor = reactor
        self.state = ConnState.CONNECTING
        self.requests = 0
        self.response: H1Response | None = None
        self.lost: Failure | None = None
        self.delegate: Any = None  # the HTTP/2 connection once ALPN chose h2
        self._ready: Deferred[None] | None = None
        self._closed: list[Deferred[None]] = []
        self._parser = _parser(self)
        self._pump: Pump | None = None
        self._chunked_out = False
        self._out_left = 0  # request body bytes still due (a known length)
        self._paused = False
        self._gone = False  # the pool was told
        # the response being parsed
        self._head_bytes = 0  # bytes fed while the head is incomplete (bounds what llhttp holds)
        self._head_size = 0  # size of the head's lines so far
        self._body_left = 0  # bytes of a body of known length still due
        self._in_head = False
        self._head_ready = False
        self._message_done = False
        self._keep_alive = True
        self._until_close = False
        self._got_bytes = False

    # -- connection set-up -----------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        """Ready at once, or after the TLS handshake."""
        eager.tune(self.transport)
        if not self.tls:
            self._make_ready()

    def handshakeCompleted(self) -> None:  # noqa: N802
        """Called by ``TLSMemoryBIOProtocol`` once the TLS handshake is done."""
        self._make_ready()

    def _make_ready(self) -> None:
        if self.state is ConnState.CONNECTING:
            self.state = ConnState.IDLE
            d, self._ready = self._ready, None
            if d is not None:
                d.callback(None)

    def when_ready(self) -> Deferred[None]:
        """Fires once the connection (and its TLS handshake) is up; fails if it is lost first."""
        if self.state is not ConnState.CONNECTING:
            return succeed(None) if self.lost is None else fail(lost_error(self.lost))
        if self._ready is None:
            self._ready = Deferred()
        return self._ready

    def hand_over(self, delegate: Any) -> None:
        """From now on the bytes and the loss go to ``delegate`` (an HTTP/2 connection)."""
        self.delegate = delegate
        self.state = ConnState.BROKEN  # as HTTP/1.1, it carries nothing more
        self._gone = True

    # -- PooledConnection -------------------------------------------------------------

    def can_take(self) -> bool:
        """Whether a request may start now (IDLE)."""
        return self.state is ConnState.IDLE

    def in_use(self) -> bool:
        """Whether a request is in flight."""
        return self.state in _BUSY

    def send(self, request: ClientRequest) -> H1Response:
        """Write ``request``; its :class:`H1Response` fires ``head`` at the response head.

        :raises RuntimeError: unless the connection is IDLE.
        """
        if self.state is not ConnState.IDLE:
            raise RuntimeError(f"cannot send a request on a connection in state {self.state.value!r}")
        self.requests += 1
        response = H1Response(self, request.method == b"HEAD", self.requests > 1)
        self.response = response
        self.state = ConnState.SENDING
        self._in_head = True
        self._head_bytes = self._head_size = 0
        self._head_ready = self._message_done = self._until_close = self._got_bytes = False
        self._body_left = 0
        self._keep_alive = not request.close
        head = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (request.method, request.target, request.authority)]
        for name, value in request.headers:
            head.append(b"%s: %s\r\n" % (name, value))
        if request.close:
            head.append(b"Connection: close\r\n")
        body = request.body
        if body is None:
            if request.method in (b"POST", b"PUT", b"PATCH"):
                head.append(b"Content-Length: 0\r\n")
            head.append(b"\r\n")
            self._write(b"".join(head))
            self._request_written()
        elif isinstance(body, bytes):
            head.append(b"Content-Length: %d\r\n\r\n" % len(body))
            head.append(body)
            self._write(b"".join(head))
            self._request_written()
        else:
            length = request.length
            self._chunked_out = length is None
            if length is None:
                head.append(b"Transfer-Encoding: chunked\r\n\r\n")
            else:
                self._out_left = length
                head.append(b"Content-Length: %d\r\n\r\n" % length)
            self._write(b"".join(head))
            self._start_pump(body)
        return response

    def close(self) -> Deferred[None]:
        """Close cleanly (an idle connection: nothing in flight); fires once closed."""
        self._break()
        if self.lost is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        if self.transport is not None:
            self.transport.loseConnection()
        return d

    def abort(self) -> None:
        """Cut the connection now; it is never reused."""
        self._break()
        self._stop_pump()
        transport: Any = self.transport
        if transport is not None and self.lost is None:
            transport.abortConnection()

    def _break(self) -> None:
        if self.state is not ConnState.BROKEN:
            self.state = ConnState.BROKEN
        if not self._gone:
            self._gone = True
            self.events.connection_gone(self)

    # -- writing the request -------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        eager.write(self.transport, data)

    def _start_pump(self, source: ChunkSource) -> None:
        pump = Pump(source, self, self.reactor)
        self._pump = pump
        transport: Any = self.transport
        transport.registerProducer(pump, True)
        pump.start()

    def _stop_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.abandon()
            transport: Any = self.transport
            if transport is not None and self.lost is None:
                transport.unregisterProducer()

    def write(self, data: bytes) -> None:
        """:class:`~aleph_tx._pump.PumpSink`: one chunk of the request body."""
        if self._pump is None:
            return
        if self._chunked_out:
            self._write(_chunk_frame(data))
            return
        left = self._out_left - len(data)
        if left < 0:
            self._fail(ValueError(f"the request body is longer than its length (by {-left} bytes)"))
            return
        self._out_left = left
        self._write(data)

    def pump_done(self) -> None:
        """:class:`~aleph_tx._pump.PumpSink`: the request body ended."""
        if self._pump is None:
            return
        self._pump = None
        transport: Any = self.transport
        transport.unregisterProducer()
        if self._chunked_out:
            self._write(b"0\r\n\r\n")
        elif self._out_left:
            self._fail(ValueError(f"the request body is shorter than its length (by {self._out_left} bytes)"))
            return
        self._request_written()

    def pump_failed(self, failure: Failure) -> None:
        """:class:`~aleph_tx._pump.PumpSink`: the request body failed (or was not bytes)."""
        self._pump = None
        error = failure.value
        assert error is not None
        self._fail(error)

    def _request_written(self) -> None:
        if self.state is ConnState.SENDING:
            self.state = ConnState.READING_BODY if self._head_ready else ConnState.AWAITING_HEAD

    # -- reading the response --------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading (a slow body reader)."""
        if not self._paused and self._head_ready and not self._message_done and self.state in _BUSY:
            self._paused = True
            transport: Any = self.transport
            transport.pauseProducing()

    def resume_reading(self) -> None:
        """Read again."""
        if self._paused:
            self._paused = False
            transport: Any = self.transport
            if transport is not None and self.lost is None:
                transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        """Feed the parser, then act on what it found."""
        if self.delegate is not None:
            self.delegate.data_received(data)
            return
        response = self.response
        if response is None or self.state not in _BUSY:
            if self.state is ConnState.IDLE:
                self.abort()  # bytes nobody asked for: the peer and we disagree
            return
        self._got_bytes = True
        if self._body_left > 0 and self._head_ready:
            self._body_bytes(response, data)
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            if not self._message_done:
                cause = e.__context__
                self._fail(
                    cause if isinstance(cause, ProtocolError) else ProtocolError(f"malformed response: {e}")
                )
                return
            self._keep_alive = False  # bytes after the end of the response (no pipelining)
        if self._in_head and self._head_bytes > self.max_header_size:
            self._fail(self._too_large())
            return
        self._after_read()

    def _body_bytes(self, response: H1Response, data: bytes) -> None:
        """The rest of a body of known length: counted here, the parser skipped."""
        left = self._body_left - len(data)
        if left >= 0:
            response.data(data)
        else:
            response.data(data[:left])
            self._keep_alive = False  # bytes after the end of the response (no pipelining)
        self._body_left = max(left, 0)
        if not self._body_left:
            self._message_done = True
            self._parser = _parser(self)  # the old one is still inside this body
        self._after_read()

    def _fail(self, error: BaseException) -> None:
        """The exchange fails with ``error``; the connection is cut."""
        response = self.response
        if response is not None:
            response.abort(error)
        else:
            self.abort()

    def _after_read(self) -> None:
        """Fire what the parser found: the head, the end of the response."""
        response = self.response
        if response is None or self.state is ConnState.BROKEN:
            return
        if self._message_done:
            if self.state is ConnState.DONE:
                return
            if self._pump is not None:
                self._keep_alive = False
                self._stop_pump()  # answered before the whole request body: stop sending
            self.state = ConnState.DONE
            self.resume_reading()
            response.complete()  # hands the connection back through release()
        elif self._head_ready and not response.head.called:
            response.head.callback(response)

    def release(self) -> None:
        """The response's body was taken: back to the pool (IDLE), or closed."""
        if self.state is not ConnState.DONE:
            return
        self.response = None
        if self._keep_alive:
            self.state = ConnState.IDLE
            self.events.connection_reusable(self)
            return
        self._break()
        if self.transport is not None and self.lost is None:
            self.transport.loseConnection()

    # httptools callbacks (inside feed_data: record only)

    def on_message_begin(self) -> None:
        if self._message_done:
            raise _Leftover()  # a second response: nothing was asked for it

    def on_status(self, status: bytes) -> None:
        self._count(len(status) + 15)  # "HTTP/1.1 200 " ... CRLF

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        response = self.response
        assert response is not None
        response.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def _count(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self.max_header_size:
            raise self._too_large()

    def _too_large(self) -> ProtocolError:
        return ProtocolError(
            f"response header block larger than max_response_header_size={self.max_header_size}"
        )

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            response.headers = []  # an interim response (RFC 9110 §15.2): skipped
            self._head_bytes = self._head_size = 0
            return
        response.status = status
        self._in_head = False
        self._head_ready = True
        if self.state is not ConnState.SENDING:
            self.state = ConnState.READING_BODY
        framed = False
        length = ""
        for name, value in response.headers:
            if name == "transfer-encoding":
                # RFC 9112 §6.1: only a final "chunked" is a framing we can read
                if value.rsplit(",", 1)[-1].strip().lower() != "chunked":
                    raise ProtocolError(f"response with an unsupported transfer-encoding {value!r}")
                framed = True
            elif name == "content-length":
                framed = True
                length = value
            elif name == "connection" and "close" in [t.strip() for t in value.lower().split(",")]:
                self._keep_alive = False
        if parser.get_http_version() != "1.1" and not parser.should_keep_alive():
            self._keep_alive = False  # HTTP/1.0 without keep-alive
        if response.is_head or status in _NO_BODY_STATUS:
            self._message_done = True
            self._parser = _parser(self)  # the old one may expect a body
        elif not framed:
            self._until_close = True  # RFC 9112 §6.3: the body ends when the connection closes
            self._keep_alive = False
        elif length:
            self._body_left = int(length)  # (checked by llhttp); later reads skip the parser

    def on_body(self, body: bytes) -> None:
        if self._message_done:
            raise _Leftover()
        if self._body_left > 0:
            self._body_left -= len(body)
        response = self.response
        if response is not None:
            response.data(body)

    def on_message_complete(self) -> None:
        if self._head_ready:
            self._message_done = True

    # -- the end -----------------------------------------------------------------------------

    def connectionLost(self, reason: Failure = _DONE) -> None:  # noqa: N802
        """Fail or finish what was in flight; tell the pool."""
        self.lost = reason
        if self.delegate is not None:
            self.delegate.connection_lost(reason)
        was_ready = self.state is not ConnState.CONNECTING
        self._stop_pump()
        response, self.response = self.response, None
        done = self.state is ConnState.DONE
        self._break()
        if response is not None and not done:
            if self._until_close and self._head_ready and reason.check(ConnectionDone):
                response.complete()  # a body delimited by the close (RFC 9112 §6.3, rule 8)
            elif not self._got_bytes:
                response.retryable = response.reused
                response.fail(lost_error(reason, "the connection closed before any response"))
            else:
                response.fail(lost_error(reason, "the connection closed before the response was complete"))
        d, self._ready = self._ready, None
        if d is not None and not was_ready:
            d.errback(lost_error(reason, "the connection was lost while connecting"))
        closed, self._closed = self._closed, []
        for c in closed:
            c.callback(None)


class _Leftover(Exception):
    """Bytes after the end of the response (raised inside the parser to stop it)."""
