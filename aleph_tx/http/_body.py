"""Response body coercion (pure): every body type of API.md to bytes or a chunk source.

:func:`coerce_body` answers one of three things:

- ``bytes``: the whole body is here, its length is known (``None``, ``str``,
  bytes-likes);
- a :class:`ChunkSource`: chunks to send as they come, with ``length`` known
  (``pathlib.Path``) or ``None`` (file objects, iterables, async iterables,
  :class:`~aleph_tx.stream.Stream`);
- a :class:`~twisted.internet.defer.Deferred` (from a Deferred or a coroutine):
  the front waits for it and coerces its result again.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import zlib
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

from twisted.internet.defer import Deferred

from aleph_tx._chunks import ChunkSource, SourceKind, to_chunk
from aleph_tx.stream import Stream

__all__ = ["CHUNK_SIZE", "Gzipper", "accepts_gzip", "coerce_body"]

#: Read size for files and paths: 64 KiB, Twisted's socket read size too.
CHUNK_SIZE = 65536


def _read_file(f: Any, chunk_size: int) -> Iterator[bytes]:
    while True:
        data = f.read(chunk_size)
        if not data:
            return
        yield to_chunk(data)


def _path_chunks(path: pathlib.Path, box: list[Any], chunk_size: int) -> Generator[bytes, None, None]:
    with open(path, "rb") as f:
        box.append(f)
        yield from _read_file(f, chunk_size)


def _close_quietly(obj: Any) -> Callable[[], None]:
    def close() -> None:
        closer = getattr(obj, "close", None)
        if closer is not None:
            closer()

    return close


def _aclose(obj: Any) -> Callable[[], None]:
    def close() -> None:
        aclose = getattr(obj, "aclose", None)
        if aclose is None:
            return
        result = aclose()
        if inspect.iscoroutine(result):
            Deferred.fromCoroutine(result).addErrback(lambda _: None)

    return close


def coerce_body(body: Any, chunk_size: int = CHUNK_SIZE) -> bytes | ChunkSource | Deferred[Any]:
    """Coerce a response ``body`` (any type of API.md) for sending.

    :param body: the ``body`` of a response dict.
    :param chunk_size: read size for files and paths.
    :returns: ``bytes``, a :class:`ChunkSource` or a Deferred of a body.
    :raises TypeError: for a body of no supported type (named in the message).
    :raises OSError: for a ``pathlib.Path`` that cannot be read.
    """
    if body is None:
        return b""
    if type(body) is bytes:
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, Deferred):
        return body
    if inspect.iscoroutine(body):
        return Deferred.fromCoroutine(body)
    if isinstance(body, Stream):
        return ChunkSource(SourceKind.STREAM, body, None, body.close)
    if isinstance(body, pathlib.PurePath):
        path = pathlib.Path(body)
        size = os.stat(path).st_size
        if not path.is_file():
            raise ValueError(f"a pathlib.Path body must be a regular file, not {body!r}")
        box: list[Any] = []

        def close_path() -> None:
            gen.close()  # a generator
            for f in box:
                f.close()

        gen: Generator[bytes, None, None] = _path_chunks(path, box, chunk_size)
        return ChunkSource(SourceKind.ITERATOR, gen, size, close_path)
    if hasattr(body, "read"):
        return ChunkSource(SourceKind.ITERATOR, _read_file(body, chunk_size), None, _close_quietly(body))
    if hasattr(body, "__aiter__"):
        iterator: AsyncIterator[Any] = body.__aiter__()
        return ChunkSource(SourceKind.ASYNC_ITERATOR, iterator, None, _aclose(iterator))
    if isinstance(body, (dict, set, frozenset)) or not hasattr(body, "__iter__"):
        raise TypeError(f"unsupported response body {body!r}")
    it = iter(body)
    return ChunkSource(SourceKind.ITERATOR, it, None, _close_quietly(it))


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (RFC 9110 §12.5.3; ``q=0`` refuses)."""
    if not accept_encoding:
        return False
    star = False
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return star


class Gzipper:
    """Streaming gzip: every chunk is flushed (``Z_SYNC_FLUSH``) so events are not held back."""

    __slots__ = ("_z",)

    def __init__(self) -> None:
        self._z = zlib.compressobj(6, zlib.DEFLATED, 31)

    def chunk(self, data: bytes) -> bytes:
        """Compressed bytes for ``data``, flushed."""
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        """The end of the gzip member."""
        return self._z.flush(zlib.Z_FINISH)

    @staticmethod
    def whole(data: bytes) -> bytes:
        """``data`` gzipped in one go."""
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        return z.compress(data) + z.flush()
