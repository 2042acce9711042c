"""``twist aleph-http`` in a subprocess, driven by the `websockets` library
(its synchronous client), curl and raw sockets: the demo's ``/ws`` echo and a
handler module (``ws_app.py``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
from _twist import Twist
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


def ws_url(t: Twist, path: str) -> str:
    return f"ws://127.0.0.1:{t.port}{path}"


@pytest.fixture(scope="module")
def demo() -> Iterator[Twist]:
    t = Twist()
    yield t
    t.stop()


@pytest.fixture(scope="module")
def app() -> Iterator[Twist]:
    t = Twist("--handler", "ws_app:handler")
    yield t
    t.stop()


def test_demo_ws_echo(demo: Twist) -> None:
    with connect(ws_url(demo, "/ws"), open_timeout=10, close_timeout=5) as ws:
        for msg in ("hello", b"\x00\xffbinary", "é" * 1000):
            ws.send(msg)
            assert ws.recv(timeout=10) == msg
    assert ws.close_code == 1000


def test_subprotocol_compression_and_many_messages(app: Twist) -> None:
    with connect(
        ws_url(app, "/echo"), subprotocols=["x", "echo.v1"], compression="deflate", open_timeout=10
    ) as ws:
        assert ws.subprotocol == "echo.v1"
        assert [type(e).__name__ for e in ws.protocol.extensions] == ["PerMessageDeflate"]
        for i in range(500):
            ws.send(f"message {i}")
        for i in range(500):
            assert ws.recv(timeout=10) == f"message {i}"


def test_derived_stream_handler(app: Twist) -> None:
    with connect(ws_url(app, "/upper"), open_timeout=10) as ws:
        ws.send("shout")
        assert ws.recv(timeout=10) == "SHOUT"


def test_close_code_and_reason_from_the_handler(app: Twist) -> None:
    with connect(ws_url(app, "/close"), open_timeout=10) as ws, pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    assert (ws.close_code, ws.close_reason) == (4321, "closed by the handler")


def test_client_close_code(app: Twist) -> None:
    with connect(ws_url(app, "/echo"), open_timeout=10) as ws:
        ws.send("x")
        ws.recv(timeout=10)
        ws.close(4000, "bye from the client")
    assert ws.close_code == 4000  # echoed by the server


def test_refused_upgrade_is_400(app: Twist) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(app, "/refuse"), open_timeout=10)
    assert info.value.response.status_code == 400


def test_oversize_message_is_1009(app: Twist) -> None:
    with connect(ws_url(app, "/upper"), open_timeout=10, max_size=None) as ws:
        ws.send(os.urandom(70000))  # one frame over max_frame_payload (65536)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1009


def test_plain_http_to_a_websocket_route(app: Twist) -> None:
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(b"GET /maybe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"not a websocket")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_upgrade_gets_101(app: Twist) -> None:
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-i",
            "--max-time",
            "1",  # curl waits for more after the 101: its headers are enough
            "-H",
            "Upgrade: websocket",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "-H",
            "Sec-WebSocket-Version: 13",
            f"http://127.0.0.1:{app.port}/echo",
        ],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert out.stdout.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in out.stdout
