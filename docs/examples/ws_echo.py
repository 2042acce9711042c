"""WebSockets: an echo server (Aleph's ``echo-handler``) and a client.

Run it with ``python docs/examples/ws_echo.py``.
"""

from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from aleph_tx import http
from aleph_tx import stream as s


async def echo_handler(req: dict[str, Any]) -> Any:
    try:
        conn = await http.websocket_connection(req)
    except http.WebSocketHandshakeError:
        # not a WebSocket request: answer it as plain HTTP
        return {"status": 400, "headers": {"content-type": "text/plain"}, "body": "expected a WebSocket"}
    s.connect(conn, conn)  # what the client sends comes back
    return None  # ignored after the upgrade


async def main(reactor: Any) -> None:
    server = http.start_server(echo_handler, port=0, host="127.0.0.1")
    conn = await http.websocket_client(f"ws://127.0.0.1:{server.port}/echo")

    await conn.put("hello")  # str: a text frame
    assert await conn.take() == "hello"
    await conn.put(b"\x00\x01")  # bytes: a binary frame
    assert await conn.take() == b"\x00\x01"
    assert await http.websocket_ping(conn) is True  # the server answered our ping

    assert await http.websocket_close(conn, 4000, "done") is True  # fires once closed
    desc = conn.description()
    assert (desc["close_code"], desc["close_reason"]) == (4000, "done"), desc
    assert await conn.take("drained") == "drained"
    await server.close()
    print("ws_echo: ok")


task.react(lambda reactor: ensureDeferred(main(reactor)).addTimeout(20, reactor))
