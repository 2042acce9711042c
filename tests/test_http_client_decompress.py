"""The client decodes gzip and deflate bodies (clj-http's ``decompress_body``, on by default).

Servers nobody here wrote do the compressing: twisted.web's ``GzipEncoderFactory``,
and canned responses made with Python's ``gzip`` and ``zlib``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from test_http_client_servers import EchoSite, RawServer, itest, sleep
from twisted.internet import reactor
from twisted.web import server
from twisted.web.resource import EncodingResourceWrapper
from twisted.web.server import GzipEncoderFactory

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import ClientResponseError, ProtocolError
from aleph_tx.http import ConnectionPool


class GzipSite:
    """:class:`EchoSite` behind twisted.web's own gzip encoder."""

    def __init__(self) -> None:
        self.echo = EchoSite()
        site = server.Site(EncodingResourceWrapper(self.echo, [GzipEncoderFactory()]))
        site.log = lambda request: None
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"


@pytest.fixture
def gz() -> Iterator[GzipSite]:
    g = GzipSite()
    yield g
    pytest_twisted.blockon(g.port.stopListening())


def _canned(body: bytes, coding: str, status: int = 200, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 %d X\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n%s\r\n"
        % (status, coding.encode(), len(body), extra)
    ) + body


@itest()
async def test_asks_for_gzip_and_decodes_it(gz: GzipSite, pool: ConnectionPool) -> None:
    r = await http.get(gz.url + "/echo", pool=pool, as_="json")
    assert r["headers"]["content-encoding"] == "gzip"  # headers as they came, as in requests
    assert r["body"]["headers"]["accept-encoding"] == "gzip, deflate"
    r = await http.get(gz.url + "/text", pool=pool, as_="text")
    assert r["body"] == "héllo wörld"
    r = await http.get(gz.url + "/big?n=3000000", pool=pool, as_="stream")
    chunks = await s.collect(r["body"])
    assert b"".join(chunks) == b"x" * 3_000_000
    assert max(len(c) for c in chunks) <= 65536


@itest()
async def test_an_error_response_body_is_decoded_too(gz: GzipSite, pool: ConnectionPool) -> None:
    with pytest.raises(ClientResponseError) as e:
        await http.get(gz.url + "/status/418", pool=pool, as_="text")
    assert e.value.response["body"] == "status 418"


@itest()
async def test_the_users_accept_encoding_wins(gz: GzipSite, pool: ConnectionPool) -> None:
    r = await http.get(gz.url + "/echo", pool=pool, headers={"Accept-Encoding": "identity"}, as_="json")
    assert r["body"]["headers"]["accept-encoding"] == "identity"
    assert "content-encoding" not in r["headers"]


@itest()
async def test_decompress_body_false_asks_for_nothing_and_decodes_nothing(
    gz: GzipSite, pool: ConnectionPool
) -> None:
    r = await http.get(gz.url + "/echo", pool=pool, decompress_body=False, as_="json")
    assert "accept-encoding" not in r["body"]["headers"]
    r = await http.get(
        gz.url + "/json", pool=pool, decompress_body=False, headers={"accept-encoding": "gzip"}
    )
    assert r["headers"]["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(r["body"])) == {"a": [1, 2, {"b": None}]}


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("deflate", zlib.compress), ("deflate", _raw_deflate), ("x-gzip", gzip.compress), ("br", lambda b: b)],
)
@itest()
async def test_deflate_raw_deflate_x_gzip_and_unknown_codings(
    coding: str, encode: Any, pool: ConnectionPool
) -> None:
    data = b"compressible " * 1000
    raw = RawServer(lambda n: (_canned(encode(data), coding), False))
    try:
        r = await http.get(raw.url + "/", pool=pool)
        assert r["body"] == data
    finally:
        await raw.close()


@itest()
async def test_head_of_a_gzip_resource_has_an_empty_body(pool: ConnectionPool) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1234\r\n\r\n"
    raw = RawServer(lambda n: (head, False))
    try:
        r = await http.head(raw.url + "/", pool=pool)
        assert r["body"] == b""
    finally:
        await raw.close()


@pytest.mark.parametrize("as_", ["bytes", "stream"])
@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\x1f\x8b\x08 not gzip at all", "malformed gzip"),
        (gzip.compress(bytes(range(256)) * 64)[:200], "truncated gzip"),
    ],
)
@itest()
async def test_bad_gzip_fails_with_protocol_error(
    as_: str, body: bytes, match: str, pool: ConnectionPool
) -> None:
    raw = RawServer(lambda n: (_canned(body, "gzip"), False))
    try:
        if as_ == "bytes":
            with pytest.raises(ProtocolError, match=match):
                await http.get(raw.url + "/", pool=pool)
        else:
            r = await http.get(raw.url + "/", pool=pool, as_="stream")
            await s.collect(r["body"])
            assert r["body"].drained
            assert isinstance(r["body"].description()["error"], ProtocolError)
            assert match in str(r["body"].description()["error"])
        assert pool.description()["idle"] == 0  # such a connection is not reused
    finally:
        await raw.close()


@itest(timeout=30)
async def test_a_gzip_bomb_streams_in_bounded_pieces(pool: ConnectionPool) -> None:
    size = 64 * 2**20
    bomb = gzip.compress(bytes(size), 9)  # about 64 KiB on the wire
    raw = RawServer(lambda n: (_canned(bomb, "gzip"), False))
    try:
        r = await http.get(raw.url + "/", pool=pool, as_="stream")
        body: s.Stream = r["body"]
        first = await body.take()
        assert len(first) == 65536
        for _ in range(100):  # until the whole compressed body has arrived (5 s at most)
            if body.description()["bytes_received"] == len(bomb):
                break
            await sleep(0.05)
        await sleep(0.05)  # a few more reactor turns: nothing else may happen
        desc = body.description()
        # nobody takes: one decoded piece waits in a put, no more is decoded
        assert desc["pending_puts"] <= 1 and desc["buffer_count"] == 0, desc
        assert desc["bytes_received"] == len(bomb)
        total = len(first)
        while (chunk := await body.take()) is not None:
            assert len(chunk) <= 65536
            total += len(chunk)
        assert total == size
        assert pool.description()["idle"] == 1  # read to the end: the connection is reusable
    finally:
        await raw.close()


@itest()
async def test_our_server_compresses_and_our_client_decodes_each_chunk_as_it_comes(
    pool: ConnectionPool,
) -> None:
    from aleph_tx.http import start_server

    source = s.stream()
    srv = start_server(lambda req: {"body": source}, port=0, host="127.0.0.1", compression=True)
    try:
        r = await http.get(f"http://127.0.0.1:{srv.port}/", pool=pool, as_="stream")
        assert r["headers"]["content-encoding"] == "gzip"
        body: s.Stream = r["body"]
        for event in ("data: one\n\n", "data: two\n\n"):
            await source.put(event)
            # the server flushes its gzip stream per chunk: each arrives decoded on its own
            assert await body.take() == event.encode()
        source.close()
        assert await body.take() is None
    finally:
        await srv.close()
