"""Cases ported from Aleph's client tests (test/aleph/http_test.clj, http/client_test.clj).

Where aleph_tx's contract differs from Aleph's behaviour the test says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from test_http_client_servers import RawServer, itest, sleep
from twisted.internet import defer, task

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import (
    ClientResponseError,
    ConnectionLostError,
    ConnectionTimeout,
    RedirectError,
)
from aleph_tx.http import ConnectionPool
from aleph_tx.http._client.options import host_header, target_and_path


def _handler(req: dict[str, Any]) -> Any:
    from twisted.internet import reactor

    uri = req["uri"]
    q = req["query_string"] or ""
    if uri == "/redirect":
        count = int(q.split("=")[1])
        if count == 0:
            return {"status": 200, "body": "ok"}
        return {"status": 302, "headers": {"location": f"/redirect?count={count - 1}"}}
    if uri == "/to-error":
        return {"status": 301, "headers": {"location": "/error"}}
    if uri == "/error":
        return {"status": 401, "body": "who are you"}
    if uri == "/429":
        return {"status": 429, "body": "nope"}
    if uri == "/echo":
        return {"status": 200, "body": req["body"]}
    if uri == "/slow":
        return task.deferLater(reactor, 2, lambda: {"status": 200, "body": "waited"})
    if uri == "/query":
        return {"status": 200, "body": q}
    return {"status": 200, "body": "hello"}


@pytest.fixture
def server() -> Iterator[Any]:
    from aleph_tx.http import start_server

    srv = start_server(_handler, port=0, host="127.0.0.1", shutdown_timeout=0.2)
    srv.url = f"http://127.0.0.1:{srv.port}"
    yield srv
    pytest_twisted.blockon(srv.close())


def test_domain_extracting_idn() -> None:
    # client_test.clj test-domain-extracting
    assert target_and_path("https://domainname.com:80")[:3] == ("https", "domainname.com", 80)
    scheme, host, port, path, _ = target_and_path("https://名がドメイン.com:80")
    assert (scheme, port, path) == ("https", 80, b"/")
    assert host_header(scheme, host, port) == "xn--v8jxj3d1dzdz08w.com:80"
    assert host_header("http", "example.com", 80) == "example.com"
    assert host_header("http", "::1", 8080) == "[::1]:8080"


def test_invalid_body() -> None:
    # test-invalid-body: Aleph fails the deferred; a wrong type raises at once here
    with pytest.raises(TypeError):
        http.put("http://127.0.0.1:1/", body=123)


@itest()
async def test_invalid_stream_body_chunk(server: Any, pool: ConnectionPool) -> None:
    # test-client-errors-handling "writing invalid request body"
    with pytest.raises(TypeError):
        await http.post(server.url + "/echo", body=s.from_iterable([1]), pool=pool)


@itest(timeout=30)
async def test_bulk_requests(server: Any, pool: ConnectionPool) -> None:
    rs = await defer.gatherResults([http.get(server.url + "/", pool=pool) for _ in range(100)])
    assert {r["status"] for r in rs} == {200}
    for _ in range(10):
        rs = await defer.gatherResults([http.get(server.url + "/", pool=pool) for _ in range(10)])
        assert {r["status"] for r in rs} == {200}
    assert pool.description()["connections_opened"] <= 8


@itest()
async def test_redirect(server: Any, pool: ConnectionPool) -> None:
    r = await http.get(server.url + "/redirect?count=10", pool=pool, as_="text")
    assert r["body"] == "ok"
    # Aleph returns the 21st redirect response; the contract here is RedirectError
    with pytest.raises(RedirectError):
        await http.get(server.url + "/redirect?count=25", pool=pool)
    r = await http.get(server.url + "/redirect?count=25", max_redirects=30, pool=pool, as_="text")
    assert r["body"] == "ok"
    with pytest.raises(ClientResponseError) as info:
        await http.get(server.url + "/to-error", pool=pool, as_="text")
    assert info.value.response["status"] == 401


@itest()
async def test_illegal_character_in_url(server: Any, pool: ConnectionPool) -> None:
    r = await http.get(server.url + "/query?param=illegal character", pool=pool, as_="text")
    assert r["body"] == "param=illegal%20character"


@itest()
async def test_empty_request_body(server: Any, pool: ConnectionPool) -> None:
    r = await http.put(server.url + "/echo", body="", pool=pool)
    assert r["body"] == b""


@itest()
async def test_throw_error_responses_as_exceptions(server: Any, pool: ConnectionPool) -> None:
    with pytest.raises(ClientResponseError) as info:
        await http.get(server.url + "/429", pool=pool, as_="text")
    assert (info.value.response["status"], info.value.response["body"]) == (429, "nope")


_TOO_LONG = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: Keep-Alive\r\n\r\nhello body is too long to be true"
)


@itest()
async def test_response_body_longer_than_content_length(pool: ConnectionPool) -> None:
    raw = RawServer(lambda n: (_TOO_LONG, False))
    try:
        for _ in range(2):
            r = await http.get(raw.url + "/", pool=pool)
            assert r["body"] == b"h"
        # a connection with bytes past the response end is never reused
        assert len(raw.connections) == 2
    finally:
        await raw.close()


@itest()
async def test_shutdown_timeout_cuts_in_flight_request(server: Any, pool: ConnectionPool) -> None:
    # http_timeout_test.clj test-shutdown-timeout-4: the client sees the cut
    d = http.get(server.url + "/slow", pool=pool)
    await sleep(0.05)
    closing = server.close()
    with pytest.raises(ConnectionLostError):
        await d
    await closing


@itest()
async def test_in_flight_request_cancellation(pool: ConnectionPool) -> None:
    raw = RawServer(lambda n: None)
    try:
        d = http.get(raw.url + "/", pool=pool)
        while not raw.requests:
            await sleep(0.01)
        d.cancel()
        with pytest.raises(defer.CancelledError):
            await d
        while raw.lost == 0:
            await sleep(0.01)
    finally:
        await raw.close()


@itest()
async def test_proxy_connection_timeout_and_connect_error(pool: ConnectionPool) -> None:
    # test-client-proxy-connection-timeout: the proxy accepts and never answers CONNECT
    silent = RawServer(lambda n: None)
    closer = RawServer(lambda n: (b"", True))
    try:
        with pytest.raises(ConnectionTimeout):
            await http.get(
                "https://localhost:1/",
                proxy={"host": "127.0.0.1", "port": silent.port.getHost().port},
                connection_timeout=0.2,
                insecure=True,
                pool=pool,
            )
        # test-client-proxy-connect-error: the proxy closes at once
        with pytest.raises(ConnectionLostError):
            await http.get(
                "https://localhost:1/",
                proxy={"host": "127.0.0.1", "port": closer.port.getHost().port},
                insecure=True,
                pool=pool,
            )
    finally:
        await silent.close()
        await closer.close()
