"""Tests of aleph_tx.tls: contexts from PEM and paths, verification on by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred

from aleph_tx import stream as s
from aleph_tx import tcp, tls


def bounded(d: Any, seconds: float = 20.0) -> Deferred[Any]:
    if not isinstance(d, Deferred):
        d = ensureDeferred(d)
    return d.addTimeout(seconds, reactor)


def echo(conn: Any, info: dict[str, Any]) -> None:
    s.connect(conn, conn)


def test_self_signed_context_has_certificate() -> None:
    ctx = tls.self_signed_context()
    assert ctx.certificate_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert isinstance(ctx.getContext(), SSL.Context)


def test_server_context_from_pem_and_paths(tmp_path: Path) -> None:
    cert, key = tls.self_signed_pem("example.com")
    tls.server_context(cert, key).getContext()
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    tls.server_context(str(tmp_path / "c.pem"), tmp_path / "k.pem", chain=[cert]).getContext()


def test_server_context_errors_name_the_value(tmp_path: Path) -> None:
    cert, key = tls.self_signed_pem()
    _, other_key = tls.self_signed_pem()
    with pytest.raises(ValueError, match="does not match"):
        tls.server_context(cert, other_key)
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ValueError, match=r"nope\.pem"):
        tls.server_context(missing, key)
    with pytest.raises(ValueError, match="not a PEM certificate"):
        tls.server_context(b"-----BEGIN CERTIFICATE-----\ngarbage\n", key)
    with pytest.raises(ValueError):
        tls.server_context(12, key)  # type: ignore[arg-type]


def test_client_context_arguments() -> None:
    cert, _ = tls.self_signed_pem()
    assert tls.client_context().insecure is False
    assert tls.client_context(insecure=True).insecure is True
    assert tls.client_context(trust_roots=cert).trust_root is not None
    with pytest.raises(ValueError):
        tls.client_context(trust_roots=cert, insecure=True)
    with pytest.raises(ValueError):
        tls.client_creator("localhost", tls.client_context(), insecure=True)
    with pytest.raises(TypeError):
        tls.client_creator("localhost", object())


@pytest_twisted.ensureDeferred
async def test_trusted_connection_and_session() -> None:
    infos: list[dict[str, Any]] = []

    def handler(conn: Any, info: dict[str, Any]) -> None:
        infos.append(info)
        s.connect(conn, conn)

    ctx = tls.self_signed_context()
    srv = tcp.start_server(handler, host="127.0.0.1", ssl_context=ctx)
    try:
        conn = await bounded(
            tcp.client("localhost", srv.port, ssl_context=tls.client_context(trust_roots=ctx.certificate_pem))
        )
        await conn.put(b"secret")
        assert await bounded(conn.take()) == b"secret"
        assert isinstance(infos[0]["ssl_session"], SSL.Session)
        assert conn.description()["tls"] is True
        conn.close()
    finally:
        await bounded(srv.close())


@pytest_twisted.ensureDeferred
async def test_hostname_verified_by_default() -> None:
    cert, key = tls.self_signed_pem("example.com")
    srv = tcp.start_server(echo, host="127.0.0.1", ssl_context=tls.server_context(cert, key))
    try:
        trusted = tls.client_context(trust_roots=cert)
        # Trusted certificate, wrong name: refused.
        with pytest.raises(Exception) as err:
            await bounded(tcp.client("127.0.0.1", srv.port, ssl_context=trusted))
        assert type(err.value).__name__ == "VerificationError", repr(err.value)
        # Untrusted certificate (platform roots): refused.
        with pytest.raises((SSL.Error, VerificationError)):
            await bounded(tcp.client("localhost", srv.port, ssl=True))
        # insecure: explicitly unchecked.
        conn = await bounded(tcp.client("127.0.0.1", srv.port, insecure=True))
        await conn.put(b"ok")
        assert await bounded(conn.take()) == b"ok"
        conn.close()
    finally:
        await bounded(srv.close())


@pytest_twisted.ensureDeferred
async def test_listen_endpoint_string_with_tls(tmp_path: Path) -> None:
    cert, key = tls.self_signed_pem()
    pem = tmp_path / "server.pem"
    pem.write_bytes(key + cert)
    srv = tcp.start_server(echo, listen=f"ssl:0:interface=127.0.0.1:privateKey={pem}")
    try:
        conn = await bounded(
            tcp.client("localhost", srv.port, ssl_context=tls.client_context(trust_roots=cert))
        )
        await conn.put(b"via endpoint")
        assert await bounded(conn.take()) == b"via endpoint"
        conn.close()
    finally:
        await bounded(srv.close())


@pytest_twisted.ensureDeferred
async def test_server_close_covers_connections_mid_handshake() -> None:
    import socket

    from twisted.internet import threads

    srv = tcp.start_server(
        echo, host="127.0.0.1", ssl_context=tls.self_signed_context(), shutdown_timeout=0.5
    )
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)  # never sends a ClientHello
    try:
        await bounded(_until(lambda: srv.connection_count == 1))
        await bounded(srv.close())
        assert srv.connection_count == 0

        def read_end() -> bytes:
            try:
                return raw.recv(100)
            except ConnectionResetError:
                return b""

        assert await bounded(threads.deferToThread(read_end)) == b""
    finally:
        raw.close()


async def _until(pred: Any) -> None:
    from twisted.internet import task

    while not pred():
        await task.deferLater(reactor, 0.01)
