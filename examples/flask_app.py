"""A Flask (WSGI) application served by aleph_tx.

Serve it:          twist aleph-http --wsgi examples.flask_app:app --listen tcp:8080
                   (from the repository root, or with it on PYTHONPATH), then
                   curl localhost:8080/   or   curl -d '{"a": 1}' -H 'content-type: application/json' localhost:8080/echo
Or from Python:    python examples/flask_app.py [--port 8080]
Check it works:    python examples/flask_app.py --selftest

Flask's code runs in the reactor's thread pool (a WSGI app blocks); the reactor
thread keeps serving other connections meanwhile. Any WSGI framework works the
same way (``http.wrap_wsgi(django_wsgi_application)``).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request, stream_with_context
from twisted.internet import defer, task

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "hello from Flask on aleph_tx!"


@app.post("/echo")
def echo() -> Any:
    """JSON in, JSON out: the request body is read from ``wsgi.input`` (a stream underneath)."""
    return jsonify(received=request.get_json(), thread=threading.current_thread().name)


@app.get("/count/<int:n>")
def count(n: int) -> Response:
    """A generator response goes out chunk by chunk (chunked transfer encoding)."""

    def lines() -> Iterator[str]:
        for i in range(1, n + 1):
            yield f"{i}\n"

    return Response(stream_with_context(lines()), mimetype="text/plain")


async def selftest(reactor: Any) -> None:
    from aleph_tx import http

    server = http.start_server(http.wrap_wsgi(app), port=0, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    try:
        resp = await http.get(url + "/", as_="text")
        assert resp["body"] == "hello from Flask on aleph_tx!", resp

        resp = await http.post(url + "/echo", json={"a": [1, 2]}, as_="json")
        assert resp["body"]["received"] == {"a": [1, 2]}
        assert resp["body"]["thread"] != threading.current_thread().name  # not the reactor thread

        resp = await http.get(url + "/count/5", as_="text")
        assert resp["body"] == "1\n2\n3\n4\n5\n"

        resp = await http.get(url + "/missing", throw_exceptions=False)
        assert resp["status"] == 404
    finally:
        await server.close()
    print("flask_app: ok")


def serve(reactor: Any, port: int) -> defer.Deferred[None]:
    from aleph_tx import http

    server = http.start_server(http.wrap_wsgi(app), port=port)
    reactor.addSystemEventTrigger("before", "shutdown", server.close)
    print(f"flask_app: serving http://localhost:{server.port}/ (Ctrl-C to stop)")
    return defer.Deferred()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args()
    if args.selftest:
        task.react(lambda reactor: defer.ensureDeferred(selftest(reactor)).addTimeout(30, reactor))
    else:
        task.react(serve, [args.port])


if __name__ == "__main__":
    main()
