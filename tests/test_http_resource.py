"""The twisted.web front: to_resource in a Site, streaming bodies, and HTTP/2 over TLS."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web import resource, server

from aleph_tx import stream as s
from aleph_tx.http import start_server, to_resource
from aleph_tx.http._resource import make_site


class Raw(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.closed.callback(self.data)


@inlineCallbacks
def fetch(port: int, data: bytes) -> Generator[Any, Any, bytes]:
    p = Raw()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), p)
    p.transport.write(data)
    out = yield p.closed.addTimeout(10, reactor)
    return out


async def handler(req: dict[str, Any]) -> dict[str, Any]:
    if req["uri"].endswith("/echo"):
        chunks = await s.collect(req["body"]) if req["body"] is not None else []
        return {"headers": {"x-uri": req["uri"], "x-proto": req["protocol"]}, "body": b"".join(chunks)}
    if req["uri"].endswith("/stream"):
        return {"body": iter([b"a", b"b", b"c"])}
    if req["uri"].endswith("/boom"):
        raise RuntimeError("secret")
    if req["uri"].endswith("/bad-header"):
        return {"headers": {"x": "a\r\nb"}}
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello " + req["scheme"]}


def test_to_resource_refuses() -> None:
    with pytest.raises(TypeError):
        to_resource(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bogus"):
        to_resource(handler, bogus=1)


@pytest.mark.parametrize("streaming", [False, True])
@pytest_twisted.inlineCallbacks
def test_mounted_in_site(streaming: bool) -> Generator[Any, Any, None]:
    root = resource.Resource()
    root.putChild(b"app", to_resource(handler, max_request_body_size=100))
    site = make_site(root, max_request_body_size=100) if streaming else server.Site(root)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        n = port.getHost().port
        out = yield fetch(n, b"GET /app/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"hello http")
        out = yield fetch(
            n, b"POST /app/echo HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
        )
        assert out.endswith(b"hello") and b"x-uri: /app/echo" in out.lower()
        out = yield fetch(n, b"GET /app/stream HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in out and out.endswith(b"1\r\nc\r\n0\r\n\r\n")
        out = yield fetch(n, b"GET /app/boom HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500 ") and b"secret" not in out
        out = yield fetch(n, b"GET /app/bad-header HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500 ")
        out = yield fetch(
            n, b"POST /app/echo HTTP/1.1\r\nConnection: close\r\nContent-Length: 101\r\n\r\n" + b"x" * 101
        )
        assert out.startswith(b"HTTP/1.1 413 ")
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_streaming_site_backpressure() -> Generator[Any, Any, None]:
    bodies: list[s.Stream] = []
    release: Deferred[None] = Deferred()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        bodies.append(req["body"])
        await release
        chunks = await s.collect(req["body"])
        return {"body": str(sum(len(c) for c in chunks))}

    site = make_site(to_resource(slow))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        size = 2 << 20
        d = fetch(
            port.getHost().port,
            b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size + b"z" * size,
        )
        # render runs only when the body is complete on twisted.web: the body streams
        # before render in gotLength/handleContentChunk; wait until it is buffered up to the limit
        from twisted.internet.task import deferLater

        for _ in range(100):
            yield deferLater(reactor, 0.02, lambda: None)
        release.callback(None)
        out = yield d
        assert out.endswith(str(size).encode())
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_h2_and_http11_on_one_tls_port() -> Generator[Any, Any, None]:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    from aleph_tx.tls import self_signed_context

    srv = start_server(
        handler, port=0, host="127.0.0.1", ssl_context=self_signed_context(), http_versions=("http/1.1", "h2")
    )

    def clients() -> list[tuple[str, str, bytes]]:
        out = []
        for http2 in (True, False):
            with httpx.Client(http2=http2, verify=False, timeout=10) as c:
                r = c.post(f"https://127.0.0.1:{srv.port}/echo", content=b"x" * 100_000)
                out.append((r.http_version, r.headers["x-proto"], r.content[:1]))
                r2 = c.get(f"https://127.0.0.1:{srv.port}/")
                assert r2.text == "hello https"
        return out

    try:
        got = yield threads.deferToThread(clients)
        assert got[0] == ("HTTP/2", "HTTP/2", b"x")
        assert got[1] == ("HTTP/1.1", "HTTP/1.1", b"x")
    finally:
        yield srv.close().addTimeout(10, reactor)


def test_h2_needs_tls() -> None:
    with pytest.raises(ValueError, match="TLS"):
        start_server(handler, port=0, host="127.0.0.1", http_versions=("http/1.1", "h2"))


@pytest_twisted.inlineCallbacks
def test_h2_paused_stream_does_not_stall_others() -> Generator[Any, Any, None]:
    """A handler that does not read its body must not block another stream's upload."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    import threading

    from aleph_tx.tls import self_signed_context

    release: Deferred[None] = Deferred()

    async def h(req: dict[str, Any]) -> dict[str, Any]:
        if req["uri"] == "/stuck":
            await release  # never reads its body until released
            return {"body": "late"}
        chunks = await s.collect(req["body"]) if req["body"] is not None else []
        return {"body": str(sum(len(c) for c in chunks))}

    srv = start_server(h, port=0, host="127.0.0.1", ssl_context=self_signed_context(), http_versions=("http/1.1", "h2"))
    url = f"https://127.0.0.1:{srv.port}"
    client = httpx.Client(http2=True, verify=False, timeout=20)
    results: dict[str, Any] = {}

    def stuck() -> None:
        results["stuck"] = client.post(url + "/stuck", content=b"s" * 300_000).text

    def other() -> str:
        return client.post(url + "/count", content=b"o" * 300_000).text

    try:
        yield threads.deferToThread(client.get, url + "/count")  # one HTTP/2 connection for both
        t = threading.Thread(target=stuck)
        t.start()
        from twisted.internet.task import deferLater

        yield deferLater(reactor, 0.5, lambda: None)
        started = reactor.seconds()
        got = yield threads.deferToThread(other)
        assert got == "300000"
        assert reactor.seconds() - started < 5
        release.callback(None)
        yield threads.deferToThread(t.join, 20)
        assert results["stuck"] == "late"
    finally:
        client.close()
        yield srv.close().addTimeout(10, reactor)
