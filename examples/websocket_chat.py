"""WebSockets: chat rooms (the second half of Aleph's ``websocket`` example).

A client sends the room's name, then its own name, then messages; everyone in the
room receives ``"name: message"``. Aleph uses Manifold's event bus; the few lines
of :class:`EventBus` below do the same with streams.

Run the server:    python examples/websocket_chat.py [--port 10000]
then, in two terminals:
                   python -m websockets ws://localhost:10000/chat
                   (type a room, a name, then messages)
Check it works:    python examples/websocket_chat.py --selftest
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from twisted.internet import defer, task

from aleph_tx import deferred as dd
from aleph_tx import http
from aleph_tx import stream as s

NON_WEBSOCKET_REQUEST = {
    "status": 400,
    "headers": {"content-type": "text/plain"},
    "body": "Expected a websocket request.",
}


class EventBus:
    """Manifold's ``event-bus``: streams subscribed to topics; a publish reaches each one."""

    def __init__(self, buffer_size: int = 100) -> None:
        self.buffer_size = buffer_size
        self.topics: dict[str, set[s.Stream]] = defaultdict(set)

    def subscribe(self, topic: str) -> s.Stream:
        """A new stream of the topic's messages; closing it unsubscribes."""
        st = s.stream(buffer_size=self.buffer_size)
        self.topics[topic].add(st)
        st.on_closed(lambda: self.topics[topic].discard(st))
        return st

    def publish(self, topic: str, msg: Any) -> defer.Deferred[list[Any]]:
        """Put ``msg`` into every subscriber; fires when all have accepted it (backpressure)."""
        return dd.zip(*(st.put(msg) for st in list(self.topics[topic])))


chatrooms = EventBus()


async def chat_handler(req: dict[str, Any]) -> dict[str, Any] | None:
    try:
        conn = await http.websocket_connection(req)
    except http.WebSocketHandshakeError:
        return NON_WEBSOCKET_REQUEST
    room = await conn.take()
    name = await conn.take()
    if room is None or name is None:  # gone before signing in
        return None
    # Everything published to the room goes to this client ...
    s.connect(chatrooms.subscribe(room), conn)
    # ... and everything this client says is published to the room, with its name.
    s.consume(
        lambda msg: chatrooms.publish(room, msg), s.buffer(100, s.map(lambda msg: f"{name}: {msg}", conn))
    )
    return None


def handler(req: dict[str, Any]) -> Any:
    if req["uri"] == "/chat":
        return chat_handler(req)
    return {"status": 404, "body": "No such page."}


async def selftest(reactor: Any) -> None:
    server = http.start_server(handler, port=0, host="127.0.0.1")
    url = f"ws://127.0.0.1:{server.port}/chat"
    try:
        conn1 = await http.websocket_client(url)
        conn2 = await http.websocket_client(url)
        # sign our two users in
        await s.drain_into(s.from_iterable(["shoes and ships", "Alice"]), conn1)
        await s.drain_into(s.from_iterable(["shoes and ships", "Bob"]), conn2)
        for _ in range(100):  # both have joined once the room has two subscribers
            if len(chatrooms.topics["shoes and ships"]) == 2:
                break
            await task.deferLater(reactor, 0.02, lambda: None)

        await conn1.put("hello")
        assert await conn1.take() == "Alice: hello"
        assert await conn2.take() == "Alice: hello"
        await conn2.put("hi!")
        assert await conn1.take() == "Bob: hi!"
        assert await conn2.take() == "Bob: hi!"

        # A third user in another room hears nothing of this one.
        conn3 = await http.websocket_client(url)
        await s.drain_into(s.from_iterable(["cabbages and kings", "Carol"]), conn3)
        await conn1.put("anyone?")
        assert await conn2.take() == "Alice: anyone?"
        assert await conn3.try_take(0.3, timeout_value="nothing") == "nothing"

        for conn in (conn1, conn2, conn3):
            conn.close()
    finally:
        await server.close()
    print("websocket_chat: ok")


def serve(reactor: Any, port: int) -> defer.Deferred[None]:
    server = http.start_server(handler, port=port)
    reactor.addSystemEventTrigger("before", "shutdown", server.close)
    print(f"websocket_chat: ws://localhost:{server.port}/chat (Ctrl-C to stop)")
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
