"""WebSockets: a chat room. Every message a member sends goes to every member.

Run it with ``python docs/examples/ws_chat.py``.
"""

from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from aleph_tx import http
from aleph_tx import stream as s

# The room is one stream: each member's connection is connected to it as a sink
# (a source connected to several sinks gives each message to all of them), and
# each member's messages, prefixed with their name, are connected into it.
room = s.stream()


async def chat_handler(req: dict[str, Any]) -> None:
    name = req["query_string"] or "anonymous"  # /chat?alice
    conn = await http.websocket_connection(req)
    # room -> member; when the member leaves, only its sink is disconnected
    s.connect(room, conn, downstream=False)
    # member -> room, prefixed; the member leaving does not close the room
    s.connect(s.map(lambda msg: f"{name}: {msg}", conn), room, downstream=False)


async def main(reactor: Any) -> None:
    server = http.start_server(chat_handler, port=0, host="127.0.0.1")
    url = f"ws://127.0.0.1:{server.port}/chat"
    alice = await http.websocket_client(url + "?alice")
    bob = await http.websocket_client(url + "?bob")

    await alice.put("hi bob")
    assert await alice.take() == "alice: hi bob"
    assert await bob.take() == "alice: hi bob"

    await bob.put("hello alice")
    assert await alice.take() == "bob: hello alice"
    assert await bob.take() == "bob: hello alice"

    bob.close()  # bob leaves: the room goes on with alice
    assert await bob.take("gone") == "gone"
    await alice.put("still here?")
    assert await alice.take() == "alice: still here?"

    alice.close()
    await server.close()
    print("ws_chat: ok")


task.react(lambda reactor: ensureDeferred(main(reactor)).addTimeout(20, reactor))
