"""Servers on a UNIX socket (the deploying docs put aleph-http behind nginx this way)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import threads

from aleph_tx import http


def _get(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"GET /over-unix HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


@pytest_twisted.inlineCallbacks
def test_http_server_on_a_unix_socket(tmp_path: Path) -> Any:
    path = str(tmp_path / "aleph.sock")
    server = http.start_server(lambda req: {"body": req["uri"]}, listen=f"unix:{path}")
    try:
        assert server.port == 0  # no port number on a UNIX socket
        data = yield threads.deferToThread(_get, path)
        assert data.startswith(b"HTTP/1.1 200 ")
        assert data.endswith(b"/over-unix")
    finally:
        yield server.close()
