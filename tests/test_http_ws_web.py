"""WebSocket upgrades through the twisted.web front: ``to_resource`` in a plain
``Site`` and in ``make_site``, plain TCP and TLS, with the `websockets` library,
our client and a raw client sending frames before the 101 arrives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from _ws_helpers import AsyncioThread, RawClient, bounded, frame, until
from twisted.internet import reactor, task
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.web import resource, server

from aleph_tx import stream as s
from aleph_tx import tls
from aleph_tx.http import make_site, to_resource, websocket_client, websocket_connection


@pytest.fixture(scope="module")
def aio() -> Iterator[AsyncioThread]:
    loop = AsyncioThread()
    yield loop
    loop.stop()


class App:
    """A twisted.web ``Site`` with ``/ws`` (echo after an optional delay) and ``/plain``."""

    def __init__(self, streaming: bool, delay: float = 0.0) -> None:
        self.conns: list[Any] = []
        self.returned: list[Any] = []
        self.delay = delay
        root = resource.Resource()
        root.putChild(b"app", to_resource(self.handler))
        self.site = make_site(root) if streaming else server.Site(root)

    async def handler(self, req: dict[str, Any]) -> Any:
        if req["uri"] == "/app/plain":
            return {"status": 200, "body": "plain " + req["request_method"]}
        if self.delay:
            await task.deferLater(reactor, self.delay)  # frames arrive meanwhile
        conn = await websocket_connection(req, subprotocols=["chat"])
        self.conns.append(conn)
        s.connect(conn, conn)
        return {"status": 500, "body": "ignored after the upgrade"}


@pytest.fixture(params=["Site", "make_site"])
def app(request: pytest.FixtureRequest) -> Iterator[tuple[App, int]]:
    a = App(request.param == "make_site")
    port = reactor.listenTCP(0, a.site, interface="127.0.0.1")
    yield a, port.getHost().port
    port.stopListening()
    for conn in a.conns:
        conn.close()


async def _websockets_echo(url: str, messages: list[Any]) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    got = []
    async with connect(url, subprotocols=["chat"]) as ws:  # type: ignore[list-item]
        for m in messages:
            await ws.send(m)
            got.append(await ws.recv())
        sub = ws.subprotocol
    return {"got": got, "subprotocol": sub, "code": ws.close_code}


@pytest_twisted.ensureDeferred
async def test_websockets_client_through_a_site(app: tuple[App, int], aio: AsyncioThread) -> None:
    a, port = app
    result = await bounded(aio.run(_websockets_echo(f"ws://127.0.0.1:{port}/app/ws", ["text", b"\x00bin"])))
    assert result == {"got": ["text", b"\x00bin"], "subprotocol": "chat", "code": 1000}
    await until(lambda: a.conns and a.conns[0].description()["close_state"] == "closed")
    assert a.conns[0].description()["close_code"] == 1000


@pytest_twisted.ensureDeferred
async def test_our_client_and_plain_http_on_the_same_site(app: tuple[App, int]) -> None:
    from aleph_tx.http import get

    a, port = app
    conn = await bounded(websocket_client(f"ws://127.0.0.1:{port}/app/ws", subprotocols=["chat"]))
    await conn.put("hello")
    assert await bounded(conn.take()) == "hello"
    assert conn.description()["subprotocol"] == "chat"
    # the server's stream writes with backpressure: it is the transport's producer now
    server_ws = a.conns[0]._ws
    assert server_ws.transport.producer is server_ws.sender
    resp = await bounded(get(f"http://127.0.0.1:{port}/app/plain"))
    assert resp["status"] == 200 and resp["body"] == b"plain get"
    await bounded(conn.put("bye"))
    assert await bounded(conn.take()) == "bye"
    conn.close()
    await until(lambda: a.conns[0].description()["close_state"] == "closed")
    assert a.conns[0].description()["close_code"] == 1000


@pytest.mark.parametrize("streaming", [False, True])
@pytest_twisted.ensureDeferred
async def test_frames_sent_before_the_upgrade_are_kept(streaming: bool) -> None:
    # the handler upgrades only after 50 ms: twisted.web buffers the frames meanwhile
    a = App(streaming, delay=0.05)
    port = reactor.listenTCP(0, a.site, interface="127.0.0.1")
    try:
        raw = RawClient()
        head = await raw.connect(
            port.getHost().port, path="/app/ws", extra=frame(1, b"first") + frame(2, b"2")
        )
        assert head.startswith(b"HTTP/1.1 101")
        await until(lambda: raw.data == b"\x81\x05first\x82\x012")
        raw.write(frame(8, (4001).to_bytes(2, "big") + b"done"))
        await bounded(raw.lost)
        await until(lambda: a.conns[0].description()["close_state"] == "closed")
        assert a.conns[0].description()["close_code"] == 4001
        assert a.conns[0].description()["close_reason"] == "done"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_not_an_upgrade_gets_400(app: tuple[App, int]) -> None:
    from aleph_tx.http import get

    a, port = app
    resp = await bounded(get(f"http://127.0.0.1:{port}/app/ws", throw_exceptions=False))
    assert resp["status"] == 400
    assert a.conns == []


@pytest_twisted.ensureDeferred
async def test_wss_through_a_site_over_tls() -> None:
    a = App(streaming=True)
    endpoint = SSL4ServerEndpoint(reactor, 0, tls.self_signed_context("localhost"), interface="127.0.0.1")
    port = await endpoint.listen(a.site)
    try:
        url = f"wss://localhost:{port.getHost().port}/app/ws"
        conn = await bounded(websocket_client(url, insecure=True))
        await conn.put("secret")
        assert await bounded(conn.take()) == "secret"
        assert conn.description()["tls"] is True
        conn.close()
        await until(lambda: a.conns[0].description()["close_state"] == "closed")
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_second_upgrade_of_the_same_request_fails() -> None:
    from aleph_tx.errors import ConnectionLostError

    seen: list[Any] = []

    async def twice(req: dict[str, Any]) -> None:
        conn = await websocket_connection(req)
        try:
            await websocket_connection(req)
        except ConnectionLostError as e:
            seen.append(e)
        s.connect(conn, conn)

    port = reactor.listenTCP(0, server.Site(to_resource(twice)), interface="127.0.0.1")
    try:
        conn = await bounded(websocket_client(f"ws://127.0.0.1:{port.getHost().port}/"))
        await conn.put("still here")
        assert await bounded(conn.take()) == "still here"
        assert len(seen) == 1 and "cannot upgrade" in str(seen[0])
        conn.close()
    finally:
        await port.stopListening()
