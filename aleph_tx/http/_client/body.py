"""Request bodies (IBodyProducers with backpressure) and response bodies for the client.

Request side: bytes-likes and ``str`` are sent with ``Content-Length``; files
with it when seekable; iterables and :class:`~aleph_tx.stream.Stream` chunked,
taken only while the transport accepts more (the producer is paused by Twisted
when the socket buffer is full).

Response side: :class:`BodyCollector` gathers the body into ``bytes``;
:class:`BodyStreamer` puts each chunk into a ``Stream`` and pauses the transport
while a put is pending, so a slow reader never makes memory grow.
"""

from __future__ import annotations

import io
import json as jsonlib
import os
import pathlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from aleph_tx._chunks import to_chunk
from aleph_tx._time import Timer
from aleph_tx.errors import ProtocolError, ReadTimeout
from aleph_tx.http._ring.coding import ContentDecoder
from aleph_tx.stream import SplicedStream, Stream

__all__ = [
    "BodyCollector",
    "BodyStreamer",
    "Replayable",
    "encode_form",
    "encode_json",
    "encode_multipart",
    "make_body",
]

_CHUNK = 65536
_END = object()


def is_stream(x: Any) -> bool:
    """``True`` for an aleph_tx stream (a source of chunks)."""
    return isinstance(x, (Stream, SplicedStream))


