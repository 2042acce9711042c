"""The client against an aiohttp server (in a thread) and against aleph_tx's own server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_http_client_servers import AiohttpServer, itest
from twisted.internet.defer import Deferred

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import ClientResponseError
from aleph_tx.http import ConnectionPool


@pytest.fixture(scope="module")
def aio() -> Iterator[AiohttpServer]:
    a = AiohttpServer()
    yield a
    a.close()


@itest()
async def test_multipart_parsed_by_aiohttp(aio: AiohttpServer, pool: ConnectionPool) -> None:
    r = await http.post(
        aio.url + "/multipart",
        multipart=[
            {"name": "title", "content": "hé"},
            {"name": "upload", "content": b"\x00bin", "filename": "f.bin"},
            {"name": "doc", "content": "text", "filename": "d.txt", "content_type": "text/plain"},
        ],
        pool=pool,
        as_="json",
    )
    assert r["body"] == {
        "title": "hé",
        "upload": {"filename": "f.bin", "content_type": "application/octet-stream", "data": "\x00bin"},
        "doc": {"filename": "d.txt", "content_type": "text/plain", "data": "text"},
    }


@itest()
async def test_form_params_parsed_by_aiohttp(aio: AiohttpServer, pool: ConnectionPool) -> None:
    r = await http.post(aio.url + "/form", form_params={"a": ["1", "2"], "b": "x&y=z"}, pool=pool, as_="json")
    assert r["body"] == {"a": ["1", "2"], "b": ["x&y=z"]}


@itest()
async def test_chunked_response_text_and_stream(aio: AiohttpServer, pool: ConnectionPool) -> None:
    r = await http.get(aio.url + "/chunked", pool=pool, as_="text")
    assert r["headers"]["transfer-encoding"] == "chunked"
    assert r["body"] == "".join(f"part {i} é\n" for i in range(5))
    r = await http.get(aio.url + "/chunked", pool=pool, as_="stream")
    chunks = await s.collect(r["body"])
    assert b"".join(chunks).count(b"part") == 5
    assert pool.description()["connections_opened"] == 1


@itest()
async def test_streamed_upload_to_aiohttp(aio: AiohttpServer, pool: ConnectionPool) -> None:
    src = s.stream()

    async def produce() -> None:
        for _ in range(40):
            assert await src.put(b"z" * 50_000)
        src.close()

    producing = Deferred.fromCoroutine(produce())
    r = await http.post(aio.url + "/upload", body=src, pool=pool, as_="json")
    await producing
    assert r["body"] == {"received": 2_000_000, "chunked": "chunked"}


@itest()
async def test_cookies_with_aiohttp(aio: AiohttpServer, pool: ConnectionPool) -> None:
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    for expected in ({}, {"visits": "1"}, {"visits": "2"}):
        r = await _get_json(aio.url + "/cookies", jar, pool)
        assert r == expected


async def _get_json(url: str, jar: Any, pool: ConnectionPool) -> Any:
    r = await http.get(url, cookie_jar=jar, pool=pool, as_="json")
    return r["body"]


# -- aleph_tx's own server ------------------------------------------------------------------------


@pytest.fixture
def own() -> Iterator[str]:
    import pytest_twisted

    from aleph_tx.http import start_server

    def handler(req: dict[str, Any]) -> Any:
        if req["uri"] == "/echo":
            # stream the request body back as it arrives
            return {"status": 200, "headers": {"x-method": req["request_method"]}, "body": req["body"]}
        if req["uri"] == "/teapot":
            return {"status": 418, "body": "short and stout"}
        return {"status": 200, "body": "hello"}

    server = start_server(handler, port=0, host="127.0.0.1", max_request_body_size=1000)
    yield f"http://127.0.0.1:{server.port}"
    pytest_twisted.blockon(server.close())


@itest()
async def test_own_server(own: str, pool: ConnectionPool) -> None:
    r = await http.get(own + "/", pool=pool, as_="text")
    assert r["body"] == "hello"
    r = await http.post(own + "/echo", body=iter([b"a", b"b"]), pool=pool)
    assert (r["headers"]["x-method"], r["body"]) == ("post", b"ab")
    with pytest.raises(ClientResponseError) as info:
        await http.get(own + "/teapot", pool=pool, as_="text")
    assert info.value.response["body"] == "short and stout"
    with pytest.raises(ClientResponseError) as info:
        await http.post(own + "/echo", body=b"x" * 5000, pool=pool)
    assert info.value.response["status"] == 413
    r = await http.head(own + "/", pool=pool)
    assert r["body"] == b"" and r["headers"]["content-length"] == "5"
