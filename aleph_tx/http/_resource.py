"""The twisted.web front: ``to_resource(handler)`` and HTTP/2 (TWISTED-NOTES §4–5).

:func:`to_resource` mounts a Ring handler in any twisted.web ``Site``, built from
the same Ring core as the HTTP/1.1 protocol (:mod:`._ring`, :mod:`._body`). In a
plain ``Site`` twisted.web buffers the request body before ``render``; a ``Site``
whose ``requestFactory`` is :class:`StreamingRequest` (what :func:`make_site` and
the HTTP/2 front use) streams it instead, with backpressure: while a put into the
body stream waits, the connection (HTTP/1.1) or the HTTP/2 stream is paused.

WebSocket upgrades on HTTP/1.1 (TWISTED-NOTES §2, as autobahn's
``WebSocketResource.render``): the request dict of an ``Upgrade`` request carries
a :class:`WebUpgradeHandle`; handing off detaches the transport from twisted.web's
``HTTPChannel`` and gives it, with every byte the channel buffered, to the new
protocol. Over HTTP/2 (RFC 8441) it raises :class:`NotImplementedError`.

Limits of this front (twisted.web's, documented in the guide): ``Expect:
100-continue`` is answered by twisted.web itself (``continue_handler`` applies
only to the HTTP/1.1 front); on HTTP/2 one paused stream can stall the others of
its connection once the connection window (65,535 bytes) is used up.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IHandshakeListener, IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from zope.interface import implementer

from aleph_tx._chunks import ChunkSource
from aleph_tx.errors import WebSocketHandshakeError
from aleph_tx.http._body import Gzipper, accepts_gzip, coerce_body
from aleph_tx.http._h1 import UpgradeRequest
from aleph_tx.http._limits import ServerOptions, make_options
from aleph_tx.http._ring.request import (
    NO_BODY_STATUSES,
    build_request,
    encode_headers,
    headers_dict,
    response_parts,
)
from aleph_tx.http._writer import BodyWriter
from aleph_tx.stream import Stream

__all__ = ["ALPNFactory", "StreamingRequest", "make_site", "to_resource"]

_log = Logger()

_BODY_BUFFER = 65536

#: HTTP/2 connection-level receive window: a paused stream holds at most its own
#: (64 KiB) window of it, so 256 paused streams are needed to stall a connection.
H2_CONNECTION_WINDOW = 16 << 20


class StreamingRequest(server.Request):
    """A ``Request`` whose body is a :class:`~aleph_tx.stream.Stream`, read with backpressure.

    twisted.web renders a request only once its body is complete. To stream, a
    request with a body is processed as soon as its headers are in (``gotLength``):
    the handler runs while the body arrives, each chunk is put into the body stream,
    and while a put waits the connection (HTTP/1.1) or the HTTP/2 stream is paused.
    A response finished before the body ended closes the body stream (the rest is
    discarded) and is completed once twisted.web has read the request to its end.
    """

    aleph_body: Stream | None = None
    aleph_received = 0
    aleph_too_large = False
    aleph_max_body: int | None = None
    aleph_early = False
    aleph_complete = False
    aleph_on_complete: list[Callable[[], object]] | None = None
    aleph_on_too_large: Callable[[], object] | None = None

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        """Headers are in: open the body stream and start processing now."""
        import io

        max_body = getattr(getattr(self.channel, "site", None), "aleph_max_body", None)
        self.aleph_max_body = max_body
        self.content = io.BytesIO()
        if length is not None and length == 0:
            return
        if max_body is not None and length is not None and length > max_body:
            self.aleph_too_large = True
        self.aleph_body = Stream(_BODY_BUFFER, None, None, len)
        channel = self.channel
        # the request line: private on HTTPChannel, public on H2Stream (TWISTED-NOTES §5)
        command = getattr(channel, "_command", None) or getattr(channel, "command", None)
        path = getattr(channel, "_path", None) or getattr(channel, "path", None)
        version = getattr(channel, "_version", None) or b"HTTP/2"
        if command is None or path is None:
            return  # unknown channel: twisted.web renders when the body is complete
        self.aleph_early = True
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Put a piece of the body; pause the connection (or h2 stream) while the put waits."""
        body = self.aleph_body
        if body is None:
            if self.content is not None:
                self.content.write(data)
            return
        if self.aleph_too_large or body.closed:
            return
        self.aleph_received += len(data)
        if self.aleph_max_body is not None and self.aleph_received > self.aleph_max_body:
            self.aleph_too_large = True
            on_too_large, self.aleph_on_too_large = self.aleph_on_too_large, None
            if on_too_large is not None:
                on_too_large()  # 413 if the response has not started (the handler is cancelled)
            _discard(body)
            return
        d = body.put(data)
        if not d.called:
            target = self._pause_target()
            if target is not None:
                target.pauseProducing()
                d.addBoth(lambda _: _resume(target))

    def _pause_target(self) -> Any:
        channel = self.channel
        # HTTP/2: the H2Stream is the producer of its data; HTTP/1.1: the TCP transport
        # (never HTTPChannel.pauseProducing: that is the write side, TWISTED-NOTES §5)
        if type(channel).__name__ == "H2Stream":
            return channel
        return getattr(channel, "transport", None)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        """The body is complete: close its stream (processing started at ``gotLength``)."""
        self.aleph_complete = True
        if self.aleph_body is not None:
            self.aleph_body.close()
        if not self.aleph_early:
            super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]
            return
        callbacks, self.aleph_on_complete = self.aleph_on_complete, None
        for fn in callbacks or ():
            fn()

    def aleph_when_complete(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` once the request was read to its end (at once if it was)."""
        if self.aleph_body is not None and not self.aleph_complete:
            _discard(self.aleph_body)  # the rest of the body is read and dropped
        # HTTP/2 may end the response before the request (RFC 9113 §8.1); HTTP/1.1
        # through twisted.web must read the request to its end first
        if self.aleph_complete or not self.aleph_early or type(self.channel).__name__ == "H2Stream":
            fn()
            return
        if self.aleph_on_complete is None:
            self.aleph_on_complete = []
        self.aleph_on_complete.append(fn)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        """The client went away: close the body stream."""
        if self.aleph_body is not None:
            self.aleph_body.close()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


def _discard(body: Stream) -> None:
    """Close ``body`` and take what it holds, so that waiting puts fire (and reading resumes)."""
    body.close()
    end = object()
    while not body.drained:
        d = body.take(end)
        if not d.called:  # cannot happen on a closed stream; be safe
            return
        d.addErrback(lambda _: None)


def _finish(request: server.Request) -> None:
    """``request.finish()``, once the request was read to its end (early processing)."""
    when = getattr(request, "aleph_when_complete", None)

    def finish() -> None:
        if not request._disconnected and not request.finished:
            request.finish()

    if when is None:
        finish()
    else:
        when(finish)


def _resume(target: Any) -> None:
    try:
        target.resumeProducing()
    except Exception:  # the connection went away meanwhile
        pass


class WebUpgradeHandle:
    """``req.upgrade`` of an ``Upgrade`` request in a twisted.web ``Site`` (see ``_h1.UpgradeHandle``).

    :ivar head: the request head, rebuilt from what twisted.web parsed.
    """

    __slots__ = ("_request", "_state", "head")

    def __init__(self, request: server.Request, state: dict[str, Any]) -> None:
        self._request = request
        self._state = state
        lines = [b"%s %s HTTP/1.1\r\n" % (request.method, request.uri)]
        for name, values in request.requestHeaders.getAllRawHeaders():
            lines.extend(b"%s: %s\r\n" % (name, value) for value in values)
        lines.append(b"\r\n")
        self.head = b"".join(lines)

    @property
    def transport(self) -> Any:
        """The connection's transport (``None`` once handed off or gone)."""
        return getattr(self._request.channel, "transport", None)

    def hand_off(self, protocol: Protocol, replay_head: bool = True) -> None:
        """Take the connection away from twisted.web and give it to ``protocol``.

        :raises NotImplementedError: on HTTP/2.
        :raises RuntimeError: if the connection is gone or the response started.
        """
        request, channel = self._request, self._request.channel
        if type(channel).__name__ == "H2Stream":
            raise NotImplementedError("WebSockets over HTTP/2 (RFC 8441) are not implemented")
        transport = getattr(channel, "transport", None)
        if transport is None or self._state["gone"] or request.startedWriting or request.finished:
            raise RuntimeError("cannot hand off the connection: it is gone or the response started")
        self._state["gone"] = True  # the handler's return value is ignored from now on
        buffered = getattr(channel, "_dataBuffer", None) or []  # private: bytes read after the head
        tail = b"".join(buffered)
        del buffered[:]
        body = request.content.read() if request.content is not None else b""
        channel.transport = None  # late writes by twisted.web go nowhere
        transport.unregisterProducer()  # the channel was the transport's producer
        if hasattr(transport, "wrappedProtocol"):
            transport.wrappedProtocol = protocol  # under TLS: a ProtocolWrapper
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        data = (self.head if replay_head else b"") + body + tail
        if data:
            protocol.dataReceived(data)
        transport.resumeProducing()  # twisted.web pauses while it buffers pipelined bytes


class _Exchange:
    __slots__ = ("req", "request")

    def __init__(self, req: dict[str, Any], request: server.Request) -> None:
        self.req = req
        self.request = request


class _RequestProto:
    """What :class:`BodyWriter` writes through: a twisted.web request (it frames itself)."""

    def __init__(self, request: server.Request) -> None:
        self.request = request

    def _write(self, data: bytes) -> None:
        self.request.write(data)

    def _body_done(self, ex: Any, complete: bool) -> None:
        self.request.unregisterProducer()
        _finish(self.request)

    def _body_failed(self, ex: Any) -> None:
        self.request.unregisterProducer()
        _abort(self.request)


def _abort(request: server.Request) -> None:
    transport = getattr(request.channel, "transport", None)
    abort = getattr(transport, "abortConnection", None) or getattr(transport, "loseConnection", None)
    if abort is not None:
        abort()


class AlephResource(resource.Resource):
    """The resource :func:`to_resource` returns (a leaf: it answers every path below it)."""

    isLeaf = True  # noqa: N815 - Twisted's name

    def __init__(self, handler: Callable[[dict[str, Any]], Any], options: ServerOptions) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.handler = handler
        self.options = options

    def render(self, request: server.Request) -> Any:
        """Build the Ring request, call the handler, answer when it has answered."""
        if getattr(request, "aleph_too_large", False):
            self._finish_simple(request, 413)
            return server.NOT_DONE_YET
        body = getattr(request, "aleph_body", None)
        if not isinstance(request, StreamingRequest):
            content = request.content.read() if request.content is not None else b""
            if content:
                body = Stream(1)
                body.put(content)
                body.close()
            elif request.requestHeaders.hasHeader(b"transfer-encoding"):
                body = Stream()
                body.close()
            if (
                self.options.max_request_body_size is not None
                and len(content) > self.options.max_request_body_size
            ):
                return self._simple(request, 413)
        host = request.getHost()
        client = request.getClientAddress()
        raw_headers = [
            (name, value) for name, values in request.requestHeaders.getAllRawHeaders() for value in values
        ]
        protocol = (request.clientproto or b"HTTP/1.1").decode("latin-1")
        connection = request.requestHeaders.getRawHeaders(b"connection", [b""])[0].lower()
        keep_alive = b"close" not in connection if protocol != "HTTP/1.0" else b"keep-alive" in connection
        req = build_request(
            request.method.decode("latin-1"),
            request.uri,
            headers_dict(raw_headers),
            body,
            scheme="https" if request.isSecure() else "http",
            server_name=str(getattr(host, "host", "localhost")),
            server_port=int(getattr(host, "port", 0) or 0),
            remote_addr=str(getattr(client, "host", "")),
            protocol="HTTP/2" if protocol.upper().startswith("HTTP/2") else protocol,
            keep_alive=keep_alive,
        )
        state: dict[str, Any] = {"pending": None, "writer": None, "gone": False, "in_error": False}
        if "upgrade" in req["headers"] and "upgrade" in req["headers"].get("connection", "").lower():
            req = UpgradeRequest(req)
            req.upgrade = WebUpgradeHandle(request, state)  # type: ignore[assignment]
        ex = _Exchange(req, request)

        def gone(_: object) -> None:
            state["gone"] = True
            if body is not None:
                body.close()
            writer = state["writer"]
            if writer is not None:
                writer.abandon()
            pending = state["pending"]
            if pending is not None:
                state["pending"] = None
                pending.cancel()

        request.notifyFinish().addErrback(gone)

        def too_large() -> None:
            # the body grew past max_request_body_size while the handler ran
            if request.startedWriting or state["gone"]:
                return
            state["gone"] = True  # the handler's answer is dropped
            pending = state["pending"]
            if pending is not None:
                state["pending"] = None
                pending.cancel()
            self._finish_simple(request, 413)

        if isinstance(request, StreamingRequest):
            request.aleph_on_too_large = too_large
        try:
            result = self.handler(req)
        except Exception:
            self._failed(ex, state, Failure())
            return server.NOT_DONE_YET
        self._result(ex, state, result)
        return server.NOT_DONE_YET

    def _simple(self, request: server.Request, status: int) -> bytes:
        from twisted.web import http as twhttp

        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"connection", b"close")
        text = twhttp.RESPONSES.get(status, b"Error")
        request.setHeader(b"content-length", b"%d" % len(text))
        return text

    def _result(self, ex: _Exchange, state: dict[str, Any], result: Any) -> None:
        if state["gone"]:
            return  # the client went away, or the connection was handed off
        if isinstance(result, Deferred) or inspect.iscoroutine(result):
            d = result if isinstance(result, Deferred) else Deferred.fromCoroutine(result)
            state["pending"] = d

            def fired(value: Any) -> None:
                state["pending"] = None
                if not state["gone"]:
                    self._result(ex, state, value)

            def failed(f: Failure) -> None:
                state["pending"] = None
                if state["gone"]:
                    if not f.check(CancelledError):
                        _log.failure("handler failed after the client went away", f)
                    return
                self._failed(ex, state, f)

            d.addCallbacks(fired, failed)
            return
        try:
            status, headers, body = response_parts(result)
            lines, seen = encode_headers(headers)
            coerced = coerce_body(body)
        except Exception:
            self._failed(ex, state, Failure())
            return
        if isinstance(coerced, Deferred):

            def body_fired(value: Any) -> None:
                state["pending"] = None
                if not state["gone"]:
                    self._result(ex, state, {**(result or {}), "body": value})

            state["pending"] = coerced
            coerced.addCallbacks(body_fired, lambda f: self._failed(ex, state, f))
            return
        self._send(ex, state, status, lines, seen, coerced)

    def _send(
        self,
        ex: _Exchange,
        state: dict[str, Any],
        status: int,
        lines: list[bytes],
        seen: dict[str, str],
        body: Any,
    ) -> None:
        request = ex.request
        request.setResponseCode(status)
        for line in lines:
            name, _, value = line[:-2].partition(b": ")
            request.responseHeaders.addRawHeader(name, value)
        if "date" in seen:
            request.responseHeaders.setRawHeaders(b"date", [seen["date"].encode("latin-1")])
        if "content-encoding" in seen:
            request.responseHeaders.setRawHeaders(
                b"content-encoding", [seen["content-encoding"].encode("latin-1")]
            )
        gz = self._gzip(ex, status, seen)
        if gz:
            request.setHeader(b"content-encoding", b"gzip")
            request.setHeader(b"vary", b"accept-encoding")
        if type(body) is bytes:
            if gz and body:
                body = Gzipper.whole(body)
            request.setHeader(b"content-length", b"%d" % len(body))
            if body:
                request.write(body)
            _finish(request)
            return
        assert isinstance(body, ChunkSource)
        length = body.length
        declared = seen.get("content-length")
        if length is None and declared is not None and declared.isdigit():
            length = int(declared)
        if gz:
            length = None
            request.responseHeaders.removeHeader(b"content-length")
        if length is not None:
            request.setHeader(b"content-length", b"%d" % length)
        if request.method == b"HEAD":
            body.close()
            request.write(b"")
            _finish(request)
            return
        writer = BodyWriter(_RequestProto(request), ex, body, False, length, Gzipper() if gz else None)  # type: ignore[arg-type]
        state["writer"] = writer
        request.registerProducer(writer, True)
        writer.pump()

    def _gzip(self, ex: _Exchange, status: int, seen: dict[str, str]) -> bool:
        """Whether to gzip this response (``compression``, as on the HTTP/1.1 front)."""
        return (
            self.options.compression
            and status not in NO_BODY_STATUSES
            and "content-encoding" not in seen
            and accepts_gzip(ex.req["headers"].get("accept-encoding"))
        )

    def _failed(self, ex: _Exchange, state: dict[str, Any], failure: Failure) -> None:
        request = ex.request
        if state["gone"]:  # the client went away, or the connection was handed off
            if not failure.check(CancelledError):
                _log.failure(
                    "handler failed on {uri} after its connection was gone or handed off",
                    failure,
                    uri=ex.req["uri"],
                )
            return
        if failure.check(WebSocketHandshakeError) and not state["in_error"]:
            self._finish_simple(request, 400)
            return
        _log.failure(
            "handler failed on {method} {uri}", failure, method=ex.req["request_method"], uri=ex.req["uri"]
        )
        if request.startedWriting:
            _abort(request)
            return
        error_handler = self.options.error_handler
        if state["in_error"] or error_handler is None:
            self._finish_simple(request, 500)
            return
        state["in_error"] = True
        try:
            result = error_handler(ex.req, failure)
        except Exception:
            self._failed(ex, state, Failure())
            return
        self._result(ex, state, result)

    def _finish_simple(self, request: server.Request, status: int) -> None:
        request.responseHeaders = type(request.responseHeaders)()
        text = self._simple(request, status)
        request.write(text)
        _finish(request)


def to_resource(handler: Callable[[dict[str, Any]], Any], **options: Any) -> resource.Resource:
    """A twisted.web resource serving ``handler`` (mount it anywhere in a ``Site``).

    It answers every path below where it is mounted; ``req["uri"]`` is the full
    path. Request bodies stream with backpressure when the ``Site`` uses
    :class:`StreamingRequest` (see :func:`make_site`); otherwise twisted.web has
    buffered them.

    :param options: ``error_handler``, ``max_request_body_size``, ``compression``
        (others of ``start_server`` are accepted and apply to the HTTP/1.1 front only).
    :raises TypeError: for an unknown option or a handler that is not callable.
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {handler!r}")
    return AlephResource(handler, make_options(options))


def make_site(
    root: resource.IResource, max_request_body_size: int | None = None, idle_timeout: float | None = None
) -> server.Site:
    """A ``Site`` that streams request bodies into :func:`to_resource` handlers, access log off.

    :param idle_timeout: twisted.web's connection timeout (``None``: twisted.web's default).
    """
    site = server.Site(root, requestFactory=StreamingRequest)
    site.aleph_max_body = max_request_body_size  # type: ignore[attr-defined]
    if idle_timeout is not None:
        site.timeOut = idle_timeout
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


@implementer(IHandshakeListener)
class _ALPNDispatcher(Protocol):
    """Chooses the protocol once TLS negotiated one: ``h2`` → twisted.web, else ours.

    For HTTP/1.1 it steps aside (the TLS layer's ``wrappedProtocol`` becomes our
    protocol, which tracks itself with the ``Server``); for ``h2`` it stays in
    between so the ``Server`` can follow (and close) the connection.
    """

    transport: Any

    def __init__(self, factory: ALPNFactory, addr: Any) -> None:
        self.factory = factory
        self.addr = addr
        self._buffer: list[bytes] = []
        self._real: Any = None
        self._tracked = False
        self._widened = False

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted's name
        """Build the real protocol for the negotiated ALPN name (TWISTED-NOTES §4)."""
        transport = self.transport
        negotiated = getattr(transport, "negotiatedProtocol", None)
        if negotiated == b"h2":
            real = self.factory.site.buildProtocol(self.addr)
            server = getattr(self.factory.h1, "server", None)
            if server is not None:
                self._tracked = True
                server.track(self)
        else:
            real = self.factory.h1.buildProtocol(self.addr)
            if hasattr(transport, "wrappedProtocol"):
                transport.wrappedProtocol = real
        self._real = real
        real.makeConnection(transport)
        for data in self._buffer:
            real.dataReceived(data)
        self._buffer = []

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Forward (or keep until the handshake completed)."""
        if self._real is None:
            self._buffer.append(data)
            return
        self._real.dataReceived(data)
        if self._tracked and not self._widened:
            self._widen_window()

    def _widen_window(self) -> None:
        """Give the HTTP/2 connection a 16 MiB receive window (TWISTED-NOTES §5).

        A stream whose handler does not read keeps its (at most 64 KiB) stream
        window unacknowledged; with the default 64 KiB *connection* window that alone
        would stall every other stream's request body. Private twisted.web
        attributes: skipped (with the default window) if they are missing.
        """
        channel = getattr(self._real, "_channel", None)
        conn = getattr(channel, "conn", None)
        if conn is None or not hasattr(conn, "increment_flow_control_window"):
            return
        self._widened = True
        try:
            conn.increment_flow_control_window(H2_CONNECTION_WINDOW - 65535)
            self.transport.write(conn.data_to_send())
        except Exception:
            _log.failure("widening the HTTP/2 connection window failed")

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        """Forward; stop being tracked."""
        if self._real is not None:
            self._real.connectionLost(reason)
        if self._tracked:
            self._tracked = False
            self.factory.h1.server.untrack(self)

    def graceful_close(self) -> None:
        """``Server.close``: an HTTP/2 connection closes once its streams are written."""
        self.transport.loseConnection()

    def abort(self) -> None:
        """Cut now."""
        self.transport.abortConnection()


@implementer(IProtocolNegotiationFactory)
class ALPNFactory(Factory):
    """One TLS port: ``h2`` through twisted.web's H2 support, ``http/1.1`` through ours."""

    noisy = False

    def __init__(self, h1: Factory, site: server.Site) -> None:
        self.h1 = h1
        self.site = site

    def acceptableProtocols(self) -> list[bytes]:  # noqa: N802 - Twisted's name
        """Offered in ALPN, preferred first."""
        return [b"h2", b"http/1.1"]

    def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802 - Twisted's name
        """A dispatcher deciding after the handshake."""
        return _ALPNDispatcher(self, addr)
