"""Request bodies as chunk sources, and the two ways a response body is read.

Request side: :class:`Replayable` wraps the ``body``, ``form_params``, ``json`` or
``multipart`` option; :meth:`Replayable.source` gives the bytes (sent with
``Content-Length``) or a :class:`~aleph_tx._chunks.ChunkSource` that the connection
sends with an :class:`~aleph_tx._adapter.Pump`: taken only while the transport
accepts more, a file read one chunk at a time.

Response side, two :class:`~aleph_tx.http._client.connection.BodySink` kinds:
:class:`BodyCollector` gathers the body into ``bytes``; :class:`BodyStreamer` puts
each chunk into a ``Stream`` through an :class:`~aleph_tx._adapter.Receiver`, which
stops the connection's reading while a put waits, so a slow reader never makes
memory grow. Both decode gzip and deflate (:mod:`aleph_tx.http._ring.coding`) and
enforce ``read_timeout`` (the longest stall of the network, not of the reader).
"""

from __future__ import annotations

import io
import json as jsonlib
import os
import pathlib
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from aleph_tx._adapter import Receiver
from aleph_tx._chunks import ChunkSource, SourceKind
from aleph_tx._time import Timer
from aleph_tx.errors import ProtocolError, ReadTimeout
from aleph_tx.http._ring.coding import ContentDecoder
from aleph_tx.stream import SplicedStream, Stream

__all__ = [
    "BodyCollector",
    "BodySink",
    "BodyStreamer",
    "Replayable",
    "ResponseHandle",
    "encode_form",
    "encode_json",
    "encode_multipart",
    "make_body",
]

#: Read size of files and paths, and the largest decoded piece put into a stream.
CHUNK = 65536


def is_stream(x: Any) -> bool:
    """``True`` for an aleph_tx stream (a source of chunks)."""
    return isinstance(x, (Stream, SplicedStream))


def file_chunks(f: Any, size: int = CHUNK) -> Iterator[bytes]:
    """A file's chunks from its current position (one ``read`` per chunk)."""
    while True:
        chunk = f.read(size)
        if not chunk:
            return
        yield chunk


def path_chunks(path: pathlib.Path, size: int = CHUNK) -> Iterator[bytes]:
    """A file's chunks, opened at the first one and closed at the end (or when closed)."""
    with path.open("rb") as f:
        yield from file_chunks(f, size)


def _closer(it: Any) -> Callable[[], None]:
    def close() -> None:
        close_it = getattr(it, "close", None)
        if close_it is not None:
            close_it()

    return close


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
            chunks = path_chunks(b)
            return ChunkSource(SourceKind.ITERATOR, chunks, size, _closer(chunks)), size
        if hasattr(b, "read"):
            length: int | None = None
            if self._file_pos is not None:
                if not first:
                    b.seek(self._file_pos)
                end = b.seek(0, io.SEEK_END)
                b.seek(self._file_pos)
                length = end - self._file_pos
            return ChunkSource(SourceKind.ITERATOR, file_chunks(b), length), length
        if is_stream(b):
            return ChunkSource(SourceKind.STREAM, b, None, b.close), None
        it = iter(b)
        return ChunkSource(SourceKind.ITERATOR, it, None, _closer(it)), None


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
        return ChunkSource(SourceKind.ITERATOR, chunks, total, _closer(chunks)), total

    return Replayable(None, f"multipart/form-data; boundary={boundary}", make_source, replayable)


def _multipart_chunks(prepared: list[tuple[bytes, Any, int | None, int | None]], end: bytes) -> Iterator[Any]:
    for head, content, _, _ in prepared:
        yield head
        if isinstance(content, bytes):
            yield content
        elif isinstance(content, pathlib.Path):
            yield from path_chunks(content)
        else:
            yield from file_chunks(content)
        yield b"\r\n"
    yield end


class BodySink(typing.Protocol):
    """Where a response body goes (the client's collector or stream)."""

    def body_data(self, data: bytes) -> None:
        """A chunk of the body (as it came, before any content decoding)."""

    def body_ending(self) -> BaseException | None:
        """The body is complete: is anything wrong with it (a truncated gzip body)?

        Called before the connection is handed back, without running user code:
        an error keeps the connection from being reused and fails the body.
        """

    def body_done(self) -> None:
        """The body ended completely (the connection is back in the pool)."""

    def body_failed(self, reason: BaseException) -> None:
        """The body ended badly (connection lost, protocol error, cancel, timeout)."""


class ResponseHandle(typing.Protocol):
    """One request's response, on any connection kind.

    :ivar head: fires with the handle once ``status`` and ``headers`` are known.
    :ivar status: the final status code.
    :ivar headers: ``(lower-case name, value)`` pairs, in order, repeats kept.
    :ivar retryable: the request may be sent again on a new connection (a reused
        connection closed by the peer before any byte of the response).
    """

    head: Deferred[Any]
    status: int
    headers: list[tuple[str, str]]
    retryable: bool

    def deliver_body(self, sink: BodySink) -> None:
        """Hand the body (what arrived so far, then the rest) to ``sink``."""

    def pause_reading(self) -> None:
        """Stop reading this response's body from the network."""

    def resume_reading(self) -> None:
        """Read on."""

    def abort(self, reason: BaseException | None = None) -> None:
        """Give up: fail with ``reason`` (default :class:`CancelledError`); the
        connection (HTTP/1.1) or the stream (HTTP/2) is cut."""


def _stalled() -> ReadTimeout:
    return ReadTimeout("reading the response body stalled past read_timeout")


