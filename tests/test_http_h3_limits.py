"""HTTP/3 server limits, request-body backpressure and graceful shutdown (our client)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")

from test_http_client_servers import itest, sleep
from test_http_h3_server import H3Server, runner_for
from twisted.internet.defer import Deferred

from aleph_tx import stream as s
from aleph_tx._chunks import ChunkSource, SourceKind
from aleph_tx._server import Server
from aleph_tx.errors import ConnectionLostError
from aleph_tx.http._client.h3 import H3ClientConnection, connect_h3
from aleph_tx.http._quic.config import server_configuration
from aleph_tx.http._server.h3 import listen_h3


async def connect(port: int) -> H3ClientConnection:
    return await connect_h3("127.0.0.1", port, "localhost", insecure=True, connection_timeout=5)


async def read(response: dict[str, Any]) -> bytes:
    chunks = await s.collect(response["body"])
    await response["ended"]
    return b"".join(chunks)


def stream_of(size: int, chunk: int = 65536) -> tuple[ChunkSource, list[int]]:
    """A request body of ``size`` bytes put into a stream; the list counts what was taken."""
    body = s.stream()
    taken: list[int] = []

    async def produce() -> None:
        for _ in range(size // chunk):
            if not await body.put(b"u" * chunk):
                return
            taken.append(chunk)
        body.close()

    Deferred.fromCoroutine(produce())
    return ChunkSource(SourceKind.STREAM, body, on_close=body.close), taken


async def echo_size(req: dict[str, Any]) -> dict[str, Any]:
    n = 0 if req["body"] is None else len(b"".join(await s.collect(req["body"])))
    return {"body": str(n)}


@itest()
async def test_413_on_content_length(h3_serve: Callable[..., H3Server]) -> None:
    calls: list[str] = []

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        calls.append(req["uri"])
        return {"body": "ok"}

    server = h3_serve(handler, max_request_body_size=1000)
    conn = await connect(server.number)
    resp = await conn.request("POST", "localhost", "/", [(b"content-length", b"5000")], body=b"x" * 5000)
    assert resp["status"] == 413
    assert calls == []
    resp = await conn.request("POST", "localhost", "/small", body=b"x" * 1000)
    assert (resp["status"], await read(resp)) == (200, b"ok")
    conn.abort()


@itest()
async def test_413_while_streaming(h3_serve: Callable[..., H3Server]) -> None:
    lost: list[bool] = []

    def handler(req: dict[str, Any]) -> Deferred[Any]:
        return Deferred(lambda d: lost.append(True))  # never answers; cancelled on 413

    server = h3_serve(handler, max_request_body_size=100_000)
    conn = await connect(server.number)
    body, _ = stream_of(1 << 20)
    resp = await conn.request("POST", "localhost", "/", body=body)
    assert resp["status"] == 413
    assert lost == [True]
    conn.abort()


@itest()
async def test_431_and_414(h3_serve: Callable[..., H3Server]) -> None:
    server = h3_serve(lambda req: {"body": "ok"}, max_header_size=1000, max_initial_line_length=500)
    conn = await connect(server.number)
    resp = await conn.request("GET", "localhost", "/", [(b"x-big", b"v" * 2000)])
    assert resp["status"] == 431
    resp = await conn.request("GET", "localhost", "/" + "p" * 600)
    assert resp["status"] == 414
    resp = await conn.request("GET", "localhost", "/", [(b"x-small", b"v" * 100)])
    assert resp["status"] == 200
    conn.abort()


@itest()
async def test_request_body_backpressure(h3_serve: Callable[..., H3Server]) -> None:
    """A handler that does not take stops the client after about one window."""
    bodies: list[Any] = []
    go: Deferred[None] = Deferred()

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        bodies.append(req["body"])
        await go
        return await echo_size(req)

    server = h3_serve(handler)
    conn = await connect(server.number)
    body, taken = stream_of(32 << 20)
    d = conn.request("POST", "localhost", "/", body=body)
    await sleep(0.5)
    # the server's window (1 MiB) + the client's send buffer (1 MiB) + a chunk or two
    assert sum(taken) < 3 << 20, sum(taken)
    go.callback(None)
    resp = await d
    assert await read(resp) == str(32 << 20).encode()
    conn.abort()


@itest()
async def test_headers_and_cookies(h3_serve: Callable[..., H3Server]) -> None:
    seen: list[dict[str, str]] = []
    server = h3_serve(lambda req: seen.append(req["headers"]) or {"body": "ok"})
    conn = await connect(server.number)
    fields = [
        (b"cookie", b"a=1"),
        (b"cookie", b"b=2"),
        (b"x-r", b"1"),
        (b"x-r", b"2"),
        (b"connection", b"close"),
    ]
    resp = await conn.request("GET", "example.org:8443", "/", fields)
    await read(resp)
    assert seen[0]["cookie"] == "a=1; b=2"
    assert seen[0]["x-r"] == "1, 2"
    assert seen[0]["host"] == "example.org:8443"
    assert "connection" not in seen[0]
    conn.abort()


def start_server(handler: Callable[..., Any], tls_options: Any, shutdown_timeout: float) -> Server:
    port = listen_h3(runner_for(handler), server_configuration(tls_options), 0, "127.0.0.1")
    server = Server([port], shutdown_timeout=shutdown_timeout)
    port.tracker = server  # the Server is made from its ports
    return server


@itest()
async def test_beside_a_tls_listener_on_the_same_port(tls_options: Any) -> None:
    from aleph_tx import http
    from aleph_tx.http._server.h3 import listen_beside

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"body": req["protocol"]}

    tcp = http.start_server(handler, host="127.0.0.1", ssl_context=tls_options)
    udp = listen_beside(runner_for(handler), tls_options, tcp.port, "127.0.0.1")
    try:
        assert udp.getHost().port == tcp.port
        conn = await connect(tcp.port)
        assert await read(await conn.request("GET", "localhost", "/")) == b"HTTP/3"
        conn.abort()
        resp = await http.get(f"https://127.0.0.1:{tcp.port}/", insecure=True)
        assert resp["body"] == b"HTTP/1.1"
    finally:
        await udp.stopListening()
        await tcp.close()


@itest()
async def test_close_lets_requests_finish_with_goaway(tls_options: Any) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        await sleep(0.2)
        return {"body": "late but whole"}

    server = start_server(handler, tls_options, shutdown_timeout=5)
    conn = await connect(server.port)
    d = conn.request("GET", "localhost", "/")
    await sleep(0.05)
    started = time.monotonic()
    closed = server.close()
    resp = await d
    assert await read(resp) == b"late but whole"
    await closed
    assert time.monotonic() - started < 3
    assert not conn.available  # GOAWAY received, then the connection closed
    assert server.connection_count == 0


@itest()
async def test_close_with_open_streams_finishes_within_shutdown_timeout(tls_options: Any) -> None:
    server = start_server(lambda req: Deferred(), tls_options, shutdown_timeout=0.5)
    conn = await connect(server.port)
    pending = [conn.request("GET", "localhost", f"/{i}") for i in range(5)]
    await sleep(0.1)
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 1.5
    for d in pending:
        with pytest.raises(ConnectionLostError):
            await d
