"""The HTTP client against servers nobody here wrote: every option, redirects, errors."""

from __future__ import annotations

import base64
import http.cookiejar
import io
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from test_http_client_servers import RawServer, ThreadServer, WebServer, itest
from twisted.internet.defer import Deferred

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import (
    ClientResponseError,
    ConnectionLostError,
    ProtocolError,
    RedirectError,
)
from aleph_tx.http import ConnectionPool


@pytest.fixture
def web() -> Iterator[WebServer]:
    w = WebServer()
    yield w
    pytest_twisted.blockon(w.close())


@pytest.fixture
def py() -> Iterator[ThreadServer]:
    t = ThreadServer()
    yield t
    t.close()


# -- the basics ------------------------------------------------------------------------


@itest()
async def test_get_response_dict(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/headers", pool=pool)
    assert r["status"] == 200
    assert r["body"] == b"ok"
    assert r["headers"]["x-rep"] == "a, b"
    assert r["headers"]["content-length"] == "2"
    assert all(k == k.lower() for k in r["headers"])
    assert isinstance(r["request_time"], float) and r["request_time"] >= 0


@itest()
async def test_methods_sent_upper_case(web: WebServer, pool: ConnectionPool) -> None:
    for fn, name in [
        (http.get, "GET"),
        (http.post, "POST"),
        (http.put, "PUT"),
        (http.patch, "PATCH"),
        (http.delete, "DELETE"),
        (http.options, "OPTIONS"),
    ]:
        r = await fn(web.url + "/echo", pool=pool, as_="json")
        assert r["body"]["method"] == name
    r = await http.request("pAtCh", web.url + "/echo", pool=pool, as_="json")
    assert r["body"]["method"] == "PATCH"
    r = await http.head(web.url + "/echo", pool=pool)
    assert r["status"] == 200 and r["body"] == b""


@itest()
async def test_against_python_http_server(py: ThreadServer, pool: ConnectionPool) -> None:
    r = await http.post(py.url + "/p?x=1", body=b"abc", pool=pool, as_="json")
    assert r["body"]["method"] == "POST"
    assert r["body"]["path"] == "/p?x=1"
    assert base64.b64decode(r["body"]["body"]) == b"abc"
    assert r["body"]["headers"]["content-length"] == "3"
    # keep-alive: the second request reuses the connection
    await http.get(py.url + "/", pool=pool)
    assert pool.description()["connections_opened"] == 1
    # 303 -> GET without body
    r = await http.post(py.url + "/redirect", body=b"abc", pool=pool, as_="json")
    assert r["body"]["method"] == "GET" and r["body"]["path"] == "/landed"
    assert r["body"]["body"] == ""


def test_unknown_option_raises_at_once() -> None:
    with pytest.raises(TypeError, match="bogus"):
        http.get("http://127.0.0.1:1/", bogus=1)
    with pytest.raises(ValueError):
        http.get("http://127.0.0.1:1/", as_="xml")
    with pytest.raises(ValueError):
        http.get("ftp://example.com/")
    with pytest.raises(ValueError):
        http.get("http://127.0.0.1:1/", read_timeout=-1)
    with pytest.raises(ValueError):
        http.post("http://127.0.0.1:1/", body=b"x", json={})
    with pytest.raises(ValueError):
        http.get("http://127.0.0.1:1/", headers={"x": "a\r\nb"})
    with pytest.raises(ValueError):
        http.request("GE T", "http://127.0.0.1:1/")
    with pytest.raises(TypeError):
        http.get("http://127.0.0.1:1/", pool="nope")
    with pytest.raises(TypeError):
        http.post("http://127.0.0.1:1/", body=12)
    with pytest.raises(NotImplementedError):
        http.get("https://127.0.0.1:1/", http_versions=("h2",))


# -- request content -----------------------------------------------------------------------


@itest()
async def test_headers_and_query_params(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(
        web.url + "/echo?a=1",
        headers={"X-One": "1", "x-many": ["a", "b"]},
        query_params={"b": "two words", "c": ["x", "y"]},
        pool=pool,
        as_="json",
    )
    seen = r["body"]
    assert seen["uri"] == "/echo?a=1&b=two+words&c=x&c=y"
    assert seen["headers"]["x-one"] == "1"
    assert seen["headers"]["x-many"] == "a, b"
    assert seen["headers"]["host"] == web.url.split("//")[1]


@itest()
async def test_form_json_and_str_bodies(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.post(web.url + "/echo", form_params={"a": "1 2", "b": ["x", "y"]}, pool=pool, as_="json")
    assert r["body"]["body"] == "a=1+2&b=x&b=y"
    assert r["body"]["headers"]["content-type"] == "application/x-www-form-urlencoded"
    r = await http.post(web.url + "/echo", json={"k": [1, None]}, pool=pool, as_="json")
    assert json.loads(r["body"]["body"]) == {"k": [1, None]}
    assert r["body"]["headers"]["content-type"] == "application/json"
    r = await http.put(web.url + "/echo", body="héllo", pool=pool, as_="json")
    assert r["body"]["body"].encode("latin-1").decode("utf-8") == "héllo"
    r = await http.put(
        web.url + "/echo", body="x", headers={"content-type": "text/x-mine"}, pool=pool, as_="json"
    )
    assert r["body"]["headers"]["content-type"] == "text/x-mine"


@itest()
async def test_file_path_iterable_bodies(
    web: WebServer, pool: ConnectionPool, tmp_path: pathlib.Path
) -> None:
    f = io.BytesIO(b"skip" + b"file-body")
    f.read(4)
    r = await http.post(web.url + "/echo", body=f, pool=pool, as_="json")
    assert r["body"]["body"] == "file-body"
    assert r["body"]["headers"]["content-length"] == "9"
    p = tmp_path / "data.bin"
    p.write_bytes(b"P" * 100_000)
    r = await http.post(web.url + "/echo", body=p, pool=pool, as_="json")
    assert r["body"]["body"] == "P" * 100_000
    r = await http.post(web.url + "/echo", body=iter([b"a", bytearray(b"b"), "c"]), pool=pool, as_="json")
    assert r["body"]["body"] == "abc"
    assert r["body"]["headers"]["transfer-encoding"] == "chunked"


@itest()
async def test_stream_body_is_streamed_with_backpressure(py: ThreadServer, pool: ConnectionPool) -> None:
    src = s.stream()
    d = http.post(py.url + "/upload", body=src, pool=pool, as_="json")
    total = 0
    # each put waits until the request writer takes the chunk: nothing is buffered by us
    for i in range(64):
        chunk = bytes([i % 256]) * 65536
        accepted = await src.put(chunk)
        assert accepted is True
        assert src.description()["buffer_count"] == 0
        total += len(chunk)
    src.close()
    r = await d
    body = base64.b64decode(r["body"]["body"])
    assert len(body) == total == 64 * 65536
    assert body[65536] == 1


@itest()
async def test_multipart(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.post(
        web.url + "/echo",
        multipart=[
            {"name": "field", "content": "value"},
            {"name": "file", "content": b"\x00\x01", "filename": "a.bin"},
            {"name": "doc", "content": "{}", "content_type": "application/json"},
        ],
        pool=pool,
        as_="json",
    )
    ctype = r["body"]["headers"]["content-type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    boundary = ctype.split("boundary=")[1]
    body = r["body"]["body"].encode("latin-1")
    assert body.count(b"--" + boundary.encode()) == 4
    assert b'Content-Disposition: form-data; name="field"\r\n\r\nvalue\r\n' in body
    assert b'name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01' in body
    assert b'name="doc"\r\nContent-Type: application/json\r\n\r\n{}' in body


@itest()
async def test_basic_auth(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/echo", basic_auth=("user", "pässword"), pool=pool, as_="json")
    token = r["body"]["headers"]["authorization"].split()[1]
    assert base64.b64decode(token).decode() == "user:pässword"


@itest()
async def test_cookie_jar_across_requests(web: WebServer, pool: ConnectionPool) -> None:
    jar = http_cookiejar()
    await http.get(web.url + "/cookie/set?session=abc&theme=dark", cookie_jar=jar, pool=pool)
    assert {c.name for c in jar} == {"session", "theme"}
    r = await http.get(web.url + "/cookie/get", cookie_jar=jar, pool=pool, as_="text")
    assert sorted(r["body"].split("; ")) == ["session=abc", "theme=dark"]
    r = await http.get(web.url + "/cookie/get", pool=pool, as_="text")
    assert r["body"] == ""


def http_cookiejar() -> http.cookiejar.CookieJar:
    import http.cookiejar as cj

    return cj.CookieJar()


# -- response coercion ------------------------------------------------------------------------


@itest()
async def test_as_text_and_json(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/text?charset=latin-1", pool=pool, as_="text")
    assert r["body"] == "héllo wörld"
    r = await http.get(web.url + "/text", pool=pool, as_="text")
    assert r["body"] == "héllo wörld"
    r = await http.get(web.url + "/text?bad=1", pool=pool, as_="text")
    assert r["body"] == "héllo wörld\ufffd"
    r = await http.get(web.url + "/text?charset=no-such-charset", pool=pool, as_="text")
    assert r["body"] == "héllo wörld"
    r = await http.get(web.url + "/json", pool=pool, as_="json")
    assert r["body"] == {"a": [1, 2, {"b": None}]}


@itest()
async def test_as_stream(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/drip?n=4&every=0.01", pool=pool, as_="stream")
    assert isinstance(r["body"], s.Stream)
    chunks = await s.collect(r["body"])
    assert b"".join(chunks) == b"chunk" * 4
    assert r["body"].drained
    # the connection went back to the pool once the body was read
    assert pool.description()["idle"] == 1


# -- errors -------------------------------------------------------------------------------------


@itest()
async def test_throw_exceptions(web: WebServer, pool: ConnectionPool) -> None:
    with pytest.raises(ClientResponseError) as info:
        await http.get(web.url + "/status/404", pool=pool, as_="text")
    assert info.value.response["status"] == 404
    assert info.value.response["body"] == "status 404"
    with pytest.raises(ClientResponseError) as info:
        await http.get(web.url + "/status/500", pool=pool, as_="stream")
    chunks = await s.collect(info.value.response["body"])
    assert b"".join(chunks) == b"status 500"
    r = await http.get(web.url + "/status/503", pool=pool, throw_exceptions=False)
    assert r["status"] == 503 and r["body"] == b"status 503"


@itest()
async def test_connection_close_is_not_reused(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/close", pool=pool)
    assert r["body"] == b"closing"
    await http.get(web.url + "/echo", pool=pool)
    assert pool.description()["connections_opened"] == 2


@itest()
async def test_keep_alive_false(web: WebServer) -> None:
    p = http.connection_pool(keep_alive=False)
    r = await http.get(web.url + "/echo", pool=p, as_="json")
    assert r["body"]["headers"]["connection"] == "close"
    await http.get(web.url + "/echo", pool=p)
    assert p.description()["connections_opened"] == 2
    assert p.description()["idle"] == 0


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno-colon-header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
@itest()
async def test_malformed_response_fails_protocol_error(answer: bytes, pool: ConnectionPool) -> None:
    raw = RawServer(lambda n: (answer, False))
    try:
        with pytest.raises(ProtocolError):
            await http.get(raw.url + "/", pool=pool)
        assert pool.description()["total"] == 0  # the connection is gone, not pooled
    finally:
        await raw.close()


@itest()
async def test_oversize_header_block(pool: ConnectionPool) -> None:
    big = (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(20))
        + b"Content-Length: 0\r\n\r\n"
    )
    raw = RawServer(lambda n: (big, False))
    try:
        with pytest.raises(ProtocolError, match="max_response_header_size"):
            await http.get(raw.url + "/", pool=pool, max_response_header_size=1000)
        # one line longer than the limit
        with pytest.raises(ProtocolError):
            await http.get(raw.url + "/", pool=pool, max_response_header_size=64)
        r = await http.get(raw.url + "/", pool=pool, max_response_header_size=4000)
        assert r["status"] == 200
        assert pool.description()["total"] == 1
    finally:
        await raw.close()


@itest()
async def test_peer_closes_mid_response(pool: ConnectionPool) -> None:
    raw = RawServer(lambda n: (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", True))
    try:
        with pytest.raises(ConnectionLostError):
            await http.get(raw.url + "/", pool=pool)
        r = await http.get(raw.url + "/", pool=pool, as_="stream")
        chunks = await s.collect(r["body"])
        assert b"".join(chunks) == b"short"
        assert isinstance(r["body"].description()["error"], ConnectionLostError)
        raw2 = RawServer(lambda n: (b"", True))
        try:
            with pytest.raises(ConnectionLostError):
                await http.get(raw2.url + "/", pool=pool)
        finally:
            await raw2.close()
        assert pool.description()["total"] == 0
    finally:
        await raw.close()


@itest()
async def test_body_until_close_without_length(pool: ConnectionPool) -> None:
    raw = RawServer(lambda n: (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", True))
    try:
        r = await http.get(raw.url + "/", pool=pool)
        assert r["body"] == b"until the end"
    finally:
        await raw.close()


@itest()
async def test_interim_100_response_is_skipped(pool: ConnectionPool) -> None:
    raw = RawServer(
        lambda n: (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False)
    )
    try:
        r = await http.get(raw.url + "/", pool=pool)
        assert r["body"] == b"ok"
    finally:
        await raw.close()


@itest()
async def test_stale_keep_alive_connection_is_retried(pool: ConnectionPool) -> None:
    # the server answers the first request, then closes the kept-alive
    # connection as the second request arrives: an idempotent GET is retried
    def answer(n: int) -> tuple[bytes, bool] | None:
        if raw.connections[-1].answered == 0:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False
        return b"", True

    raw = RawServer(answer)
    try:
        assert (await http.get(raw.url + "/", pool=pool))["body"] == b"ok"
        assert (await http.get(raw.url + "/", pool=pool))["body"] == b"ok"
        assert len(raw.connections) == 2
        # a POST is not retried
        with pytest.raises(ConnectionLostError):
            await http.post(raw.url + "/", body=b"x", pool=pool)
    finally:
        await raw.close()


# -- redirects ------------------------------------------------------------------------------------


@itest()
async def test_redirect_chain_and_methods(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/redirect/5", pool=pool, as_="json")
    assert r["status"] == 200 and r["body"]["path"] == "/echo"
    for code, method, body in [
        (301, "GET", ""),
        (302, "GET", ""),
        (303, "GET", ""),
        (307, "POST", "data"),
        (308, "POST", "data"),
    ]:
        r = await http.post(web.url + f"/redirect/2?code={code}", body=b"data", pool=pool, as_="json")
        assert (r["body"]["method"], r["body"]["body"]) == (method, body), code
    r = await http.head(web.url + "/redirect/1?code=303", pool=pool)
    assert r["status"] == 200
    assert web.site_resource.seen[-1]["method"] == "HEAD"


@itest()
async def test_redirect_not_followed(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/redirect/1", follow_redirects=False, pool=pool)
    assert r["status"] == 302
    assert r["headers"]["location"] == "/echo"


@itest()
async def test_too_many_redirects_and_loops(web: WebServer, pool: ConnectionPool) -> None:
    with pytest.raises(RedirectError, match="max_redirects"):
        await http.get(web.url + "/redirect/4", max_redirects=3, pool=pool)
    r = await http.get(web.url + "/redirect/3", max_redirects=3, pool=pool)
    assert r["status"] == 200
    with pytest.raises(RedirectError, match="loop"):
        await http.get(web.url + "/loop", pool=pool)


@itest()
async def test_redirect_to_other_host_drops_authorization(web: WebServer, pool: ConnectionPool) -> None:
    other = WebServer()
    try:
        target = other.url.replace("127.0.0.1", "localhost") + "/echo"
        r = await http.get(
            web.url + "/goto?to=" + target,
            basic_auth=("u", "p"),
            headers={"x-keep": "1"},
            pool=pool,
            as_="json",
        )
        assert "authorization" not in r["body"]["headers"]
        assert r["body"]["headers"]["x-keep"] == "1"
        # same host keeps it
        r = await http.get(web.url + "/redirect/1", basic_auth=("u", "p"), pool=pool, as_="json")
        assert "authorization" in r["body"]["headers"]
    finally:
        await other.close()


@itest()
async def test_307_with_streamed_body_cannot_be_replayed(web: WebServer, pool: ConnectionPool) -> None:
    with pytest.raises(RedirectError, match="streamed"):
        await http.post(web.url + "/redirect/1?code=307", body=iter([b"a"]), pool=pool)


def _unused(_: Any) -> Deferred[None]:  # keep the import used for type checkers
    return Deferred()


@itest()
async def test_redirect_with_endless_body_is_not_read(pool: ConnectionPool) -> None:
    def answer(n: int) -> tuple[bytes, bool] | None:
        if n == 0 and len(raw.connections) == 1:
            # a redirect whose chunked body never ends
            return (
                b"HTTP/1.1 302 Found\r\nLocation: /next\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                False,
            )
        return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone", False

    raw = RawServer(answer)
    try:
        r = await http.get(raw.url + "/", pool=pool, read_timeout=5)
        assert r["body"] == b"done"
        assert len(raw.connections) == 2  # the redirect's connection was dropped
    finally:
        await raw.close()
