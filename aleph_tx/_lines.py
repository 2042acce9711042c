"""Lines from chunks: the engine of :func:`aleph_tx.byte_streams.to_line_stream`."""

from __future__ import annotations

import codecs
import collections
from typing import Any

from twisted.python.failure import Failure

from aleph_tx import stream as _s
from aleph_tx._chunks import error_of, to_chunk
from aleph_tx.errors import ProtocolError
from aleph_tx.stream import Stream
from aleph_tx.stream._graph import PENDING as _PENDING
from aleph_tx.stream._graph import ready as _fired

__all__ = ["LineSplitter", "line_stream"]

_END: Any = object()


class LineSplitter:
    r"""Text in, complete lines out: terminators ``\n`` and ``\r\n``; a lone ``\r`` is text.

    Text is cut at each ``\n`` only; a line's trailing ``\r`` is dropped once its
    ``\n`` has come. So a ``\r`` at the end of one chunk and a ``\n`` at the start
    of the next make one terminator, and a ``\r`` followed by anything else (or
    by nothing, at the end) stays text. Bytes are decoded incrementally, so a
    multibyte character split across chunks is decoded whole.
    """

    __slots__ = ("_decoder", "_encoding", "_max", "_partial", "_partial_len", "error")

    def __init__(self, encoding: str, max_line_length: int | None = None) -> None:
        self._encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._max = max_line_length
        self._partial: list[str] = []  # the current line's pieces, without "\n"
        self._partial_len = 0
        #: a line over ``max_line_length`` followed the lines last returned
        self.error: ProtocolError | None = None

    def feed(self, chunk: Any) -> list[str]:
        if isinstance(chunk, str):
            return self._split(chunk)
        return self._split(self._decoder.decode(to_chunk(chunk, self._encoding)))

    def finish(self) -> list[str]:
        lines = self._split(self._decoder.decode(b"", True))
        if self._partial:
            lines.append("".join(self._partial))
            self._partial = []
        return lines

    def _split(self, text: str) -> list[str]:
        if "\n" not in text:
            if text:
                self._partial.append(text)
                self._partial_len += len(text)
                self._check(self._partial_len)
            return []
        parts = text.split("\n")
        if self._partial:
            self._partial.append(parts[0])
            parts[0] = "".join(self._partial)
        tail = parts.pop()
        self._partial = [tail] if tail else []
        self._partial_len = len(tail)
        lines = [line[:-1] if line.endswith("\r") else line for line in parts]
        if self._max is not None:
            for i, line in enumerate(lines):
                if len(line) > self._max:
                    self.error = self._too_long()
                    return lines[:i]  # the lines before it are good: deliver them first
            self._check(self._partial_len)
        return lines

    def _check(self, length: int) -> None:
        if self._max is not None and length > self._max:
            raise self._too_long()

    def _too_long(self) -> ProtocolError:
        return ProtocolError(f"a line longer than max_line_length ({self._max} characters)")


class _LinePump:
    """Takes chunks from ``source``, puts lines into ``dst``, respecting backpressure.

    Loops while takes and puts have already fired (no recursion for synchronous
    sources). Closing ``dst`` closes ``source``; an error closes both, logged and
    kept in ``dst.description()["error"]``.
    """

    __slots__ = ("dst", "ended", "lines", "source", "splitter")

    def __init__(self, source: Any, dst: Stream, splitter: LineSplitter) -> None:
        self.source = source
        self.dst = dst
        self.splitter = splitter
        self.lines: collections.deque[str] = collections.deque()
        self.ended = False

    def run(self, _: object = None) -> None:
        dst = self.dst
        while True:
            while self.lines:
                d = dst.put(self.lines.popleft())
                ok = _fired(d)
                if ok is _PENDING:
                    d.addCallbacks(self._put_done, self._error)
                    return
                if ok is not True:
                    self.source.close()
                    return
            if self.splitter.error is not None:
                self._fail(self.splitter.error)
                return
            if self.ended:
                dst.close()
                return
            t = self.source.take(_END)
            msg = _fired(t)
            if msg is _PENDING:
                t.addCallbacks(self._took, self._error)
                return
            if not self._handle(msg):
                return

    def _handle(self, msg: Any) -> bool:
        try:
            if msg is _END:
                err = error_of(self.source)
                if err is not None:
                    raise err
                self.ended = True
                self.lines.extend(self.splitter.finish())
            else:
                self.lines.extend(self.splitter.feed(msg))
        except Exception as e:
            self._fail(e)
            return False
        return True

    def _took(self, msg: Any) -> None:
        if self._handle(msg):
            self.run()

    def _put_done(self, ok: Any) -> None:
        if ok:
            self.run()
        else:
            self.source.close()

    def _error(self, f: Failure) -> None:
        self._fail(f.value if f.value is not None else RuntimeError(str(f)))

    def _fail(self, error: BaseException) -> None:
        self.dst._fail(error)
        self.source.close()


def line_stream(source: Any, splitter: LineSplitter) -> Stream:
    """A stream of the lines ``splitter`` cuts from ``source``'s chunks (closing it closes ``source``)."""
    dst = _s.stream(description={"op": "to_line_stream"})
    dst.on_closed(source.close)
    _LinePump(source, dst, splitter).run()
    return dst
