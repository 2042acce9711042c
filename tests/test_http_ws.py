"""WebSockets over real sockets on 127.0.0.1: our server and client against each
other, against the `websockets` library (asyncio, in a thread) and against
autobahn's own Twisted server. Every test is bounded in time."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from _ws_helpers import (
    AsyncioThread,
    RawClient,
    WebsocketsEchoServer,
    bounded,
    frame,
    serve,
    until,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from aleph_tx import stream as s
from aleph_tx import tls
from aleph_tx.errors import WebSocketHandshakeError
from aleph_tx.http._websocket.api import (
    websocket_client,
    websocket_close,
    websocket_connection,
    websocket_ping,
)


@pytest.fixture(scope="module")
def aio() -> Iterator[AsyncioThread]:
    loop = AsyncioThread()
    yield loop
    loop.stop()


# -- our server, the `websockets` library as client -----------------------------


async def _websockets_echo(url: str, messages: list[Any], **kwargs: Any) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    got = []
    async with connect(url, **kwargs) as ws:
        for m in messages:
            await ws.send(m)
            got.append(await ws.recv())
        sub = ws.subprotocol
        ext = [type(e).__name__ for e in ws.protocol.extensions]
    return {
        "got": got,
        "subprotocol": sub,
        "extensions": ext,
        "code": ws.close_code,
        "reason": ws.close_reason,
    }


@pytest_twisted.ensureDeferred
async def test_websockets_client_echo_text_and_binary(servers: list[Any], aio: AsyncioThread) -> None:
    srv = serve(servers)
    msgs = ["hello", "ünïcødé ☃", b"\x00\x01\xff", b"", "x" * 60000]
    result = await bounded(aio.run(_websockets_echo(srv.url, msgs, max_size=None)))
    assert result["got"] == msgs
    assert [type(m) for m in result["got"]] == [str, str, bytes, bytes, str]
    assert result["code"] == 1000
    await until(lambda: srv.conns and srv.conns[0].description()["close_state"] == "closed")
    desc = srv.conns[0].description()
    assert desc["close_code"] == 1000 and desc["closed_by"] == "peer"


@pytest_twisted.ensureDeferred
async def test_websockets_client_subprotocol_and_compression(servers: list[Any], aio: AsyncioThread) -> None:
    srv = serve(servers, subprotocols=["v2.chat", "v1.chat"], compression=True)
    result = await bounded(
        aio.run(
            _websockets_echo(
                srv.url, ["a" * 5000], subprotocols=["v1.chat", "v2.chat"], compression="deflate"
            )
        )
    )
    assert result["got"] == ["a" * 5000]
    assert result["subprotocol"] == "v1.chat"  # the client's first that the server accepts
    assert result["extensions"] == ["PerMessageDeflate"]
    desc = srv.conns[0].description()
    assert desc["subprotocol"] == "v1.chat" and desc["compression"] is True
    assert desc["bytes_received"] == 5000  # counted after decompression
    # without compression asked, none is used
    srv2 = serve(servers, compression=False)
    result = await bounded(aio.run(_websockets_echo(srv2.url, ["b"], compression="deflate")))
    assert result["extensions"] == [] and result["subprotocol"] is None


async def _websockets_close_by_server(url: str) -> tuple[Any, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url) as ws:
        try:
            await ws.recv()
        except ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason


@pytest_twisted.ensureDeferred
async def test_close_code_from_server_reaches_websockets_client(
    servers: list[Any], aio: AsyncioThread
) -> None:
    closed: list[Any] = []

    def on_conn(conn: Any) -> None:
        closed.append(websocket_close(conn, 4001, "custom bye"))

    srv = serve(servers, on_conn)
    code, reason = await bounded(aio.run(_websockets_close_by_server(srv.url)))
    assert (code, reason) == (4001, "custom bye")
    assert await bounded(closed[0]) is True
    desc = srv.conns[0].description()
    assert (desc["close_code"], desc["close_reason"], desc["closed_by"]) == (4001, "custom bye", "us")


@pytest_twisted.ensureDeferred
async def test_closing_the_stream_sends_1000(servers: list[Any], aio: AsyncioThread) -> None:
    srv = serve(servers, lambda conn: conn.close())
    code, reason = await bounded(aio.run(_websockets_close_by_server(srv.url)))
    assert (code, reason) == (1000, "")


async def _websockets_client_closes(url: str, code: int, reason: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        await ws.send("one")
        await ws.recv()
        await ws.close(code, reason)


@pytest_twisted.ensureDeferred
async def test_close_code_from_websockets_client(servers: list[Any], aio: AsyncioThread) -> None:
    srv = serve(servers)
    await bounded(aio.run(_websockets_client_closes(srv.url, 4002, "client says bye")))
    await until(lambda: srv.conns[0].description()["close_state"] == "closed")
    desc = srv.conns[0].description()
    assert (desc["close_code"], desc["close_reason"], desc["closed_by"]) == (4002, "client says bye", "peer")
    assert srv.conns[0].closed and srv.conns[0].drained


async def _websockets_send_oversize(url: str, payload: Any) -> tuple[Any, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, max_size=None) as ws:
        await ws.send(payload)
        try:
            await ws.recv()
        except ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason


@pytest_twisted.ensureDeferred
async def test_oversize_frame_and_message_close_1009(servers: list[Any], aio: AsyncioThread) -> None:
    srv = serve(servers, lambda conn: None, max_frame_payload=1000, max_message_size=5000)
    code, _ = await bounded(aio.run(_websockets_send_oversize(srv.url, b"x" * 1001)))
    assert code == 1009
    # a fragmented message: every frame is small, the whole is too big
    code, _ = await bounded(aio.run(_websockets_send_oversize(srv.url, [b"y" * 900] * 6)))
    assert code == 1009
    await until(lambda: all(c.description()["close_state"] == "closed" for c in srv.conns))
    assert [c.description()["close_code"] for c in srv.conns] == [1009, 1009]
    assert all(c.description()["closed_by"] == "us" for c in srv.conns)


@pytest_twisted.ensureDeferred
async def test_handler_that_refuses_or_non_upgrade_gets_400(servers: list[Any]) -> None:
    import treq

    errors: list[Any] = []

    async def handler(req: dict[str, Any]) -> Any:
        try:
            await websocket_connection(req)
        except WebSocketHandshakeError as e:
            errors.append(e)
            raise
        return None

    from aleph_tx.http._server.serve import start_server

    srv = start_server(handler, port=0, host="127.0.0.1")
    servers.append(srv)
    resp = await bounded(treq.get(f"http://127.0.0.1:{srv.port}/ws"))
    assert resp.code == 400
    await resp.content()
    assert len(errors) == 1 and isinstance(errors[0], WebSocketHandshakeError)


@pytest_twisted.ensureDeferred
async def test_bad_handshake_answers_400_and_closes(servers: list[Any]) -> None:
    srv = serve(servers)
    for bad in (
        _HEAD % (b"GET", b"short", b"13"),
        _HEAD % (b"GET", b"dGhlIHNhbXBsZSBub25jZQ==", b"8"),
        _HEAD % (b"POST", b"dGhlIHNhbXBsZSBub25jZQ==", b"13"),
    ):
        reply = await bounded(_raw_exchange(srv.server.port, bad))
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        assert b"connection: close" in reply.lower()
    assert srv.conns == []


_HEAD = (
    b"%s /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\nContent-Length: 0\r\n\r\n"
)


async def _raw_exchange(port: int, data: bytes) -> bytes:
    from twisted.internet import threads

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(data)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)

    result: bytes = await threads.deferToThread(run)
    return result


@pytest_twisted.ensureDeferred
async def test_pipelined_frames_after_the_handshake(servers: list[Any]) -> None:
    srv = serve(servers)
    raw = RawClient()
    frames = frame(1, b"first") + frame(2, b"second")
    head = await raw.connect(srv.server.port, extra=frames)
    assert head.startswith(b"HTTP/1.1 101")
    await until(lambda: raw.data == b"\x81\x05first\x82\x06second")
    raw.write(frame(8, b""))  # close without a code: 1005
    await bounded(raw.lost)
    await until(lambda: srv.conns[0].description()["close_state"] == "closed")
    desc = srv.conns[0].description()
    assert desc["close_code"] == 1005 and desc["close_reason"] == ""


@pytest_twisted.ensureDeferred
async def test_connection_loss_without_close_is_1006(servers: list[Any]) -> None:
    srv = serve(servers)
    raw = RawClient()
    await raw.connect(srv.server.port)
    await until(lambda: len(srv.conns) == 1)
    raw.protocol.transport.abortConnection()  # type: ignore[union-attr]
    await until(lambda: srv.conns[0].description()["close_state"] == "closed")
    desc = srv.conns[0].description()
    assert desc["close_code"] == 1006 and srv.conns[0].closed


# -- our client ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_our_client_against_websockets_server(aio: AsyncioThread) -> None:
    server = WebsocketsEchoServer(aio, subprotocols=["chat"], compression="deflate")
    try:
        conn = await bounded(
            websocket_client(f"ws://127.0.0.1:{server.port}/", subprotocols=["chat"], compression=True)
        )
        for msg in ("text ☃", b"\x00bin", "y" * 70000, b"z" * 200000):
            assert await bounded(conn.put(msg)) is True
            got = await bounded(conn.take())
            assert got == msg and type(got) is type(msg)
        desc = conn.description()
        assert desc["subprotocol"] == "chat" and desc["compression"] is True and desc["side"] == "client"
        assert await bounded(websocket_ping(conn, b"are you there")) is True
        assert await bounded(conn.put("close:4003:server side bye")) is True
        assert await bounded(conn.take()) is None  # drained: the server closed
        desc = conn.description()
        assert (desc["close_code"], desc["close_reason"], desc["closed_by"]) == (
            4003,
            "server side bye",
            "peer",
        )
        assert conn.closed and await conn.put("late") is False
    finally:
        server.close()


@pytest_twisted.ensureDeferred
async def test_our_client_closes_against_websockets_server(aio: AsyncioThread) -> None:
    server = WebsocketsEchoServer(aio)
    try:
        conn = await bounded(websocket_client(f"ws://127.0.0.1:{server.port}/path?q=1"))
        assert await bounded(websocket_close(conn, 4010, "done here")) is True
        assert await websocket_close(conn, 4011, "again") is False
        assert conn.description()["close_code"] == 4010
        await until(lambda: len(server.closes) == 1)
        assert server.closes == [(4010, "done here")]
        conn2 = await bounded(websocket_client(f"ws://127.0.0.1:{server.port}/"))
        conn2.close()
        await until(lambda: len(server.closes) == 2)
        assert server.closes[1] == (1000, "")
    finally:
        server.close()


@pytest_twisted.ensureDeferred
async def test_our_client_against_autobahn_twisted_server() -> None:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Echo(WebSocketServerProtocol):
        def onConnect(self, request: Any) -> Any:  # noqa: N802
            return "p2" if "p2" in request.protocols else None

        def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
            if payload == b"bye":
                self.sendClose(4004, "autobahn bye")
            else:
                self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = Echo
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        conn = await bounded(
            websocket_client(f"ws://127.0.0.1:{port.getHost().port}/", subprotocols=["p1", "p2"])
        )
        assert conn.description()["subprotocol"] == "p2"
        await conn.put("héllo")
        assert await bounded(conn.take()) == "héllo"
        await conn.put(bytearray(b"ba"))
        assert await bounded(conn.take()) == b"ba"
        await conn.put("bye")
        assert await bounded(conn.take()) is None
        assert conn.description()["close_code"] == 4004
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_client_handshake_refused_and_connection_refused(servers: list[Any]) -> None:
    srv = serve(servers)
    with pytest.raises(WebSocketHandshakeError):
        await bounded(websocket_client(f"ws://127.0.0.1:{srv.server.port}/plain"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    free = sock.getsockname()[1]
    sock.close()
    with pytest.raises(Exception) as info:
        await bounded(websocket_client(f"ws://127.0.0.1:{free}/"))
    assert "refused" in str(info.value).lower()


def test_bad_arguments_raise_at_once() -> None:
    with pytest.raises(TypeError, match="unknown WebSocket option"):
        websocket_client("ws://127.0.0.1:1/", max_frame=3)
    with pytest.raises(ValueError, match="ws://"):
        websocket_client("http://127.0.0.1:1/")
    with pytest.raises(ValueError):
        websocket_client("ws://127.0.0.1:1/", max_message_size=0)
    with pytest.raises(TypeError, match="unknown WebSocket option"):
        websocket_connection({}, max_frame=3)
    with pytest.raises(TypeError):
        websocket_ping(s.stream())
    with pytest.raises(TypeError):
        websocket_close(s.stream())
    d = websocket_connection({"request_method": "get", "headers": {}})
    assert isinstance(d, Deferred)
    failure = d.result
    d.addErrback(lambda _: None)
    assert failure.check(WebSocketHandshakeError)


# -- both ours ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ours_both_ways_puts_and_types(servers: list[Any]) -> None:
    srv = serve(servers)
    conn = await bounded(websocket_client(srv.url))
    d = conn.put(42)
    assert d.called
    with pytest.raises(TypeError):
        await d
    with pytest.raises(ValueError):
        conn.put(None)
    await conn.put(memoryview(b"mv"))
    assert await bounded(conn.take()) == b"mv"
    assert not conn.closed  # the bad put left the connection open
    with pytest.raises(ValueError):
        websocket_close(conn, 999)
    with pytest.raises(ValueError):
        websocket_close(conn, 5000)
    with pytest.raises(ValueError):
        websocket_ping(conn, b"x" * 126)
    assert await bounded(websocket_ping(conn)) is True
    assert await bounded(websocket_close(conn)) is True
    assert conn.description()["close_code"] == 1000
    assert await websocket_ping(conn) is False
    await until(lambda: srv.conns[0].description()["close_state"] == "closed")
    assert srv.conns[0].description()["close_code"] == 1000


@pytest_twisted.ensureDeferred
async def test_wss_with_self_signed_context() -> None:
    from aleph_tx.http._server.serve import start_server

    async def handler(req: dict[str, Any]) -> None:
        conn = await websocket_connection(req)
        s.connect(conn, conn)

    srv = start_server(handler, port=0, host="127.0.0.1", ssl_context=tls.self_signed_context("localhost"))
    try:
        url = f"wss://localhost:{srv.port}/"
        conn = await bounded(websocket_client(url, insecure=True))
        await conn.put("secret")
        assert await bounded(conn.take()) == "secret"
        assert conn.description()["tls"] is True
        conn.close()
        # verification on by default: a self-signed certificate is refused
        with pytest.raises(Exception):  # noqa: B017
            await bounded(websocket_client(url))
    finally:
        await srv.close()


@pytest_twisted.ensureDeferred
async def test_websockets_client_over_wss(aio: AsyncioThread) -> None:
    import ssl

    from aleph_tx.http._server.serve import start_server

    async def handler(req: dict[str, Any]) -> None:
        conn = await websocket_connection(req)
        s.connect(conn, conn)

    srv = start_server(handler, port=0, host="127.0.0.1", ssl_context=tls.self_signed_context("localhost"))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        result = await bounded(
            aio.run(_websockets_echo(f"wss://localhost:{srv.port}/", ["over tls"], ssl=ctx))
        )
        assert result["got"] == ["over tls"]
    finally:
        await srv.close()


@pytest_twisted.ensureDeferred
async def test_server_close_sends_1001(servers: list[Any]) -> None:
    srv = serve(servers)
    conn = await bounded(websocket_client(srv.url))
    await srv.close()
    assert await bounded(conn.take()) is None
    assert conn.description()["close_code"] == 1001


def test_valid_upgrade_without_a_connection_to_hand_over() -> None:
    # e.g. through to_resource (twisted.web) or testing.request: not implemented
    req = {
        "request_method": "get",
        "protocol": "HTTP/1.1",
        "headers": {
            "host": "x",
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version": "13",
        },
    }
    d = websocket_connection(req)
    failure = d.result
    d.addErrback(lambda _: None)
    assert failure.check(NotImplementedError)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(3, b"reserved opcode"), 1002),
        (frame(1, b"\xff\xfe not utf-8"), 1007),
        (frame(9, b"p" * 126), 1002),  # a control frame over 125 bytes
        (frame(8, (999).to_bytes(2, "big")), 1002),  # a close code no one may send
    ],
)
@pytest_twisted.ensureDeferred
async def test_protocol_errors_close_with_their_code(servers: list[Any], bad: bytes, code: int) -> None:
    srv = serve(servers)
    raw = RawClient()
    await raw.connect(srv.server.port)
    raw.write(bad)
    await until(lambda: raw.data[:1] == b"\x88")
    assert int.from_bytes(raw.data[2:4], "big") == code
    raw.write(frame(8, code.to_bytes(2, "big")))
    await bounded(raw.lost)
    desc = srv.conns[0].description()
    assert (desc["close_code"], desc["closed_by"]) == (code, "us")


@pytest_twisted.ensureDeferred
async def test_put_over_max_message_size_fails_and_connection_stays(servers: list[Any]) -> None:
    srv = serve(servers)
    conn = await bounded(websocket_client(srv.url, max_message_size=100))
    d = conn.put(b"x" * 101)
    with pytest.raises(ValueError, match="max_message_size"):
        await d
    await conn.put("x" * 100)
    assert await bounded(conn.take()) == "x" * 100
    assert not conn.closed


@pytest_twisted.ensureDeferred
async def test_client_headers_and_query_reach_the_handler(servers: list[Any]) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(req: dict[str, Any]) -> None:
        seen.append(req)
        conn = await websocket_connection(req)
        s.connect(conn, conn)

    from aleph_tx.http._server.serve import start_server

    srv = start_server(handler, port=0, host="127.0.0.1")
    servers.append(srv)
    conn = await bounded(
        websocket_client(
            f"ws://127.0.0.1:{srv.port}/room/7?user=ann",
            headers={"x-token": "secret", "origin": "http://example.com"},
        )
    )
    await conn.put("hi")
    assert await bounded(conn.take()) == "hi"
    req = seen[0]
    assert (req["uri"], req["query_string"]) == ("/room/7", "user=ann")
    assert req["headers"]["x-token"] == "secret" and req["headers"]["origin"] == "http://example.com"
    conn.close()
