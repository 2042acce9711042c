"""Response body coercion (pure): every body type a handler may return, to bytes or chunks.

:func:`coerce_body` answers one of three things:

- ``bytes``: the whole body is here, its length is known (``None``, ``str``,
  bytes-likes);
- a :class:`~aleph_tx._chunks.ChunkSource`: chunks to send as they come, with
  ``length`` known (``pathlib.Path``) or ``None`` (file objects, iterables, async
  iterables, streams: anything with a Manifold ``take``);
- an awaitable (a Deferred, a coroutine, a future): the front waits for it and
  coerces its result again.
"""

from __future__ import annotations

import inspect
import os
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aleph_tx._chunks import ChunkSource, SourceKind, closer, file_chunks, path_chunks

__all__ = ["CHUNK_SIZE", "coerce_body"]

#: Read size for files and paths: 64 KiB, Twisted's socket read size too.
CHUNK_SIZE = 65536


def _aclose(obj: Any) -> Callable[[], None]:
    def close() -> None:
        aclose = getattr(obj, "aclose", None)
        if aclose is None:
            return
        result = aclose()
        if inspect.iscoroutine(result):
            # an async generator's aclose() finishes at once unless it awaits in a
            # finally block: run it one step; what it awaits is not waited for
            try:
                result.send(None)
            except StopIteration:
                pass
            except Exception:  # errors while closing an abandoned body do not matter
                pass
            finally:
                result.close()

    return close


def coerce_body(body: Any, chunk_size: int = CHUNK_SIZE) -> bytes | ChunkSource | Awaitable[Any]:
    """Coerce a response ``body`` (any type a handler may return) for sending.

    :param body: the ``body`` of a response dict.
    :param chunk_size: read size for files and paths.
    :returns: ``bytes``, a :class:`ChunkSource` or an awaitable of a body.
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
    if inspect.isawaitable(body):
        return body
    if callable(getattr(body, "take", None)) and callable(getattr(body, "close", None)):
        # a Manifold stream (duck-typed: this module imports no stream code)
        return ChunkSource(SourceKind.STREAM, body, None, body.close)
    if isinstance(body, pathlib.PurePath):
        path = pathlib.Path(body)
        size = os.stat(path).st_size
        if not path.is_file():
            raise ValueError(f"a pathlib.Path body must be a regular file, not {body!r}")
        chunks = path_chunks(path, chunk_size)
        return ChunkSource(SourceKind.ITERATOR, chunks, size, closer(chunks))  # closing it closes the file
    if hasattr(body, "read"):
        return ChunkSource(SourceKind.ITERATOR, file_chunks(body, chunk_size, "utf-8"), None, closer(body))
    if hasattr(body, "__aiter__"):
        iterator: AsyncIterator[Any] = body.__aiter__()
        return ChunkSource(SourceKind.ASYNC_ITERATOR, iterator, None, _aclose(iterator))
    if isinstance(body, (dict, set, frozenset)) or not hasattr(body, "__iter__"):
        raise TypeError(f"unsupported response body {body!r}")
    it = iter(body)
    return ChunkSource(SourceKind.ITERATOR, it, None, closer(it))
