"""Aleph's own HTTP server tests (test/aleph/http_test.clj upstream), ported where they apply.

Each test names its upstream ``deftest``. They run through ``request`` (the real
HTTP/1.1 protocol in memory) or on loopback sockets.
"""

from __future__ import annotations

import gzip
import io
import pathlib
import random
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock

from aleph_tx import byte_streams as bs
from aleph_tx import stream as s
from aleph_tx.http import start_server
from aleph_tx.testing import request

STRING_RESPONSE = "String!"
STREAM_RESPONSE = "Stream!"
FILE_TEXT = "this is a file"


def _basic(tmp: pathlib.Path) -> Any:
    path = tmp / "file.txt"
    path.write_text(FILE_TEXT)

    def handler(req: dict[str, Any]) -> Any:
        uri = req["uri"]
        if uri == "/string":
            return {"status": 200, "body": STRING_RESPONSE}
        if uri == "/stream":
            return {"status": 200, "body": io.BytesIO(STREAM_RESPONSE.encode())}
        if uri == "/manifold":
            return {"status": 200, "body": s.from_iterable(list(STREAM_RESPONSE))}
        if uri == "/file":
            return {"status": 200, "body": path}
        if uri == "/seq":
            return {"status": 200, "body": ["sequence: ", "1", " two ", "3.0"]}
        if uri == "/echo":
            return {"status": 200, "body": req["body"]}
        if uri == "/line_echo":
            return {"status": 200, "body": bs.to_line_stream(req["body"])}
        if uri == "/invalid":
            return {"status": -100, "body": "hello"}
        return {"status": 404}

    return handler


EXPECTED = [
    ("string", STRING_RESPONSE),
    ("stream", STREAM_RESPONSE),
    ("manifold", STREAM_RESPONSE),
    ("file", FILE_TEXT),
    ("seq", "sequence: 1 two 3.0"),
]