@implementer(IBodyProducer)
class _BytesProducer:
    """A body that is already here: written at once with its length."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:  # noqa: N802
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


@implementer(IBodyProducer)
class _IterProducer:
    """Chunks from a synchronous iterator, written while the consumer is not paused."""

    def __init__(self, chunks: Iterator[Any], length: int | object = UNKNOWN_LENGTH) -> None:
        self._chunks = chunks
        self.length = length
        self._paused = False
        self._stopped = False
        self._running = False
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:  # noqa: N802
        self._consumer = consumer
        d: Deferred[None] = Deferred()
        self._done = d
        self._pump()
        return d

    def _pump(self) -> None:
        if self._running:
            return
        self._running = True
        try:
            while not self._paused and not self._stopped and self._done is not None:
                try:
                    chunk = next(self._chunks)
                except StopIteration:
                    d, self._done = self._done, None
                    d.callback(None)
                    return
                except Exception:
                    d, self._done = self._done, None
                    d.errback(Failure())
                    return
                data = to_chunk(chunk)
                if data:
                    assert self._consumer is not None
                    self._consumer.write(data)
        finally:
            self._running = False

    def pauseProducing(self) -> None:  # noqa: N802
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:  # noqa: N802
        self._stopped = True
        self._done = None


@implementer(IBodyProducer)
class _StreamProducer:
    """Chunks taken from a ``Stream`` only while the consumer is not paused."""

    length = UNKNOWN_LENGTH

    def __init__(self, source: Any) -> None:
        self._source = source
        self._paused = False
        self._stopped = False
        self._taking = False
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:  # noqa: N802
        self._consumer = consumer
        d: Deferred[None] = Deferred()
        self._done = d
        self._pump()
        return d

    def _pump(self) -> None:
        while not self._paused and not self._stopped and not self._taking and self._done:
            d = self._source.take(_END)
            if d.called:
                # fast path: the message is already here (design notes, section 11)
                msg = d.result
                d.addErrback(lambda _: None)
                if not self._handle(msg):
                    return
                continue
            self._taking = True
            d.addCallbacks(self._arrived, self._failed)
            return

    def _arrived(self, msg: Any) -> None:
        self._taking = False
        if self._handle(msg):
            self._pump()

    def _failed(self, f: Failure) -> None:
        self._taking = False
        d, self._done = self._done, None
        if d is not None:
            d.errback(f)

    def _handle(self, msg: Any) -> bool:
        if self._stopped or self._done is None:
            return False
        if msg is _END:
            d, self._done = self._done, None
            d.callback(None)
            return False
        try:
            data = to_chunk(msg)
        except TypeError:
            d, self._done = self._done, None
            d.errback(Failure())
            return False
        if data:
            assert self._consumer is not None
            self._consumer.write(data)
        return True

    def pauseProducing(self) -> None:  # noqa: N802
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:  # noqa: N802
        # the request was aborted: tell the producer of the stream
        self._stopped = True
        self._done = None
        self._source.close()


def _file_chunks(f: Any) -> Iterator[bytes]:
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return
        yield chunk


class Replayable:
    """A request body that can be sent again (redirects 307/308, stale-connection retry).

    :ivar content_type: a default ``content-type`` for the body, or ``None``.
    """

    def __init__(self, body: Any, content_type: str | None = None) -> None:
        self.content_type = content_type
        self._body = body
        self._file_pos: int | None = None
        self._used = False
        if isinstance(body, (bytes, bytearray, memoryview)):
            self._body = bytes(body)
        elif isinstance(body, str):
            self._body = body.encode("utf-8")
        elif isinstance(body, pathlib.Path):
            self._body = body
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
        """Whether :meth:`producer` can be called again after the first time."""
        b = self._body
        return (
            not self._used
            or isinstance(b, (bytes, pathlib.Path))
            or (hasattr(b, "read") and self._file_pos is not None)
        )

    def producer(self) -> IBodyProducer:
        """A fresh producer of the body.

        :raises RuntimeError: when a one-shot body (stream, iterator) was already sent.
        """
        if not self.replayable:
            raise RuntimeError(f"the request body {self._body!r} cannot be sent twice")
        first = not self._used
        self._used = True
        b = self._body
        if isinstance(b, bytes):
            return _BytesProducer(b)
        if isinstance(b, pathlib.Path):
            f = b.open("rb")
            return _IterProducer(_closing_chunks(f), os.fstat(f.fileno()).st_size)
        if hasattr(b, "read"):
            length: int | object = UNKNOWN_LENGTH
            if self._file_pos is not None:
                if not first:
                    b.seek(self._file_pos)
                end = b.seek(0, io.SEEK_END)
                b.seek(self._file_pos)
                length = end - self._file_pos
            return _IterProducer(_file_chunks(b), length)
        if is_stream(b):
            return _StreamProducer(b)
        return _IterProducer(iter(b))


def _closing_chunks(f: Any) -> Iterator[bytes]:
    with f:
        yield from _file_chunks(f)


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


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _part_bytes(content: Any) -> bytes:
    if isinstance(content, (bytes, bytearray, memoryview)):
        return bytes(content)
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, pathlib.Path):
        return content.read_bytes()
    if hasattr(content, "read"):
        data = content.read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    raise TypeError(f"a multipart content must be bytes-like, str, a file or a Path, not {content!r}")


def encode_multipart(parts: Any, boundary: str | None = None) -> Replayable:
    """``multipart/form-data`` (RFC 7578) from dicts ``name``, ``content``, ``filename``, ``content_type``."""
    if not isinstance(parts, (list, tuple)):
        raise TypeError(f"multipart must be a list of dicts, not {parts!r}")
    boundary = boundary or uuid.uuid4().hex
    out = []
    for part in parts:
        if not isinstance(part, dict) or "name" not in part or "content" not in part:
            raise TypeError(f"a multipart part must be a dict with name and content, not {part!r}")
        unknown = set(part) - {"name", "content", "filename", "content_type"}
        if unknown:
            raise TypeError(f"unknown multipart part keys {sorted(unknown)!r}")
        content = part["content"]
        filename = part.get("filename")
        if filename is None and isinstance(content, pathlib.Path):
            filename = content.name
        disposition = f'form-data; name="{_quote(str(part["name"]))}"'
        if filename is not None:
            disposition += f'; filename="{_quote(str(filename))}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        ctype = part.get("content_type")
        if ctype is None and filename is not None:
            ctype = "application/octet-stream"
        if ctype is not None:
            head += f"Content-Type: {ctype}\r\n"
        out.append(head.encode("utf-8") + b"\r\n" + _part_bytes(content) + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return Replayable(b"".join(out), f"multipart/form-data; boundary={boundary}")


# -- response bodies ---------------------------------------------------------------


def _ended_cleanly(reason: Failure) -> bool:
    # PotentialDataLoss: a body without length or chunking ends with the
    # connection (RFC 9112 section 6.3, rule 8): that is its normal end.
    return reason.check(ResponseDone, PotentialDataLoss) is not None


class BodyCollector(Protocol):
    """Collects a response body; :attr:`done` fires with the ``bytes``.

    :param abort: aborts the connection (cancellation, read timeout).
    :param read_timeout: the longest stall allowed between two chunks.
    :param decoder: decodes a gzip or deflate body (``None``: as it arrived).
    """

    def __init__(
        self,
        abort: Any,
        translate: Any,
        read_timeout: float | None,
        clock: IReactorTime,
        discard: bool = False,
        decoder: ContentDecoder | None = None,
    ) -> None:
        self._chunks: list[bytes] = []
        self._abort = abort
        self._translate = translate
        self._discard = discard
        self._decoder = decoder
        self.done: Deferred[bytes] = Deferred(self._cancel)
        self._timer = Timer(read_timeout, self._expired, clock)
        self._timer.start()

    def _cancel(self, d: Deferred[bytes]) -> None:
        self._timer.stop()
        self._abort()

    def _expired(self) -> None:
        if not self.done.called:
            self.done.errback(ReadTimeout("reading the response body stalled past read_timeout"))
        self._abort()

    def _failed(self, e: BaseException) -> None:
        self._timer.stop()
        self._abort()
        if not self.done.called:
            self.done.errback(e)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.done.called:
            return
        self._timer.start()
        if self._discard:
            return
        if self._decoder is not None:
            self._decoder.feed(data)
            try:
                data = self._decoder.read()
            except ProtocolError as e:
                self._failed(e)
                return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: N802, B008
        self._timer.stop()
        if self.done.called:
            return
        if not _ended_cleanly(reason):
            self._failed(self._translate(reason))
            return
        if self._decoder is not None and not self._discard:
            try:
                self._decoder.close()
            except ProtocolError as e:
                self._failed(e)
                return
        self.done.callback(b"".join(self._chunks))


class BodyStreamer(Protocol):
    """Puts each response chunk into :attr:`stream`, pausing the transport while a put waits.

    The read timeout runs only while we wait for the network, never while the
    reader is slow. Closing the stream before the end aborts the connection. With a
    ``decoder``, decoded pieces of at most 64 KiB are put one at a time, each once the
    last was accepted: a highly compressed body cannot fill memory either.
    """

    def __init__(
        self,
        abort: Any,
        translate: Any,
        read_timeout: float | None,
        clock: IReactorTime,
        decoder: ContentDecoder | None = None,
    ) -> None:
        self._abort = abort
        self._translate = translate
        self._decoder = decoder
        self.error: BaseException | None = None
        self.bytes_received = 0
        self._finished = False
        self._ended = False  # the body ended cleanly; decoded pieces may still be due
        self._waiting = False  # a put is pending and the transport paused
        self.stream = Stream(description=self._describe)
        self.stream.on_closed(self._closed_by_reader)
        self._timer = Timer(read_timeout, self._expired, clock)
        self._timer.start()

    def _describe(self) -> dict[str, Any]:
        desc: dict[str, Any] = {"type": "http-client-body", "bytes_received": self.bytes_received}
        if self.error is not None:
            desc["error"] = self.error
        return desc

    def _closed_by_reader(self) -> None:
        if not self._finished:
            self._finished = True
            self._timer.stop()
            self._abort()

    def _fail(self, error: BaseException) -> None:
        self._finished = True
        self._timer.stop()
        self.error = error
        self._abort()
        self.stream.close()

    def _expired(self) -> None:
        if not self._finished:
            self._fail(ReadTimeout("reading the response body stalled past read_timeout"))

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._finished:
            return
        self.bytes_received += len(data)
        if self._decoder is None:
            self._put(data)
            if not self._waiting:
                self._timer.start()
        else:
            self._decoder.feed(data)
            self._pump()

    def _put(self, data: bytes) -> None:
        d = self.stream.put(data)
        if d.called:
            return
        # backpressure: stop reading the socket until the reader takes
        self._timer.stop()
        self._waiting = True
        transport: Any = self.transport
        transport.pauseProducing()
        d.addBoth(self._accepted)

    def _pump(self) -> None:
        """Put decoded pieces until one has to wait or the input is used up."""
        assert self._decoder is not None
        while not self._waiting and not self._finished:
            try:
                piece = self._decoder.read(_CHUNK)
            except ProtocolError as e:
                self._fail(e)
                return
            if not piece:
                break
            self._put(piece)
        if self._waiting or self._finished:
            return
        if self._ended:
            self._end()
        else:
            self._timer.start()

    def _accepted(self, result: Any) -> None:
        self._waiting = False
        if self._finished or result is not True:
            return
        if self._decoder is not None:
            self._pump()
        else:
            self._timer.start()  # (without a decoder, the end came only after this put fired)
        if not self._waiting and not self._finished:
            transport: Any = self.transport
            transport.resumeProducing()

    def _end(self) -> None:
        self._finished = True
        if self._decoder is not None:
            try:
                self._decoder.close()
            except ProtocolError as e:
                self.error = e
                self._abort()  # as for any malformed response: the connection is not reused
        self.stream.close()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: N802, B008
        self._timer.stop()
        if self._finished:
            return
        if not _ended_cleanly(reason):
            self._fail(self._translate(reason))
            return
        self._ended = True
        if not self._waiting or self._decoder is None:
            self._end()  # a put still waiting without a decoder is kept by the closed stream
