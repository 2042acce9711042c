"""The blocking file object behind :func:`aleph_tx.byte_streams.to_input_stream`."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import threadable
from twisted.python.failure import Failure

from aleph_tx._chunks import error_of, to_chunk
from aleph_tx._threads import call_on_reactor
from aleph_tx.stream._graph import PENDING as _PENDING
from aleph_tx.stream._graph import ready as _fired

_END: Any = object()


def _in_io_thread() -> bool:
    return bool(threadable.isInIOThread())


class _InputStream(io.RawIOBase):
    """A blocking binary file over a source, for code in a thread.

    Over a stream, each chunk is taken on the reactor thread
    (:func:`~aleph_tx._threads.call_on_reactor`) while the reading thread waits. On the reactor
    thread itself, a read that would have to wait raises :class:`RuntimeError`
    (it would deadlock); a read that data already buffered in the stream can
    answer works. Closing it closes the stream.
    """

    def __init__(
        self,
        chunks: Iterator[bytes] | None,
        source: Any,
        reactor: IReactorFromThreads | None,
        encoding: str,
    ) -> None:
        super().__init__()
        self._chunks = chunks
        self._source = source
        self._reactor = reactor
        self._encoding = encoding
        self._buf = b""
        self._pos = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes | None:
        """The next non-empty chunk, or ``None`` at the end."""
        if self._chunks is not None:
            return next(self._chunks, None)
        while True:
            msg = self._take()
            if msg is _END:
                err = self._on_reactor(error_of, self._source)
                if err is not None:
                    raise err
                return None
            chunk = to_chunk(msg, self._encoding)
            if chunk:
                return chunk

    def _take(self) -> Any:
        source = self._source
        reactor = self._reactor
        if _in_io_thread() or not getattr(reactor, "running", True):
            d = source.take(_END)
            msg = _fired(d)
            if msg is _PENDING:
                if d.called:  # failed at once
                    out: list[Any] = []
                    d.addBoth(out.append)
                    if isinstance(out[0], Failure):
                        out[0].raiseException()
                    return out[0]
                d.addErrback(lambda f: None)
                d.cancel()  # withdraw the take
                where = "on the reactor thread" if _in_io_thread() else "with no reactor running"
                raise RuntimeError(
                    f"a read from {source!r} would have to wait {where}: "
                    "read to_input_stream() from another thread (deferToThread)"
                )
            return msg
        assert reactor is not None
        return call_on_reactor(reactor, source.take, _END)

    def _on_reactor(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the reactor thread (here if this is it, or no reactor runs)."""
        reactor = self._reactor
        if reactor is None or _in_io_thread() or not getattr(reactor, "running", True):
            return fn(*args)
        return call_on_reactor(reactor, fn, *args)

    def _fill(self) -> bool:
        """Make sure some data is buffered; ``False`` at the end."""
        if self._pos < len(self._buf):
            return True
        if self._eof:
            return False
        chunk = self._next_chunk()
        if chunk is None:
            self._eof = True
            self._buf, self._pos = b"", 0
            return False
        self._buf, self._pos = chunk, 0
        return True

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def readinto(self, b: Any) -> int:
        self._check_open()
        view = memoryview(b).cast("B")
        if not len(view) or not self._fill():
            return 0
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Exactly ``size`` bytes, fewer only at the end (``-1``: all of it).

        Blocks until that many bytes came, as a buffered file does: WSGI apps
        (Django's ``LimitedStream``) read a body with a single ``read(n)``.
        """
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        first = self.read1(size)
        if len(first) == size or not first:
            return first
        parts = [first]
        missing = size - len(first)
        try:
            while missing:
                more = self.read1(missing)
                if not more:
                    break
                parts.append(more)
                missing -= len(more)
        except BaseException:
            # Nothing read is lost: put it back in front of the buffer.
            self._buf = b"".join(parts) + self._buf[self._pos :]
            self._pos = 0
            raise
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        """At most ``size`` bytes (``-1``: no limit) from what one chunk gives.

        Blocks only while nothing at all is buffered.
        """
        self._check_open()
        if size == 0 or not self._fill():
            return b""
        start = self._pos
        end = len(self._buf) if size is None or size < 0 else min(len(self._buf), start + size)
        self._pos = end
        if start == 0 and end == len(self._buf):
            return self._buf
        return self._buf[start:end]

    def readall(self) -> bytes:
        self._check_open()
        parts: list[bytes] = []
        while self._fill():
            parts.append(self._buf[self._pos :] if self._pos else self._buf)
            self._pos = len(self._buf)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        self._check_open()
        limit = -1 if size is None else size
        parts: list[bytes] = []
        got = 0
        while (limit < 0 or got < limit) and self._fill():
            buf, pos = self._buf, self._pos
            end = len(buf)
            if limit >= 0:
                end = min(end, pos + limit - got)
            nl = buf.find(b"\n", pos, end)
            if nl >= 0:
                end = nl + 1
            parts.append(buf[pos:end])
            got += end - pos
            self._pos = end
            if nl >= 0:
                break
        return b"".join(parts)

    def close(self) -> None:
        if not self.closed and self._source is not None and not self._eof:
            source, reactor = self._source, self._reactor
            if _in_io_thread() or reactor is None or not getattr(reactor, "running", True):
                source.close()
            else:
                reactor.callFromThread(source.close)
        super().close()
