"""ContentDecoder: gzip and deflate bodies decoded in bounded pieces, whatever the chunking."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aleph_tx.errors import ProtocolError
from aleph_tx.http._ring.coding import ContentDecoder, decoder_for


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # RFC 9110: zlib-wrapped
    "raw-deflate": _raw_deflate,  # what some servers send as "deflate"
}


def _decode(coding: str, encoded: bytes, cuts: list[int], piece: int) -> list[bytes]:
    d = decoder_for("deflate" if coding == "raw-deflate" else coding)
    assert d is not None
    out: list[bytes] = []
    start = 0
    for end in [*sorted(c % (len(encoded) + 1) for c in cuts), len(encoded)]:
        d.feed(encoded[start:end])
        start = max(start, end)
        while chunk := d.read(piece):
            out.append(chunk)
    d.close()
    return out


@given(
    coding=st.sampled_from(sorted(ENCODERS)),
    data=st.binary(max_size=3000)
    | st.builds(lambda n, b: b * n, st.integers(0, 200_000), st.binary(min_size=1, max_size=3)),
    cuts=st.lists(st.integers(0, 10**6), max_size=8),
    piece=st.integers(1, 70_000),
)
def test_any_chunking_decodes_to_the_original_in_bounded_pieces(
    coding: str, data: bytes, cuts: list[int], piece: int
) -> None:
    out = _decode(coding, ENCODERS[coding](data), cuts, piece)
    assert b"".join(out) == data
    assert all(0 < len(p) <= piece for p in out)


def test_read_without_limit_returns_everything_there_is() -> None:
    d = ContentDecoder("gzip")
    d.feed(gzip.compress(b"x" * 1_000_000))
    assert d.read() == b"x" * 1_000_000
    assert d.read() == b""
    d.close()


def test_a_thousandfold_expansion_is_handed_out_64k_at_a_time() -> None:
    d = ContentDecoder("gzip")
    d.feed(gzip.compress(bytes(16 * 2**20)))  # 16 KiB on the wire
    first = d.read(65536)
    assert first == bytes(65536)
    assert sum(len(p) for p in iter(lambda: d.read(65536), b"")) == 16 * 2**20 - 65536


def test_gzip_members_are_concatenated_and_trailing_garbage_is_dropped() -> None:
    d = ContentDecoder("gzip")
    d.feed(gzip.compress(b"ab") + gzip.compress(b"cd"))
    d.feed(b"\0\0 not gzip")
    assert d.read() == b"abcd"
    d.feed(gzip.compress(b"ignored too"))
    assert d.read() == b""
    d.close()


def test_bytes_after_a_deflate_stream_are_ignored() -> None:
    d = ContentDecoder("deflate")
    d.feed(zlib.compress(b"hello") + b"junk")
    assert d.read() == b"hello"
    d.close()


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_malformed_input_raises_protocol_error(coding: str) -> None:
    d = ContentDecoder(coding)
    d.feed(b"\x1f\x8b\x08 this is not gzip" if coding == "gzip" else b"\x78\x9c\xff\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match=f"malformed {coding}"):
        d.read()


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_truncated_body_raises_at_close(coding: str) -> None:
    d = ContentDecoder(coding)
    encoded = ENCODERS[coding](bytes(range(256)) * 100)
    d.feed(encoded[: len(encoded) // 2])
    d.read()
    with pytest.raises(ProtocolError, match=f"truncated {coding}"):
        d.close()


def test_a_single_byte_of_deflate_is_truncated() -> None:
    d = ContentDecoder("deflate")
    d.feed(b"\x78")
    assert d.read() == b""  # two bytes tell zlib from raw deflate
    with pytest.raises(ProtocolError):
        d.close()


def test_an_empty_body_is_fine() -> None:
    for coding in ("gzip", "deflate"):
        d = ContentDecoder(coding)
        d.feed(b"")
        assert d.read() == b""
        d.close()


@pytest.mark.parametrize(
    ("header", "decoded"),
    [
        ("gzip", "gzip"),
        (" GZip ", "gzip"),
        ("x-gzip", "x-gzip"),
        ("deflate", "deflate"),
        ("br", None),
        ("identity", None),
        ("gzip, gzip", None),
        ("", None),
        (None, None),
    ],
)
def test_decoder_for(header: str | None, decoded: str | None) -> None:
    d = decoder_for(header)
    assert (d.coding if d is not None else None) == decoded
