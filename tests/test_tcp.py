"""Loopback integration tests of aleph_tx.tcp (real sockets on 127.0.0.1, bounded in time)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

from aleph_tx import stream as s
from aleph_tx import tcp, tls
from aleph_tx.errors import ConnectionTimeout
from aleph_tx.testing import check_stream

TIMEOUT = 20.0


def bounded(d: Any, seconds: float = TIMEOUT) -> Deferred[Any]:
    """``d`` (a Deferred or coroutine) failing with TimeoutError after ``seconds``."""
    if not isinstance(d, Deferred):
        d = ensureDeferred(d)
    return d.addTimeout(seconds, reactor)


def echo(conn: Any, info: dict[str, Any]) -> None:
    s.connect(conn, conn)


async def read_exactly(st: Any, n: int) -> bytes:
    chunks = []
    got = 0
    while got < n:
        chunk = await st.take()
        if chunk is None:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


async def until(pred: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if pred():
            return
        await task.deferLater(reactor, 0.005)
    raise AssertionError("condition not reached in time")


@pytest_twisted.ensureDeferred
async def test_echo_and_info(servers: list[tcp.Server]) -> None:
    infos: list[dict[str, Any]] = []

    def handler(conn: Any, info: dict[str, Any]) -> None:
        infos.append(info)
        s.connect(conn, conn)

    srv = tcp.start_server(handler, host="127.0.0.1")
    servers.append(srv)
    assert srv.port > 0
    conn = await bounded(tcp.client("127.0.0.1", srv.port))
    assert await conn.put(b"hello ") is True
    assert await conn.put("wörld") is True
    assert await bounded(read_exactly(conn, 12)) == "hello wörld".encode()
    (info,) = infos
    assert set(info) == {"server_name", "server_port", "remote_addr", "remote_port", "ssl_session"}
    assert info["server_port"] == srv.port
    assert info["remote_addr"] == "127.0.0.1"
    assert info["remote_port"] == conn.description()["local_port"]
    assert info["ssl_session"] is None
    conn.close()
    assert await bounded(conn.take("end")) == "end"


@pytest_twisted.ensureDeferred
async def test_async_handler(servers: list[tcp.Server]) -> None:
    async def handler(conn: Any, info: dict[str, Any]) -> None:
        msg = await conn.take()
        await conn.put(msg.upper())
        conn.close()

    srv = tcp.start_server(handler, host="127.0.0.1")
    servers.append(srv)
    conn = await bounded(tcp.client("127.0.0.1", srv.port))
    await conn.put(b"shout")
    assert await bounded(read_exactly(conn, 5)) == b"SHOUT"
    assert await bounded(conn.take("end")) == "end"


@pytest_twisted.ensureDeferred
async def test_failing_handler_closes_connection(servers: list[tcp.Server]) -> None:
    def handler(conn: Any, info: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    srv = tcp.start_server(handler, host="127.0.0.1")
    servers.append(srv)
    conn = await bounded(tcp.client("127.0.0.1", srv.port))
    assert await bounded(conn.take("end")) == "end"


@pytest_twisted.ensureDeferred
async def test_bad_put_keeps_connection_usable(servers: list[tcp.Server]) -> None:
    srv = tcp.start_server(echo, host="127.0.0.1")
    servers.append(srv)
    conn = await bounded(tcp.client("127.0.0.1", srv.port))
    with pytest.raises(TypeError):
        await conn.put(3.14)
    assert await conn.put(b"still here") is True
    assert await bounded(read_exactly(conn, 10)) == b"still here"
    conn.close()


async def _echo_volume(conn: Any, size: int) -> None:
    data = os.urandom(size)
    reader = ensureDeferred(read_exactly(conn, size))
    view = memoryview(data)
    for i in range(0, size, 65536):
        ok = await conn.put(view[i : i + 65536])
        assert ok is True
    got = await bounded(reader, 60)
    assert len(got) == size
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@pytest_twisted.ensureDeferred
async def test_echo_10_mib(servers: list[tcp.Server]) -> None:
    srv = tcp.start_server(echo, host="127.0.0.1")
    servers.append(srv)
    conn = await bounded(tcp.client("127.0.0.1", srv.port))
    await bounded(_echo_volume(conn, 10 * 1024 * 1024), 60)
    conn.close()


@pytest_twisted.ensureDeferred
async def test_echo_10_mib_tls(servers: list[tcp.Server]) -> None:
    ctx = tls.self_signed_context()
    srv = tcp.start_server(echo, host="127.0.0.1", ssl_context=ctx)
    servers.append(srv)
    trust = tls.client_context(trust_roots=ctx.certificate_pem)
    conn = await bounded(tcp.client("localhost", srv.port, ssl_context=trust))
    await bounded(_echo_volume(conn, 10 * 1024 * 1024), 60)
    conn.close()


@pytest_twisted.ensureDeferred
async def test_slow_reader_keeps_memory_bounded(servers: list[tcp.Server]) -> None:
    """A handler that takes nothing: the server stops reading; only kernel buffers fill.

    The client pushes until its puts stall; the server must have read at most
    one chunk into user space (bounded by one socket read), and once the handler
    starts taking every byte arrives intact.
    """
    conns: list[Any] = []
    srv = tcp.start_server(lambda c, i: conns.append(c), host="127.0.0.1")
    servers.append(srv)
    client = await bounded(tcp.client("127.0.0.1", srv.port))
    await until(lambda: bool(conns))
    server_conn = conns[0]
    chunk = b"z" * 65536
    sent = 0
    stalled = None
    limit = 100 * 1024 * 1024
    while sent < limit:
        d = client.put(chunk)
        if not d.called:
            await task.deferLater(reactor, 0.05)
            if not d.called:
                await task.deferLater(reactor, 0.5)
            if not d.called:
                stalled = d
                break
        sent += len(chunk)
    assert stalled is not None, f"{sent} bytes accepted with nothing taking"
    desc = server_conn.description()
    assert desc["reading_paused"] is True
    # What the server process holds in user space for this connection:
    assert desc["bytes_received"] <= 256 * 1024, desc
    assert client.description()["pending_puts"] == 1
    total = sent + len(chunk)
    got = await bounded(read_exactly(server_conn, total), 60)
    assert len(got) == total and got == b"z" * total
    assert await stalled is True
    client.close()


@pytest_twisted.ensureDeferred
async def test_slow_reader_with_a_100_mib_sender(servers: list[tcp.Server]) -> None:
    """A peer sends 100 MiB (a thread with a blocking socket) to a handler that
    takes nothing for a while: the server holds at most one read in user space,
    then every byte arrives once the handler takes."""
    total = 100 * 1024 * 1024
    conns: list[Any] = []
    srv = tcp.start_server(lambda c, i: conns.append(c), host="127.0.0.1")
    servers.append(srv)

    def send_all() -> int:
        block = b"m" * (1 << 20)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
            for _ in range(total // len(block)):
                sock.sendall(block)
        return total

    sender = threads.deferToThread(send_all)
    await until(lambda: bool(conns))
    conn = conns[0]
    await task.deferLater(reactor, 0.5)  # the handler takes nothing meanwhile
    desc = conn.description()
    assert desc["reading_paused"] is True
    assert desc["bytes_received"] <= 256 * 1024, desc
    assert not sender.called  # the sender is blocked by the kernel buffers

    async def count() -> int:
        got = 0
        async for chunk in conn:
            assert chunk.count(b"m") == len(chunk)
            got += len(chunk)
        return got

    assert await bounded(count(), 60) == total
    assert await bounded(sender) == total


@pytest_twisted.ensureDeferred
async def test_half_close_ends_input_only(servers: list[tcp.Server]) -> None:
    async def handler(conn: Any, info: dict[str, Any]) -> None:
        received = await s.collect(conn)  # drains when the peer half-closes
        await conn.put(b"got:" + b"".join(received))
        await conn.put(b":done")
        conn.close()

    srv = tcp.start_server(handler, host="127.0.0.1")
    servers.append(srv)

    def raw_client() -> bytes:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"abc")
            sock.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    return out
                out += data

    assert await bounded(threads.deferToThread(raw_client)) == b"got:abc:done"


@pytest_twisted.ensureDeferred
async def test_connection_loss_fires_waiting_puts_false(servers: list[tcp.Server]) -> None:
    conns: list[Any] = []
    srv = tcp.start_server(lambda c, i: conns.append(c), host="127.0.0.1")
    servers.append(srv)
    client = await bounded(tcp.client("127.0.0.1", srv.port))
    await until(lambda: bool(conns))
    chunk = b"q" * 65536
    while True:
        d = client.put(chunk)
        if not d.called:
            await task.deferLater(reactor, 0.2)
            if not d.called:
                break
    # Abort the server side: the client's waiting put must fire False.
    conns[0].description()
    srv._abort_all()
    assert await bounded(d) is False
    assert client.closed


@pytest_twisted.ensureDeferred
async def test_thousand_concurrent_connections(servers: list[tcp.Server]) -> None:
    srv = tcp.start_server(echo, host="127.0.0.1")
    servers.append(srv)

    async def one(i: int) -> bool:
        conn = await tcp.client("127.0.0.1", srv.port)
        msg = f"client-{i:04d}".encode()
        await conn.put(msg)
        got = await read_exactly(conn, len(msg))
        conn.close()
        return got == msg

    results = await bounded(
        DeferredList([ensureDeferred(one(i)) for i in range(1000)], consumeErrors=True), 60
    )
    failures = [r for ok, r in results if not ok]
    assert not failures, failures[:3]
    assert all(r for _, r in results)


@pytest_twisted.ensureDeferred
async def test_server_close_is_graceful(servers: list[tcp.Server]) -> None:
    srv = tcp.start_server(echo, host="127.0.0.1", shutdown_timeout=5)
    conn = await bounded(tcp.client("127.0.0.1", srv.port))
    await conn.put(b"ping")
    assert await bounded(read_exactly(conn, 4)) == b"ping"
    await bounded(srv.close(), 10)
    assert srv.closed
    assert await bounded(conn.take("end")) == "end"
    assert await bounded(srv.wait_for_close()) is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()


@pytest_twisted.ensureDeferred
async def test_server_close_aborts_stragglers(servers: list[tcp.Server]) -> None:
    """A client that reads nothing while the server has a lot to flush is cut at shutdown_timeout."""

    async def flood(conn: Any, info: dict[str, Any]) -> None:
        chunk = b"f" * 65536
        while await conn.put(chunk):
            pass

    srv = tcp.start_server(flood, host="127.0.0.1", shutdown_timeout=0.3)
    client = await bounded(tcp.client("127.0.0.1", srv.port))
    await until(lambda: srv.connection_count == 1)
    await task.deferLater(reactor, 0.2)
    await bounded(srv.close(), 10)
    assert srv.connection_count == 0
    client.close()


@pytest_twisted.ensureDeferred
async def test_connect_refused_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Exception) as info:
        await bounded(tcp.client("127.0.0.1", port))
    assert "refused" in str(info.value).lower() or "connect" in type(info.value).__name__.lower()


@pytest_twisted.ensureDeferred
async def test_connect_timeout_covers_tls_handshake(servers: list[tcp.Server]) -> None:
    # A plain TCP server never answers the TLS handshake.
    srv = tcp.start_server(lambda c, i: None, host="127.0.0.1")
    servers.append(srv)
    with pytest.raises(ConnectionTimeout):
        await bounded(tcp.client("127.0.0.1", srv.port, insecure=True, connect_timeout=0.3))


def test_client_argument_errors() -> None:
    with pytest.raises(ValueError, match="port"):
        tcp.client("127.0.0.1", 0)
    with pytest.raises(ValueError, match="connect_timeout"):
        tcp.client("127.0.0.1", 80, connect_timeout=-1)
    with pytest.raises(TypeError):
        tcp.start_server("not callable")  # type: ignore[arg-type]


def _pair_maker(port: int, accepted: list[Any], use_tls: bool, client_first: bool, trust: Any) -> Any:
    async def make_pair() -> tuple[Any, Any]:
        n = len(accepted)
        if use_tls:
            client = await tcp.client("localhost", port, ssl_context=trust)
        else:
            client = await tcp.client("127.0.0.1", port)
        await until(lambda: len(accepted) > n)
        server_side = accepted[-1]
        return (client, server_side) if client_first else (server_side, client)

    return lambda: ensureDeferred(make_pair())


@pytest_twisted.ensureDeferred
async def test_check_stream_on_tcp(servers: list[tcp.Server]) -> None:
    accepted: list[Any] = []
    srv = tcp.start_server(lambda c, i: accepted.append(c), host="127.0.0.1")
    servers.append(srv)
    await bounded(check_stream(_pair_maker(srv.port, accepted, False, True, None)), 25)
    await bounded(check_stream(_pair_maker(srv.port, accepted, False, False, None)), 25)


@pytest_twisted.ensureDeferred
async def test_check_stream_on_tls(servers: list[tcp.Server]) -> None:
    accepted: list[Any] = []
    ctx = tls.self_signed_context()
    srv = tcp.start_server(lambda c, i: accepted.append(c), host="127.0.0.1", ssl_context=ctx)
    servers.append(srv)
    trust = tls.client_context(trust_roots=ctx.certificate_pem)
    await bounded(check_stream(_pair_maker(srv.port, accepted, True, True, trust)), 25)
    await bounded(check_stream(_pair_maker(srv.port, accepted, True, False, trust)), 25)


@pytest_twisted.ensureDeferred
async def test_writes_are_eager_on_plain_tcp_and_not_under_tls(
    servers: list[tcp.Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server and client connections send at once when nothing is queued
    (docs/internals.rst, "The TCP path"); under TLS the TLS layer writes, never the
    raw socket; the bytes are the same either way."""
    from aleph_tx import _eager

    sent: list[int] = []
    original = _eager.send_now

    def counting(transport: Any, data: bytes) -> bytes:
        sent.append(len(data))
        return original(transport, data)

    monkeypatch.setattr(_eager, "send_now", counting)
    protos: list[Any] = []
    for cls in (tcp._ServerProtocol, tcp._ClientProtocol):
        ready = cls.connection_ready
        monkeypatch.setattr(
            cls, "connection_ready", lambda self, ready=ready: protos.append(self) or ready(self)
        )
    plain = tcp.start_server(echo, port=0, host="127.0.0.1")
    servers.append(plain)
    assert type(plain.ports[0]).__name__ == "Port" and plain.ports[0].transport is _eager.EagerServer
    conn = await bounded(tcp.client("127.0.0.1", plain.port))
    payload = os.urandom(100_000)
    assert await conn.put(payload) is True
    assert await bounded(read_exactly(conn, len(payload))) == payload
    assert sum(sent) >= 2 * len(payload)  # the client's send and the server's echo
    # Nagle's algorithm off: an eager short write must not wait for a delayed ACK
    assert len(protos) == 2
    for proto in protos:
        sock = proto.transport.getHandle()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    conn.close()
    sent.clear()
    secure = tcp.start_server(
        echo, port=0, host="127.0.0.1", ssl_context=tls.self_signed_context("localhost")
    )
    servers.append(secure)
    conn = await bounded(tcp.client("127.0.0.1", secure.port, insecure=True))
    assert await conn.put(payload) is True
    assert await bounded(read_exactly(conn, len(payload))) == payload
    conn.close()
    assert sum(sent) >= len(payload)  # ciphertext, written by the server's TLS layer through EagerServer
