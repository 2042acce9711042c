"""TCP: an echo server (Aleph's ``echo-handler``) and a client talking to it.

Run it with ``python docs/examples/tcp_echo.py``.
"""

from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from aleph_tx import stream as s
from aleph_tx import tcp


def echo_handler(conn: Any, info: dict[str, Any]) -> None:
    # conn is a duplex stream: what the client sends is taken from it,
    # what is put into it goes back. connect pumps one into the other.
    s.connect(conn, conn)


async def main(reactor: Any) -> None:
    server = tcp.start_server(echo_handler, port=0, host="127.0.0.1")  # port 0: any free port
    conn = await tcp.client("127.0.0.1", server.port)

    await conn.put("hello, ")  # str is sent as UTF-8; bytes-likes as they are
    await conn.put(b"echo")
    received = b""
    while len(received) < len(b"hello, echo"):
        received += await conn.take()  # TCP may split or merge chunks
    assert received == b"hello, echo", received

    conn.close()  # flushes what was put, then closes the connection
    assert await conn.take("closed") == "closed"  # drained: nothing more to take
    await server.close()  # stop accepting, let connections finish
    print("tcp_echo: ok")


task.react(lambda reactor: ensureDeferred(main(reactor)).addTimeout(20, reactor))
