"""Table tests of response body coercion (aleph_tx.http._body, pure)."""

from __future__ import annotations

import gzip
import io
import pathlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed

from aleph_tx import stream as s
from aleph_tx._chunks import ChunkSource, SourceKind, to_chunk
from aleph_tx.http._ring.body import coerce_body
from aleph_tx.http._ring.coding import Gzipper, accepts_gzip


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, b""),
        ("", b""),
        ("héllo", "héllo".encode()),
        (b"abc", b"abc"),
        (bytearray(b"abc"), b"abc"),
        (memoryview(b"abcdef")[1:3], b"bc"),
    ],
)
def test_known_length(body: Any, expected: bytes) -> None:
    out = coerce_body(body)
    assert type(out) is bytes
    assert out == expected


def test_path_known_length_streamed(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 10)
    out = coerce_body(p, chunk_size=4)
    assert isinstance(out, ChunkSource)
    assert out.kind is SourceKind.ITERATOR
    assert out.length == 10
    assert list(out.source) == [b"xxxx", b"xxxx", b"xx"]
    out.close()


def test_path_closed_early_closes_file(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 10)
    out = coerce_body(p, chunk_size=4)
    assert isinstance(out, ChunkSource)
    assert next(out.source) == b"xxxx"
    out.close()
    with pytest.raises(StopIteration):
        next(out.source)


def test_missing_path_raises(tmp_path: pathlib.Path) -> None:
    with pytest.raises(OSError):
        coerce_body(tmp_path / "nope")


def test_directory_path_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="regular file"):
        coerce_body(tmp_path)


def test_file_object_unknown_length() -> None:
    f = io.BytesIO(b"abcdef")
    out = coerce_body(f, chunk_size=4)
    assert isinstance(out, ChunkSource)
    assert out.length is None
    assert list(out.source) == [b"abcd", b"ef"]
    out.close()
    assert f.closed


def test_text_file_object_encoded() -> None:
    out = coerce_body(io.StringIO("é"))
    assert isinstance(out, ChunkSource)
    assert list(out.source) == ["é".encode()]


def test_iterables() -> None:
    for body in ([b"a", "b"], (b"a", "b"), (x for x in [b"a", "b"])):
        out = coerce_body(body)
        assert isinstance(out, ChunkSource)
        assert out.kind is SourceKind.ITERATOR and out.length is None
        assert [to_chunk(c) for c in out.source] == [b"a", b"b"]


def test_generator_closed() -> None:
    closed = []

    def gen() -> Iterator[bytes]:
        try:
            yield b"a"
            yield b"b"
        finally:
            closed.append(True)

    out = coerce_body(gen())
    assert isinstance(out, ChunkSource)
    next(out.source)
    out.close()
    assert closed == [True]


def test_async_iterable() -> None:
    async def agen() -> AsyncIterator[bytes]:
        yield b"a"

    out = coerce_body(agen())
    assert isinstance(out, ChunkSource)
    assert out.kind is SourceKind.ASYNC_ITERATOR
    out.close()


def test_stream_source_closed_on_close() -> None:
    st = s.stream()
    out = coerce_body(st)
    assert isinstance(out, ChunkSource)
    assert out.kind is SourceKind.STREAM and out.source is st
    out.close()
    assert st.closed


def test_deferred_and_coroutine() -> None:
    d = succeed(b"x")
    assert coerce_body(d) is d

    async def coro() -> str:
        return "y"

    c = coro()
    assert coerce_body(c) is c  # awaitables are the front's to wait for (pure: no Twisted here)
    got: list[Any] = []
    Deferred.fromCoroutine(c).addCallback(got.append)
    assert got == ["y"]


@pytest.mark.parametrize("body", [{"a": 1}, {1, 2}, 42, 1.5, object()])
def test_unsupported(body: Any) -> None:
    with pytest.raises(TypeError, match="body"):
        coerce_body(body)


@pytest.mark.parametrize("chunk", [None, 1, {"a": 1}, ["x"]])
def test_to_chunk_refuses(chunk: Any) -> None:
    with pytest.raises(TypeError):
        to_chunk(chunk)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZip", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("br", False),
        ("*", True),
        ("*;q=0", False),
        ("br, *", True),
        ("x-gzip", True),
        ("gzip;q=abc", False),
    ],
)
def test_accepts_gzip(value: str | None, expected: bool) -> None:
    assert accepts_gzip(value) is expected


def test_gzipper_streams_and_whole() -> None:
    z = Gzipper()
    parts = [z.chunk(b"hello "), z.chunk(b"world"), z.finish()]
    assert all(parts[:2])
    assert gzip.decompress(b"".join(parts)) == b"hello world"
    assert gzip.decompress(Gzipper.whole(b"abc" * 100)) == b"abc" * 100
