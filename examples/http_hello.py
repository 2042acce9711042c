"""HTTP: hello world, a delayed hello and a streamed response (Aleph's ``http`` example).

Run the server:    python examples/http_hello.py [--port 10000]
then:              curl localhost:10000/hello
                   curl localhost:10000/delayed_hello        # answers after a second
                   curl -N 'localhost:10000/numbers?count=5'  # one number every 100 ms
Check it works:    python examples/http_hello.py --selftest   # serves, asks, exits 0
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import parse_qs

from twisted.internet import defer, task

from aleph_tx import byte_streams as bs
from aleph_tx import deferred as dd
from aleph_tx import http
from aleph_tx import stream as s


def hello_world_handler(req: dict[str, Any]) -> dict[str, Any]:
    """A response is a plain dict (Ring): status, headers, body."""
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello world!"}


def delayed_hello_world_handler(req: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
    """A handler may return a Deferred: the response is sent when it fires.

    Aleph: ``(d/timeout! (d/deferred) 1000 (hello-world-handler req))``: a Deferred
    that never fires by itself, timed out after one second with the response as
    its value. (``await task.deferLater(reactor, 1)`` in an ``async def`` handler
    reads more naturally in Python; both leave the reactor free meanwhile.)
    """
    return dd.timeout(defer.Deferred(), 1.0, timeout_value=hello_world_handler(req))


def streaming_numbers_handler(req: dict[str, Any]) -> dict[str, Any]:
    """A Stream body is sent chunk by chunk as messages arrive: here 1..count, every 100 ms.

    ``zip`` ends when the finite source ends, and closes the ticking source then.
    """
    count = int(parse_qs(req["query_string"] or "").get("count", ["0"])[0])
    ticks = s.periodically(0.1, lambda: True)
    numbers = s.zip(s.from_iterable(range(1, count + 1)), ticks)
    return {
        "status": 200,
        "headers": {"content-type": "text/plain"},
        "body": s.map(lambda pair: f"{pair[0]}\n", numbers),
    }


ROUTES = {
    "/hello": hello_world_handler,
    "/delayed_hello": delayed_hello_world_handler,
    "/numbers": streaming_numbers_handler,
}


def handler(req: dict[str, Any]) -> Any:
    """Route on the path (any router works: a handler is just a function of the request)."""
    route = ROUTES.get(req["uri"])
    if route is None:
        return {"status": 404, "body": "not found"}
    return route(req)


async def selftest(reactor: Any) -> None:
    server = http.start_server(handler, port=0, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    try:
        resp = await http.get(url + "/hello")
        assert (resp["status"], await bs.collect_str(resp["body"])) == (200, "hello world!")

        started = reactor.seconds()
        resp = await http.get(url + "/delayed_hello", as_="text")
        assert resp["body"] == "hello world!"
        assert reactor.seconds() - started >= 0.9

        # Aleph: (->> @(http/get ...) :body bs/to-line-seq (map #(Integer/parseInt %)))
        resp = await http.get(url + "/numbers", query_params={"count": "5"}, as_="stream")
        lines = await s.collect(bs.to_line_stream(resp["body"]))
        assert [int(line) for line in lines] == [1, 2, 3, 4, 5], lines

        resp = await http.get(url + "/nothing-here", throw_exceptions=False)
        assert resp["status"] == 404
    finally:
        await server.close()
    print("http_hello: ok")


def serve(reactor: Any, port: int) -> defer.Deferred[None]:
    server = http.start_server(handler, port=port)
    reactor.addSystemEventTrigger("before", "shutdown", server.close)
    print(f"http_hello: serving http://localhost:{server.port}/hello (Ctrl-C to stop)")
    return defer.Deferred()  # runs until Ctrl-C


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
