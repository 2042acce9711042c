"""TLS with ALPN: a client that offers ALPN (curl, browsers, httpx) is served.

Twisted installs an ALPN callback on every server context; with nothing to offer,
the handshake used to end in a fatal "internal error" alert.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest_twisted
from twisted.internet import threads

from aleph_tx import http, tcp, tls
from aleph_tx import stream as s

_GET = b"GET /alpn HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def _fetch(port: int, alpn: list[str], request: bytes = _GET, until: bytes = b"") -> tuple[str | None, bytes]:
    """A stdlib TLS client offering ``alpn``: the protocol chosen and what came back."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            if until and until in data:
                break
        return conn.selected_alpn_protocol(), data


@pytest_twisted.inlineCallbacks
def test_alpn_offering_client_gets_http11() -> Any:
    server = http.start_server(
        lambda req: {"body": "via " + req["uri"]},
        port=0,
        host="127.0.0.1",
        ssl_context=tls.self_signed_context(),
    )
    try:
        chosen, data = yield threads.deferToThread(_fetch, server.port, ["h2", "http/1.1"])
        assert chosen == "http/1.1"
        assert data.startswith(b"HTTP/1.1 200 ")
        assert data.endswith(b"via /alpn")
        chosen, data = yield threads.deferToThread(_fetch, server.port, [])
        assert chosen is None
        assert data.endswith(b"via /alpn")
    finally:
        yield server.close()


@pytest_twisted.inlineCallbacks
def test_tcp_tls_server_accepts_a_client_offering_alpn() -> Any:
    """No protocol in common: the handshake completes without one (no fatal alert)."""
    server = tcp.start_server(
        lambda conn, info: s.connect(conn, conn),
        port=0,
        host="127.0.0.1",
        ssl_context=tls.self_signed_context(),
    )
    try:
        chosen, data = yield threads.deferToThread(_fetch, server.port, ["h2", "x-custom"], b"ping", b"ping")
        assert chosen is None
        assert data == b"ping"
    finally:
        yield server.close()


@pytest_twisted.inlineCallbacks
def test_ssl_endpoint_strings_accept_a_client_offering_alpn(tmp_path: Any) -> Any:
    """``listen="ssl:..."`` (``twist aleph-tcp --listen ssl:...``) gets the same ALPN callback."""
    cert, key = tls.self_signed_pem()
    pem = tmp_path / "server.pem"
    pem.write_bytes(key + cert)
    desc = f"ssl:0:interface=127.0.0.1:privateKey={pem}"
    servers = [
        tcp.start_server(lambda conn, info: s.connect(conn, conn), listen=desc),
        http.start_server(lambda req: {"body": "via " + req["uri"]}, listen=desc),
    ]
    try:
        chosen, data = yield threads.deferToThread(
            _fetch, servers[0].port, ["h2", "x-custom"], b"ping", b"ping"
        )
        assert chosen is None and data == b"ping"
        chosen, data = yield threads.deferToThread(_fetch, servers[1].port, ["h2"])
        assert chosen is None and data.endswith(b"via /alpn")
        chosen, data = yield threads.deferToThread(_fetch, servers[1].port, ["h2", "http/1.1"])
        assert chosen == "http/1.1" and data.endswith(b"via /alpn")
    finally:
        for server in servers:
            yield server.close()
