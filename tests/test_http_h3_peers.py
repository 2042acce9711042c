"""HTTP/3 with independent peers: niquests (its own QUIC stack, qh3) against our
server, and our client against hypercorn's HTTP/3 server (a subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")

from test_http_client_servers import itest, sleep
from test_http_h3_server import H3Server
from twisted.internet import threads

from aleph_tx import stream as s
from aleph_tx import tls
from aleph_tx.http._client.h3 import connect_h3


async def read(response: dict[str, Any]) -> bytes:
    chunks = await s.collect(response["body"])
    await response["ended"]
    return b"".join(chunks)


async def echo(req: dict[str, Any]) -> dict[str, Any]:
    n = 0 if req["body"] is None else len(b"".join(await s.collect(req["body"])))
    return {"headers": {"x-proto": req["protocol"]}, "body": f"{req['request_method']} {req['uri']} {n}"}


def niquests_calls(port: int) -> list[tuple[Any, ...]]:
    import niquests

    with niquests.Session(disable_http2=True, retries=0) as session:
        session.quic_cache_layer.add_domain("127.0.0.1", port)  # HTTP/3 from the first request
        out = []
        for method, path, data in [("GET", "/a", None), ("POST", "/b", b"p" * 300_000), ("GET", "/c", None)]:
            r = session.request(
                method, f"https://127.0.0.1:{port}{path}", data=data, verify=False, timeout=10
            )
            out.append((r.http_version, r.status_code, r.headers.get("x-proto"), r.content))
        return out


@pytest.mark.filterwarnings("ignore::Warning")
@itest(timeout=30)
async def test_niquests_against_our_server(h3_serve: Callable[..., H3Server]) -> None:
    server = h3_serve(echo)
    results = await threads.deferToThread(niquests_calls, server.number)
    assert results == [
        (30, 200, "HTTP/3", b"get /a 0"),
        (30, 200, "HTTP/3", b"post /b 300000"),
        (30, 200, "HTTP/3", b"get /c 0"),
    ]


_HYPERCORN_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] == "/big":
        body = b"b" * (4 << 20)
    else:
        body = f"{scope['method']} {scope['path']} {size} {scope['http_version']}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"x-peer", b"hypercorn")]})
    await send({"type": "http.response.body", "body": body})
"""


def free_udp_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@pytest.fixture
def hypercorn(tmp_path: Path) -> Iterator[int]:
    """hypercorn serving a small ASGI app over HTTP/3 on 127.0.0.1 (UDP port returned)."""
    cert, key = tls.self_signed_pem()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "h3app.py").write_text(_HYPERCORN_APP)
    port = free_udp_port()
    log = (tmp_path / "hypercorn.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "hypercorn",
            "--bind", "127.0.0.1:0",
            "--quic-bind", f"127.0.0.1:{port}",
            "--certfile", str(tmp_path / "cert.pem"),
            "--keyfile", str(tmp_path / "key.pem"),
            "h3app:app",
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        start_new_session=True,  # its worker is a child: the whole group goes at the end
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while b"Running on" not in (tmp_path / "hypercorn.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "hypercorn.log").read_text())
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@itest(timeout=30)
async def test_our_client_against_hypercorn(hypercorn: int) -> None:
    conn = None
    for _ in range(20):  # its QUIC socket may come up just after the log line
        try:
            conn = await connect_h3("127.0.0.1", hypercorn, "localhost", insecure=True, connection_timeout=1)
            break
        except Exception:
            await sleep(0.1)
    assert conn is not None
    resp = await conn.request("GET", "localhost", "/x")
    assert resp["status"] == 200
    assert resp["headers"]["x-peer"] == "hypercorn"
    assert await read(resp) == b"GET /x 0 3"
    resp = await conn.request("POST", "localhost", "/y", body=b"q" * 500_000)
    assert await read(resp) == b"POST /y 500000 3"
    responses = [await conn.request("GET", "localhost", f"/{i}") for i in range(20)]
    assert [await read(r) for r in responses] == [f"GET /{i} 0 3".encode() for i in range(20)]
    resp = await conn.request("GET", "localhost", "/big")
    assert len(await read(resp)) == 4 << 20
    conn.close()
