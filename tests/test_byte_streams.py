"""aleph_tx.byte_streams: every row of the documented table (docs/byte_streams.rst), synchronously where it can be."""

from __future__ import annotations

import array
import io
import re
import shutil
import subprocess
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from _helpers import failure_of, result_of
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred

import aleph_tx.byte_streams as bs
from aleph_tx import stream as s
from aleph_tx.errors import ProtocolError

# -- helpers ---------------------------------------------------------------------------


def take_all(st_: Any) -> list[Any]:
    """Every message of a stream whose messages are all here (synchronously)."""
    return list(result_of(s.collect(st_)))


class ShortReader:
    """A binary file whose reads return at most 3 bytes, recording each call."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.calls = 0

    def read(self, n: int = -1) -> bytes:
        self.calls += 1
        if n is None or n < 0:
            return self._f.read()
        return self._f.read(min(n, 3))


def reference_lines(text: str) -> list[str]:
    """The documented definition: split on \\n and \\r\\n; a final empty piece is no line."""
    parts = re.split("\r?\n", text)
    if parts[-1] == "":
        parts.pop()
    return parts


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates give empty chunks)."""
    points = sorted(c % (len(data) + 1) for c in cuts)
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


SOURCES_OF_ABC = [
    pytest.param(lambda: b"abc", id="bytes"),
    pytest.param(lambda: bytearray(b"abc"), id="bytearray"),
    pytest.param(lambda: memoryview(b"abc"), id="memoryview"),
    pytest.param(lambda: "abc", id="str"),
    pytest.param(lambda: [b"a", "b", bytearray(b"c")], id="list-of-chunks"),
    pytest.param(lambda: (c for c in [b"ab", b"", memoryview(b"c")]), id="generator"),
    pytest.param(lambda: io.BytesIO(b"abc"), id="file"),
]


# -- to_bytes / to_str -------------------------------------------------------------------


@pytest.mark.parametrize("src", SOURCES_OF_ABC)
def test_to_bytes_of_each_synchronous_source(src: Any) -> None:
    out = bs.to_bytes(src())
    assert out == b"abc"
    assert type(out) is bytes


def test_to_bytes_returns_bytes_itself() -> None:
    data = b"x" * 100
    assert bs.to_bytes(data) is data


def test_to_bytes_str_encoding() -> None:
    assert bs.to_bytes("é") == b"\xc3\xa9"
    assert bs.to_bytes("é", encoding="latin-1") == b"\xe9"
    assert bs.to_bytes(["é", b"!"], encoding="utf-16-le") == b"\xe9\x00!"


def test_to_bytes_memoryview_of_any_format() -> None:
    arr = array.array("H", [1, 2])
    assert bs.to_bytes(memoryview(arr)) == arr.tobytes()
    assert bs.to_bytes(memoryview(b"abcdef")[1:4]) == b"bcd"


def test_to_bytes_file_objects(tmp_path: Path) -> None:
    assert bs.to_bytes(io.BytesIO(b"hello")) == b"hello"
    f = io.BytesIO(b"skip-rest")
    f.read(5)
    assert bs.to_bytes(f) == b"rest"
    assert not f.closed  # the caller owns the file
    p = tmp_path / "data.bin"
    p.write_bytes(bytes(range(256)) * 10)
    with open(p, "rb") as fb:
        assert bs.to_bytes(fb) == bytes(range(256)) * 10
    with open(p, "rb", buffering=0) as raw:
        assert bs.to_bytes(raw) == bytes(range(256)) * 10
    assert bs.to_bytes(ShortReader(b"0123456789")) == b"0123456789"


