"""Aleph's own WebSocket tests (test/aleph/websocket_test.clj upstream), ported
where they apply: echo and the 400 for plain HTTP, compression combinations, ping
from either side (also concurrent), client and server close with codes, close
after the stream closed, concurrent close attempts."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import treq
from _ws_helpers import bounded
from twisted.internet.defer import Deferred, DeferredList, gatherResults

from aleph_tx import stream as s
from aleph_tx.http._server.serve import start_server
from aleph_tx.http._websocket.api import (
    websocket_client,
    websocket_close,
    websocket_connection,
    websocket_ping,
)


def serve(servers: list[Any], handler: Any) -> str:
    srv = start_server(handler, port=0, host="127.0.0.1")
    servers.append(srv)
    return f"127.0.0.1:{srv.port}"


def echo_handler(**options: Any) -> Any:
    async def handler(req: dict[str, Any]) -> Any:
        try:
            conn = await websocket_connection(req, **options)
        except ValueError:
            return {"status": 400, "body": "not a websocket"}
        s.connect(conn, conn)
        return None

    return handler


@pytest_twisted.ensureDeferred
async def test_echo_handler(servers: list[Any]) -> None:
    """deftest test-echo-handler"""
    addr = serve(servers, echo_handler())
    c = await bounded(websocket_client(f"ws://{addr}"))
    assert await c.put("hello") is True
    assert await bounded(c.try_take(5)) == "hello"
    resp = await bounded(treq.get(f"http://{addr}/"))
    assert resp.code == 400
    await resp.content()


@pytest.mark.parametrize(
    ("server_compression", "client_compression"), [(False, True), (True, False), (True, True)]
)
@pytest_twisted.ensureDeferred
async def test_compression_combinations(
    servers: list[Any], server_compression: bool, client_compression: bool
) -> None:
    """deftest test-echo-handler (compression) and test-per-message-compression-handler"""
    addr = serve(servers, echo_handler(compression=server_compression))
    c = await bounded(websocket_client(f"ws://{addr}", compression=client_compression))
    assert await c.put("hello compressed") is True
    assert await bounded(c.try_take(5)) == "hello compressed"
    assert c.description()["compression"] is (server_compression and client_compression)


@pytest_twisted.ensureDeferred
async def test_server_handshake_description(servers: list[Any]) -> None:
    """deftest test-server-handshake-description"""

    async def handler(req: dict[str, Any]) -> None:
        conn = await websocket_connection(req)
        await conn.put("YES" if "subprotocol" in conn.description() else "NO")
        conn.close()

    addr = serve(servers, handler)
    c = await bounded(websocket_client(f"ws://{addr}"))
    assert await bounded(c.try_take(5)) == "YES"


@pytest_twisted.ensureDeferred
async def test_ping_pong(servers: list[Any]) -> None:
    """deftest test-ping-pong-protocol"""
    from_server: Deferred[bool] = Deferred()

    async def handler(req: dict[str, Any]) -> None:
        conn = await websocket_connection(req)
        if req["uri"] == "/server-pings":
            from_server.callback(await websocket_ping(conn))

    addr = serve(servers, handler)
    c = await bounded(websocket_client(f"ws://{addr}/"))
    assert await bounded(websocket_ping(c)) is True  # empty ping from the client
    assert await bounded(websocket_ping(c, b"hello!")) is True  # with a payload
    pings = await bounded(gatherResults([websocket_ping(c) for _ in range(10)]))
    assert pings == [True] * 10  # concurrent pings
    await bounded(websocket_client(f"ws://{addr}/server-pings"))
    assert await bounded(from_server) is True  # empty ping from the server


@pytest_twisted.ensureDeferred
async def test_client_connection_close(servers: list[Any]) -> None:
    """deftest test-client-connection-close"""
    addr = serve(servers, echo_handler())
    conn = await bounded(websocket_client(f"ws://{addr}"))
    closed: Deferred[bool] = Deferred()
    conn.on_closed(lambda: closed.callback(True))
    await conn.put("message #1")
    await conn.put("message #2")
    cp = websocket_close(conn, 4009, "back to roots")
    assert await bounded(closed) is True
    assert await bounded(cp) is True  # reported closed
    assert await websocket_close(conn) is False  # subsequent close


@pytest_twisted.ensureDeferred
async def test_server_connection_close(servers: list[Any]) -> None:
    """deftest test-server-connection-close: normal close"""
    results: dict[str, Any] = {}
    done: Deferred[None] = Deferred()

    async def handler(req: dict[str, Any]) -> None:
        conn = await websocket_connection(req)
        results["close"] = await websocket_close(conn, 4001, "going away")
        results["write"] = await conn.put("Any other message")
        results["close again"] = await websocket_close(conn, 4002, "going away again")
        done.callback(None)

    addr = serve(servers, handler)
    client = await bounded(websocket_client(f"ws://{addr}"))
    assert await bounded(client.take()) is None
    await bounded(done)
    assert results == {"close": True, "write": False, "close again": False}
    desc = client.description()
    assert (desc["close_code"], desc["close_reason"]) == (4001, "going away")


@pytest_twisted.ensureDeferred
async def test_close_rejected_for_closed_stream(servers: list[Any]) -> None:
    """deftest test-server-connection-close: rejected for closed stream"""
    attempt: Deferred[bool] = Deferred()

    async def handler(req: dict[str, Any]) -> None:
        conn = await websocket_connection(req)
        conn.close()
        attempt.callback(await websocket_close(conn, 4001, "going away attempt"))

    addr = serve(servers, handler)
    client = await bounded(websocket_client(f"ws://{addr}"))
    assert await bounded(client.take()) is None
    assert await bounded(attempt) is False
    desc = client.description()
    assert (desc["close_code"], desc["close_reason"]) == (1000, "")  # closing the stream sends 1000


@pytest_twisted.ensureDeferred
async def test_concurrent_close_attempts(servers: list[Any]) -> None:
    """deftest test-server-connection-close: concurrent close attempts"""
    attempts: Deferred[list[Any]] = Deferred()

    async def handler(req: dict[str, Any]) -> None:
        conn = await websocket_connection(req)
        results = await DeferredList([websocket_close(conn, 4000 + i) for i in range(10)])
        attempts.callback([value for _, value in results])

    addr = serve(servers, handler)
    client = await bounded(websocket_client(f"ws://{addr}"))
    assert await bounded(client.take()) is None
    got = await bounded(attempts)
    assert got.count(True) == 1 and got.count(False) == 9
    desc = client.description()
    assert 4000 <= desc["close_code"] <= 4009 and desc["close_reason"] == ""
