"""The demo served by ``twist aleph-http`` when no ``--handler`` is given.

``/`` hello, ``/stream`` a chunked response, ``/events`` a server-sent clock,
``/health`` a JSON status, ``/ws`` a WebSocket echo.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from twisted.internet.task import deferLater

from aleph_tx import stream as s
from aleph_tx.http import sse

__all__ = ["handler"]

_INDEX = "hello!"


async def _chunks(reactor: Any, count: int = 10, delay: float = 0.05) -> AsyncIterator[str]:
    for i in range(count):
        if i:
            await deferLater(reactor, delay, lambda: None)
        yield f"chunk {i}\n"


async def _ws_echo(req: dict[str, Any]) -> None:
    """Echo every WebSocket message (a request that is no upgrade gets 400)."""
    from aleph_tx.http._websocket.api import websocket_connection

    conn = await websocket_connection(req)
    s.connect(conn, conn)


def handler(req: dict[str, Any]) -> Any:
    """Route the demo's paths."""
    uri = req["uri"]
    if uri == "/ws":
        return _ws_echo(req)
    if uri == "/":
        return {"status": 200, "headers": {"content-type": "text/plain; charset=utf-8"}, "body": _INDEX}
    if uri == "/stream":
        from twisted.internet import reactor

        return {
            "status": 200,
            "headers": {"content-type": "text/plain; charset=utf-8"},
            "body": _chunks(reactor),
        }
    if uri == "/events":
        clock = s.periodically(
            1.0, lambda: {"event": "tick", "data": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        )
        return sse(clock)
    if uri == "/health":
        return {
            "status": 200,
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"status": "ok"}),
        }
    return {"status": 404, "headers": {"content-type": "text/plain; charset=utf-8"}, "body": "not found"}
