"""The fault matrix, connection streams: WebSocket and TCP, server and client, in memory.

Rows: a WebSocket server (``start_server`` + ``websocket_connection``), the
WebSocket client (``websocket_client``), a TCP server (``tcp.start_server``), the
TCP client (``tcp.client``); the peer is raw bytes (:class:`~_faults.RawClient`,
:class:`~_faults.RawWSServer`). Faults, at each stage: before the handshake is
complete (WebSocket) or any byte (TCP); mid message (half a frame, or data nobody
takes); while the application waits (a take pending); mid send (puts waiting on a
peer that reads nothing). The peer aborts, or (server rows) ``Server.close()`` runs.

Expectations, in every case: every take and put the application has pending
fires (puts ``False`` on a dead connection), every stream closes, the connect
Deferred of a client fires; nothing is delivered twice; no connection stays tracked,
no timer is left on the clock; ``close()`` fires within ``shutdown_timeout`` + 1 s;
after an abort the server still serves a new connection.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from _faults import (
    WS_UPGRADE,
    Pipe,
    RawClient,
    RawWSServer,
    ThreadedClock,
    Tracker,
    client_factory,
    close_within,
    fill,
    server_factory,
    until,
    ws_frame,
)
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory

from aleph_tx import tcp
from aleph_tx.http import start_server, websocket_client, websocket_connection

SHUTDOWN_TIMEOUT = 2.0
STAGES = ("before_head", "mid_message", "app_waiting", "mid_send")


def behave(t: Tracker, conn: Any, stage: str, send: bool) -> None:
    """What the application does on the connection under test (``send``: start filling it)."""
    t.streams.append(conn)
    if stage in ("mid_message", "app_waiting"):
        t.deferreds.append(conn.take())
    elif stage == "mid_send" and send:
        fill(conn, b"z" * 16384, t.puts)


def echo_once(conn: Any) -> None:
    """The application on later connections: answer one message with itself."""
    conn.take().addCallback(lambda msg: conn.put(msg) if msg is not None else None)


class Row:
    stages: tuple[str, ...] = STAGES
    closable = True

    def __init__(self, t: Tracker, stage: str) -> None:
        self.t = t
        self.stage = stage
        self.clock = ThreadedClock()
        self.server: Any = None
        self.peer: Any = None
        self.pipe: Pipe | None = None
        self.seen = 0
        self.payload_sent = 0  # message bytes the peer sent to the stream under test

    def on_connection(self, conn: Any) -> None:
        self.seen += 1
        if self.seen == 1:
            # a client fills once the peer stops reading (reach), a server at once
            behave(self.t, conn, self.stage, send=self.closable)
        else:
            echo_once(conn)

    async def reach(self) -> Pipe:
        raise NotImplementedError

    async def serves(self) -> None:
        raise NotImplementedError

    def connections(self) -> int:
        return 0 if self.server is None else int(self.server.connection_count)


class WSServerRow(Row):
    def __init__(self, t: Tracker, stage: str) -> None:
        super().__init__(t, stage)

        async def handler(req: dict[str, Any]) -> None:
            self.on_connection(await websocket_connection(req))

        self.server = start_server(handler, reactor=self.clock, shutdown_timeout=SHUTDOWN_TIMEOUT)

    async def reach(self) -> Pipe:
        client = RawClient()
        self.peer = client
        pipe = self.pipe = Pipe(server_factory(self.clock), client, self.clock)
        if self.stage == "before_head":
            self.seen = 1  # this connection never reaches the handler: the next one echoes
            client.send(WS_UPGRADE[:40])
            await pipe.settle()
            return pipe
        if self.stage == "mid_send":
            pipe.client_reading = False
        client.send(WS_UPGRADE)
        await until(lambda: self.seen == 1, "the upgrade", [pipe])
        if self.stage == "mid_message":
            client.send(ws_frame(b"m" * 1000)[:500])
        elif self.stage == "mid_send":
            await until(lambda: pipe.st.paused_by_pipe, "the sends to back up", [pipe])
        await pipe.settle()
        return pipe

    async def serves(self) -> None:
        client = RawClient()
        pipe = Pipe(server_factory(self.clock), client, self.clock)
        client.send(WS_UPGRADE)
        await until(lambda: b"\r\n\r\n" in client.received, "the upgrade", [pipe])
        client.send(ws_frame(b"hi"))
        await until(lambda: client.received.endswith(b"\x82\x02hi"), "the echo on a new connection", [pipe])
        pipe.abort_client()
        await pipe.settle()


class WSClientRow(Row):
    closable = False

    async def reach(self) -> Pipe:
        connecting = websocket_client("ws://127.0.0.1:8080/ws", reactor=self.clock)
        self.t.deferreds.append(connecting)
        connecting.addCallback(lambda conn: (self.on_connection(conn), conn)[1])
        connecting.addErrback(lambda _: None)
        server = self.peer = RawWSServer()
        pipe = self.pipe = Pipe(Factory.forProtocol(lambda: server), client_factory(self.clock), self.clock)
        if self.stage == "before_head":
            server.then = b""
            server.dataReceived = lambda data: server.transport.write(b"HTTP/1.1 101 Switch")  # type: ignore[method-assign]
            await pipe.settle()
            return pipe
        await until(lambda: connecting.called, "the handshake", [pipe])
        if self.stage == "mid_message":
            assert pipe.st.protocol.transport is not None
            pipe.st.protocol.transport.write(ws_frame(b"m" * 1000, mask=False)[:500])
        elif self.stage == "mid_send":
            pipe.server_reading = False
            fill(connecting.result, b"z" * 16384, self.t.puts)
            await until(lambda: pipe.ct.paused_by_pipe, "the sends to back up", [pipe])
        await pipe.settle()
        return pipe


class TCPServerRow(Row):
    def __init__(self, t: Tracker, stage: str) -> None:
        super().__init__(t, stage)
        self.server = tcp.start_server(
            lambda conn, info: self.on_connection(conn), reactor=self.clock, shutdown_timeout=SHUTDOWN_TIMEOUT
        )

    async def reach(self) -> Pipe:
        client = RawClient()
        self.peer = client
        pipe = self.pipe = Pipe(server_factory(self.clock), client, self.clock)
        if self.stage == "mid_send":
            pipe.client_reading = False
        await pipe.settle()
        if self.stage == "mid_message":
            client.send(b"m" * 500)
            self.payload_sent = 500
        elif self.stage == "mid_send":
            await until(lambda: pipe.st.paused_by_pipe, "the sends to back up", [pipe])
        await pipe.settle()
        return pipe

    async def serves(self) -> None:
        client = RawClient()
        pipe = Pipe(server_factory(self.clock), client, self.clock)
        client.send(b"hi")
        await until(lambda: client.received == b"hi", "the echo on a new connection", [pipe])
        pipe.abort_client()
        await pipe.settle()


class TCPClientRow(Row):
    stages = ("mid_message", "app_waiting", "mid_send")
    closable = False

    async def reach(self) -> Pipe:
        connecting = tcp.client("127.0.0.1", 8080, reactor=self.clock)
        self.t.deferreds.append(connecting)
        connecting.addCallback(lambda conn: (self.on_connection(conn), conn)[1])
        connecting.addErrback(lambda _: None)
        server = self.peer = RawClient()
        pipe = self.pipe = Pipe(Factory.forProtocol(lambda: server), client_factory(self.clock), self.clock)
        await until(lambda: connecting.called, "the connection", [pipe])
        if self.stage == "mid_message":
            server.send(b"m" * 500)
            self.payload_sent = 500
        elif self.stage == "mid_send":
            pipe.server_reading = False
            fill(connecting.result, b"z" * 16384, self.t.puts)
            await until(lambda: pipe.ct.paused_by_pipe, "the sends to back up", [pipe])
        await pipe.settle()
        return pipe


ROWS: dict[str, type[Row]] = {
    "ws-server": WSServerRow,
    "ws-client": WSClientRow,
    "tcp-server": TCPServerRow,
    "tcp-client": TCPClientRow,
}
CASES = [
    pytest.param(row, stage, action, id=f"{row}-{stage}-{action}")
    for row, cls in ROWS.items()
    for stage in cls.stages
    for action in (("abort", "close") if cls.closable else ("abort",))
]


@pytest.mark.parametrize(("row", "stage", "action"), CASES)
@pytest_twisted.ensureDeferred
async def test_fault(row: str, stage: str, action: str) -> None:
    t = Tracker()
    r = ROWS[row](t, stage)
    try:
        pipe = await r.reach()
        if action == "abort":
            if r.server is not None:
                pipe.abort_client()
            else:
                pipe.abort_server()
            await pipe.settle()
            if r.closable:
                await r.serves()
                await close_within(r.server, r.clock, [pipe], 0.0)
        else:
            await close_within(r.server, r.clock, [pipe], SHUTDOWN_TIMEOUT + 1.0)
        taken = bytearray()
        for st in t.streams:  # what was received before can still be taken, then the end
            await until(lambda st=st: _drains(st, taken), "the stream to drain", [pipe])

        assert not t.errors, t.errors
        assert not t.pending(), f"not ended: {t.pending()}"
        assert len(taken) <= r.payload_sent, f"took {len(taken)} bytes of the {r.payload_sent} sent"
        assert r.seen <= 1 + (1 if action == "abort" and r.closable else 0), f"{r.seen} connections seen"
        assert r.connections() == 0, f"{r.connections()} connection(s) still tracked"
        assert not r.clock.getDelayedCalls(), f"timers left: {r.clock.getDelayedCalls()}"
    finally:
        r.clock.stop_threads()


def _drains(st: Any, taken: bytearray) -> bool:
    """Take what ``st`` still holds (into ``taken``); whether it has drained."""
    end = object()
    while True:
        d: Deferred[Any] = st.take(end)
        if not d.called:
            d.cancel()
            d.addErrback(lambda _: None)
            return False
        if d.result is end:
            return True
        taken += d.result if isinstance(d.result, bytes) else str(d.result).encode()
