"""Closing after a burst: a slow reader still gets everything sent before the close
frame, and the close is clean (1000), however long it takes to read (within the
close handshake's bound)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from _ws_helpers import WSServer, bounded
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

from aleph_tx import stream as s
from aleph_tx.http import websocket_client
from aleph_tx.http._websocket.glue import CLOSE_HANDSHAKE_TIMEOUT

CHUNK = b"x" * 65536
COUNT = 64  # 4 MiB: more than the socket buffers hold


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_gets_everything_sent_before_close() -> None:
    async def burst_then_close(conn: Any) -> None:
        for _ in range(COUNT):
            assert await conn.put(CHUNK)
        conn.close()  # close 1000 after what was put

    srv = WSServer(lambda conn: Deferred.fromCoroutine(burst_then_close(conn)))
    try:
        client = await bounded(websocket_client(srv.url))
        # read nothing for longer than autobahn's own close-handshake timeout (1 s)
        await task.deferLater(reactor, 1.5, lambda: None)
        got = await bounded(s.reduce(lambda n, m: n + len(m), client, 0), 30)
        assert got == COUNT * len(CHUNK)
        assert client.description()["close_code"] == 1000
        assert srv.conns[0].description()["close_code"] == 1000
    finally:
        await srv.close()
    assert CLOSE_HANDSHAKE_TIMEOUT > 1.5
