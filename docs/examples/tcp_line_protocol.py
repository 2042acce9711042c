"""TCP: a line-based server with an ``async def`` handler reading with ``async for``.

Run it with ``python docs/examples/tcp_line_protocol.py``.
"""

from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from aleph_tx import tcp


async def shout(conn: Any, info: dict[str, Any]) -> None:
    """Answer each line upper-cased, until the client sends "bye"."""
    pending = b""
    async for chunk in conn:  # iterates until the client closes
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line == b"bye":
                await conn.put(b"BYE\n")
                conn.close()
                return
            await conn.put(line.upper() + b"\n")


async def main(reactor: Any) -> None:
    server = tcp.start_server(shout, host="127.0.0.1")
    conn = await tcp.client("127.0.0.1", server.port, connect_timeout=5)
    await conn.put(b"hello\nworld\nbye\n")
    answer = b""
    async for chunk in conn:  # until the server closes the connection
        answer += chunk
    assert answer == b"HELLO\nWORLD\nBYE\n", answer
    await server.close()
    print("tcp_line_protocol: ok")


task.react(lambda reactor: ensureDeferred(main(reactor)).addTimeout(20, reactor))
