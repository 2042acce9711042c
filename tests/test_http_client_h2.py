"""HTTP/2 in the client: ALPN, multiplexing on one pooled connection, streams, timeouts.

Against twisted.web's HTTP/2 server (a ``Site`` over TLS offering ``h2``) and
against aleph_tx's own server with ``http_versions=("h2", "http/1.1")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from test_http_client_servers import WebServer, itest, make_tls, server_tls_options, sleep
from twisted.internet import defer

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import ClientResponseError, ReadTimeout, RequestTimeout
from aleph_tx.http import ConnectionPool

H2 = ("h2", "http/1.1")
_MATERIAL: dict[str, bytes] = {}


def material() -> dict[str, bytes]:
    if not _MATERIAL:
        _MATERIAL.update(make_tls())
    return _MATERIAL


@pytest.fixture
def web() -> Iterator[WebServer]:
    w = WebServer(ssl_options=server_tls_options(material(), h2=True))
    yield w
    pytest_twisted.blockon(w.close())


def _get(url: str, pool: ConnectionPool, **kw: Any) -> Any:
    return http.get(url, pool=pool, insecure=True, http_versions=H2, **kw)


@itest()
async def test_h2_negotiated_and_response_dict(web: WebServer, pool: ConnectionPool) -> None:
    r = await _get(web.url + "/headers", pool)
    assert r["status"] == 200 and r["body"] == b"ok"
    assert r["headers"]["x-rep"] == "a, b"
    r = await _get(web.url + "/echo?q=1", pool, as_="json", headers={"x-a": "1", "connection": "keep-alive"})
    assert r["body"]["protocol"] == "HTTP/2"
    assert r["body"]["uri"] == "/echo?q=1"
    assert r["body"]["headers"]["x-a"] == "1"
    assert pool.description()["h2_connections"] == 1


@itest()
async def test_many_requests_multiplexed_on_one_connection(web: WebServer, pool: ConnectionPool) -> None:
    rs = await defer.gatherResults(
        [
            http.post(
                web.url + "/echo", body=b"x" * 100_000, pool=pool, insecure=True, http_versions=H2, as_="json"
            )
            for _ in range(30)
        ]
    )
    assert {len(r["body"]["body"]) for r in rs} == {100_000}
    assert {r["body"]["protocol"] for r in rs} == {"HTTP/2"}
    desc = pool.description()
    assert desc["connections_opened"] == 1 and desc["h2_connections"] == 1


@itest()
async def test_h2_streamed_upload_and_errors(web: WebServer, pool: ConnectionPool) -> None:
    src = s.stream()

    async def produce() -> None:
        for _ in range(20):
            assert await src.put(b"y" * 50_000)
        src.close()

    producing = defer.Deferred.fromCoroutine(produce())
    r = await http.post(web.url + "/echo", body=src, pool=pool, insecure=True, http_versions=H2, as_="json")
    await producing
    assert len(r["body"]["body"]) == 1_000_000
    with pytest.raises(ClientResponseError) as info:
        await _get(web.url + "/status/404", pool, as_="text")
    assert info.value.response["body"] == "status 404"
    r = await _get(web.url + "/redirect/3", pool, as_="json")
    assert r["body"]["path"] == "/echo"


@itest()
async def test_h2_cancel_one_stream_keeps_the_others(web: WebServer, pool: ConnectionPool) -> None:
    stalled = _get(web.url + "/stall", pool)
    await _get(web.url + "/echo", pool)  # the connection is up and shared
    stalled2 = _get(web.url + "/stall", pool)
    ok = _get(web.url + "/drip?n=3&every=0.02", pool)
    await sleep(0.05)
    stalled.cancel()
    stalled2.cancel()
    for d in (stalled, stalled2):
        with pytest.raises(defer.CancelledError):
            await d
    assert (await ok)["body"] == b"chunk" * 3
    assert pool.description()["connections_opened"] == 1


@itest()
async def test_h2_timeouts(web: WebServer, pool: ConnectionPool) -> None:
    with pytest.raises(RequestTimeout):
        await _get(web.url + "/stall", pool, request_timeout=0.1)
    with pytest.raises(ReadTimeout):
        await _get(web.url + "/stall-body", pool, read_timeout=0.1)
    r = await _get(web.url + "/echo", pool)
    assert r["status"] == 200
    assert pool.description()["connections_opened"] == 1


@itest(timeout=30)
async def test_h2_stream_backpressure(web: WebServer, pool: ConnectionPool) -> None:
    total = 16 * 1024 * 1024
    r = await _get(web.url + f"/big?n={total}", pool, as_="stream")
    body = r["body"]
    got = 0
    in_flight = 0
    for _ in range(20):
        chunk = await body.take()
        got += len(chunk)
        await sleep(0.005)
        in_flight = max(in_flight, web.site_resource.stats["written"] - got)
    # the stream's window (1 MiB) bounds what the server may send ahead
    assert in_flight < 4 * 1024 * 1024, in_flight
    async for chunk in body:
        got += len(chunk)
    assert got == total


@itest()
async def test_h1_fallback_when_server_has_no_h2(pool: ConnectionPool) -> None:
    w = WebServer(ssl_options=server_tls_options(material()), alpn=False)
    try:
        rs = await defer.gatherResults([_get(w.url + "/echo", pool, as_="json") for _ in range(5)])
        assert {r["body"]["protocol"] for r in rs} == {"HTTP/1.1"}
        assert pool.description()["h2_connections"] == 0
        await _get(w.url + "/echo", pool)
        assert 1 <= pool.description()["connections_opened"] <= 5
    finally:
        await w.close()


@itest()
async def test_h2_against_own_server(pool: ConnectionPool) -> None:
    from aleph_tx import tls
    from aleph_tx.http import start_server

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "headers": {"x-proto": req["protocol"]}, "body": req["body"] or "empty"}

    server = start_server(
        handler,
        port=0,
        host="127.0.0.1",
        ssl_context=tls.self_signed_context(),
        http_versions=("h2", "http/1.1"),
    )
    try:
        url = f"https://127.0.0.1:{server.port}/"
        rs = await defer.gatherResults(
            [http.post(url, body=b"%d" % i, pool=pool, insecure=True, http_versions=H2) for i in range(10)]
        )
        assert [r["body"] for r in rs] == [b"%d" % i for i in range(10)]
        assert rs[0]["headers"]["x-proto"].upper().startswith("HTTP/2")
        assert pool.description()["h2_connections"] == 1
    finally:
        await pool.close()  # the idle HTTP/2 connection, so the server's close need not wait
        await server.close()


@itest()
async def test_h2_oversize_response_headers(web: WebServer, pool: ConnectionPool) -> None:
    from aleph_tx.errors import ProtocolError

    with pytest.raises(ProtocolError):
        await _get(web.url + "/headers?n=50&size=200", pool, max_response_header_size=2048)
    r = await _get(web.url + "/headers?n=5&size=20", pool)
    assert r["status"] == 200


@itest()
async def test_h2_through_connect_tunnel(web: WebServer, pool: ConnectionPool) -> None:
    from test_http_client_servers import ThreadProxy

    proxy = ThreadProxy()
    try:
        opts = {"host": "127.0.0.1", "port": proxy.port}
        rs = await defer.gatherResults(
            [_get(web.url + "/echo", pool, proxy=opts, as_="json") for _ in range(5)]
        )
        assert {r["body"]["protocol"] for r in rs} == {"HTTP/2"}
        assert [s["method"] for s in proxy.seen] == ["CONNECT"]
    finally:
        await pool.close()
        proxy.close()


@itest()
async def test_http_versions_on_the_pool(web: WebServer) -> None:
    p = http.connection_pool(http_versions=("h2", "http/1.1"))
    r = await http.get(web.url + "/echo", pool=p, insecure=True, as_="json")
    assert r["body"]["protocol"] == "HTTP/2"
    # a request's own http_versions wins over the pool's
    r = await http.get(web.url + "/echo", pool=p, insecure=True, as_="json", http_versions=("http/1.1",))
    assert r["body"]["protocol"] == "HTTP/1.1"
    await p.close()
    with pytest.raises(NotImplementedError):
        http.connection_pool(http_versions=("h2",))
    with pytest.raises(ValueError):
        http.connection_pool(http_versions="h2")
