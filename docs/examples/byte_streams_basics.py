"""aleph_tx.byte_streams: bytes in any shape, converted.

Run it with ``python docs/examples/byte_streams_basics.py`` (no reactor needed).
"""

import io
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

import aleph_tx.byte_streams as bs
from aleph_tx import stream as s


def now(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (raises its error if it failed)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "this Deferred has not fired yet"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


# Sources that are already here convert synchronously.
assert bs.to_bytes("héllo") == "héllo".encode()
assert bs.to_bytes([b"ab", bytearray(b"cd"), memoryview(b"ef")]) == b"abcdef"
assert bs.to_bytes(io.BytesIO(b"from a file")) == b"from a file"
assert bs.to_str(b"caf\xc3\xa9") == "café"
assert bs.to_str("café".encode("latin-1"), encoding="latin-1") == "café"

# Chunks of exactly chunk_size bytes, the last one shorter.
assert list(bs.to_chunks(b"abcdefg", chunk_size=3)) == [b"abc", b"def", b"g"]

# Streams: to_stream makes one; collect_bytes / collect_str read any source.
st = bs.to_stream(b"0123456789", chunk_size=4)
assert now(s.collect(st)) == [b"0123", b"4567", b"89"]
assert now(bs.collect_bytes(bs.to_stream(b"round trip", chunk_size=3))) == b"round trip"
assert now(bs.collect_str(s.from_iterable([b"caf", b"\xc3", b"\xa9"]))) == "café"

# A stream is not "already here": to_bytes refuses it and points at collect_bytes.
try:
    bs.to_bytes(s.from_iterable([b"x"]))
except TypeError as exc:
    assert "collect_bytes" in str(exc)
else:
    raise AssertionError("to_bytes(stream) should raise TypeError")

# Lines across chunk borders: "\n" and "\r\n" end a line, a lone "\r" is text.
chunks = s.from_iterable([b"one\r", b"\ntw", b"o\n\nlast\rline"])
assert now(s.collect(bs.to_line_stream(chunks))) == ["one", "two", "", "last\rline"]

# convert to a target type; compare like Python's bytes order.
assert bs.convert("abc", bytes) == b"abc"
assert bs.convert(b"abc", str) == "abc"
assert bs.convert(b"abc", io.BytesIO).read() == b"abc"
assert bs.compare_bytes(b"a", b"b") == -1
assert bs.compare_bytes(b"\xff", b"\x00") == 1
assert bs.compare_bytes(b"same", bytearray(b"same")) == 0

print("byte_streams_basics: ok")
