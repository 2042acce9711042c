"""WebSocket connections as streams: the stream contract (``check_stream``),
backpressure both ways (a flood against a handler that never takes), heartbeats
on a ``Clock``, 1,000 concurrent connections."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from _ws_helpers import RawClient, WSServer, bounded, frame, serve, until
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock

from aleph_tx.http._websocket.api import websocket_client, websocket_ping
from aleph_tx.testing import check_stream

# -- the stream contract -----------------------------------------------------------


def _pair_maker(srv: WSServer, client_first: bool) -> Any:
    async def make_pair() -> tuple[Any, Any]:
        n = len(srv.conns)
        client = await bounded(websocket_client(srv.url), 10)
        await until(lambda: len(srv.conns) > n)
        server = srv.conns[-1]
        return (client, server) if client_first else (server, client)

    return make_pair


@pytest_twisted.ensureDeferred
async def test_check_stream_client_to_server(servers: list[Any]) -> None:
    srv = serve(servers, lambda conn: None)
    await bounded(check_stream(_pair_maker(srv, True)), 40)


@pytest_twisted.ensureDeferred
async def test_check_stream_server_to_client(servers: list[Any]) -> None:
    srv = serve(servers, lambda conn: None)
    await bounded(check_stream(_pair_maker(srv, False)), 40)


# -- backpressure ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_flood_against_a_handler_that_never_takes(servers: list[Any]) -> None:
    """Server memory stays bounded: it stops reading frames; the client's puts wait."""
    srv = serve(servers, lambda conn: None)
    conn = await bounded(websocket_client(srv.url))
    chunk = b"f" * 16384
    sent = 0
    pending = None
    for _ in range(4096):  # 64 MiB at most
        d = conn.put(chunk)
        if not d.called:
            # wait a little: kernel buffers may still take it
            d.addTimeout(0.5, reactor)
            try:
                await d
            except Exception:
                pending = conn.put(chunk)  # the withdrawn message, put again
                break
        sent += len(chunk)
    assert pending is not None, f"{sent} bytes accepted with nobody taking"
    assert srv.conns[0].description()["reading_paused"]
    held = srv.conns[0].description()["bytes_received"]
    # what the server received is all it holds (nobody took): at most one socket
    # read (256 KiB on the HTTP server's transport), while the client managed to send
    # much more into the kernel's buffers
    assert held <= 2 * 262144, (held, sent)
    assert sent > 2 * held, (held, sent)
    assert not pending.called
    # a taker arrives: every message gets through, in order
    got = 0
    sink = srv.conns[0]
    while got < sent + len(chunk):
        msg = await bounded(sink.take(), 10)
        assert msg == chunk
        got += len(msg)
    assert await bounded(pending) is True


@pytest_twisted.ensureDeferred
async def test_put_waits_while_the_peer_does_not_read(servers: list[Any]) -> None:
    """Server → client: puts fire only when the transport has room."""
    srv = serve(servers, lambda conn: None)
    conn = await bounded(websocket_client(srv.url))  # never takes
    await until(lambda: len(srv.conns) == 1)
    server = srv.conns[0]
    pending = None
    for _ in range(2048):
        d = server.put(b"p" * 16384)
        if not d.called:
            pending = d
            break
    assert pending is not None
    assert server.description()["output_state"] == "paused"
    while not pending.called:
        assert isinstance(await bounded(conn.take()), bytes)
    assert await pending is True