def _result(d: defer.Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the request did not complete"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def test_response_formats(tmp_path: pathlib.Path) -> None:
    """deftest test-response-formats"""
    handler = _basic(tmp_path)
    for _ in range(3):
        for path, expected in EXPECTED:
            assert _result(request(handler, "GET", "/" + path))["body"].decode() == expected


def test_compressed_response(tmp_path: pathlib.Path) -> None:
    """deftest test-compressed-response"""
    handler = _basic(tmp_path)
    for path, expected in EXPECTED:
        resp = _result(request(handler, "GET", "/" + path, {"accept-encoding": "gzip"}, compression=True))
        assert resp["headers"]["content-encoding"] == "gzip"
        assert gzip.decompress(resp["body"]).decode() == expected


def _characters(n: int) -> str:
    rng = random.Random(n)
    charset = [chr(c) for c in range(32, 127)] + ["\n"]
    return "".join(rng.choice(charset) for _ in range(n))


@pytest.mark.parametrize("length", [10**3, 10**4, 10**5, 10**6])
def test_echo(tmp_path: pathlib.Path, length: int) -> None:
    """deftest test-echo"""
    text = _characters(length)
    resp = _result(request(_basic(tmp_path), "PUT", "/echo", body=text))
    assert resp["body"].decode() == text


@pytest.mark.parametrize("length", [10**3, 10**4, 10**5])
def test_line_echo(tmp_path: pathlib.Path, length: int) -> None:
    """deftest test-line-echo"""
    text = _characters(length)
    resp = _result(request(_basic(tmp_path), "PUT", "/line_echo", body=text))
    assert resp["body"].decode() == text.replace("\n", "")


def test_overly_long_url(tmp_path: pathlib.Path) -> None:
    """deftest test-overly-long-url"""
    assert _result(request(_basic(tmp_path), "GET", "/" + "a" * 10**5))["status"] == 414


def test_overly_long_header(tmp_path: pathlib.Path) -> None:
    """deftest test-overly-long-header"""
    resp = _result(request(_basic(tmp_path), "GET", "/", {"x-long": "a" * 10**5}))
    assert resp["status"] == 431


def test_invalid_http_version_format(tmp_path: pathlib.Path) -> None:
    """deftest test-invalid-http-version-format"""
    from twisted.internet.testing import MemoryReactorClock, StringTransport

    from aleph_tx.http._ring.limits import make_options
    from aleph_tx.http._server.exchange import Runner
    from aleph_tx.http._server.h1 import HTTPFactory

    proto = HTTPFactory(Runner(_basic(tmp_path), make_options({}), MemoryReactorClock())).buildProtocol(None)
    t = StringTransport()
    proto.makeConnection(t)
    proto.dataReceived(b"GET / HTTP-1,1\r\n\r\n")
    assert t.value().startswith(b"HTTP/1.1 400")


def test_invalid_response(tmp_path: pathlib.Path) -> None:
    """deftest test-invalid-response (and its custom error handler)"""
    resp = _result(request(_basic(tmp_path), "GET", "/invalid"))
    assert resp["status"] == 500 and b"Internal Server Error" in resp["body"]
    resp = _result(
        request(
            _basic(tmp_path),
            "GET",
            "/invalid",
            error_handler=lambda req, failure: {"status": 500, "body": "Internal error"},
        )
    )
    assert resp["status"] == 500 and resp["body"] == b"Internal error"


@pytest.mark.parametrize(("limit", "status"), [(0, 413), (1, 413), (6, 200)])
def test_max_request_body_size(limit: int, status: int) -> None:
    """deftest test-max-request-body-size"""
    resp = _result(
        request(
            lambda req: {"body": "OK", "status": 200}, "PUT", "/", body="hello", max_request_body_size=limit
        )
    )
    assert resp["status"] == status


def _slow_stream(clock: Clock, every: float) -> s.Stream:
    """Six messages "0".."5", one every ``every`` seconds (upstream: 50 ms)."""
    body = s.stream(10)
    count = [0]

    def tick() -> None:
        body.put(str(count[0]))
        count[0] += 1
        if count[0] < 6:
            clock.callLater(every, tick)
        else:
            body.close()

    clock.callLater(every, tick)
    return body


def test_idle_timeout_server_slow_but_in_time() -> None:
    """deftest test-idle-timeout: "Server is slow to write, but has time" """
    clock = Clock()
    d = request(lambda req: {"body": _slow_stream(clock, 0.05)}, "GET", "/", idle_timeout=0.2, clock=clock)
    for _ in range(10):
        clock.advance(0.05)
    assert _result(d)["body"] == b"012345"


def test_idle_timeout_server_too_slow() -> None:
    """deftest test-idle-timeout: "Server is too slow to write" """
    clock = Clock()
    d = request(lambda req: {"body": _slow_stream(clock, 0.05)}, "GET", "/", idle_timeout=0.03, clock=clock)
    for _ in range(10):
        clock.advance(0.01)
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, "the connection should have been closed mid-response"


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.done.callback(self.data)


@pytest_twisted.inlineCallbacks
def test_bulk_requests(tmp_path: pathlib.Path) -> Generator[Any, Any, None]:
    """deftest test-bulk-requests: 100 concurrent requests, then 10 rounds of 10"""
    server = start_server(_basic(tmp_path), port=0, host="127.0.0.1")

    @defer.inlineCallbacks
    def get() -> Generator[Any, Any, bytes]:
        p = _Collect()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), p)
        p.transport.write(b"GET /string HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = yield p.done.addTimeout(10, reactor)
        return data

    try:
        results = yield defer.gatherResults([get() for _ in range(100)])
        assert all(r.endswith(STRING_RESPONSE.encode()) for r in results)
        for _ in range(10):
            results = yield defer.gatherResults([get() for _ in range(10)])
            assert all(r.endswith(STRING_RESPONSE.encode()) for r in results)
    finally:
        yield server.close().addTimeout(10, reactor)
