"""Helpers shared by the WebSocket tests: bounded waits, servers, and the
`websockets` library (asyncio) running in a thread with its own event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred, ensureDeferred

from aleph_tx import stream as s
from aleph_tx.http._server.serve import start_server
from aleph_tx.http._websocket.api import websocket_connection

TIMEOUT = 20.0


def bounded(d: Any, seconds: float = TIMEOUT) -> Deferred[Any]:
    """``d`` (a Deferred or coroutine) failing with TimeoutError after ``seconds``."""
    if not isinstance(d, Deferred):
        d = ensureDeferred(d)
    return d.addTimeout(seconds, reactor)


async def until(pred: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (on the real reactor) until ``pred()`` holds."""
    for _ in range(int(seconds / 0.005)):
        if pred():
            return
        await task.deferLater(reactor, 0.005)
    raise AssertionError("condition not reached in time")


class WSServer:
    """``http.start_server`` with a handler that upgrades and records each connection."""

    def __init__(self, on_conn: Callable[[Any], Any] | None = None, **ws_options: Any) -> None:
        self.conns: list[Any] = []
        self.errors: list[BaseException] = []
        self.on_conn = on_conn or (lambda conn: s.connect(conn, conn))
        self.ws_options = ws_options
        self.server = start_server(self.handler, port=0, host="127.0.0.1", **self.server_options())

    def server_options(self) -> dict[str, Any]:
        return {}

    async def handler(self, req: dict[str, Any]) -> Any:
        if req["uri"] == "/plain":
            return {"status": 200, "body": "plain"}
        conn = await websocket_connection(req, **self.ws_options)
        self.conns.append(conn)
        self.on_conn(conn)
        return None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/ws"

    def close(self) -> Deferred[Any]:
        return self.server.close()


class AsyncioThread:
    """An asyncio loop in a daemon thread, for the `websockets` library."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asyncio", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, Any], seconds: float = 15.0) -> Deferred[Any]:
        """Run ``coro`` on the asyncio loop; a Deferred of its result (waited in a thread)."""
        fut = self.submit(coro)
        return threads.deferToThread(fut.result, seconds)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class WebsocketsEchoServer:
    """A `websockets` library echo server (asyncio, in a thread).

    A text message ``"close:CODE:REASON"`` makes it close with that code;
    ``"close"`` closes without a code. Close codes it saw end in :attr:`closes`.
    """

    def __init__(self, loop: AsyncioThread, **kwargs: Any) -> None:
        self.loop = loop
        self.closes: list[tuple[int | None, str | None]] = []
        self.subprotocols: list[str | None] = []
        self.kwargs = kwargs
        self.port = loop.submit(self._start()).result(10)

    async def _start(self) -> int:
        from websockets.asyncio.server import serve

        self.server = await serve(self._echo, "127.0.0.1", 0, **self.kwargs)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _echo(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        self.subprotocols.append(ws.subprotocol)
        try:
            async for msg in ws:
                if isinstance(msg, str) and msg.startswith("close"):
                    _, code, reason = msg.split(":", 2)
                    await ws.close(int(code), reason)  # 1005: a close frame without a code
                    break
                await ws.send(msg)
        except ConnectionClosed:
            pass
        self.closes.append((ws.close_code, ws.close_reason))

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        self.loop.submit(stop()).result(10)


class RawClient:
    """A hand-written WebSocket client on a raw TCP connection (frames built here).

    It never answers pings: what a dead or hostile peer does.
    """

    def __init__(self) -> None:
        from twisted.internet.protocol import Protocol

        outer = self
        self.data = b""
        self.lost = Deferred()  # type: Deferred[None]
        self.got_101: Deferred[bytes] = Deferred()

        class P(Protocol):
            def dataReceived(self, data: bytes) -> None:  # noqa: N802
                outer.data += data
                if not outer.got_101.called and b"\r\n\r\n" in outer.data:
                    head, _, rest = outer.data.partition(b"\r\n\r\n")
                    outer.data = rest
                    outer.got_101.callback(head)

            def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
                outer.lost.callback(None)

        self.protocol = P()

    async def connect(self, port: int, path: str = "/ws", extra: bytes = b"", headers: str = "") -> bytes:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), self.protocol)
        self.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{headers}\r\n"
            ).encode()
            + extra
        )
        head: bytes = await bounded(self.got_101, 10)
        return head

    def write(self, data: bytes) -> None:
        assert self.protocol.transport is not None
        self.protocol.transport.write(data)


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """One masked (client) frame, RFC 6455 §5.2."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def serve(servers: list[Any], on_conn: Any = None, **ws_options: Any) -> WSServer:
    """A :class:`WSServer` closed at the end of the test (``servers`` fixture)."""
    srv = WSServer(on_conn, **ws_options)
    servers.append(srv)
    return srv
