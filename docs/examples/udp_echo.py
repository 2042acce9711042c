"""UDP: an echo socket and a client socket exchanging datagram dicts.

Run it with ``python docs/examples/udp_echo.py``.
"""

from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from aleph_tx import stream as s
from aleph_tx import udp


async def main(reactor: Any) -> None:
    server = await udp.socket(host="127.0.0.1")  # no port: an ephemeral one
    server_port = server.description()["port"]
    s.connect(server, server)  # each datagram goes back to its sender

    client = await udp.socket(host="127.0.0.1")
    await client.put({"host": "127.0.0.1", "port": server_port, "message": "ping"})
    reply = await client.take()
    assert reply == {"host": "127.0.0.1", "port": server_port, "message": b"ping"}, reply

    client.close()
    server.close()
    print("udp_echo: ok")


task.react(lambda reactor: ensureDeferred(main(reactor)).addTimeout(20, reactor))
