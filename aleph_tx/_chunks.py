"""Chunks of bytes, written once (pure: no Twisted, no reactor).

- :func:`to_chunk`: one chunk (``bytes``, ``bytearray``, ``memoryview`` or ``str``)
  as ``bytes``; every body, stream and transport converts with it.
- :func:`file_chunks`, :func:`path_chunks`: a file read one chunk at a time
  (for bodies and byte streams; each ``read`` is one chunk, so a large file never
  holds the reactor for long), :func:`closer`.
- :func:`error_of`: the error that closed a stream of chunks (what was read is
  incomplete).
- :class:`ChunkSource`: where a body's chunks come from (an iterator, an async
  iterator, or anything with a Manifold ``take``), its length when known, and how
  to release it. :class:`aleph_tx._adapter.Pump` sends one to a transport.
"""

from __future__ import annotations

import enum
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ChunkSource", "SourceKind", "closer", "error_of", "file_chunks", "path_chunks", "to_chunk"]


def to_chunk(chunk: Any, encoding: str = "utf-8") -> bytes:
    """``chunk`` as ``bytes`` (``str`` encoded with ``encoding``).

    :raises TypeError: for anything but ``str`` and bytes-likes (named in the message).
    """
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, str):
        return chunk.encode(encoding)
    if isinstance(chunk, memoryview):
        return chunk.tobytes()
    if isinstance(chunk, (bytes, bytearray)):
        return bytes(chunk)
    raise TypeError(
        f"a chunk must be bytes, bytearray, memoryview or str, not an object of type "
        f"{type(chunk).__qualname__!r} ({chunk!r:.80})"
    )


class SourceKind(enum.Enum):
    """How a :class:`ChunkSource` yields its chunks."""

    ITERATOR = "iterator"  # next(source), on the reactor thread: one chunk per call
    ASYNC_ITERATOR = "async_iterator"  # await source.__anext__()
    STREAM = "stream"  # source.take(default) -> Deferred (a Manifold stream)


class ChunkSource:
    """A body sent chunk by chunk.

    :ivar kind: a :class:`SourceKind`.
    :ivar source: the iterator, async iterator or stream.
    :ivar length: the body length when known in advance (a path's size), else ``None``.
    :ivar on_close: called once when the body is finished or abandoned (closes files).
    """

    __slots__ = ("kind", "length", "on_close", "source")

    def __init__(
        self,
        kind: SourceKind,
        source: Any,
        length: int | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        self.kind = kind
        self.source = source
        self.length = length
        self.on_close = on_close

    def close(self) -> None:
        """Release the source: close the stream, generator or file. Idempotent."""
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

    def __repr__(self) -> str:
        return f"<ChunkSource {self.kind.value} length={self.length!r} {self.source!r}>"


def error_of(source: Any) -> BaseException | None:
    """The error that closed a stream (its ``description()["error"]``), if any.

    A stream closed by an error (a derived stream whose function raised, a
    connection lost uncleanly) ends early: what was read from it is incomplete.
    """
    try:
        err = source.description().get("error")
    except Exception:
        return None
    return err if isinstance(err, BaseException) else None


def file_chunks(f: Any, chunk_size: int, encoding: str | None = None) -> Iterator[bytes]:
    """Chunks of exactly ``chunk_size`` bytes (the last shorter), even from short reads.

    :param encoding: for a text file (``read()`` gives ``str``); ``None``: a text
        file is refused with :class:`TypeError`.
    """
    while True:
        parts: list[bytes] = []
        got = 0
        while got < chunk_size:
            data = f.read(chunk_size - got)
            if data is None:
                raise BlockingIOError(f"{f!r} is non-blocking and has no data ready")
            if isinstance(data, str):
                if encoding is None:
                    raise TypeError(
                        f"cannot read bytes from {f!r}: its read() returns str; open it in binary mode"
                    )
                data = data.encode(encoding)
            if not data:
                break
            parts.append(bytes(data))
            got += len(data)
        if got:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
        if got < chunk_size:
            return


def path_chunks(path: pathlib.PurePath, chunk_size: int) -> Iterator[bytes]:
    """A file's chunks (as :func:`file_chunks`), opened at the first one and closed at
    the end, or when the generator is closed."""
    with open(path, "rb") as f:
        yield from file_chunks(f, chunk_size)


def closer(obj: Any) -> Callable[[], None]:
    """A function closing ``obj`` if it has a ``close()`` (a generator, a file)."""

    def close() -> None:
        close_it = getattr(obj, "close", None)
        if close_it is not None:
            close_it()

    return close
