"""The HTTP/1.1 front: a Twisted ``Protocol`` on the httptools (llhttp) parser.

It moves bytes between the transport and the pure Ring core (:mod:`._ring`,
:mod:`._body`, :mod:`._limits`); it owns keep-alive, pipelining (answered in
order), request bodies as streams with backpressure, limits and the upgrade
hand-off.

Connection states (:class:`ConnState`):

- ``OPEN``: parsing requests, answering them one at a time in order;
- ``UPGRADING``: an ``Upgrade``/``CONNECT`` request was parsed; reading is paused
  and later bytes are kept for whoever takes the connection over;
- ``BROKEN``: the input broke the protocol or a limit; requests before it are
  answered, then the error, then the connection closes;
- ``CLOSING``: the last response is written, the connection is closing;
- ``HANDED_OFF``: another protocol (a WebSocket) owns the connection;
- ``CLOSED``: ``connectionLost`` ran.

The fast path, for a request without a body answered synchronously with a
``dict`` whose body is ``str``/bytes: no ``Stream`` and no ``Deferred`` is
allocated, and the whole response goes out in one ``transport.write``.
"""

from __future__ import annotations

import enum
import inspect
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IProtocolNegotiationFactory, IReactorTime, ISSLTransport
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx._chunks import ChunkSource
from aleph_tx.errors import WebSocketHandshakeError
from aleph_tx.http._body import Gzipper, accepts_gzip, coerce_body
from aleph_tx.http._limits import (
    ServerOptions,
    check_content_length,
    check_framing,
    check_request_line,
    check_version,
)
from aleph_tx.http._ring.request import (
    _LINE_CACHE,
    _STATUS_CACHE,
    NO_BODY_STATUSES,
    build_request,
    date_line,
    encode_headers,
    http_date,
    response_parts,
    split_target,
    status_line,
)
from aleph_tx.http._writer import BodyWriter
from aleph_tx.stream import Stream

__all__ = ["ConnState", "HTTP11Protocol", "HTTPFactory", "UpgradeRequest", "simple_response"]

_log = Logger()

#: Request body buffer: up to 64 KiB (plus the chunk that crosses it) is read ahead
#: of the handler; past it the socket is not read until the handler takes.
BODY_BUFFER_BYTES = 65536

# Reasons to stop reading the socket (merged: reading resumes when none is left).
_PAUSE_BODY = 1  # a body put is waiting for the handler to take
_PAUSE_QUEUE = 2  # pipelined requests are waiting for their turn
_PAUSE_UPGRADE = 4  # an upgrade request waits for its handler's decision
_PAUSE_BROKEN = 8  # nothing more will be parsed

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: Raw header names seen to their lower-case str (bounded).
_NAMES: dict[bytes, str] = {}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_LOWER_METHODS = {m: m.lower() for m in _METHODS.values()}


class ConnState(enum.Enum):
    """See the module docstring."""

    OPEN = "open"
    UPGRADING = "upgrading"
    BROKEN = "broken"
    CLOSING = "closing"
    HANDED_OFF = "handed_off"
    CLOSED = "closed"


def simple_response(status: int, keep_alive: bool = False) -> bytes:
    """A complete plain-text response for ``status`` (protocol errors: no internals leak)."""
    line = status_line(status)
    reason = line.split(b" ", 2)[2].strip()
    return b"".join(
        (
            line,
            b"date: ",
            http_date(),
            b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ",
            str(len(reason)).encode("ascii"),
            b"\r\n" if keep_alive else b"\r\nconnection: close\r\n",
            b"\r\n",
            reason,
        )
    )


class UpgradeRequest(dict):  # type: ignore[type-arg]
    """The request dict of an ``Upgrade`` or ``CONNECT`` request.

    A plain ``dict`` to the handler; :attr:`upgrade` is the hand-off hook for
    WebSockets (TWISTED-NOTES §2): ``req.upgrade.hand_off(protocol)``.
    """

    __slots__ = ("upgrade",)

    upgrade: UpgradeHandle


