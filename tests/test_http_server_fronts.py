"""One handler, every server front: the same request dict, response types, errors and
options on HTTP/1.1 (``start_server``), HTTP/2 (``start_server`` with ``"h2"``, over
TLS) and twisted.web (``to_resource`` in a ``make_site`` Site). The fronts share
one handler runner (``http/_server/exchange.py``): these tests keep them alike.
"""

from __future__ import annotations

import gzip
import pathlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web import resource

from aleph_tx import http, tls
from aleph_tx import stream as s
from aleph_tx.errors import WebSocketHandshakeError

FRONTS = ["http/1.1", "h2", "to_resource"]


async def _agen() -> AsyncIterator[str]:
    for part in ("a", "b", "c"):
        yield part


def handler(tmp: pathlib.Path) -> Any:
    path = tmp / "file.txt"
    path.write_bytes(b"from a file")

    async def handle(req: dict[str, Any]) -> Any:
        uri = req["uri"].removeprefix("/app")  # to_resource: the full path (mounted at /app)
        if uri == "/req":
            keys = sorted(k for k in req if k not in ("headers", "body"))
            return {
                "headers": {"x-keys": ",".join(keys)},
                "body": f"{req['request_method']} {req['protocol']}",
            }
        if uri == "/none":
            return None
        if uri == "/bytes":
            return {"status": 201, "headers": {"x-a": ["1", "2"]}, "body": b"bytes"}
        if uri == "/path":
            return {"body": path}
        if uri == "/iter":
            return {"body": ["x", b"y", "z"]}
        if uri == "/aiter":
            return {"body": _agen()}
        if uri == "/stream":
            return {"body": s.from_iterable(["s1", "s2"])}
        if uri == "/deferred":
            return defer.succeed({"body": defer.succeed("later")})
        if uri == "/raise":
            raise RuntimeError("boom")
        if uri == "/handshake":
            raise WebSocketHandshakeError("not an upgrade")
        if uri == "/echo":
            return {"body": req["body"]}
        if uri == "/big":
            return {"body": "z" * 5000}
        return {"status": 404}

    return handle


class Front:
    """A server on one front, and how to ask it."""

    def __init__(self, front: str, handle: Any, **options: Any) -> None:
        self.front = front
        self.site_port: Any = None
        self.server: Any = None
        if front == "to_resource":
            root = resource.Resource()
            root.putChild(b"app", http.to_resource(handle, **options))
            site = http.make_site(root, max_request_body_size=options.get("max_request_body_size"))
            self.site_port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
            self.base = f"http://127.0.0.1:{self.site_port.getHost().port}/app"
        elif front == "h2":
            self.server = http.start_server(
                handle,
                port=0,
                host="127.0.0.1",
                ssl_context=tls.self_signed_context(),
                http_versions=("http/1.1", "h2"),
                **options,
            )
            self.base = f"https://127.0.0.1:{self.server.port}"
        else:
            self.server = http.start_server(handle, port=0, host="127.0.0.1", **options)
            self.base = f"http://127.0.0.1:{self.server.port}"
        self.pool = http.connection_pool()

    def get(self, uri: str, method: str = "GET", **options: Any) -> defer.Deferred[dict[str, Any]]:
        return http.request(
            method,
            self.base + uri,
            pool=self.pool,
            insecure=self.front == "h2",
            http_versions=("h2", "http/1.1") if self.front == "h2" else ("http/1.1",),
            throw_exceptions=False,
            **options,
        )

    async def close(self) -> None:
        await self.pool.close()
        if self.server is not None:
            await self.server.close()
        if self.site_port is not None:
            await self.site_port.stopListening()


@pytest.fixture(params=FRONTS)
def front_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(front_name: str, tmp_path: pathlib.Path) -> Iterator[Any]:
    made: list[Front] = []

    def make(**options: Any) -> Front:
        front = Front(front_name, handler(tmp_path), **options)
        made.append(front)
        return front

    yield make
    for front in made:
        pytest_twisted.blockon(defer.ensureDeferred(front.close()))


