"""Quickstart: an HTTP server and a client talking to it, on the reactor.

Run it with ``python docs/examples/quickstart_http.py``: it starts a server on a free
port of 127.0.0.1, fetches ``/`` with aleph_tx's client, checks the answer, closes the
server and exits.
"""

from typing import Any

from twisted.internet import task

from aleph_tx import deferred as dd
from aleph_tx import http


def handler(req: dict[str, Any]) -> dict[str, Any]:
    """A Ring handler: a request dict in, a response dict out."""
    name = req["query_string"] or "world"
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": f"hello, {name}!"}


async def main(reactor: Any) -> None:
    server = http.start_server(handler, port=0, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}/"
        resp = await dd.timeout(http.get(url + "?aleph", as_="text"), 10)
        assert resp["status"] == 200
        assert resp["headers"]["content-type"] == "text/plain"
        assert resp["body"] == "hello, aleph!"
        resp = await dd.timeout(http.get(url, as_="text"), 10)
        assert resp["body"] == "hello, world!"
    finally:
        await server.close()
    print("quickstart_http: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(main(reactor)))
