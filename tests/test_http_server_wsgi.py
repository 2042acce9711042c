"""wrap_wsgi with a real Flask app, over loopback sockets."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from typing import Any

import pytest
import pytest_twisted
from test_http_server_web import fetch

from aleph_tx.http import start_server, wrap_wsgi
from aleph_tx.http._server.wsgi import build_environ

flask = pytest.importorskip("flask")


def make_app() -> Any:
    app = flask.Flask("aleph_tx_test")

    @app.route("/")
    def index() -> str:
        return "hello from flask"

    @app.route("/echo", methods=["POST"])
    def echo() -> Any:
        data = flask.request.get_data()
        return flask.Response(
            data, headers={"x-len": str(len(data)), "x-thread": threading.current_thread().name}
        )

    @app.route("/lines", methods=["POST"])
    def lines() -> Any:
        n = sum(1 for _ in flask.request.stream)
        return {"lines": n, "method": flask.request.method, "q": flask.request.args.get("q")}

    @app.route("/stream")
    def stream() -> Any:
        def gen() -> Iterator[str]:
            for i in range(50):
                yield f"line {i}\n"

        return flask.Response(gen(), mimetype="text/plain")

    @app.route("/cookies")
    def cookies() -> Any:
        resp = flask.make_response("c")
        resp.set_cookie("a", "1")
        resp.set_cookie("b", "2")
        return resp

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("secret")

    @app.route("/fail-mid")
    def fail_mid() -> Any:
        def gen() -> Iterator[bytes]:
            yield b"partial"
            raise RuntimeError("mid-body")

        return flask.Response(gen())

    return app


@pytest.fixture
def server() -> Iterator[Any]:
    srv = start_server(wrap_wsgi(make_app()), port=0, host="127.0.0.1")
    yield srv
    srv.close()


@pytest_twisted.inlineCallbacks
def test_flask_hello(server: Any) -> Generator[Any, Any, None]:
    out = yield fetch(server.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"content-length: 16" in out.lower()
    assert out.endswith(b"hello from flask")


@pytest_twisted.inlineCallbacks
def test_flask_upload_through_wsgi_input(server: Any) -> Generator[Any, Any, None]:
    payload = b"z" * 300_000
    out = yield fetch(
        server.port,
        b"POST /echo HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload,
    )
    assert b"x-len: 300000" in out and out.endswith(payload)
    assert b"x-thread: MainThread" not in out


@pytest_twisted.inlineCallbacks
def test_flask_chunked_upload_stream(server: Any) -> Generator[Any, Any, None]:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [b"a\nb\n", b"c\n"]) + b"0\r\n\r\n"
    out = yield fetch(
        server.port,
        b"POST /lines?q=v HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
    )
    assert b'"lines":3' in out.replace(b" ", b"") and b'"q":"v"' in out.replace(b" ", b"")


@pytest_twisted.inlineCallbacks
def test_flask_streamed_response(server: Any) -> Generator[Any, Any, None]:
    out = yield fetch(server.port, b"GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert b"line 0\n" in body and b"line 49\n" in body


@pytest_twisted.inlineCallbacks
def test_flask_repeated_headers(server: Any) -> Generator[Any, Any, None]:
    out = yield fetch(server.port, b"GET /cookies HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.count(b"Set-Cookie: ") == 2


@pytest_twisted.inlineCallbacks
def test_flask_error_500(server: Any) -> Generator[Any, Any, None]:
    out = yield fetch(server.port, b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500 ") and b"secret" not in out


@pytest_twisted.inlineCallbacks
def test_flask_failure_mid_body_cuts(server: Any) -> Generator[Any, Any, None]:
    out = yield fetch(server.port, b"GET /fail-mid HTTP/1.1\r\n\r\n")
    assert b"partial" in out and not out.endswith(b"0\r\n\r\n")


def test_environ() -> None:
    req = {
        "request_method": "post",
        "uri": "/a%20b",
        "query_string": "x=1",
        "headers": {"content-type": "text/plain", "content-length": "3", "x-y": "z", "host": "h"},
        "scheme": "http",
        "server_name": "h",
        "server_port": 80,
        "remote_addr": "1.2.3.4",
        "protocol": "HTTP/1.1",
        "keep_alive": True,
        "body": None,
    }
    env = build_environ(req, None)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/a b"
    assert env["QUERY_STRING"] == "x=1"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
    assert env["HTTP_X_Y"] == "z" and env["HTTP_HOST"] == "h"
    assert env["SERVER_PORT"] == "80" and env["wsgi.url_scheme"] == "http"
    assert "HTTP_CONTENT_TYPE" not in env


def test_wrap_wsgi_refuses_non_callable() -> None:
    with pytest.raises(TypeError):
        wrap_wsgi(42)  # type: ignore[arg-type]