def _expected_protocol(front: str) -> str:
    return "HTTP/2" if front == "h2" else "HTTP/1.1"


@pytest_twisted.ensureDeferred
async def test_the_request_dict(serve: Any, front_name: str) -> None:
    f = serve()
    resp = await f.get("/req")
    assert resp["status"] == 200
    assert resp["body"] == f"get {_expected_protocol(front_name)}".encode()
    assert resp["headers"]["x-keys"] == ",".join(
        sorted(
            [
                "keep_alive",
                "protocol",
                "query_string",
                "remote_addr",
                "request_method",
                "scheme",
                "server_name",
                "server_port",
                "uri",
            ]
        )
    )


@pytest.mark.parametrize(
    ("uri", "status", "body"),
    [
        ("/none", 204, b""),
        ("/bytes", 201, b"bytes"),
        ("/path", 200, b"from a file"),
        ("/iter", 200, b"xyz"),
        ("/aiter", 200, b"abc"),
        ("/stream", 200, b"s1s2"),
        ("/deferred", 200, b"later"),
        ("/nope", 404, b""),
    ],
)
@pytest_twisted.ensureDeferred
async def test_response_types(serve: Any, uri: str, status: int, body: bytes) -> None:
    resp = await serve().get(uri)
    assert (resp["status"], resp["body"]) == (status, body)


@pytest_twisted.ensureDeferred
async def test_repeated_headers(serve: Any) -> None:
    resp = await serve().get("/bytes")
    assert resp["headers"]["x-a"] == "1, 2"


@pytest_twisted.ensureDeferred
async def test_head_has_no_body(serve: Any) -> None:
    resp = await serve().get("/bytes", method="HEAD")
    assert (resp["status"], resp["body"]) == (201, b"")


@pytest_twisted.ensureDeferred
async def test_a_failing_handler_is_a_500_without_internals(serve: Any) -> None:
    resp = await serve().get("/raise")
    assert resp["status"] == 500 and b"boom" not in resp["body"]


@pytest_twisted.ensureDeferred
async def test_error_handler(serve: Any) -> None:
    seen: list[Any] = []

    def on_error(req: dict[str, Any], failure: Any) -> dict[str, Any]:
        seen.append(failure.value)
        return {"status": 503, "body": "sorry"}

    resp = await serve(error_handler=on_error).get("/raise")
    assert (resp["status"], resp["body"]) == (503, b"sorry")
    assert isinstance(seen[0], RuntimeError)


@pytest_twisted.ensureDeferred
async def test_an_escaped_handshake_error_is_a_400(serve: Any) -> None:
    resp = await serve().get("/handshake")
    assert resp["status"] == 400


@pytest_twisted.ensureDeferred
async def test_compression(serve: Any) -> None:
    f = serve(compression=True)
    resp = await f.get("/big", headers={"accept-encoding": "gzip"}, decompress_body=False)
    assert resp["headers"]["content-encoding"] == "gzip"
    assert gzip.decompress(resp["body"]) == b"z" * 5000
    plain = await f.get("/big", headers={"accept-encoding": "identity"}, decompress_body=False)
    assert "content-encoding" not in plain["headers"] and plain["body"] == b"z" * 5000


@pytest_twisted.ensureDeferred
async def test_executor_thread_runs_the_handler_off_the_reactor(front_name: str) -> None:
    threads: list[str] = []

    def blocking(req: dict[str, Any]) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return {"body": "ok"}

    f = Front(front_name, blocking, executor="thread")
    try:
        resp = await f.get("/")
        assert resp["body"] == b"ok"
        assert threads and threads[0] != threading.main_thread().name
    finally:
        await f.close()


@pytest_twisted.ensureDeferred
async def test_request_body_streams_back(serve: Any) -> None:
    data = bytes(range(256)) * 1000
    resp = await serve().get("/echo", method="POST", body=data)
    assert resp["body"] == data


@pytest_twisted.ensureDeferred
async def test_max_request_body_size_is_a_413(serve: Any) -> None:
    resp = await serve(max_request_body_size=1000).get("/echo", method="POST", body=b"x" * 5000)
    assert resp["status"] == 413