def test_to_bytes_path(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes(b"from disk")
    assert bs.to_bytes(p) == b"from disk"
    assert bs.to_str(p) == "from disk"


def test_to_bytes_refuses_a_stream_pointing_at_collect_bytes() -> None:
    with pytest.raises(TypeError, match="collect_bytes"):
        bs.to_bytes(s.stream())
    with pytest.raises(TypeError, match="collect_str"):
        bs.to_str(s.from_iterable([b"a"]))


@pytest.mark.parametrize(
    ("bad", "name"),
    [(3, "'int'"), (None, "'NoneType'"), ({"a": 1}, "'dict'"), (object(), "'object'"), (1.5, "'float'")],
)
def test_unsupported_sources_raise_type_error_naming_the_type(bad: Any, name: str) -> None:
    for fn in (bs.to_bytes, bs.to_str, bs.to_chunks, bs.to_stream, bs.to_line_stream, bs.collect_bytes):
        with pytest.raises(TypeError, match=name):
            fn(bad)


def test_bad_chunk_in_an_iterable_names_its_type() -> None:
    with pytest.raises(TypeError, match="'int'"):
        bs.to_bytes([b"a", 5])


def test_text_file_is_refused() -> None:
    with pytest.raises(TypeError, match="binary mode"):
        bs.to_bytes(io.StringIO("text"))


def test_to_str() -> None:
    assert bs.to_str(b"h\xc3\xa9") == "hé"
    assert bs.to_str(b"\xe9", encoding="latin-1") == "é"
    assert bs.to_str([b"h\xc3", b"\xa9"]) == "hé"  # a character split across chunks
    text = "same object"
    assert bs.to_str(text) is text
    with pytest.raises(UnicodeDecodeError):
        bs.to_str(b"\xff")


# -- to_chunks -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 11, 1000])
def test_to_chunks_cuts_contiguous_sources_exactly(n: int, tmp_path: Path) -> None:
    data = bytes(range(10))
    p = tmp_path / "ten"
    p.write_bytes(data)
    expected = [data[i : i + n] for i in range(0, len(data), n)]
    sources = [data, bytearray(data), memoryview(data), io.BytesIO(data), ShortReader(data), p]
    for src in sources:
        chunks = list(bs.to_chunks(src, n))
        assert chunks == expected, src
        assert all(type(c) is bytes for c in chunks)


def test_to_chunks_of_str_cuts_the_encoded_bytes() -> None:
    assert list(bs.to_chunks("ééé", 4)) == [b"\xc3\xa9\xc3\xa9", b"\xc3\xa9"]


def test_to_chunks_default_size_is_64k() -> None:
    assert bs.DEFAULT_CHUNK_SIZE == 65536
    chunks = list(bs.to_chunks(b"x" * 150_000))
    assert [len(c) for c in chunks] == [65536, 65536, 150_000 - 2 * 65536]


def test_to_chunks_of_an_iterable_keeps_its_chunks_drops_empty_ones() -> None:
    assert list(bs.to_chunks([b"abcdef", b"", "g", bytearray(b"hi")], 2)) == [b"abcdef", b"g", b"hi"]


def test_to_chunks_of_empty_sources() -> None:
    assert list(bs.to_chunks(b"")) == []
    assert list(bs.to_chunks(io.BytesIO())) == []
    assert list(bs.to_chunks([])) == []


def test_to_chunks_reads_files_lazily() -> None:
    f = ShortReader(b"abcdefghij")
    it = bs.to_chunks(f, 4)
    assert f.calls == 0
    assert next(it) == b"abcd"
    assert f.calls == 2  # a short read of 3, then 1 more
    assert list(it) == [b"efgh", b"ij"]


def test_to_chunks_opens_and_closes_a_path(tmp_path: Path) -> None:
    p = tmp_path / "p"
    p.write_bytes(b"abc")
    assert list(bs.to_chunks(p, 2)) == [b"ab", b"c"]
    missing = bs.to_chunks(tmp_path / "missing", 2)  # opened at the first chunk
    with pytest.raises(FileNotFoundError):
        next(missing)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_chunk_size_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        bs.to_chunks(b"abc", bad)
    with pytest.raises(ValueError, match="chunk_size"):
        bs.to_stream(b"abc", bad)


def test_to_chunks_refuses_a_stream() -> None:
    with pytest.raises(TypeError, match="to_stream"):
        bs.to_chunks(s.stream())


def test_bytearray_chunks_are_a_snapshot() -> None:
    data = bytearray(b"abcd")
    it = bs.to_chunks(data, 2)
    data[:] = b"zzzz"
    assert list(it) == [b"ab", b"cd"]


# -- to_stream ---------------------------------------------------------------------------


def test_to_stream_of_bytes_is_lazy_and_closed_at_the_end() -> None:
    f = ShortReader(b"abcdefgh")
    out = bs.to_stream(f, 4)
    calls_after_first = f.calls
    assert result_of(out.take()) == b"abcd"
    assert f.calls > calls_after_first  # the next chunk is read only as takes come
    assert result_of(out.take()) == b"efgh"
    assert result_of(out.take("end")) == "end"
    assert out.drained


def test_to_stream_respects_backpressure() -> None:
    f = ShortReader(b"x" * 1000)
    out = bs.to_stream(f, 10)
    assert f.calls <= 8  # a chunk or two (read in pieces of 3), not the whole file
    take_all(out)
    assert f.calls > 300


def test_to_stream_of_a_stream_converts_each_chunk() -> None:
    src = s.stream(10)
    for chunk in [b"ab", "c", bytearray(b"d"), memoryview(b"e"), b""]:
        result_of(src.put(chunk))
    src.close()
    out = bs.to_stream(src, 1)
    assert out is not src
    assert take_all(out) == [b"ab", b"c", b"d", b"e"]


def test_to_stream_of_a_stream_follows_later_puts() -> None:
    src = s.stream()
    out = bs.to_stream(src)
    taken = out.take()
    assert not taken.called
    put = src.put("later")
    assert result_of(taken) == b"later"
    assert result_of(put) is True
    src.close()
    assert result_of(out.take("end")) == "end"


def test_to_stream_of_a_stream_with_a_bad_chunk_closes_with_the_error() -> None:
    src = s.stream(10)
    src.put(b"ok")
    src.put(5)
    src.close()
    out = bs.to_stream(src)
    assert take_all(out) == [b"ok"]
    assert isinstance(out.description().get("error"), TypeError)


@given(data=st.binary(max_size=300), n=st.integers(min_value=1, max_value=400))
def test_collect_bytes_of_to_stream_is_identity(data: bytes, n: int) -> None:
    assert result_of(bs.collect_bytes(bs.to_stream(data, n))) == data
    assert result_of(bs.collect_bytes(bs.to_stream(io.BytesIO(data), n))) == data
    chunks = list(bs.to_chunks(data, n))
    assert all(len(c) == n for c in chunks[:-1]) and all(0 < len(c) <= n for c in chunks)


# -- collect_bytes / collect_str -----------------------------------------------------------


@pytest.mark.parametrize("src", SOURCES_OF_ABC)
def test_collect_bytes_of_synchronous_sources_fires_at_once(src: Any) -> None:
    assert result_of(bs.collect_bytes(src())) == b"abc"


def test_collect_bytes_of_a_stream_waits_until_drained() -> None:
    src = s.stream()
    d = bs.collect_bytes(src)
    assert not d.called
    src.put(b"ab")
    src.put("cd")
    assert not d.called
    src.close()
    assert result_of(d) == b"abcd"


def test_collect_bytes_of_a_spliced_stream() -> None:
    sink, source = s.stream(), s.stream(4)
    duplex = s.splice(sink, source)
    source.put(b"from ")
    source.put("source")
    source.close()
    assert result_of(bs.collect_bytes(duplex)) == b"from source"


def test_collect_bytes_of_a_long_synchronous_stream_uses_no_recursion() -> None:
    chunks = [bytes([i % 256]) for i in range(30_000)]
    assert result_of(bs.collect_bytes(s.from_iterable(chunks))) == b"".join(chunks)


def test_collect_bytes_of_a_deferred_source() -> None:
    later: Deferred[Any] = Deferred()
    d = bs.collect_bytes(later)
    later.callback(s.from_iterable([b"x", b"y"]))
    assert result_of(d) == b"xy"


def test_collect_bytes_bad_chunk_fails_and_closes_the_stream() -> None:
    src = s.stream(4)
    src.put(b"a")
    src.put(12)
    d = bs.collect_bytes(src)
    assert failure_of(d).check(TypeError)
    assert src.closed


def test_collect_bytes_reading_error_fails_the_deferred(tmp_path: Path) -> None:
    assert failure_of(bs.collect_bytes(tmp_path / "nope")).check(FileNotFoundError)


class FailingReader:
    """A binary file that gives one chunk, then fails."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 1:
            return b"partial\n"
        raise OSError("disk on fire")


def failed_stream() -> Any:
    """A stream that gives b"ok\npart" and then closes because of an error."""

    def check(chunk: bytes) -> bytes:
        if chunk == b"boom":
            raise ValueError("bad chunk")
        return chunk

    return s.map(check, s.from_iterable([b"ok\npa", b"rt", b"boom", b"never"]))


def test_collect_bytes_of_a_stream_closed_by_an_error_fails() -> None:
    assert failure_of(bs.collect_bytes(failed_stream())).check(ValueError)
    assert failure_of(bs.collect_bytes(bs.to_stream(FailingReader(), 4))).check(OSError)
    assert failure_of(bs.collect_str(failed_stream())).check(ValueError)


def test_collect_str() -> None:
    src = s.stream()
    d = bs.collect_str(src, encoding="utf-8")
    src.put(b"h\xc3")
    src.put(b"\xa9!")
    src.close()
    assert result_of(d) == "hé!"
    assert result_of(bs.collect_str("already")) == "already"
    assert result_of(bs.collect_str(b"\xe9", encoding="latin-1")) == "é"
    assert failure_of(bs.collect_str(b"\xff")).check(UnicodeDecodeError)


# -- to_line_stream --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b"a\nb\n"], ["a", "b"]),
        ([b"a\r\nb"], ["a", "b"]),
        ([b"a\r", b"\nb"], ["a", "b"]),  # \r\n split across chunks
        ([b"a\r", b"b"], ["a\rb"]),  # a lone \r at a chunk end is text
        ([b"a\r"], ["a\r"]),  # ... also at the very end
        ([b"a\r", b"\r\n"], ["a\r"]),
        ([b"\n\n"], ["", ""]),
        ([b"\r\n"], [""]),
        ([b""], []),
        ([], []),
        ([b"x\n", b"", b"\n", b"y"], ["x", "", "y"]),
        ([b"\xc3", b"\xa9t\xc3\xa9\n", b"\xe2\x82", b"\xac"], ["été", "€"]),  # split characters
        ([b"a\xc2\x85b\xe2\x80\xa8c\x0bd\n"], ["a\x85b\u2028c\x0bd"]),  # other Unicode breaks are text
        (["str\nchunks\r", "\n"], ["str", "chunks"]),
    ],
)
def test_to_line_stream_examples(chunks: list[Any], lines: list[str]) -> None:
    assert take_all(bs.to_line_stream(chunks)) == lines
    src = s.stream(len(chunks) + 1)
    for c in chunks:
        src.put(c)
    src.close()
    assert take_all(bs.to_line_stream(src)) == lines


def test_to_line_stream_of_contiguous_sources(tmp_path: Path) -> None:
    p = tmp_path / "lines"
    p.write_bytes(b"one\r\ntwo\nthree")
    assert take_all(bs.to_line_stream(p)) == ["one", "two", "three"]
    assert take_all(bs.to_line_stream("x\ny")) == ["x", "y"]
    assert take_all(bs.to_line_stream(io.BytesIO(b"1\n2\n"))) == ["1", "2"]
    assert take_all(bs.to_line_stream("é\n".encode("utf-16"), encoding="utf-16")) == ["é"]


@given(
    text=st.text(
        alphabet=st.sampled_from(["a", "é", "€", "\U0001f600", "\r", "\n", " ", "\x85"]), max_size=40
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_to_line_stream_any_chunking_equals_the_reference(text: str, cuts: list[int]) -> None:
    chunks = cut(text.encode("utf-8"), cuts)
    assert take_all(bs.to_line_stream(chunks)) == reference_lines(text)
    src = s.stream(len(chunks))
    for c in chunks:
        src.put(c)
    src.close()
    assert take_all(bs.to_line_stream(src)) == reference_lines(text)


@settings(max_examples=50)
@given(text=st.text(max_size=60), cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_to_line_stream_any_text(text: str, cuts: list[int]) -> None:
    data = text.encode("utf-8", "surrogatepass")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return  # lone surrogates are not UTF-8 text
    assert take_all(bs.to_line_stream(cut(data, cuts))) == reference_lines(text)


def test_to_line_stream_takes_from_the_source_only_as_lines_are_taken() -> None:
    src = s.stream()
    lines = bs.to_line_stream(src)
    p1 = src.put(b"a\nb\n")
    assert result_of(p1) is True  # the pump took the chunk, and waits to put "a"
    p2 = src.put(b"c\n")
    assert not p2.called  # backpressure: "a" and "b" not taken yet
    assert result_of(lines.take()) == "a"
    assert not p2.called
    assert result_of(lines.take()) == "b"
    assert result_of(p2) is True
    d = lines.take()
    assert result_of(d) == "c"
    last = lines.take("end")
    assert not last.called
    src.close()
    assert result_of(last) == "end"
    assert lines.drained


def test_to_line_stream_undecodable_bytes_close_it_with_the_error() -> None:
    lines = bs.to_line_stream([b"ok\n", b"\xff\xfe\n", b"more\n"])
    assert take_all(lines) == ["ok"]
    assert isinstance(lines.description()["error"], UnicodeDecodeError)


def test_to_line_stream_truncated_character_at_the_end_is_an_error() -> None:
    lines = bs.to_line_stream([b"ok\n\xc3"])
    assert take_all(lines) == ["ok"]
    assert isinstance(lines.description()["error"], UnicodeDecodeError)


def test_to_line_stream_of_a_source_closed_by_an_error() -> None:
    lines = bs.to_line_stream(failed_stream())
    assert take_all(lines) == ["ok"]  # "part" is incomplete: not emitted
    assert isinstance(lines.description()["error"], ValueError)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"ok\n", b"x" * 6, b"x" * 6, b"\nnever\n"],  # grows past the limit unterminated
        [b"ok\n" + b"x" * 11 + b"\nnever\n"],  # a complete line over it in one chunk
        [b"ok\n", b"x" * 11],  # the unterminated last line
    ],
)
def test_to_line_stream_line_over_max_line_length_is_an_error(chunks: list[bytes]) -> None:
    src = s.stream(10)
    for chunk in chunks:
        src.put(chunk)
    src.close()
    lines = bs.to_line_stream(src, max_line_length=10)
    assert take_all(lines) == ["ok"]
    assert isinstance(lines.description()["error"], ProtocolError)
    assert src.closed


def test_to_line_stream_max_line_length_bounds_and_none_lifts_it() -> None:
    assert take_all(bs.to_line_stream([b"x" * 10 + b"\r\n", b"y" * 10], max_line_length=10)) == [
        "x" * 10,
        "y" * 10,
    ]
    big = "z" * 70_000
    default = bs.to_line_stream(big + "\n")
    assert take_all(default) == [] and isinstance(default.description()["error"], ProtocolError)
    assert take_all(bs.to_line_stream(big + "\n", max_line_length=None)) == [big]
    with pytest.raises(ValueError):
        bs.to_line_stream(b"x", max_line_length=0)


def test_closing_the_line_stream_closes_the_source() -> None:
    src = s.stream()
    lines = bs.to_line_stream(src)
    lines.close()
    assert src.closed


def test_to_line_stream_unknown_encoding_raises_at_once() -> None:
    with pytest.raises(LookupError):
        bs.to_line_stream(b"x", encoding="no-such-codec")


def test_to_line_stream_long_synchronous_source_uses_no_recursion() -> None:
    lines = bs.to_line_stream([b"line\n"] * 20_000)
    assert len(take_all(lines)) == 20_000


# -- convert / register_conversion -----------------------------------------------------


def test_convert_to_each_builtin_target() -> None:
    assert bs.convert("abc", bytes) == b"abc"
    assert bs.convert(b"abc", str) == "abc"
    mv = bs.convert(bytearray(b"abc"), memoryview)
    assert isinstance(mv, memoryview) and mv.tobytes() == b"abc"
    bio = bs.convert([b"a", b"bc"], io.BytesIO)
    assert isinstance(bio, io.BytesIO) and bio.read() == b"abc"
    assert bs.convert(b"abcde", list, chunk_size=2) == [b"ab", b"cd", b"e"]
    assert bs.convert(b"abc", bytearray) == bytearray(b"abc")
    st_ = bs.convert(b"abcde", s.Stream, chunk_size=3)
    assert isinstance(st_, s.Stream)
    assert take_all(st_) == [b"abc", b"de"]
    assert bs.convert(b"\xe9", str, encoding="latin-1") == "é"


def test_convert_a_stream() -> None:
    src = s.from_iterable(["a", b"b"])
    with pytest.raises(TypeError, match="collect_bytes"):
        bs.convert(src, bytes)
    assert take_all(bs.convert(src, s.Stream)) == [b"a", b"b"]


def test_convert_unknown_target_names_it() -> None:
    with pytest.raises(TypeError, match="int"):
        bs.convert(b"x", int)


class Blob:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class SubBlob(Blob):
    pass


class Upper:
    pass


def test_register_conversion_new_pair_and_as_a_source() -> None:
    bs.register_conversion(Blob, bytes, lambda b: b.payload)
    assert bs.convert(Blob(b"xy"), bytes) == b"xy"
    assert bs.convert(SubBlob(b"sub"), bytes) == b"sub"  # base classes count
    # A conversion to a known type makes Blob a source everywhere.
    assert bs.convert(Blob(b"xy"), str) == "xy"
    assert bs.to_bytes(Blob(b"zz")) == b"zz"
    assert list(bs.to_chunks(Blob(b"abc"), 2)) == [b"ab", b"c"]
    assert result_of(bs.collect_bytes(bs.to_stream(Blob(b"q")))) == b"q"


def test_registered_conversion_wins_over_the_builtin() -> None:
    bs.register_conversion(Upper, str, lambda u: "UPPER")
    assert bs.convert(Upper(), str) == "UPPER"

    class MyBytes(bytes):
        pass

    bs.register_conversion(MyBytes, str, lambda b: "custom")
    assert bs.convert(MyBytes(b"a"), str) == "custom"
    assert bs.convert(b"a", str) == "a"


def test_register_conversion_validates_at_once() -> None:
    with pytest.raises(TypeError, match="src_type"):
        bs.register_conversion("Blob", bytes, lambda b: b)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dst_type"):
        bs.register_conversion(Blob, None, lambda b: b)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        bs.register_conversion(Blob, bytes, None)  # type: ignore[arg-type]


# -- to_input_stream ---------------------------------------------------------------------


def test_to_input_stream_of_a_synchronous_source() -> None:
    f = bs.to_input_stream(["line1\nli", b"ne2\n", b"rest"])
    assert isinstance(f, io.RawIOBase)
    assert f.readable() and not f.seekable()
    assert f.readline() == b"line1\n"
    assert f.readline() == b"line2\n"
    assert f.read(2) == b"re"
    buf = bytearray(10)
    assert f.readinto(buf) == 2 and buf[:2] == b"st"
    assert f.read() == b""
    assert f.readinto(buf) == 0


def test_to_input_stream_readline_limits_and_iteration() -> None:
    f = bs.to_input_stream(b"abcdef\nxy\n\nlast")
    assert f.readline(3) == b"abc"
    assert f.readline(0) == b""
    assert f.readline() == b"def\n"
    assert list(f) == [b"xy\n", b"\n", b"last"]


def test_to_input_stream_readall_and_bufferedreader() -> None:
    assert bs.to_input_stream(b"x" * 200_000).read() == b"x" * 200_000
    buffered = io.BufferedReader(bs.to_input_stream([b"ab", b"cd\nef"]))
    assert buffered.readline() == b"abcd\n"
    assert buffered.read() == b"ef"
    text = io.TextIOWrapper(io.BufferedReader(bs.to_input_stream([b"h\xc3", b"\xa9\n"])), encoding="utf-8")
    assert text.read() == "hé\n"


@given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"x", b"\n")),
    cuts=st.lists(st.integers(min_value=0, max_value=250), max_size=6),
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
)
def test_to_input_stream_reads_reassemble_the_data(data: bytes, cuts: list[int], sizes: list[int]) -> None:
    f = bs.to_input_stream(cut(data, cuts))
    got = []
    i = 0
    while True:
        piece = f.read(sizes[i % len(sizes)])
        if not piece:
            break
        got.append(piece)
        i += 1
    assert b"".join(got) == data
    # read(n) gives n bytes, fewer only at the end.
    assert all(len(p) == sizes[j % len(sizes)] for j, p in enumerate(got[:-1]))
    g = bs.to_input_stream(cut(data, cuts))
    pieces = []
    while piece := g.read1(sizes[0]):
        assert len(piece) <= sizes[0]
        pieces.append(piece)
    assert b"".join(pieces) == data
    assert bs.to_input_stream(cut(data, cuts)).readlines() == io.BytesIO(data).readlines()


def test_to_input_stream_closed_file_refuses_reads() -> None:
    f = bs.to_input_stream(b"abc")
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.read(1)


def test_to_input_stream_of_a_stream_on_this_thread_reads_what_is_there() -> None:
    # No reactor running: reads that data already in the stream answers work.
    src = s.stream(4)
    src.put(b"ab\n")
    src.put("cd")
    src.close()
    f = bs.to_input_stream(src)
    assert f.readline() == b"ab\n"
    assert f.read() == b"cd"


def test_to_input_stream_would_block_raises_and_withdraws_the_take() -> None:
    src = s.stream(4)
    src.put(b"ab")
    f = bs.to_input_stream(src)
    assert f.read1(10) == b"ab"
    with pytest.raises(RuntimeError, match="would have to wait"):
        f.read1(10)
    assert src.description()["pending_takes"] == 0
    src.put(b"cd")
    assert f.read1(10) == b"cd"
    src.put(b"efgh")
    with pytest.raises(RuntimeError, match="would have to wait"):
        f.read(10)  # 4 bytes are here, 10 are asked for: nothing is lost
    assert f.read(3) == b"efg"
    assert f.read1() == b"h"
    f.close()
    assert src.closed


def test_to_input_stream_of_a_stream_closed_by_an_error_raises_at_the_end() -> None:
    f = bs.to_input_stream(failed_stream())
    assert f.readline() == b"ok\n"
    with pytest.raises(ValueError, match="bad chunk"):
        f.read(10)
    assert f.read(4) == b"part"  # what was read before the error is kept
    with pytest.raises(ValueError, match="bad chunk"):
        f.read()


@pytest_twisted.inlineCallbacks
def test_to_input_stream_on_the_reactor_thread_raises_rather_than_deadlock() -> Generator[Any, Any, None]:
    from twisted.internet import reactor

    src = s.stream()
    f = bs.to_input_stream(src, reactor=reactor)
    with pytest.raises(RuntimeError, match="reactor thread"):
        f.read(1)
    assert src.description()["pending_takes"] == 0
    src.close()
    yield None


def _bounded(d: Deferred[Any], seconds: float, on_timeout: Any) -> Deferred[Any]:
    """Fail ``d`` after ``seconds`` (and run ``on_timeout`` to free a blocked thread)."""
    from twisted.internet import reactor

    def expire() -> None:
        on_timeout()
        d.cancel()

    call = reactor.callLater(seconds, expire)
    return d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])


@pytest_twisted.inlineCallbacks
def test_to_input_stream_blocks_a_thread_until_the_reactor_puts() -> Generator[Any, Any, None]:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    from twisted.internet.threads import deferToThread

    src = s.stream()
    f = bs.to_input_stream(src, reactor=reactor)
    seen: list[tuple[str, Any]] = []
    reader_thread: list[threading.Thread] = []

    def read_in_thread() -> list[bytes]:
        reader_thread.append(threading.current_thread())
        out = [f.readline(), f.read(3)]  # read(3) waits for a third byte
        seen.append(("read", out[-1]))
        out.append(f.read())
        return out

    d = _bounded(deferToThread(read_in_thread), 10, src.close)
    pieces = [b"hel", b"lo\nab", "cdef", b"", b"gh"]
    for piece in pieces:
        yield deferLater(reactor, 0.01, lambda: None)
        seen.append(("put", piece))  # before the put: the reader cannot see it earlier
        ok = yield src.put(piece)
        assert ok is True
    src.close()
    result = yield d
    assert result == [b"hello\n", b"abc", b"defgh"]
    assert reader_thread[0] is not threading.current_thread()
    # read(3) returned only after "cdef" was put from the reactor thread.
    assert seen.index(("put", "cdef")) < seen.index(("read", b"abc"))


@pytest_twisted.inlineCallbacks
def test_to_input_stream_close_from_the_thread_closes_the_stream() -> Generator[Any, Any, None]:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    from twisted.internet.threads import deferToThread

    src = s.stream(1)
    src.put(b"first")
    f = bs.to_input_stream(src, reactor=reactor)

    def read_one_then_close() -> bytes:
        data = f.read1(100)
        f.close()
        return data

    data = yield _bounded(deferToThread(read_one_then_close), 10, src.close)
    assert data == b"first"
    yield deferLater(reactor, 0, lambda: None)  # let the callFromThread run
    assert src.closed


# -- print_bytes / compare_bytes -------------------------------------------------------


def test_print_bytes_like_hexdump_c(capsys: pytest.CaptureFixture[str]) -> None:
    bs.print_bytes(b"hello world\n")
    assert capsys.readouterr().out == (
        "00000000  68 65 6c 6c 6f 20 77 6f  72 6c 64 0a              |hello world.|\n0000000c\n"
    )


def test_print_bytes_repeats_and_non_printables(capsys: pytest.CaptureFixture[str]) -> None:
    bs.print_bytes(b"a" * 64 + b"b" * 16 + b"a" * 16 + bytes(range(20)))
    assert capsys.readouterr().out == (
        "00000000  61 61 61 61 61 61 61 61  61 61 61 61 61 61 61 61  |aaaaaaaaaaaaaaaa|\n"
        "*\n"
        "00000040  62 62 62 62 62 62 62 62  62 62 62 62 62 62 62 62  |bbbbbbbbbbbbbbbb|\n"
        "00000050  61 61 61 61 61 61 61 61  61 61 61 61 61 61 61 61  |aaaaaaaaaaaaaaaa|\n"
        "00000060  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|\n"
        "00000070  10 11 12 13                                       |....|\n"
        "00000074\n"
    )


def test_print_bytes_of_nothing_and_of_str(capsys: pytest.CaptureFixture[str]) -> None:
    bs.print_bytes(b"")
    assert capsys.readouterr().out == ""
    bs.print_bytes("é")
    assert capsys.readouterr().out == (
        "00000000  c3 a9                                             |..|\n00000002\n"
    )
    with pytest.raises(TypeError, match="collect_bytes"):
        bs.print_bytes(s.stream())


HEXDUMP = shutil.which("hexdump")


@pytest.mark.skipif(
    HEXDUMP is None, reason="no hexdump binary to compare with (golden tests above still run)"
)
@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)),
        b"\x00" * 100,
        b"12345678",
        b"123456789",
        b"x" * 32 + b"y" * 15,
        b"abc" * 40,
        b"\x7f\x80 ~",
    ],
)
def test_print_bytes_matches_the_real_hexdump(data: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    assert HEXDUMP is not None
    expected = subprocess.run([HEXDUMP, "-C"], input=data, capture_output=True, check=True, timeout=10).stdout
    bs.print_bytes(data)
    assert capsys.readouterr().out == expected.decode("ascii")


def test_compare_bytes() -> None:
    assert bs.compare_bytes(b"a", b"b") == -1
    assert bs.compare_bytes(b"b", b"a") == 1
    assert bs.compare_bytes(b"same", bytearray(b"same")) == 0
    assert bs.compare_bytes(b"\xff", b"\x01") == 1  # unsigned
    assert bs.compare_bytes(b"ab", b"abc") == -1  # a prefix first
    assert bs.compare_bytes(b"", b"") == 0
    assert bs.compare_bytes("é", b"\xc3\xa9") == 0
    assert bs.compare_bytes(memoryview(b"\x80"), b"\x7f") == 1


@given(st.binary(max_size=8), st.binary(max_size=8))
def test_compare_bytes_is_python_bytes_order(a: bytes, b: bytes) -> None:
    expected = -1 if a < b else 1 if a > b else 0
    assert bs.compare_bytes(a, b) == expected
    assert bs.compare_bytes(b, a) == -expected


def _iter_only(data: bytes) -> Iterator[bytes]:
    yield data


def test_every_function_accepts_a_plain_iterator() -> None:
    assert bs.to_bytes(_iter_only(b"it")) == b"it"
    assert bs.compare_bytes(_iter_only(b"a"), b"a") == 0
