"""WebSockets: an echo server and a client (the first half of Aleph's ``websocket`` example).

Run the server:    python examples/websocket_echo.py [--port 10000]
then, e.g.:        python -m websockets ws://localhost:10000/echo
Check it works:    python examples/websocket_echo.py --selftest
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer, task

from aleph_tx import http
from aleph_tx import stream as s

NON_WEBSOCKET_REQUEST = {
    "status": 400,
    "headers": {"content-type": "text/plain"},
    "body": "Expected a websocket request.",
}


async def echo_handler(req: dict[str, Any]) -> dict[str, Any] | None:
    """Upgrade, then connect the connection to itself: every message comes back.

    Aleph: ``(d/let-flow [socket (http/websocket-connection req)] (s/connect socket socket))``,
    with a ``d/catch`` answering 400 to a plain HTTP request.
    """
    try:
        socket = await http.websocket_connection(req)
    except http.WebSocketHandshakeError:
        return NON_WEBSOCKET_REQUEST
    s.connect(socket, socket)
    return None  # ignored after an upgrade


def handler(req: dict[str, Any]) -> Any:
    if req["uri"] == "/echo":
        return echo_handler(req)
    return {"status": 404, "body": "No such page."}


async def selftest(reactor: Any) -> None:
    server = http.start_server(handler, port=0, host="127.0.0.1")
    try:
        # Aleph: (s/put-all! conn (->> 10 range (map str))), then take 10 back.
        conn = await http.websocket_client(f"ws://127.0.0.1:{server.port}/echo")
        await s.drain_into(s.from_iterable(str(i) for i in range(10)), conn)
        assert [await conn.take() for _ in range(10)] == [str(i) for i in range(10)]

        await conn.put(b"\x00\x01binary")  # binary frames come back as bytes
        assert await conn.take() == b"\x00\x01binary"
        conn.close()  # sends close 1000

        resp = await http.get(f"http://127.0.0.1:{server.port}/echo", throw_exceptions=False, as_="text")
        assert (resp["status"], resp["body"]) == (400, "Expected a websocket request.")
    finally:
        await server.close()
    print("websocket_echo: ok")


def serve(reactor: Any, port: int) -> defer.Deferred[None]:
    server = http.start_server(handler, port=port)
    reactor.addSystemEventTrigger("before", "shutdown", server.close)
    print(f"websocket_echo: ws://localhost:{server.port}/echo (Ctrl-C to stop)")
    return defer.Deferred()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=10000)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args()
    if args.selftest:
        task.react(lambda reactor: defer.ensureDeferred(selftest(reactor)).addTimeout(30, reactor))
    else:
        task.react(serve, [args.port])


if __name__ == "__main__":
    main()
