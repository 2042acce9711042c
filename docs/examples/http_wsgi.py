"""Hosting a WSGI application (here a tiny hand-written one; Flask and Django work alike).

The app runs in the reactor's thread pool; ``wsgi.input`` streams the request body.
"""

import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import task, threads

from aleph_tx import deferred as dd
from aleph_tx import http


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(size) if size else b""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"method=", environ["REQUEST_METHOD"].encode(), b" got=", data]


def fetch(url: str, data: bytes | None) -> bytes:
    with urllib.request.urlopen(url, data=data, timeout=10) as resp:
        return resp.read()


async def main(reactor: Any) -> None:
    server = http.start_server(http.wrap_wsgi(app), port=0, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}/"
        body = await dd.timeout(threads.deferToThread(fetch, url, b"abc"), 10)
        assert body == b"method=POST got=abc"
    finally:
        await server.close()
    print("http_wsgi: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(main(reactor)))
