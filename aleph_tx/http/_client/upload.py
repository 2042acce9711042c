"""Request bodies: what ``body``, ``form_params``, ``json`` and ``multipart`` send.

:class:`Replayable` wraps the option's value; :meth:`Replayable.source` gives the
bytes (sent with ``Content-Length``) or a :class:`~aleph_tx._chunks.ChunkSource`
that the connection sends with an :class:`~aleph_tx._pump.Pump`: taken only
while the transport accepts more, a file read one chunk at a time, so a file is
never held whole in memory. :func:`encode_multipart` streams ``multipart/form-data``
(RFC 7578) the same way.
"""

from __future__ import annotations

import io
import json as jsonlib
import os
import pathlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

from aleph_tx._chunks import ChunkSource, SourceKind, closer, file_chunks, path_chunks
from aleph_tx.stream import SplicedStream, Stream

__all__ = ["Replayable", "encode_form", "encode_json", "encode_multipart", "make_body"]

#: Read size of files and paths, and the largest decoded piece put into a stream.
CHUNK = 65536


def is_stream(x: Any) -> bool:
    """``True`` for an aleph_tx stream (a source of chunks)."""
    return isinstance(x, (Stream, SplicedStream))


class Replayable:
    """A request body that may be sent again (redirects 307/308, a stale-connection retry).

    :ivar content_type: a default ``content-type`` for the body, or ``None``.
    """

    def __init__(
        self,
        body: Any,
        content_type: str | None = None,
        make_source: Callable[[], tuple[bytes | ChunkSource, int | None]] | None = None,
        replayable: bool = True,
    ) -> None:
        self.content_type = content_type
        self._body = body
        self._make_source = make_source
        self._replayable = replayable
        self._file_pos: int | None = None
        self._used = False
        if make_source is not None:
            return
        if isinstance(body, (bytes, bytearray, memoryview)):
            self._body = bytes(body)
        elif isinstance(body, str):
            self._body = body.encode("utf-8")
        elif isinstance(body, pathlib.Path):
            pass
        elif hasattr(body, "read"):
            try:
                self._file_pos = body.tell() if body.seekable() else None
            except (OSError, AttributeError, ValueError):
                self._file_pos = None
        elif is_stream(body) or (isinstance(body, Iterable) and not isinstance(body, dict)):
            pass
        else:
            raise TypeError(
                "body must be bytes-like, str, a file, a pathlib.Path, an iterable of "
                f"chunks or a Stream, not {body!r}"
            )

    @property
    def replayable(self) -> bool:
        """Whether :meth:`source` can be called again after the first time."""
        b = self._body
        return (
            not self._used
            or (self._make_source is not None and self._replayable)
            or isinstance(b, (bytes, pathlib.Path))
            or (hasattr(b, "read") and self._file_pos is not None)
        )

    def source(self) -> tuple[bytes | ChunkSource, int | None]:
        """The body to send and its length (``None``: unknown, sent chunked).

        :raises RuntimeError: when a one-shot body (stream, iterator) was already sent.
        """
        if not self.replayable:
            raise RuntimeError(f"the request body {self._body!r} cannot be sent twice")
        first = not self._used
        self._used = True
        b = self._body
        if self._make_source is not None:
            return self._make_source()
        if isinstance(b, bytes):
            return b, len(b)
        if isinstance(b, pathlib.Path):
            size = os.stat(b).st_size
            chunks = path_chunks(b, CHUNK)
            return ChunkSource(SourceKind.ITERATOR, chunks, size, closer(chunks)), size
        if hasattr(b, "read"):
            length: int | None = None
            if self._file_pos is not None:
                if not first:
                    b.seek(self._file_pos)
                end = b.seek(0, io.SEEK_END)
                b.seek(self._file_pos)
                length = end - self._file_pos
            return ChunkSource(SourceKind.ITERATOR, file_chunks(b, CHUNK), length), length
        if is_stream(b):
            return ChunkSource(SourceKind.STREAM, b, None, b.close), None
        it = iter(b)
        return ChunkSource(SourceKind.ITERATOR, it, None, closer(it)), None


def make_body(body: Any) -> Replayable:
    """Wrap a ``body`` option value; raises ``TypeError`` for an unsupported kind."""
    return Replayable(body)


def encode_form(params: Any) -> Replayable:
    """``form_params`` as ``application/x-www-form-urlencoded`` (lists repeat the key)."""
    items = params.items() if hasattr(params, "items") else params
    data = urlencode(list(items), doseq=True).encode("ascii")
    return Replayable(data, "application/x-www-form-urlencoded")


def encode_json(value: Any) -> Replayable:
    """The ``json`` option: UTF-8 JSON with ``application/json``."""
    data = jsonlib.dumps(value, separators=(",", ":")).encode("utf-8")
    return Replayable(data, "application/json")


