"""The HTTP/3 client connection against aleph_tx's HTTP/3 server (same reactor)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")

from test_http_client_servers import itest, sleep
from test_http_h3_server import H3Server, runner_for
from twisted.internet.defer import CancelledError, Deferred

from aleph_tx import stream as s
from aleph_tx import tls
from aleph_tx._chunks import ChunkSource, SourceKind
from aleph_tx.errors import ConnectionLostError, ConnectionTimeout
from aleph_tx.http._client.h3 import AltService, H3ClientConnection, connect_h3, parse_alt_svc
from aleph_tx.http._quic.config import server_configuration
from aleph_tx.http._server.h3 import alt_svc, listen_h3


async def connect(server: H3Server, **kw: Any) -> H3ClientConnection:
    kw.setdefault("insecure", True)
    return await connect_h3("127.0.0.1", server.number, "localhost", connection_timeout=5, **kw)


async def read(response: dict[str, Any]) -> bytes:
    chunks = await s.collect(response["body"])
    await response["ended"]
    return b"".join(chunks)


@itest()
async def test_get(h3_serve: Callable[..., H3Server]) -> None:
    server = h3_serve(lambda req: {"headers": {"x-a": "1"}, "body": f"{req['request_method']} {req['uri']}"})
    conn = await connect(server)
    resp = await conn.request("GET", "localhost", "/hello?x=1")
    assert resp["status"] == 200
    assert resp["headers"]["x-a"] == "1"
    assert await read(resp) == b"get /hello"
    assert conn.active_requests == 0
    conn.abort()


@itest()
async def test_trusted_certificate(h3_serve: Callable[..., H3Server], tls_options: Any) -> None:
    server = h3_serve(lambda req: {"body": "ok"})
    ctx = tls.client_context(trust_roots=tls_options.certificate_pem)
    conn = await connect_h3("127.0.0.1", server.number, "localhost", ssl_context=ctx, connection_timeout=5)
    assert await read(await conn.request("GET", "localhost", "/")) == b"ok"
    conn.abort()


@itest()
async def test_untrusted_certificate_fails(h3_serve: Callable[..., H3Server]) -> None:
    server = h3_serve(lambda req: {"body": "ok"})
    other = tls.client_context(trust_roots=tls.self_signed_pem()[0])
    with pytest.raises(ConnectionLostError):
        await connect_h3("127.0.0.1", server.number, "localhost", ssl_context=other, connection_timeout=5)


@itest()
async def test_post_bytes_and_stream_bodies(h3_serve: Callable[..., H3Server]) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        data = b"".join(await s.collect(req["body"]))
        return {"body": b"%d %s" % (len(data), data[:5])}

    server = h3_serve(handler)
    conn = await connect(server)
    resp = await conn.request("POST", "localhost", "/", body=b"hello world")
    assert await read(resp) == b"11 hello"
    chunks = s.stream()

    async def produce() -> None:
        for _ in range(64):
            await chunks.put(b"y" * 65536)
        chunks.close()

    Deferred.fromCoroutine(produce())
    resp = await conn.request(
        "PUT", "localhost", "/", body=ChunkSource(SourceKind.STREAM, chunks, on_close=chunks.close)
    )
    assert await read(resp) == b"4194304 yyyyy"
    conn.abort()


@itest()
async def test_multiplexed(h3_serve: Callable[..., H3Server]) -> None:
    server = h3_serve(lambda req: {"body": req["uri"]})
    conn = await connect(server)
    from twisted.internet.defer import gatherResults

    responses = await gatherResults([conn.request("GET", "localhost", f"/{i}") for i in range(100)])
    bodies = await gatherResults([Deferred.fromCoroutine(read(r)) for r in responses])
    assert bodies == [f"/{i}".encode() for i in range(100)]
    assert len(server.port.endpoint.drivers) == 1
    conn.abort()


@itest()
async def test_response_backpressure_keeps_server_memory_bounded(h3_serve: Callable[..., H3Server]) -> None:
    """A client that stops reading stops the server's takes: the producer waits."""
    produced: list[int] = []
    done: list[bool] = []
    total = 64 << 20  # 64 MiB

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        body = s.stream()

        async def produce() -> None:
            for _ in range(total // 65536):
                if not await body.put(b"z" * 65536):
                    return
                produced.append(65536)
            body.close()
            done.append(True)

        Deferred.fromCoroutine(produce())
        return {"body": body}

    server = h3_serve(handler)
    conn = await connect(server)
    resp = await conn.request("GET", "localhost", "/big")
    await sleep(0.5)  # the client takes nothing meanwhile
    held = sum(produced)
    # our receive window (1 MiB) + the server's send buffer (HIGH_WATER, 1 MiB) + in flight
    assert held < 6 << 20, held
    assert not done
    n = 0
    while (chunk := await resp["body"].take()) is not None:
        n += len(chunk)
    await resp["ended"]
    assert n == total
    conn.abort()


@itest()
async def test_cancel_resets_the_stream(h3_serve: Callable[..., H3Server]) -> None:
    lost: list[bool] = []

    def handler(req: dict[str, Any]) -> Any:
        if req["uri"] == "/slow":
            return Deferred(lambda d: lost.append(True))
        return {"body": "fine"}

    server = h3_serve(handler)
    conn = await connect(server)
    d = conn.request("GET", "localhost", "/slow")
    await sleep(0.1)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    for _ in range(50):
        if lost:
            break
        await sleep(0.02)
    assert lost == [True]  # the server's handler was cancelled (on_lost)
    # the connection carries on
    assert await read(await conn.request("GET", "localhost", "/")) == b"fine"
    conn.abort()


@itest()
async def test_closing_the_body_early_stops_the_stream(h3_serve: Callable[..., H3Server]) -> None:
    server = h3_serve(lambda req: {"body": b"x" * (8 << 20)})
    conn = await connect(server)
    resp = await conn.request("GET", "localhost", "/")
    await resp["body"].take()
    resp["body"].close()
    with pytest.raises(ConnectionLostError):
        await resp["ended"]
    assert conn.active_requests == 0
    resp = await conn.request("GET", "localhost", "/")
    assert len(await read(resp)) == 8 << 20
    conn.abort()


@itest()
async def test_connection_timeout() -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes datagrams, answers none
    sink.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(ConnectionTimeout):
            await connect_h3(
                "127.0.0.1", sink.getsockname()[1], "localhost", insecure=True, connection_timeout=0.3
            )
    finally:
        sink.close()


@itest()
async def test_requests_fail_when_the_connection_is_cut(h3_serve: Callable[..., H3Server]) -> None:
    server = h3_serve(lambda req: Deferred())
    conn = await connect(server)
    d = conn.request("GET", "localhost", "/")
    await sleep(0.05)
    for driver in list(server.port.endpoint.drivers):
        driver.abort()
    with pytest.raises(ConnectionLostError):
        await d
    assert not conn.available


@itest()
async def test_head_response_announces_a_length_without_a_body(tls_options: Any) -> None:
    def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"body": b"h" * 100}

    port = listen_h3(runner_for(handler), server_configuration(tls_options), 0, "127.0.0.1")
    try:
        conn = await connect_h3(
            "127.0.0.1", port.getHost().port, "localhost", insecure=True, connection_timeout=5
        )
        resp = await conn.request("HEAD", "localhost", "/")
        assert (resp["status"], resp["headers"]["content-length"], await read(resp)) == (200, "100", b"")
        resp = await conn.request("GET", "localhost", "/")  # the connection is still up
        assert await read(resp) == b"h" * 100
        conn.abort()
    finally:
        await port.stopListening()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('h3=":443"; ma=2592000,h3-29=":443"; ma=2592000', [AltService("", 443, 2592000)]),
        ('h2="alt.example.com:8000", h3=":443"', [AltService("", 443, 86400)]),
        ('h3="alt.example.com:8443"; ma=60; persist=1', [AltService("alt.example.com", 8443, 60)]),
        ('h3="[::1]:9443"', [AltService("::1", 9443, 86400)]),
        ('h3=":1", h3=":2"; ma=5', [AltService("", 1, 86400), AltService("", 2, 5)]),
        ("clear", None),
        ('h3=":notaport", h3=":70000", h3=":0", garbage', []),
        ("", []),
        (alt_svc(8443), [AltService("", 8443, 86400)]),
    ],
)
def test_parse_alt_svc(value: str, expected: list[AltService] | None) -> None:
    assert parse_alt_svc(value) == expected
