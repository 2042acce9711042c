"""The twisted.web front: ``to_resource``, ``make_site``, and the HTTP/2 half of ``start_server``.

:func:`to_resource` mounts a Ring handler in any twisted.web ``Site``; each request
runs through the same :class:`~.exchange.Exchange` as on the HTTP/1.1 front, with a
:class:`WebSink` writing through twisted.web's ``Request``. In a plain ``Site``
twisted.web has buffered the request body before ``render``; a ``Site`` whose
``requestFactory`` is :class:`StreamingRequest` (what :func:`make_site` and the
HTTP/2 front use) streams it instead, with backpressure (docs/internals.rst,
"Streaming twisted.web bodies"): while a put into the body stream waits, the
connection (HTTP/1.1) or the HTTP/2 stream is paused.

WebSocket upgrades on HTTP/1.1 (as autobahn's ``WebSocketResource.render``): the
request dict of an ``Upgrade`` request carries a :class:`WebUpgradeHandle`; handing
off detaches the transport from twisted.web's ``HTTPChannel`` and gives it, with
every byte the channel buffered, to the new protocol. Over HTTP/2 (RFC 8441) it
raises :class:`NotImplementedError`.

What this front cannot do is refused (:func:`check_web_options`): twisted.web
answers ``Expect: 100-continue`` itself (so ``continue_handler`` works on the
HTTP/1.1 front only), and connection-level options belong to the ``Site``
(:func:`make_site`), not to a resource.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import http as twhttp
from twisted.web import resource, server

from aleph_tx._receiver import Receiver
from aleph_tx._time import get_reactor
from aleph_tx.errors import ConnectionLostError
from aleph_tx.http._ring.limits import DEFAULTS, check_header_size, check_request_line, make_options
from aleph_tx.http._ring.request import build_request, headers_dict
from aleph_tx.http._ring.response import NO_BODY_STATUSES
from aleph_tx.http._server.exchange import Exchange, Runner, UpgradeRequest
from aleph_tx.stream import Stream

__all__ = [
    "AlephResource",
    "StreamingRequest",
    "StreamingSite",
    "WebSink",
    "check_web_options",
    "make_site",
    "to_resource",
]

_BODY_BUFFER = 65536

#: Options a resource cannot honour: twisted.web answers 100-continue itself, and
#: connection timers and protocols are the Site's (make_site) or start_server's.
_NOT_ON_A_RESOURCE = (
    "continue_handler",
    "idle_timeout",
    "header_timeout",
    "shutdown_timeout",
    "http_versions",
)


def check_web_options(options: Mapping[str, Any]) -> None:
    """Refuse, with :class:`ValueError` naming it, an option ``to_resource`` cannot honour."""
    for name in _NOT_ON_A_RESOURCE:
        if name in options and options[name] != DEFAULTS[name]:
            raise ValueError(
                f"to_resource cannot honour {name}={options[name]!r}: "
                + (
                    "twisted.web answers 'Expect: 100-continue' itself (use http.start_server)"
                    if name == "continue_handler"
                    else "it is a connection option (make_site or http.start_server)"
                )
            )


def _is_h2(channel: Any) -> bool:
    from twisted.web._http2 import H2Stream

    return isinstance(channel, H2Stream)


class StreamingRequest(server.Request):
    """A ``Request`` whose body is a :class:`~aleph_tx.stream.Stream`, read with backpressure.

    twisted.web renders a request only once its body is complete. To stream, a
    request with a body is processed as soon as its headers are in (``gotLength``):
    the handler runs while the body arrives; a :class:`~aleph_tx._receiver.Receiver`
    puts each chunk and pauses the connection (HTTP/1.1) or the HTTP/2 stream while
    a put waits. A response finished before the body ended drops the rest of it and
    is completed once twisted.web has read the request to its end (HTTP/1.1).
    """

    aleph_body: Stream | None = None
    aleph_receiver: Receiver | None = None
    aleph_exchange: Exchange | None = None
    aleph_received = 0
    aleph_too_large = False
    aleph_max_body: int | None = None
    aleph_early = False
    aleph_complete = False
    aleph_on_complete: list[Callable[[], object]] | None = None

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        """Headers are in: open the body stream and start processing now."""
        max_body = getattr(getattr(self.channel, "site", None), "aleph_max_body", None)
        self.aleph_max_body = max_body
        self.content = io.BytesIO()
        if length is not None and length == 0:
            return
        if max_body is not None and length is not None and length > max_body:
            self.aleph_too_large = True
        body = Stream(_BODY_BUFFER, None, None, len)
        self.aleph_body = body
        channel = self.channel
        # HTTP/2: the H2Stream produces its data; HTTP/1.1: the TCP transport (never
        # HTTPChannel.pauseProducing: that is the write side)
        producer = channel if _is_h2(channel) else getattr(channel, "transport", None)
        self.aleph_receiver = Receiver(body.put, body.close, producer)
        # the request line: private on HTTPChannel, public on H2Stream
        command = getattr(channel, "_command", None) or getattr(channel, "command", None)
        path = getattr(channel, "_path", None) or getattr(channel, "path", None)
        version = getattr(channel, "_version", None) or b"HTTP/2"
        if command is None or path is None:
            return  # unknown channel: twisted.web renders when the body is complete
        self.aleph_early = True
        if _is_h2(channel):
            # inside H2Stream's constructor: twisted.web registers the stream only
            # after it, so a handler answering at once would find no stream to
            # write to. Process on the next reactor turn.
            reactor = get_reactor(getattr(getattr(channel, "site", None), "aleph_reactor", None))
            reactor.callLater(0, self._process_early, command, path, version)
            return
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def _process_early(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._disconnected:
            server.Request.requestReceived(self, command, path, version)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Put a piece of the body (through the Receiver: it pauses while a put waits)."""
        receiver = self.aleph_receiver
        if receiver is None:
            if self.content is not None:
                self.content.write(data)
            return
        if self.aleph_too_large or not data:  # HTTP/2 may end a body with an empty DATA frame
            return
        self.aleph_received += len(data)
        if self.aleph_max_body is not None and self.aleph_received > self.aleph_max_body:
            self.aleph_too_large = True
            ex = self.aleph_exchange
            if ex is not None:
                ex.interrupt(413)  # the handler is cancelled; 413 unless the response started
            return
        receiver.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        """The body is complete: end its stream (processing started at ``gotLength``)."""
        self.aleph_complete = True
        if self.aleph_receiver is not None:
            self.aleph_receiver.finish()
        if not self.aleph_early:
            super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]
            return
        callbacks, self.aleph_on_complete = self.aleph_on_complete, None
        for fn in callbacks or ():
            fn()

    def aleph_when_complete(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` once the request was read to its end (at once if it was)."""
        # HTTP/2 may end the response before the request (RFC 9113 §8.1; the h2
        # front tolerates the rest of the body); HTTP/1.1 through twisted.web must
        # read the request to its end first
        if self.aleph_complete or not self.aleph_early or _is_h2(self.channel):
            fn()
            return
        if self.aleph_on_complete is None:
            self.aleph_on_complete = []
        self.aleph_on_complete.append(fn)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        """The client went away: abandon the exchange (its handler is cancelled before
        the body ends, so a truncated body never looks complete), else end the body."""
        ex = self.aleph_exchange
        if ex is not None:
            ex.abandon()
        elif self.aleph_body is not None and not self.aleph_body.closed:
            self.aleph_body._break(ConnectionLostError("the client went away before the request body ended"))
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


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


class WebSink:
    """The :class:`~.exchange.ResponseSink` of a twisted.web request (it frames itself)."""

    __slots__ = ("request",)

    def __init__(self, request: server.Request) -> None:
        self.request = request

    def _head(self, status: int, lines: list[bytes], seen: dict[str, str]) -> None:
        request = self.request
        request.setResponseCode(status)
        headers = request.responseHeaders
        for line in lines:
            name, _, value = line[:-2].partition(b": ")
            headers.addRawHeader(name, value)
        for kept in ("date", "content-encoding"):  # the handler's replace twisted.web's
            if kept in seen:
                headers.setRawHeaders(kept.encode("ascii"), [seen[kept].encode("latin-1")])

    def respond_whole(
        self, ex: Exchange, status: int, lines: list[bytes], seen: dict[str, str], body: bytes
    ) -> None:
        """Headers, ``content-length`` and the body in one write."""
        self._head(status, lines, seen)
        if status not in NO_BODY_STATUSES:
            length = len(body)
            declared = seen.get("content-length")
            if ex.head and not body and declared is not None and declared.isdigit():
                length = int(declared)
            self.request.setHeader(b"content-length", b"%d" % length)
        if body and not ex.head:
            self.request.write(body)
        _finish(self.request)

    def respond_head(
        self, ex: Exchange, status: int, lines: list[bytes], seen: dict[str, str], length: int | None
    ) -> bool:
        """Headers; twisted.web frames the body (chunked on HTTP/1.1 when the length is unknown)."""
        self._head(status, lines, seen)
        if length is not None and status not in NO_BODY_STATUSES:
            self.request.setHeader(b"content-length", b"%d" % length)
        if ex.head or status in NO_BODY_STATUSES:
            self.request.write(b"")
            return False
        return True

    def respond_error(self, ex: Exchange, status: int) -> None:
        """A plain-text error, then close (HTTP/1.1) or end the stream (HTTP/2)."""
        request = self.request
        if request.startedWriting:
            self.body_failed(ex)
            return
        request.responseHeaders = type(request.responseHeaders)()
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if not _is_h2(request.channel):
            request.setHeader(b"connection", b"close")  # connection-specific: not in HTTP/2
        text = twhttp.RESPONSES.get(status, b"Error")
        request.setHeader(b"content-length", b"%d" % len(text))
        request.write(text)
        _finish(request)

    def send_continue(self, ex: Exchange) -> None:
        """twisted.web answered ``Expect: 100-continue`` itself."""

    def write(self, data: bytes) -> None:
        """A piece of the body."""
        self.request.write(data)

    def body_done(self, ex: Exchange, complete: bool) -> None:
        """The body is written."""
        _finish(self.request)

    def body_failed(self, ex: Exchange) -> None:
        """Cut the connection (HTTP/1.1) or reset the stream (HTTP/2)."""
        transport = getattr(self.request.channel, "transport", None)
        if _is_h2(self.request.channel):
            transport = self.request.channel
        abort = getattr(transport, "abortConnection", None) or getattr(transport, "loseConnection", None)
        if abort is not None:
            abort()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:  # noqa: N802
        """The body writer produces for the request."""
        self.request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:  # noqa: N802
        """The body writer is done."""
        self.request.unregisterProducer()


class WebUpgradeHandle:
    """``req.upgrade`` of an ``Upgrade`` request in a twisted.web ``Site``.

    :ivar head: the request head, rebuilt from what twisted.web parsed.
    """

    __slots__ = ("_ex", "_request", "head")

    def __init__(self, request: server.Request) -> None:
        self._request = request
        self._ex: Exchange | None = None
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
        request, channel, ex = self._request, self._request.channel, self._ex
        if _is_h2(channel):
            raise NotImplementedError("WebSockets over HTTP/2 (RFC 8441) are not implemented")
        transport = getattr(channel, "transport", None)
        if transport is None or ex is None or ex.started or ex.abandoned or request.startedWriting:
            raise RuntimeError("cannot hand off the connection: it is gone or the response started")
        ex.hand_off()
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


class AlephResource(resource.Resource):
    """The resource :func:`to_resource` returns (a leaf: it answers every path below it)."""

    isLeaf = True  # noqa: N815 - Twisted's name

    def __init__(self, runner: Runner) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.runner = runner

    def render(self, request: server.Request) -> Any:
        """Build the Ring request and run its exchange; twisted.web waits (NOT_DONE_YET)."""
        opts = self.runner.options
        raw_headers = [
            (name, value) for name, values in request.requestHeaders.getAllRawHeaders() for value in values
        ]
        status = check_request_line(len(request.method), len(request.uri), opts.max_initial_line_length)
        status = status or check_header_size(
            sum(len(n) + len(v) + 4 for n, v in raw_headers), opts.max_header_size
        )
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
            max_body = opts.max_request_body_size
            if max_body is not None and len(content) > max_body:
                status = status or 413
        elif request.aleph_too_large:
            status = status or 413
        host = request.getHost()
        client = request.getClientAddress()
        protocol = (request.clientproto or b"HTTP/1.1").decode("latin-1")
        h2 = _is_h2(request.channel)
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
            protocol="HTTP/2" if h2 else protocol,
            keep_alive=keep_alive,
        )
        handle = None
        if "upgrade" in req["headers"] and "upgrade" in req["headers"].get("connection", "").lower():
            req = UpgradeRequest(req)
            handle = req.upgrade = WebUpgradeHandle(request)
        ex = Exchange(self.runner, WebSink(request), req, body)
        ex.head = request.method == b"HEAD"
        if handle is not None:
            handle._ex = ex
        if status is not None:
            ex.error(status)
            return server.NOT_DONE_YET
        request.notifyFinish().addErrback(lambda _: ex.abandon())
        if isinstance(request, StreamingRequest):
            request.aleph_exchange = ex
        ex.run()
        return server.NOT_DONE_YET


def to_resource(handler: Callable[[dict[str, Any]], Any], **options: Any) -> resource.Resource:
    """A twisted.web resource serving ``handler`` (mount it anywhere in a ``Site``).

    It answers every path below where it is mounted; ``req["uri"]`` is the full
    path. Request bodies stream with backpressure when the ``Site`` uses
    :class:`StreamingRequest` (see :func:`make_site`); otherwise twisted.web has
    buffered them.

    :param options: those of ``start_server`` that apply to a request:
        ``error_handler``, ``executor``, ``compression``, ``max_request_body_size``,
        ``max_initial_line_length``, ``max_header_size``.
    :raises TypeError: for an unknown option or a handler that is not callable.
    :raises ValueError: for a bad value, or an option a resource cannot honour
        (``continue_handler``; connection options such as ``idle_timeout``, which
        belong to :func:`make_site` or ``start_server``).
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {handler!r}")
    opts = make_options(options)
    check_web_options(options)
    return AlephResource(Runner(handler, opts))


class StreamingSite(server.Site):
    """A ``Site`` whose requests stream their bodies (:class:`StreamingRequest`), without
    twisted.web's access log (a formatted line per request: a quarter of its throughput).

    :ivar aleph_max_body: ``max_request_body_size`` of its requests (``None``: no limit).
    :ivar aleph_reactor: the reactor of the server it serves (``None``: the global one).
    """

    aleph_max_body: int | None = None
    aleph_reactor: Any = None

    def log(self, request: Any) -> None:
        """No access log line."""


def make_site(
    root: resource.IResource, max_request_body_size: int | None = None, idle_timeout: float | None = None
) -> StreamingSite:
    """A ``Site`` that streams request bodies into :func:`to_resource` handlers, access log off.

    :param idle_timeout: twisted.web's connection timeout (``None``: twisted.web's default).
    """
    site = StreamingSite(root, requestFactory=StreamingRequest)  # type: ignore[no-untyped-call]
    site.aleph_max_body = max_request_body_size
    if idle_timeout is not None:
        site.timeOut = idle_timeout
    return site
