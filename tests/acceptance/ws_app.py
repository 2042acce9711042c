"""Handlers for the WebSocket acceptance tests (``twist aleph-http --handler ws_app:handler``)."""

from __future__ import annotations

from typing import Any

from aleph_tx import stream as s
from aleph_tx.errors import WebSocketHandshakeError
from aleph_tx.http._websocket.api import websocket_close, websocket_connection


async def handler(req: dict[str, Any]) -> Any:
    uri = req["uri"]
    if uri == "/echo":
        conn = await websocket_connection(req, subprotocols=["echo.v1"], compression=True)
        s.connect(conn, conn)
        return None
    if uri == "/upper":
        conn = await websocket_connection(req)
        s.connect(s.map(lambda m: m.upper() if isinstance(m, str) else m, conn), conn)
        return None
    if uri == "/close":
        conn = await websocket_connection(req)
        await websocket_close(conn, 4321, "closed by the handler")
        return None
    if uri == "/refuse":
        raise WebSocketHandshakeError("refused by the handler")
    if uri == "/maybe":
        try:
            conn = await websocket_connection(req)
        except WebSocketHandshakeError:
            return {"status": 200, "body": "not a websocket"}
        s.connect(conn, conn)
        return None
    return {"status": 404, "body": "not found"}
