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
from aleph_tx.http import make_site, start_server, to_resource


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
def test_h2_paused_stream_does_not_stall_others(tmp_path: Any) -> Generator[Any, Any, None]:
    """One stream whose handler does not read must not block another stream's upload.

    curl multiplexes both uploads on one HTTP/2 connection (``-Z``). The slow
    handler reads only once the other request has completed (or after 5 s, which
    fails the test).
    """
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        pytest.fail("curl is not installed")
    from aleph_tx.tls import self_signed_context

    release: Deferred[None] = Deferred()
    order: list[str] = []

    async def h(req: dict[str, Any]) -> dict[str, Any]:
        if req["uri"] == "/slow":
            await release  # does not read its body until released
        chunks = await s.collect(req["body"])
        order.append(req["uri"])
        if req["uri"] == "/other" and not release.called:
            release.callback(None)
        return {"body": f"{req['uri']} {sum(len(c) for c in chunks)} {req['protocol']}"}

    def timeout_release() -> None:
        if not release.called:
            order.append("timeout")
            release.callback(None)

    timer = reactor.callLater(5, timeout_release)
    srv = start_server(
        h, port=0, host="127.0.0.1", ssl_context=self_signed_context(), http_versions=("http/1.1", "h2")
    )
    url = f"https://127.0.0.1:{srv.port}"
    (tmp_path / "a.bin").write_bytes(b"a" * 300_000)
    (tmp_path / "b.bin").write_bytes(b"b" * 300_000)
    cmd = [
        "curl", "-sk", "--http2", "-Z", "--max-time", "20",
        "--data-binary", f"@{tmp_path / 'a.bin'}", url + "/slow",
        "--next", "-sk", "--http2", "--max-time", "20",
        "--data-binary", f"@{tmp_path / 'b.bin'}", url + "/other",
    ]  # fmt: skip
    try:
        result = yield threads.deferToThread(subprocess.run, cmd, capture_output=True, timeout=30)
        assert order == ["/other", "/slow"], order
        out = result.stdout.decode()
        assert "/slow 300000 HTTP/2" in out and "/other 300000 HTTP/2" in out
    finally:
        if timer.active():
            timer.cancel()
        yield srv.close().addTimeout(10, reactor)


@pytest_twisted.inlineCallbacks
def test_streaming_site_413_mid_stream() -> Generator[Any, Any, None]:
    cancelled: list[bool] = []

    def h(req: dict[str, Any]) -> Deferred[Any]:
        return Deferred(lambda _: cancelled.append(True))

    port = reactor.listenTCP(0, make_site(to_resource(h), max_request_body_size=100), interface="127.0.0.1")
    try:
        body = b"32\r\n" + b"x" * 50 + b"\r\n" + b"64\r\n" + b"y" * 100 + b"\r\n0\r\n\r\n"
        head = b"POST / HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        out = yield fetch(port.getHost().port, head + body)
        assert out.startswith(b"HTTP/1.1 413 ") and cancelled == [True]
    finally:
        yield port.stopListening()


@pytest.mark.parametrize("streaming", [False, True])
@pytest_twisted.inlineCallbacks
def test_compression_in_a_site(streaming: bool) -> Generator[Any, Any, None]:
    """``compression=True`` gzips through twisted.web too: whole bodies and streamed chunks."""
    import requests

    root = resource.Resource()
    root.putChild(b"app", to_resource(handler, compression=True))
    site = make_site(root) if streaming else server.Site(root)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/app"

    def fetch() -> list[tuple[str | None, str | None, bytes]]:
        out = []
        for path, encoding in (("/", "gzip"), ("/stream", "gzip"), ("/", "identity")):
            r = requests.get(base + path, headers={"Accept-Encoding": encoding}, timeout=10)
            out.append((r.headers.get("content-encoding"), r.headers.get("vary"), r.content))
        return out

    try:
        got = yield threads.deferToThread(fetch)
        assert got == [
            ("gzip", "accept-encoding", b"hello http"),
            ("gzip", "accept-encoding", b"abc"),
            (None, None, b"hello http"),
        ]
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_compression_on_h2() -> Generator[Any, Any, None]:
    import httpx

    from aleph_tx.tls import self_signed_context

    srv = start_server(
        handler,
        port=0,
        host="127.0.0.1",
        ssl_context=self_signed_context(),
        http_versions=("http/1.1", "h2"),
        compression=True,
    )

    def fetch() -> tuple[str, str | None, str]:
        with httpx.Client(http2=True, verify=False, timeout=10) as c:
            r = c.get(f"https://127.0.0.1:{srv.port}/", headers={"accept-encoding": "gzip"})
            return r.http_version, r.headers.get("content-encoding"), r.text

    try:
        got = yield threads.deferToThread(fetch)
        assert got == ("HTTP/2", "gzip", "hello https")
    finally:
        yield srv.close().addTimeout(10, reactor)