# -- multipart/form-data (RFC 7578) ---------------------------------------------------------

#: WHATWG HTML's multipart/form-data encoding of names and filenames (what browsers
#: send, and what RFC 7578 §4.2 defers to): UTF-8 as is, with LF, CR and '"'
#: percent-encoded; never RFC 5987's ``filename*`` (RFC 7578 §4.2 forbids it).
_NAME_ESCAPES = str.maketrans({"\n": "%0A", "\r": "%0D", '"': "%22"})
_PART_KEYS = frozenset({"name", "content", "filename", "content_type"})


def _part_content(content: Any) -> tuple[Any, int | None, int | None]:
    """A part's content as ``(bytes | Path | file, length or None, start position of a file)``."""
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        return data, len(data), None
    if isinstance(content, str):
        data = content.encode("utf-8")
        return data, len(data), None
    if isinstance(content, pathlib.Path):
        return content, None, None  # its size is taken when the body is sent
    if hasattr(content, "read"):
        if isinstance(content, io.TextIOBase):
            return content, None, None  # str chunks: their length in bytes is unknown
        try:
            pos = content.tell() if content.seekable() else None
        except (OSError, AttributeError, ValueError):
            pos = None
        return content, None, pos
    raise TypeError(f"a multipart content must be bytes-like, str, a file or a Path, not {content!r}")


def encode_multipart(parts: Any, boundary: str | None = None) -> Replayable:
    """``multipart/form-data`` (RFC 7578) from dicts ``name``, ``content``, ``filename``,
    ``content_type``; file and ``Path`` contents are streamed, never read whole.

    The body has a ``Content-Length`` when every content's size is known (bytes,
    ``str``, ``Path``, seekable files), else it is sent chunked; it can be sent again
    (a redirect, a retry) unless a content is an unseekable file.

    :raises TypeError: for a malformed part.
    """
    if not isinstance(parts, (list, tuple)):
        raise TypeError(f"multipart must be a list of dicts, not {parts!r}")
    boundary = boundary or uuid.uuid4().hex
    prepared: list[tuple[bytes, Any, int | None, int | None]] = []
    for part in parts:
        if not isinstance(part, dict) or "name" not in part or "content" not in part:
            raise TypeError(f"a multipart part must be a dict with name and content, not {part!r}")
        unknown = set(part) - _PART_KEYS
        if unknown:
            raise TypeError(f"unknown multipart part keys {sorted(unknown)!r}")
        content, length, pos = _part_content(part["content"])
        filename = part.get("filename")
        if filename is None and isinstance(content, pathlib.Path):
            filename = content.name
        disposition = f'form-data; name="{str(part["name"]).translate(_NAME_ESCAPES)}"'
        if filename is not None:
            disposition += f'; filename="{str(filename).translate(_NAME_ESCAPES)}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        ctype = part.get("content_type")
        if ctype is None and filename is not None:
            ctype = "application/octet-stream"
        if ctype is not None:
            if any(c in str(ctype) for c in "\r\n\0"):
                raise ValueError(f"a multipart content_type contains CR, LF or NUL: {ctype!r}")
            head += f"Content-Type: {ctype}\r\n"
        prepared.append(((head + "\r\n").encode("utf-8"), content, length, pos))
    end = f"--{boundary}--\r\n".encode("ascii")
    replayable = all(not hasattr(content, "read") or pos is not None for _, content, _, pos in prepared)

    def make_source() -> tuple[bytes | ChunkSource, int | None]:
        total: int | None = len(end)
        for head, content, length, pos in prepared:
            if isinstance(content, pathlib.Path):
                length = os.stat(content).st_size
            elif pos is not None:
                content.seek(0, io.SEEK_END)
                length = content.tell() - pos
                content.seek(pos)
            if total is not None:
                total = None if length is None else total + len(head) + length + 2
        if all(isinstance(content, bytes) for _, content, _, _ in prepared):
            return b"".join([b"".join((h, c, b"\r\n")) for h, c, _, _ in prepared] + [end]), total
        chunks = _multipart_chunks(prepared, end)
        return ChunkSource(SourceKind.ITERATOR, chunks, total, closer(chunks)), total

    return Replayable(None, f"multipart/form-data; boundary={boundary}", make_source, replayable)


def _multipart_chunks(prepared: list[tuple[bytes, Any, int | None, int | None]], end: bytes) -> Iterator[Any]:
    for head, content, _, _ in prepared:
        yield head
        if isinstance(content, bytes):
            yield content
        elif isinstance(content, pathlib.Path):
            yield from path_chunks(content, CHUNK)
        else:
            yield from file_chunks(content, CHUNK)
        yield b"\r\n"
    yield end
