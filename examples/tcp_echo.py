"""TCP: an echo server and a client (the first half of Aleph's ``tcp`` example).

Run the server:    python examples/tcp_echo.py [--port 10001]
then:              nc localhost 10001        # type lines; they come back
Check it works:    python examples/tcp_echo.py --selftest
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer, task

from aleph_tx import byte_streams as bs
from aleph_tx import stream as s
from aleph_tx import tcp


def echo_handler(conn: s.Stream, info: dict[str, Any]) -> None:
    """Per connection: a duplex stream of bytes, and who is on the other end.

    Aleph: ``(s/connect s s)``: everything taken from the connection is put back
    into it, at the pace the client reads (a client that stops reading stops the
    server reading from it too).
    """
    s.connect(conn, conn)


async def selftest(reactor: Any) -> None:
    server = tcp.start_server(echo_handler, port=0, host="127.0.0.1")
    try:
        conn = await tcp.client("127.0.0.1", server.port, connect_timeout=5)
        assert await conn.put("hello")  # anything byte_streams can turn into bytes
        assert await conn.take() == b"hello"

        # A megabyte in, the same megabyte out (in however many chunks TCP makes).
        data = bytes(range(256)) * 4096
        # drain_into puts every chunk (waiting while the socket is full) and leaves
        # the connection open; meanwhile we read the echo back.
        sending = s.drain_into(bs.to_stream(data), conn)
        got = b""
        while len(got) < len(data):
            got += await conn.take()
        await sending
        assert got == data
        conn.close()
    finally:
        await server.close()
    print("tcp_echo: ok")


def serve(reactor: Any, port: int) -> defer.Deferred[None]:
    server = tcp.start_server(echo_handler, port=port)
    reactor.addSystemEventTrigger("before", "shutdown", server.close)
    print(f"tcp_echo: echoing on port {server.port} (Ctrl-C to stop)")
    return defer.Deferred()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=10001)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args()
    if args.selftest:
        task.react(lambda reactor: defer.ensureDeferred(selftest(reactor)).addTimeout(30, reactor))
    else:
        task.react(serve, [args.port])


if __name__ == "__main__":
    main()