class BodyCollector:
    """Collects a response body (a ``BodySink``); :attr:`done` fires with the ``bytes``.

    :param handle: the response.
    :param read_timeout: the longest stall allowed between two chunks.
    :param decoder: decodes a gzip or deflate body (``None``: as it arrived).
    :param discard: read and drop the body (a redirect's, to keep the connection).
    """

    __slots__ = ("_chunks", "_decoder", "_discard", "_handle", "_timer", "done")

    def __init__(
        self,
        handle: ResponseHandle,
        read_timeout: float | None,
        clock: IReactorTime,
        decoder: ContentDecoder | None = None,
        discard: bool = False,
    ) -> None:
        self._chunks: list[bytes] = []
        self._handle = handle
        self._decoder = decoder
        self._discard = discard
        self.done: Deferred[bytes] = Deferred(lambda _: handle.abort())
        self._timer: Timer | None = None
        handle.deliver_body(self)  # what already arrived, maybe the whole body
        if not self.done.called and read_timeout is not None:
            self._timer = Timer(read_timeout, lambda: handle.abort(_stalled()), clock)
            self._timer.start()

    def body_data(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.start()
        if self._discard:
            return
        if self._decoder is not None:
            self._decoder.feed(data)
            try:
                data = self._decoder.read()
            except ProtocolError as e:
                self._handle.abort(e)
                return
        self._chunks.append(data)

    def body_ending(self) -> BaseException | None:
        if self._decoder is not None and not self._discard:
            try:
                self._decoder.close()
            except ProtocolError as e:
                return e
        return None

    def body_done(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if not self.done.called:
            chunks = self._chunks
            self.done.callback(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def body_failed(self, reason: BaseException) -> None:
        if self._timer is not None:
            self._timer.stop()
        if not self.done.called:
            self.done.errback(reason)


@implementer(IPushProducer)
class BodyStreamer:
    """Puts a response body into :attr:`stream` (a ``BodySink``), with backpressure.

    The :class:`~aleph_tx._adapter.Receiver` pauses the connection's reading while
    a put waits. With a ``decoder``, decoded pieces of at most 64 KiB are put one at
    a time, each once the last was accepted: a highly compressed body cannot fill
    memory either. The read timeout runs only while we wait for the network, never
    while the reader is slow. Closing the stream before the end aborts the response.
    """

    def __init__(
        self,
        handle: ResponseHandle,
        read_timeout: float | None,
        clock: IReactorTime,
        decoder: ContentDecoder | None = None,
    ) -> None:
        self._handle = handle
        self._decoder = decoder
        self.error: BaseException | None = None
        self.bytes_received = 0
        self._finished = False  # no more data will be put (ended, failed or closed by the reader)
        self._ended = False  # the body ended cleanly; decoded pieces may still be due
        self._paused = False  # the receiver paused us: a put is pending
        self.stream = Stream(description=self._describe)
        self._receiver = Receiver(self.stream.put, self.stream.close, self)
        self.stream.on_closed(self._closed_by_reader)
        self._timer = Timer(read_timeout, lambda: handle.abort(_stalled()), clock)
        self._timer.start()
        handle.deliver_body(self)

    def _describe(self) -> dict[str, Any]:
        desc: dict[str, Any] = {"type": "http-client-body", "bytes_received": self.bytes_received}
        if self.error is not None:
            desc["error"] = self.error
        return desc

    def _closed_by_reader(self) -> None:
        if not self._finished:
            self._finished = True
            self._timer.stop()
            self._handle.abort()

    # the Receiver's producer: a put is pending / all were accepted

    def pauseProducing(self) -> None:  # noqa: N802
        self._paused = True
        self._timer.stop()
        self._handle.pause_reading()

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        if self._decoder is not None:
            self._pump()
        if not self._paused and not self._finished:
            self._timer.start()
            self._handle.resume_reading()

    def stopProducing(self) -> None:  # noqa: N802
        """Not called by the Receiver."""

    # BodySink

    def body_data(self, data: bytes) -> None:
        if self._finished:
            return
        self.bytes_received += len(data)
        if self._decoder is None:
            self._receiver.write(data)
            if not self._paused:
                self._timer.start()
        else:
            self._decoder.feed(data)
            self._pump()

    def _pump(self) -> None:
        """Put decoded pieces until one has to wait or the input is used up."""
        decoder = self._decoder
        assert decoder is not None
        while not self._paused and not self._finished:
            try:
                piece = decoder.read(CHUNK)
            except ProtocolError as e:
                self._handle.abort(e)
                self.body_failed(e)
                return
            if not piece:
                break
            self._receiver.write(piece)
        if self._ended and not self._paused and not self._finished:
            self._end()

    def body_ending(self) -> BaseException | None:
        decoder = self._decoder
        if decoder is not None and not decoder.pending:
            try:
                decoder.close()
            except ProtocolError as e:
                return e
        return None  # (pieces still to decode: checked when they are)

    def body_done(self) -> None:
        self._timer.stop()
        if self._finished:
            return
        self._ended = True
        if self._decoder is None:
            self._end()
        elif not self._paused:
            self._pump()

    def _end(self) -> None:
        self._finished = True
        if self._decoder is not None:
            try:
                self._decoder.close()
            except ProtocolError as e:
                self.error = e
        self._receiver.finish()

    def body_failed(self, reason: BaseException) -> None:
        self._timer.stop()
        if self._finished:
            return
        self._finished = True
        self.error = reason
        self._receiver.finish()