# -- heartbeats on a Clock ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_heartbeat_timeout_drops_a_peer_that_never_pongs(servers: list[Any]) -> None:
    clock = Clock()
    srv = serve(servers, lambda conn: None, heartbeats={"send_after_idle": 30, "timeout": 10}, clock=clock)
    raw = RawClient()  # never answers pings
    await raw.connect(srv.server.port)
    await until(lambda: len(srv.conns) == 1)
    conn = srv.conns[0]
    clock.advance(29)
    assert raw.data == b""
    clock.advance(1)
    await until(lambda: raw.data == b"\x89\x00")  # an empty ping
    clock.advance(9.9)
    assert not conn.closed
    clock.advance(0.1)
    await bounded(raw.lost)
    desc = conn.description()
    assert desc["close_code"] == 1006 and "heartbeat" in desc["close_reason"]
    assert not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_heartbeat_pong_keeps_the_connection_and_traffic_delays_pings(servers: list[Any]) -> None:
    clock = Clock()
    srv = serve(servers, lambda conn: None, heartbeats={"send_after_idle": 5, "timeout": 2}, clock=clock)
    raw = RawClient()
    await raw.connect(srv.server.port)
    await until(lambda: len(srv.conns) == 1)
    conn = srv.conns[0]
    await conn.put("traffic")
    await until(lambda: raw.data == b"\x81\x07traffic")
    clock.advance(5)  # traffic in this period: no ping yet
    assert raw.data == b"\x81\x07traffic"
    clock.advance(5)
    await until(lambda: raw.data.endswith(b"\x89\x00"))
    raw.write(frame(10, b""))  # the pong
    await until(
        lambda: len(clock.getDelayedCalls()) == 1 and abs(clock.getDelayedCalls()[0].getTime() - 15) < 1e-6
    )
    clock.advance(2)
    assert not conn.closed
    raw.write(frame(8, (1000).to_bytes(2, "big")))
    await bounded(raw.lost)
    assert conn.description()["close_code"] == 1000
    assert not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_our_client_answers_server_heartbeats(servers: list[Any]) -> None:
    clock = Clock()
    srv = serve(servers, lambda conn: None, heartbeats={"send_after_idle": 1, "timeout": 1}, clock=clock)
    client = await bounded(websocket_client(srv.url))
    await until(lambda: len(srv.conns) == 1)
    for _ in range(3):
        clock.advance(1)  # ping
        await until(lambda: not srv.conns[0].description()["reading_paused"] and _pong_seen(srv.conns[0]))
        clock.advance(1)
    assert not srv.conns[0].closed
    assert await bounded(websocket_ping(client)) is True
    client.close()


def _pong_seen(conn: Any) -> bool:
    return not conn._ws._hb_waiting  # type: ignore[no-any-return]


# -- many connections -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_1000_concurrent_connections_echo(servers: list[Any]) -> None:
    srv = serve(servers)
    clients: list[Any] = []
    for _ in range(5):  # connect in waves of 200 (a burst of 1,000 handshakes on one
        # busy core can pass autobahn's 5 s opening-handshake timeout); all stay open
        wave = await bounded(
            DeferredList(
                [websocket_client(srv.url) for _ in range(200)], fireOnOneErrback=True, consumeErrors=True
            ),
            30,
        )
        clients += [c for _, c in wave]
    assert len(clients) == 1000 and len(srv.conns) == 1000

    async def one(i: int, c: Any) -> bool:
        await c.put(f"message {i}")
        ok: bool = await c.take() == f"message {i}"
        c.close()
        return ok

    results = await bounded(
        DeferredList([Deferred.fromCoroutine(one(i, c)) for i, c in enumerate(clients)], consumeErrors=True),
        40,
    )
    assert all(ok and value for ok, value in results)
    await until(lambda: all(c.description()["close_state"] == "closed" for c in srv.conns), 20)
    assert {c.description()["close_code"] for c in srv.conns} == {1000}


@pytest_twisted.ensureDeferred
async def test_pipelined_frames_with_nobody_taking_keep_reading_paused(servers: list[Any]) -> None:
    """Frames sent with the handshake are parsed during the hand-off: the socket
    must stay paused afterwards (the HTTP protocol resumes it after the hand-off)."""
    srv = serve(servers, lambda conn: None)
    raw = RawClient()
    await raw.connect(srv.server.port, extra=frame(1, b"one") + frame(1, b"two"))
    await until(lambda: len(srv.conns) == 1)
    conn = srv.conns[0]
    assert conn.description()["reading_paused"]
    assert conn._ws.transport not in reactor.getReaders()  # type: ignore[attr-defined]
    assert await bounded(conn.take()) == "one"
    assert await bounded(conn.take()) == "two"
    await until(lambda: conn._ws.transport in reactor.getReaders())  # type: ignore[attr-defined]
    assert not conn.description()["reading_paused"]
