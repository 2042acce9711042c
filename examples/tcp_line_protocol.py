"""TCP: a message protocol over a byte stream (the second half of Aleph's ``tcp`` example).

Aleph frames EDN values with gloss; here each message is one line of JSON. Both
ends wrap the raw connection into a stream of *values* (``wrap_duplex_stream``),
and a server applies a function to each value it receives.

Run the server:    python examples/tcp_line_protocol.py [--port 10001]
then:              nc localhost 10001        # type 41, get 42; [1, 2] gives an error
Check it works:    python examples/tcp_line_protocol.py --selftest
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task, threads

from aleph_tx import byte_streams as bs
from aleph_tx import stream as s
from aleph_tx import tcp


def encode(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


def wrap_duplex_stream(conn: s.Stream) -> s.Stream:
    """A duplex stream of values over a stream of bytes.

    Aleph: ``(s/splice out (io/decode-stream s protocol))``: what is put goes
    through ``out``, encoded into the connection; what is taken comes from the
    connection's bytes, split into lines and decoded.
    """
    out = s.stream()
    s.connect(s.map(encode, out), conn)
    return s.splice(out, s.map(json.loads, bs.to_line_stream(conn)))


def start_server(handler: Callable[[s.Stream, dict[str, Any]], Any], port: int, host: str = "") -> tcp.Server:
    return tcp.start_server(lambda conn, info: handler(wrap_duplex_stream(conn), info), port=port, host=host)


async def client(host: str, port: int) -> s.Stream:
    return wrap_duplex_stream(await tcp.client(host, port, connect_timeout=5))


def fast_echo_handler(f: Callable[[Any], Any]) -> Callable[[s.Stream, dict[str, Any]], None]:
    """Answer ``f(value)`` for each value, in the reactor thread (``f`` must be quick)."""

    def handler(conn: s.Stream, info: dict[str, Any]) -> None:
        s.connect(s.map(f, conn), conn)

    return handler


def slow_echo_handler(f: Callable[[Any], Any]) -> Callable[[s.Stream, dict[str, Any]], Any]:
    """Answer ``f(value)`` computed in a thread (``f`` may block); an error is answered, then the connection closes.

    Aleph's ``d/loop`` with ``d/future`` becomes an ``async def`` with ``deferToThread``.
    """

    async def handler(conn: s.Stream, info: dict[str, Any]) -> None:
        try:
            async for msg in conn:
                result = await threads.deferToThread(f, msg)
                if not await conn.put(result):
                    break
        except Exception as e:
            await conn.put(f"ERROR: {e}")
            conn.close()

    return handler


def inc(x: int) -> int:
    return x + 1


async def selftest(reactor: Any) -> None:
    fast = start_server(fast_echo_handler(inc), 0, "127.0.0.1")
    slow = start_server(slow_echo_handler(inc), 0, "127.0.0.1")
    try:
        c = await client("127.0.0.1", fast.port)
        assert await c.put(1)
        assert await c.take() == 2
        for n in range(10):
            await c.put(n)
        assert [await c.take() for _ in range(10)] == list(range(1, 11))
        c.close()

        c = await client("127.0.0.1", slow.port)
        await c.put(41)
        assert await c.take() == 42
        await c.put([1, 2])  # inc([1, 2]) raises in the thread: answered, then closed
        answer = await c.take()
        assert answer.startswith("ERROR: "), answer
        assert await c.take() is None  # drained: the server hung up
    finally:
        await fast.close()
        await slow.close()
    print("tcp_line_protocol: ok")


def serve(reactor: Any, port: int) -> defer.Deferred[None]:
    server = start_server(slow_echo_handler(inc), port)
    reactor.addSystemEventTrigger("before", "shutdown", server.close)
    print(f"tcp_line_protocol: send JSON lines to port {server.port}, get f(value) back (Ctrl-C to stop)")
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
