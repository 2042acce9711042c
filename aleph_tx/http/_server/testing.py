"""``request(handler, ...)``: the real HTTP/1.1 protocol over an in-memory transport.

The request is written as bytes into :class:`~aleph_tx.http._server.h1.HTTP11Protocol`
(the server's own code, limits included) over a
:class:`~twisted.internet.testing.StringTransport`; the bytes it answers are parsed
back with httptools. What passes here passes in production.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httptools
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from aleph_tx.errors import ConnectionLostError, ProtocolError
from aleph_tx.http._ring.limits import make_options
from aleph_tx.http._ring.request import headers_dict
from aleph_tx.http._server.exchange import Runner
from aleph_tx.http._server.h1 import HTTP11Protocol, HTTPFactory
from aleph_tx.stream import Stream

__all__ = ["MemoryTransport", "request"]


class MemoryTransport(StringTransport):
    """A ``StringTransport`` that hands every write to ``on_write`` and closes for real."""

    def __init__(
        self,
        on_write: Callable[[bytes], None],
        protocol: HTTP11Protocol,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            hostAddress=IPv4Address("TCP", "127.0.0.1", 80),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 49152),
        )
        self._on_write = on_write
        self._protocol = protocol
        self._on_lost = on_lost
        self._lost = False

    def write(self, data: bytes) -> None:
        """Record and pass on."""
        super().write(data)  # type: ignore[no-untyped-call]
        if data:
            self._on_write(data)

    def writeSequence(self, seq: Any) -> None:  # noqa: N802 - Twisted's name
        """Join and pass on."""
        self.write(b"".join(seq))

    def _lose(self, reason: Failure) -> None:
        if self._lost:
            return
        self._lost = True
        if self.producer is not None:
            producer, self.producer = self.producer, None
            producer.stopProducing()
        self._protocol.connectionLost(reason)
        if self._on_lost is not None:
            self._on_lost()

    def loseConnection(self) -> None:  # noqa: N802 - Twisted's name
        """Close now (everything written is already delivered)."""
        super().loseConnection()  # type: ignore[no-untyped-call]
        self._lose(Failure(connectionDone.value))

    def abortConnection(self) -> None:  # noqa: N802 - Twisted's name
        """Cut now."""
        super().abortConnection()  # type: ignore[no-untyped-call]
        self._lose(Failure(ConnectionLostError("aborted")))


class _Client:
    """Parses the server's answer; fires ``d`` with the response dict."""

    def __init__(self, method: str) -> None:
        self.d: Deferred[dict[str, Any]] = Deferred()
        self.parser = httptools.HttpResponseParser(self)
        self.head = method == "HEAD"
        self.hdrs: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.status = 0
        self.done = False

    def on_message_begin(self) -> None:
        self.hdrs = []
        self.chunks = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.hdrs.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.head and self.status >= 200:
            self._fire()

    def on_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self._fire()

    def _fire(self) -> None:
        if self.done:
            return
        self.done = True
        self.d.callback(
            {"status": self.status, "headers": headers_dict(self.hdrs), "body": b"".join(self.chunks)}
        )

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.done = True
            self.d.errback(ProtocolError(f"malformed response from the server: {e}"))

    def lost(self) -> None:
        if self.done:
            return
        try:
            self.parser.feed_data(b"")  # a close-delimited body ends here
        except httptools.HttpParserError:
            pass
        if not self.done:
            self.done = True
            self.d.errback(
                ConnectionLostError("the server closed the connection without a complete response")
            )


def request(
    handler: Callable[[dict[str, Any]], Any],
    method: str,
    uri: str,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    **options: Any,
) -> Deferred[dict[str, Any]]:
    """Run ``handler`` on one request through the real HTTP/1.1 protocol, in memory.

    :param method: any case (sent upper-case; the handler sees it lower-case).
    :param uri: path and optional ``?query``.
    :param headers: request headers (``host: localhost`` unless given).
    :param body: ``None``, ``str``, bytes-like, or an iterable / ``Stream`` of chunks
        (sent chunked).
    :param options: ``start_server`` options (limits, ``error_handler``, ...).
    :returns: fires ``{"status", "headers", "body": bytes}``; fails with
        :class:`~aleph_tx.errors.ConnectionLostError` if the server closed without
        a complete response (e.g. a body that failed mid-stream).
    :raises TypeError: for an unknown option name.
    """
    factory = HTTPFactory(Runner(handler, make_options(options)))
    factory.scheme = "http"
    proto = factory.buildProtocol(None)
    verb = method.upper()
    client = _Client(verb)
    transport = MemoryTransport(client.feed, proto, client.lost)
    head = {"host": "localhost"}
    for name, value in (headers or {}).items():
        head[name.lower()] = value
    streamed = False
    payload = b""
    if body is not None:
        if isinstance(body, str):
            payload = body.encode("utf-8")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            payload = bytes(body)
        else:
            streamed = True
        if "content-length" not in head and "transfer-encoding" not in head:
            if streamed:
                head["transfer-encoding"] = "chunked"
            else:
                head["content-length"] = str(len(payload))
    lines = [f"{verb} {uri} HTTP/1.1\r\n".encode("latin-1")]
    lines.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in head.items())
    lines.append(b"\r\n")
    proto.makeConnection(transport)  # type: ignore[no-untyped-call]
    proto.dataReceived(b"".join(lines) + payload)
    if streamed:
        _send_chunked(proto, transport, body)

    def finished(result: Any) -> Any:
        if not transport._lost:
            transport.loseConnection()
        return result

    return client.d.addBoth(finished)


def _send_chunked(proto: HTTP11Protocol, transport: MemoryTransport, body: Any) -> None:
    def frame(chunk: Any) -> bytes:
        data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        return b"%x\r\n%b\r\n" % (len(data), data) if data else b""

    if not isinstance(body, Stream):
        for chunk in body:
            proto.dataReceived(frame(chunk))
        proto.dataReceived(b"0\r\n\r\n")
        return

    def pump(msg: Any = None) -> None:
        while not transport._lost:
            d = body.take()
            if not d.called:
                d.addCallback(lambda m: pump() if send(m) else None)
                return
            m = d.result
            if not send(m):
                return

    def send(m: Any) -> bool:
        if transport._lost:
            return False
        if m is None:
            proto.dataReceived(b"0\r\n\r\n")
            return False
        proto.dataReceived(frame(m))
        return True

    pump()
