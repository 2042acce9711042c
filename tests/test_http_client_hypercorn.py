"""The client against hypercorn (h11 for HTTP/1.1, the h2 library for HTTP/2): a server
written by others on another event loop."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from test_http_client_servers import HypercornServer, itest, make_tls
from twisted.internet import defer

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import ClientResponseError
from aleph_tx.http import ConnectionPool

H2 = ("h2", "http/1.1")


@pytest.fixture(scope="module")
def hyper() -> Iterator[HypercornServer]:
    h = HypercornServer()
    yield h
    h.close()


@pytest.fixture(scope="module")
def hyper_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    h = HypercornServer(tls=make_tls(), tmp=tmp_path_factory.mktemp("hypercorn"))
    yield h
    h.close()


@itest()
async def test_http11_requests_reuse_one_connection(hyper: HypercornServer, pool: ConnectionPool) -> None:
    for method in ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        r = await http.request(method, hyper.url + "/echo?a=1", body=b"xyz", pool=pool, as_="json")
        assert (r["body"]["method"], r["body"]["query"], r["body"]["body_length"]) == (method, "a=1", 3)
        assert r["body"]["http_version"] == "1.1"
    r = await http.head(hyper.url + "/echo", pool=pool)
    assert r["status"] == 200 and r["body"] == b""
    assert pool.description()["connections_opened"] == 1


@itest()
async def test_chunked_and_large_responses(hyper: HypercornServer, pool: ConnectionPool) -> None:
    r = await http.get(hyper.url + "/stream?n=20", pool=pool, as_="text")
    assert r["body"] == "".join(f"part {i}\n" for i in range(20))
    r = await http.get(hyper.url + "/big?n=3000000", pool=pool, as_="stream")
    chunks = await s.collect(r["body"])
    assert sum(map(len, chunks)) == 3_000_000
    with pytest.raises(ClientResponseError) as info:
        await http.get(hyper.url + "/echo?status=418", pool=pool)
    assert info.value.response["status"] == 418


@itest()
async def test_streamed_uploads(hyper: HypercornServer, pool: ConnectionPool, tmp_path: pathlib.Path) -> None:
    src = s.stream()

    async def produce() -> None:
        for _ in range(50):
            assert await src.put(b"u" * 40_000)
        src.close()

    producing = defer.Deferred.fromCoroutine(produce())
    r = await http.post(hyper.url + "/echo", body=src, pool=pool, as_="json")
    await producing
    assert r["body"]["body_length"] == 2_000_000
    assert r["body"]["headers"]["transfer-encoding"] == "chunked"
    path = tmp_path / "f"
    path.write_bytes(b"f" * 1_000_000)
    r = await http.post(
        hyper.url + "/echo", multipart=[{"name": "f", "content": path}], pool=pool, as_="json"
    )
    assert r["body"]["body_length"] == int(r["body"]["headers"]["content-length"]) > 1_000_000


@itest()
async def test_http2_with_hypercorn(hyper_tls: HypercornServer, pool: ConnectionPool) -> None:
    rs = await defer.gatherResults(
        [
            http.post(
                hyper_tls.url + f"/echo?i={i}",
                body=b"b" * i,
                pool=pool,
                insecure=True,
                http_versions=H2,
                as_="json",
            )
            for i in range(20)
        ]
    )
    assert {r["body"]["http_version"] for r in rs} == {"2"}
    assert [r["body"]["body_length"] for r in rs] == list(range(20))
    assert pool.description()["h2_connections"] == 1
    r = await http.get(hyper_tls.url + "/big?n=2000000", pool=pool, insecure=True, http_versions=H2)
    assert len(r["body"]) == 2_000_000
    r = await http.get(hyper_tls.url + "/echo", pool=pool, insecure=True, as_="json")
    assert r["body"]["http_version"] == "1.1"  # without h2 offered: HTTP/1.1 over TLS
    await pool.close()