class UpgradeHandle:
    """Lets a handler give its connection to another protocol (TWISTED-NOTES §2).

    :ivar head: the request head as received (rebuilt: request line and headers),
        for a protocol that wants to parse it again (autobahn does).
    """

    __slots__ = ("_ex", "_proto", "head")

    def __init__(self, proto: HTTP11Protocol, ex: _Exchange, head: bytes) -> None:
        self._proto = proto
        self._ex = ex
        self.head = head

    @property
    def transport(self) -> Any:
        """The connection's transport."""
        return self._proto.transport

    def hand_off(self, protocol: Protocol, replay_head: bool = True) -> None:
        """Swap ``protocol`` in as the connection's protocol and feed it.

        ``protocol.makeConnection(transport)`` is called, then ``dataReceived``
        with the request head (if ``replay_head``) plus every byte received after
        it; reading resumes. The handler's return value is ignored afterwards.

        :raises RuntimeError: if the connection is gone or the response started.
        """
        self._proto._hand_off(self._ex, protocol, self.head if replay_head else b"")


class _Exchange:
    """One request and its response (class-level defaults: few stores per request)."""

    abandoned = False
    error_status: int | None = None
    expect = False
    head = False
    in_error = False
    length: int | None = None
    pending: Deferred[Any] | None = None
    received = 0
    started = False
    upgrade = False
    version10 = False
    writer: BodyWriter | None = None

    def __init__(self, req: dict[str, Any], body: Stream | None, keep_alive: bool) -> None:
        self.req = req
        self.body = body
        self.keep_alive = keep_alive
        self.body_done = body is None


_EMPTY_REQ: dict[str, Any] = {}


def _error_exchange(status: int) -> _Exchange:
    ex = _Exchange(_EMPTY_REQ, None, False)
    ex.error_status = status
    return ex


@implementer(IProtocolNegotiationFactory)
class HTTPFactory(ServerFactory):
    """Builds one :class:`HTTP11Protocol` per connection, sharing the configuration.

    Under TLS it advertises ``http/1.1`` by ALPN: Twisted installs an ALPN callback
    on every server context, and with nothing to offer a client that offers ALPN
    (curl, browsers) gets a fatal "internal error" alert instead of a handshake.

    :param handler: the Ring handler.
    :param options: validated options.
    :param reactor: for the thread pool (``executor="thread"``) and timers.
    :param server: the :class:`aleph_tx._server.Server` tracking connections (set later).
    """

    noisy = False

    def __init__(
        self, handler: Callable[[dict[str, Any]], Any], options: ServerOptions, reactor: Any = None
    ) -> None:
        self.handler = handler
        self.options = options
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.clock: IReactorTime = options.clock if options.clock is not None else reactor
        self.server: Any = None
        self.scheme: str | None = None  # None: from the transport (ISSLTransport → https)

    def buildProtocol(self, addr: Any) -> HTTP11Protocol:  # noqa: N802 - Twisted's name
        """A new protocol for one connection."""
        return HTTP11Protocol(self)

    def acceptableProtocols(self) -> list[bytes]:  # noqa: N802 - Twisted's name
        """The ALPN names this factory speaks."""
        return [b"http/1.1"]


