"""An HTTP server with plain, async and streaming handlers, queried with urllib.

Run it with ``python docs/examples/http_server_basics.py``: it starts a server on a
free port of 127.0.0.1, fetches a few paths from a thread with the standard
library's ``urllib``, checks the answers, closes the server and exits.
"""

import json
import urllib.request
from typing import Any

from twisted.internet import task, threads

from aleph_tx import deferred as dd
from aleph_tx import http
from aleph_tx import stream as s


def hello(req: dict[str, Any]) -> dict[str, Any]:
    """A plain function: a request dict in, a response dict out."""
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello!"}


async def echo(req: dict[str, Any]) -> dict[str, Any]:
    """``async def`` works too; the request body is a stream of bytes chunks."""
    chunks = await s.collect(req["body"]) if req["body"] is not None else []
    return {"status": 200, "body": b"".join(chunks)}


def numbers(req: dict[str, Any]) -> dict[str, Any]:
    """A body of unknown length is sent chunked, as it is produced."""
    return {"body": (f"{i}\n" for i in range(5))}


def route(req: dict[str, Any]) -> Any:
    handlers = {"/": hello, "/echo": echo, "/numbers": numbers}
    handler = handlers.get(req["uri"])
    if handler is None:
        return {"status": 404, "body": json.dumps({"uri": req["uri"]})}
    return handler(req)


def fetch(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """Blocking client code, run in a thread."""
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def main(reactor: Any) -> None:
    server = http.start_server(route, port=0, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, body = await dd.timeout(threads.deferToThread(fetch, base + "/"), 10)
        assert (status, body) == (200, b"hello!")
        status, body = await dd.timeout(threads.deferToThread(fetch, base + "/echo", b"ping"), 10)
        assert (status, body) == (200, b"ping")
        status, body = await dd.timeout(threads.deferToThread(fetch, base + "/numbers"), 10)
        assert body == b"0\n1\n2\n3\n4\n"
        status, body = await dd.timeout(threads.deferToThread(fetch, base + "/nope"), 10)
        assert status == 404 and json.loads(body) == {"uri": "/nope"}
    finally:
        await server.close()
    print("http_server_basics: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(main(reactor)))