class HTTP11Protocol(Protocol):
    """HTTP/1.1 on httptools; see the module docstring."""

    # a tcp.Server, a TLS ProtocolWrapper or a test transport: ITCPTransport,
    # IConsumer and IPushProducer in one
    transport: Any

    def __init__(self, factory: HTTPFactory) -> None:
        self.factory = factory
        self._handler = factory.handler
        self._opts = factory.options
        self._max_line = self._opts.max_initial_line_length
        self._max_header = self._opts.max_header_size
        self._max_body = self._opts.max_request_body_size
        self._clock = factory.clock
        self._idle_timeout = self._opts.idle_timeout
        self._idle_call: IDelayedCall | None = None
        self._last_activity = 0.0
        self.state = ConnState.OPEN
        self._queue: deque[_Exchange] = deque()
        self._current: _Exchange | None = None
        self._parsing: _Exchange | None = None
        self._dispatching = False
        self._paused = 0
        self._pending_puts = 0
        self._closing = False  # graceful close asked
        self._error_status: int | None = None
        self._in_head = False
        self._head_bytes = 0
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._url_len = 0
        self._hdr_size = 0
        self._tail = b""
        self._handed_to: Protocol | None = None
        opts = self._opts
        # statuses without a body need the general path; so do these options
        self._fast_ok = opts.executor is None and not opts.compression
        self._scheme = "http"
        self._server_name = "localhost"
        self._server_port = 0
        self._remote_addr = ""

    # -- connection --------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        """Set up the parser, the addresses, the idle timer; tell the server."""
        t = self.transport
        self._parser = httptools.HttpRequestParser(self)
        host = t.getHost()
        peer = t.getPeer()
        self._server_name = str(getattr(host, "host", "localhost"))
        self._server_port = int(getattr(host, "port", 0) or 0)
        self._remote_addr = str(getattr(peer, "host", ""))
        self._scheme = self.factory.scheme or ("https" if ISSLTransport.providedBy(t) else "http")
        set_no_delay = getattr(t, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except Exception:  # a transport without a real socket
                pass
        if self._idle_timeout is not None:
            self._last_activity = self._clock.seconds()
            self._idle_call = self._clock.callLater(self._idle_timeout, self._idle_check)
        server = self.factory.server
        if server is not None:
            server.track(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        """Abandon every exchange: cancel pending handlers, close body streams."""
        self.state = ConnState.CLOSED
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        exchanges = list(self._queue)
        self._queue.clear()
        if self._current is not None:
            exchanges.insert(0, self._current)
            self._current = None
        for ex in exchanges:
            self._abandon(ex)
        server = self.factory.server
        if server is not None:
            server.untrack(self)

    def _abandon(self, ex: _Exchange) -> None:
        ex.abandoned = True
        if ex.body is not None:
            ex.body.close()
        if ex.writer is not None:
            ex.writer.abandon()
        pending, ex.pending = ex.pending, None
        if pending is not None:
            pending.cancel()

    def graceful_close(self) -> None:
        """Finish the request in flight, then close (``Server.close``)."""
        self._closing = True
        if self.state is ConnState.HANDED_OFF:
            target = getattr(self._handed_to, "graceful_close", None)
            if target is not None:
                target()
            else:
                self.transport.loseConnection()
            return
        if self._current is None:
            self._queue.clear()
            self._close()

    def abort(self) -> None:
        """Cut the connection now."""
        if self.state is not ConnState.CLOSED:
            self.transport.abortConnection()

    def _close(self) -> None:
        if self.state in (ConnState.CLOSING, ConnState.CLOSED):
            return
        self.state = ConnState.CLOSING
        self.transport.loseConnection()

    # -- idle timeout ------------------------------------------------------------

    def _idle_check(self) -> None:
        assert self._idle_timeout is not None
        self._idle_call = None
        if self.state is ConnState.CLOSED:
            return
        elapsed = self._clock.seconds() - self._last_activity
        if elapsed >= self._idle_timeout:
            # API.md: closed without a response (no 408).
            self.transport.abortConnection()
            return
        self._idle_call = self._clock.callLater(self._idle_timeout - elapsed, self._idle_check)

    # -- reading -----------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self._paused and self.state is not ConnState.CLOSED and self.state is not ConnState.CLOSING:
            self.transport.pauseProducing()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if (
                not self._paused
                and self.state is not ConnState.CLOSED
                and self.state is not ConnState.CLOSING
            ):
                self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Feed the parser; then answer what is complete."""
        if self._idle_call is not None:
            self._last_activity = self._clock.seconds()
        state = self.state
        if state is not ConnState.OPEN:
            if state is ConnState.UPGRADING:
                self._tail += data
            return
        was_in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = int(e.args[0]) if e.args else len(data)
            self._tail = data[offset:]
            self.state = ConnState.UPGRADING
            self._pause(_PAUSE_UPGRADE)
        except httptools.HttpParserError as e:
            status = self._error_status
            if status is None:
                if isinstance(e, httptools.HttpParserCallbackError):
                    _log.failure("HTTP/1.1 parser callback failed", Failure(e.__context__ or e))
                    status = 500
                else:
                    status = 400
            self._broken(status)
        else:
            if was_in_head and self._in_head:
                # A head that never ends: llhttp buffers a partial header line
                # without calling us, so count the bytes too.
                self._head_bytes += len(data)
                if self._head_bytes > self._max_line + self._max_header + 4:
                    self._broken(431 if self._headers else 414)
        if self._current is None and self._queue:
            self._dispatch_next()

    # httptools callbacks (called inside feed_data: they never call user code
    # directly; a body put may fire a handler's take, whose errors its Deferred keeps).

    def on_message_begin(self) -> None:
        """A request starts."""
        self._in_head = True
        self._head_bytes = 0
        self._url = []
        self._url_len = 0
        self._headers = {}
        self._hdr_size = 0

    def on_url(self, url: bytes) -> None:
        """Part of the request target."""
        self._url.append(url)
        self._url_len += len(url)
        if self._url_len + 10 > self._max_line:
            self._error_status = 414
            raise ValueError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header (or trailer) line."""
        self._hdr_size += len(name) + len(value) + 4
        if self._hdr_size > self._max_header:
            self._error_status = 431
            raise ValueError("header block too large")
        if self._in_head:
            key = _NAMES.get(name)
            if key is None:
                key = name.decode("latin-1").lower()
                if len(_NAMES) < 512:
                    _NAMES[name] = key
            headers = self._headers
            old = headers.get(key)
            # RFC 9110 §5.3: repeated fields combine with ", " (Ring's join)
            headers[key] = value.decode("latin-1") if old is None else old + ", " + value.decode("latin-1")
        # trailers (RFC 9112 §7.1.2) are counted, not kept

    def on_headers_complete(self) -> None:
        """The head is complete: build the request; queue it."""
        self._in_head = False
        self._hdr_size = 0  # trailers get their own budget
        p = self._parser
        raw_method = p.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        version = p.get_http_version()
        headers = self._headers
        host = headers.get("host", "")
        if (
            len(url) + 18 > self._max_line
            or (version != "1.1" and version != "1.0")
            or url[:1] != b"/"
            or host[:1] == "["
            or method == "CONNECT"
            or "content-length" in headers
            or "transfer-encoding" in headers
            or "expect" in headers
            or "upgrade" in headers
        ):
            self._head_general(method, url, version)
            return
        # The common case (a request without a body, framing or upgrade): the same
        # dict as _ring.build_request builds (a test holds them equal), built inline.
        keep_alive = p.should_keep_alive()
        if b"?" in url or b"#" in url:
            uri, query_string = split_target(url)
        else:
            uri, query_string = url.decode("latin-1"), None
        ex = _Exchange(
            {
                "request_method": _LOWER_METHODS.get(method) or method.lower(),
                "uri": uri,
                "query_string": query_string,
                "headers": headers,
                "body": None,
                "scheme": self._scheme,
                "server_name": host.partition(":")[0] or self._server_name,
                "server_port": self._server_port,
                "remote_addr": self._remote_addr,
                "protocol": "HTTP/1.1" if version == "1.1" else "HTTP/1.0",
                "keep_alive": keep_alive,
            },
            None,
            keep_alive,
        )
        if method == "HEAD":
            ex.head = True
        if version == "1.0":
            ex.version10 = True
        self._queue.append(ex)

    def _head_general(self, method: str, url: bytes, version: str) -> None:
        p = self._parser
        status = None
        if len(method) + len(url) + 10 > self._max_line:
            status = check_request_line(len(method), len(url), self._max_line)
        if version != "1.1" and version != "1.0":
            status = status or check_version(version)
        headers = self._headers
        cl = headers.get("content-length")
        te = headers.get("transfer-encoding")
        length: int | None = None
        if cl is not None or te is not None:
            status = status or check_framing([cl] if cl is not None else [], [te] if te is not None else [])
            if status is None and cl is not None:
                length = int(cl)
        has_body = te is not None or (length is not None and length > 0)
        if status is None and has_body:
            status = check_content_length(length, 0, self._max_body)
        if status is not None:
            self._error_status = status
            raise ValueError("bad request head")
        keep_alive = p.should_keep_alive()
        body = Stream(BODY_BUFFER_BYTES, None, None, len) if has_body else None
        upgrade = method == "CONNECT" or (
            "upgrade" in headers and "upgrade" in headers.get("connection", "").lower()
        )
        req = build_request(
            method,
            url,
            headers,
            body,
            self._scheme,
            self._server_name,
            self._server_port,
            self._remote_addr,
            "HTTP/1.0" if version == "1.0" else "HTTP/1.1",
            keep_alive,
        )
        if upgrade:
            req = UpgradeRequest(req)
        ex = _Exchange(req, body, keep_alive)
        ex.head = method == "HEAD"
        ex.version10 = version == "1.0"
        ex.length = length
        ex.upgrade = upgrade
        if upgrade:
            assert isinstance(req, UpgradeRequest)
            req.upgrade = UpgradeHandle(self, ex, self._rebuild_head(method, url, version))
        expect = headers.get("expect")
        if expect is not None:
            if expect.strip().lower() != "100-continue":
                # RFC 9110 §10.1.1: an expectation we cannot meet
                self._error_status = 417
                raise ValueError("unknown expectation")
            ex.expect = not ex.version10
        if has_body:
            self._parsing = ex
        self._queue.append(ex)

    def _rebuild_head(self, method: str, url: bytes, version: str) -> bytes:
        lines = [b"%s %s HTTP/%s\r\n" % (method.encode("latin-1"), url, version.encode("ascii"))]
        # names lower-cased, repeats joined (RFC 9110 §5.3 makes them equivalent)
        lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in self._headers.items())
        lines.append(b"\r\n")
        return b"".join(lines)

    def on_body(self, data: bytes) -> None:
        """A piece of the request body: put it into the body stream."""
        ex = self._parsing
        if ex is None or ex.body is None:
            return
        ex.received += len(data)
        if self._max_body is not None and ex.received > self._max_body:
            self._error_status = 413
            raise ValueError("request body too large")
        d = ex.body.put(data)
        if not d.called:
            self._pending_puts += 1
            if self._pending_puts == 1:
                self._pause(_PAUSE_BODY)
            d.addBoth(self._put_fired)

    def _put_fired(self, _: object) -> None:
        self._pending_puts -= 1
        if not self._pending_puts:
            self._resume(_PAUSE_BODY)

    def on_message_complete(self) -> None:
        """The request (with its body) is complete."""
        ex = self._parsing
        if ex is not None:
            self._parsing = None
            ex.body_done = True
            if ex.body is not None:
                ex.body.close()

    def _broken(self, status: int) -> None:
        """The input broke the protocol or a limit: answer ``status`` in turn, then close."""
        self.state = ConnState.BROKEN
        self._pause(_PAUSE_BROKEN)
        ex = self._parsing
        self._parsing = None
        if ex is None:
            self._queue.append(_error_exchange(status))
            return
        ex.error_status = status
        ex.keep_alive = False
        if ex is self._current:
            if ex.started:
                if ex.body is not None:
                    ex.body.close()
                self.transport.abortConnection()
                return
            # cancel the handler before its body closes: a truncated body must not
            # look complete to it
            pending, ex.pending = ex.pending, None
            if pending is not None:
                ex.abandoned = True
                pending.cancel()
            if ex.body is not None:
                ex.body.close()
            self._write_error(ex, status)
        elif ex.body is not None:
            ex.body.close()

    # -- dispatch ----------------------------------------------------------------

    def _dispatch_next(self) -> None:
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._current is None and self._queue:
                if self.state in (ConnState.CLOSING, ConnState.CLOSED, ConnState.HANDED_OFF):
                    self._queue.clear()
                    break
                ex = self._queue.popleft()
                self._current = ex
                if self._fast_ok and ex.error_status is None and not ex.expect:
                    # the hot path: call the handler; a plain dict answered in one write
                    try:
                        result = self._handler(ex.req)
                    except Exception:
                        self._handler_failed(ex, Failure())
                        continue
                    if ex.started:
                        continue  # handed off (an upgrade): the return value is ignored
                    if type(result) is dict:
                        fast = self._fast_response(ex, result)
                        if fast is not None:
                            ex.started = True
                            if self._idle_call is not None:
                                self._last_activity = self._clock.seconds()
                            self.transport.write(fast)
                            self._current = None
                            if ex.keep_alive:
                                continue
                            self._finish(ex, False)
                            break
                        self._respond(ex, result)
                    else:
                        self._on_result(ex, result)
                else:
                    self._run(ex)
        finally:
            self._dispatching = False
        if self._queue:
            self._pause(_PAUSE_QUEUE)
        else:
            if self._paused:
                self._resume(_PAUSE_QUEUE)
            if self._closing and self._current is None:
                self._close()

    def _fast_response(self, ex: _Exchange, response: dict[str, Any]) -> bytes | None:
        """The whole response for the common case, else ``None`` (the general path).

        Common: a cached status, headers whose lines are in the line cache (the
        general path fills it), a ``str``/``bytes`` body, no compression, keep-alive
        decided without a body still coming.
        """
        status = response.get("status", 200)
        line = _STATUS_CACHE.get(status) if type(status) is int else None
        if line is None:
            return None
        body = response.get("body")
        if type(body) is str:
            body = body.encode("utf-8")
        elif type(body) is not bytes:
            return None
        parts = [line]
        headers = response.get("headers")
        if headers:
            if type(headers) is not dict:
                return None
            for item in headers.items():
                cached = _LINE_CACHE.get(item) if type(item[1]) is str else None
                if cached is None:
                    return None
                parts.append(cached)
        keep = ex.keep_alive and ex.body_done and not self._closing and not ex.upgrade
        ex.keep_alive = keep
        parts.append(date_line())
        parts.append(b"content-length: %d\r\n" % len(body))
        if not keep:
            parts.append(b"connection: close\r\n")
        elif ex.version10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if not ex.head:
            parts.append(body)
        return b"".join(parts)

    def _run(self, ex: _Exchange) -> None:
        if ex.error_status is not None:
            self._write_error(ex, ex.error_status)
            return
        if ex.expect and not ex.body_done:
            check = self._opts.continue_handler
            if check is None:
                self._write(_CONTINUE)
            else:
                try:
                    decision = check(ex.req)
                except Exception:
                    self._handler_failed(ex, Failure())
                    return
                if isinstance(decision, Deferred) or inspect.iscoroutine(decision):
                    d = decision if isinstance(decision, Deferred) else Deferred.fromCoroutine(decision)
                    ex.pending = d
                    d.addCallbacks(
                        self._continue_decided, self._handler_errored, callbackArgs=(ex,), errbackArgs=(ex,)
                    )
                    return
                self._continue_decided(decision, ex)
                return
        self._call_handler(ex)

    def _continue_decided(self, decision: Any, ex: _Exchange) -> None:
        ex.pending = None
        if ex.abandoned:
            return
        if isinstance(decision, dict):
            self._refuse_body(ex)
            self._respond(ex, decision)
        elif decision:
            self._write(_CONTINUE)
            self._call_handler(ex)
        else:
            self._refuse_body(ex)
            self._write_error(ex, 417)

    def _refuse_body(self, ex: _Exchange) -> None:
        # The client will not send the body (or we will not read it): no keep-alive.
        ex.keep_alive = False
        if ex.body is not None:
            ex.body.close()

    def _call_handler(self, ex: _Exchange) -> None:
        try:
            if self._opts.executor == "thread" and not inspect.iscoroutinefunction(self._handler):
                reactor = self.factory.reactor
                result: Any = deferToThreadPool(reactor, reactor.getThreadPool(), self._handler, ex.req)
            else:
                result = self._handler(ex.req)
        except Exception:
            self._handler_failed(ex, Failure())
            return
        if type(result) is dict:
            self._respond(ex, result)
        else:
            self._on_result(ex, result)

    def _on_result(self, ex: _Exchange, result: Any) -> None:
        if isinstance(result, Deferred) or inspect.iscoroutine(result):
            d = result if isinstance(result, Deferred) else Deferred.fromCoroutine(result)
            ex.pending = d
            d.addCallbacks(self._handler_fired, self._handler_errored, callbackArgs=(ex,), errbackArgs=(ex,))
        else:
            self._respond(ex, result)

    def _handler_fired(self, result: Any, ex: _Exchange) -> None:
        ex.pending = None
        if ex.abandoned or self.state is ConnState.HANDED_OFF:
            return
        self._on_result(ex, result)

    def _handler_errored(self, failure: Failure, ex: _Exchange) -> None:
        ex.pending = None
        if ex.abandoned:
            if not failure.check(CancelledError):
                _log.failure("handler failed after the client went away", failure)
            return
        if self.state is ConnState.HANDED_OFF:
            _log.failure("handler failed after the upgrade", failure)
            return
        self._handler_failed(ex, failure)

    def _handler_failed(self, ex: _Exchange, failure: Failure) -> None:
        if failure.check(WebSocketHandshakeError) and not ex.in_error:
            self._refuse_body(ex)
            self._write_error(ex, 400)
            return
        _log.failure(
            "handler failed on {method} {uri}",
            failure,
            method=ex.req.get("request_method"),
            uri=ex.req.get("uri"),
        )
        if ex.started:
            self.transport.abortConnection()
            return
        error_handler = self._opts.error_handler
        if ex.in_error or error_handler is None:
            self._write_error(ex, 500)
            return
        ex.in_error = True
        try:
            result = error_handler(ex.req, failure)
        except Exception:
            self._handler_failed(ex, Failure())
            return
        self._on_result(ex, result)

    # -- responding --------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._idle_call is not None:
            self._last_activity = self._clock.seconds()
        self.transport.write(data)

    def _write_error(self, ex: _Exchange, status: int) -> None:
        """A fixed error response, then close (no handler, nothing of ours leaks)."""
        ex.keep_alive = False
        ex.started = True
        self._write(simple_response(status))
        self._finish(ex, False)

    def _respond(self, ex: _Exchange, response: Any) -> None:
        if ex.started:
            return
        try:
            status, headers, body = response_parts(response)
            lines, seen = encode_headers(headers)
            if type(body) is str:
                coerced: Any = body.encode("utf-8")
            else:
                coerced = coerce_body(body)
        except Exception:
            self._handler_failed(ex, Failure())
            return
        self._respond_body(ex, status, lines, seen, coerced)

    def _respond_body(
        self, ex: _Exchange, status: int, lines: list[bytes], seen: dict[str, str], body: Any
    ) -> None:
        if type(body) is bytes:
            self._write_whole(ex, status, lines, seen, body)
        elif isinstance(body, ChunkSource):
            self._write_stream(ex, status, lines, seen, body)
        else:
            assert isinstance(body, Deferred)
            ex.pending = body

            def fired(value: Any) -> None:
                ex.pending = None
                if ex.abandoned:
                    return
                try:
                    coerced = coerce_body(value)
                except Exception:
                    self._handler_failed(ex, Failure())
                    return
                self._respond_body(ex, status, lines, seen, coerced)

            body.addCallbacks(fired, self._handler_errored, errbackArgs=(ex,))

    def _gzip(self, ex: _Exchange, status: int, seen: dict[str, str]) -> bool:
        return (
            self._opts.compression
            and status not in NO_BODY_STATUSES
            and "content-encoding" not in seen
            and accepts_gzip(ex.req["headers"].get("accept-encoding"))
        )

    def _head(
        self, ex: _Exchange, status: int, lines: list[bytes], seen: dict[str, str], framing: bytes, keep: bool
    ) -> list[bytes]:
        parts = [status_line(status)]
        parts.extend(lines)
        if "date" not in seen:
            parts.append(b"date: " + http_date() + b"\r\n")
        if framing:
            parts.append(framing)
        if not keep:
            parts.append(b"connection: close\r\n")
        elif ex.version10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return parts

    def _keep(self, ex: _Exchange) -> bool:
        return (
            ex.keep_alive
            and ex.body_done
            and not self._closing
            and not ex.upgrade
            and (self.state is ConnState.OPEN or self.state is ConnState.BROKEN)
        )

    def _write_whole(
        self, ex: _Exchange, status: int, lines: list[bytes], seen: dict[str, str], data: bytes
    ) -> None:
        keep = self._keep(ex)
        if status in NO_BODY_STATUSES:
            data = b""
            framing = b""
        else:
            if data and self._gzip(ex, status, seen):
                data = Gzipper.whole(data)
                lines = [*lines, b"content-encoding: gzip\r\nvary: accept-encoding\r\n"]
            length = len(data)
            if ex.head and not data and "content-length" in seen and seen["content-length"].isdigit():
                length = int(seen["content-length"])
            framing = b"content-length: %d\r\n" % length
        parts = self._head(ex, status, lines, seen, framing, keep)
        if data and not ex.head:
            parts.append(data)
        ex.started = True
        self._write(b"".join(parts))
        self._finish(ex, keep)

    def _write_stream(
        self, ex: _Exchange, status: int, lines: list[bytes], seen: dict[str, str], source: ChunkSource
    ) -> None:
        keep = self._keep(ex)
        length = source.length
        declared = seen.get("content-length")
        if length is None and declared is not None and declared.isdigit():
            length = int(declared)
        gz: Gzipper | None = None
        if status not in NO_BODY_STATUSES and self._gzip(ex, status, seen):
            gz = Gzipper()
            length = None
            lines = [*lines, b"content-encoding: gzip\r\nvary: accept-encoding\r\n"]
        chunked = False
        if status in NO_BODY_STATUSES:
            framing = b""
        elif length is not None:
            framing = b"content-length: %d\r\n" % length
        elif ex.version10:
            framing = b""  # RFC 9112 §6.3: the body ends when the connection closes
            keep = False
        else:
            framing = b"transfer-encoding: chunked\r\n"
            chunked = True
        ex.started = True
        self._write(b"".join(self._head(ex, status, lines, seen, framing, keep)))
        if ex.head or status in NO_BODY_STATUSES:
            source.close()
            self._finish(ex, keep)
            return
        ex.keep_alive = keep
        writer = BodyWriter(self, ex, source, chunked, length, gz)
        ex.writer = writer
        self.transport.registerProducer(writer, True)
        writer.pump()

    def _body_done(self, ex: _Exchange, complete: bool) -> None:
        """Called by the writer when the body is written."""
        if ex.writer is not None and self.state is not ConnState.CLOSED:
            self.transport.unregisterProducer()
        self._finish(ex, ex.keep_alive and complete and self._keep(ex))

    def _body_failed(self, ex: _Exchange) -> None:
        """Called by the writer when the body failed after the head went out."""
        if self.state is not ConnState.CLOSED:
            self.transport.unregisterProducer()
            self.transport.abortConnection()

    def _finish(self, ex: _Exchange, keep: bool) -> None:
        body = ex.body
        if body is not None and not body.drained:
            # the response is complete: drop what the handler did not read, so that
            # waiting puts fire (a closed stream still holds them for takers)
            body.close()
            end = object()
            while not body.drained and body.take(end).called:
                pass
        if self._current is ex:
            self._current = None
        if not keep:
            self._queue.clear()
            self._close()
            return
        if not self._dispatching:
            self._dispatch_next()

    # -- upgrade hand-off (TWISTED-NOTES §2) ----------------------------------

    def _hand_off(self, ex: _Exchange, protocol: Protocol, head: bytes) -> None:
        if self.state is not ConnState.UPGRADING or ex is not self._current or ex.started:
            raise RuntimeError(f"cannot hand off the connection in state {self.state.value}")
        transport = self.transport
        self.state = ConnState.HANDED_OFF
        self._handed_to = protocol
        ex.started = True
        self._current = None
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        if hasattr(transport, "wrappedProtocol"):
            transport.wrappedProtocol = protocol  # under TLS: a ProtocolWrapper
        else:
            transport.protocol = protocol
        # The transport now reports to ``protocol``: hear its connectionLost too,
        # so the Server stops tracking this connection (graceful_close forwards).
        their_lost = protocol.connectionLost

        def connection_lost(reason: Failure = connectionDone) -> None:
            try:
                their_lost(reason)
            finally:
                self.connectionLost(reason)

        protocol.connectionLost = connection_lost  # type: ignore[method-assign]
        protocol.makeConnection(transport)
        tail, self._tail = self._tail, b""
        data = head + tail
        if data:
            protocol.dataReceived(data)
        self._paused = 0
        transport.resumeProducing()
