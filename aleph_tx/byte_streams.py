"""Conversions between byte-like things (Aleph's ``byte-streams``).

``import aleph_tx.byte_streams as bs``. The sources every function accepts:

- ``bytes``, ``bytearray``, ``memoryview`` (any format: its raw bytes);
- ``str``, encoded with ``encoding`` (UTF-8 by default);
- a binary file object (anything with a ``read`` returning bytes; text-mode files
  are refused: open the file in binary mode). It is read from its current
  position and never closed: the caller owns it;
- a :class:`pathlib.Path`, opened, read and closed here;
- an iterable of chunks (each chunk one of the above byte-likes or ``str``);
- a stream of chunks (:class:`aleph_tx.stream.Stream`, or anything with
  ``take``/``put``/``on_drained``): only for the asynchronous functions
  (:func:`collect_bytes`, :func:`collect_str`, :func:`to_stream`,
  :func:`to_line_stream`, :func:`to_input_stream`);
- an object of a type given a conversion to one of those with
  :func:`register_conversion`.

Anything else raises :class:`TypeError` naming its type. Empty chunks carry
nothing and are dropped from the chunks and streams produced here.

Like :mod:`aleph_tx.stream`, this module never uses the reactor, except
:func:`to_input_stream` over a stream read from another thread.
"""

from __future__ import annotations

import io
import pathlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure

from aleph_tx import stream as _s
from aleph_tx._chunks import error_of, file_chunks, path_chunks, to_chunk
from aleph_tx._input_stream import _InputStream
from aleph_tx._lines import LineSplitter, line_stream
from aleph_tx._threads import watch_shutdown
from aleph_tx._time import get_reactor
from aleph_tx.stream import Stream

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "collect_bytes",
    "collect_str",
    "compare_bytes",
    "convert",
    "print_bytes",
    "register_conversion",
    "to_bytes",
    "to_chunks",
    "to_input_stream",
    "to_line_stream",
    "to_str",
    "to_stream",
]

#: The default chunk size (64 KiB): big enough that per-chunk costs vanish next to
#: copying, small enough to keep a stream's memory bounded (a socket read's size).
DEFAULT_CHUNK_SIZE = 65536

_BYTES_LIKE = bytes | bytearray | memoryview
_END: Any = object()

# (source type, target type) -> fn(x), filled by register_conversion.
_conversions: dict[tuple[type, type], Callable[[Any], Any]] = {}


# -- classifying sources -----------------------------------------------------------


def _is_stream(x: Any) -> bool:
    return isinstance(x, Stream) or all(
        callable(getattr(x, name, None)) for name in ("take", "put", "on_drained", "close")
    )


def _is_file(x: Any) -> bool:
    return isinstance(x, io.IOBase) or callable(getattr(x, "read", None))


def _type_name(x: Any) -> str:
    return repr(type(x).__qualname__)


def _registered(cls: type, target: type | None = None) -> Callable[[Any], Any] | None:
    """The conversion registered for ``cls`` (or a base class) to ``target``.

    With ``target=None``: a conversion to any type this module knows as a source.
    """
    if not _conversions:
        return None
    for base in cls.__mro__:
        if target is not None:
            fn = _conversions.get((base, target))
            if fn is not None:
                return fn
            continue
        for (src, dst), fn in _conversions.items():
            if src is base and dst in _KNOWN_TARGETS:
                return fn
    return None


def _adapt(x: Any) -> Any:
    """``x`` itself if it is a known source, else its registered conversion.

    :raises TypeError: for an unsupported type.
    """
    if isinstance(x, _BYTES_LIKE | str | pathlib.PurePath) or _is_stream(x):
        return x
    fn = _registered(type(x))
    if fn is not None:
        return fn(x)
    if isinstance(x, Mapping) or x is None:
        pass
    elif _is_file(x):
        if isinstance(x, io.TextIOBase):
            raise TypeError(f"cannot read bytes from a text file {x!r}: open it in binary mode")
        return x
    elif isinstance(x, Iterable):
        return x
    raise TypeError(
        f"cannot convert an object of type {_type_name(x)} to bytes: not a byte source ({x!r:.80})"
    )


def _stream_error(x: Any, sync_name: str) -> TypeError:
    return TypeError(
        f"{sync_name} is synchronous and {x!r} is a stream: "
        "use collect_bytes()/collect_str() (a Deferred) or to_stream()"
    )


def _check_chunk_size(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, not {chunk_size!r}")


# -- synchronous conversions -------------------------------------------------------


def _read_file(f: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        data = f.read()
        if data is None:
            raise BlockingIOError(f"{f!r} is non-blocking and has no data ready")
        if not data:
            return b"".join(parts)
        if isinstance(data, str):
            raise TypeError(f"cannot read bytes from {f!r}: its read() returns str; open it in binary mode")
        parts.append(bytes(data))


def to_bytes(x: Any, encoding: str = "utf-8") -> bytes:
    """All of a synchronous source as ``bytes``.

    :param x: any source but a stream.
    :param encoding: for ``str`` (and ``str`` chunks).
    :returns: the bytes (``x`` itself when it is ``bytes``).
    :raises TypeError: for a stream (use :func:`collect_bytes`) or an unsupported type.
    """
    if type(x) is bytes:
        return x
    x = _adapt(x)
    if isinstance(x, _BYTES_LIKE | str):
        return to_chunk(x, encoding)
    if isinstance(x, pathlib.PurePath):
        return pathlib.Path(x).read_bytes()
    if _is_stream(x):
        raise _stream_error(x, "to_bytes()")
    if _is_file(x):
        return _read_file(x)
    return b"".join([to_chunk(c, encoding) for c in x])


def to_str(x: Any, encoding: str = "utf-8") -> str:
    """All of a synchronous source decoded as ``str`` (strict decoding).

    :param x: any source but a stream (a ``str`` is returned as it is).
    :param encoding: the text encoding.
    :raises TypeError: for a stream (use :func:`collect_str`) or an unsupported type.
    :raises UnicodeDecodeError: for bytes that are not valid in ``encoding``.
    """
    if isinstance(x, str):
        return x
    if _is_stream(x):
        raise _stream_error(x, "to_str()")
    return to_bytes(x, encoding).decode(encoding)


def _slices(data: bytes | memoryview, chunk_size: int) -> Iterator[bytes]:
    if isinstance(data, bytes) and len(data) <= chunk_size:
        if data:
            yield data
        return
    for i in range(0, len(data), chunk_size):
        yield bytes(data[i : i + chunk_size])


def _iter_chunks(chunks: Iterable[Any], encoding: str) -> Iterator[bytes]:
    for c in chunks:
        b = to_chunk(c, encoding)
        if b:
            yield b


def _contiguous(x: bytes | bytearray | memoryview | str, encoding: str) -> bytes | memoryview:
    if isinstance(x, str):
        return x.encode(encoding)
    if isinstance(x, memoryview):
        return x if x.format == "B" and x.ndim == 1 and x.c_contiguous else memoryview(x.tobytes())
    if isinstance(x, bytearray):
        return memoryview(bytes(x))  # a snapshot: later changes to x do not leak into chunks
    return x


def to_chunks(x: Any, chunk_size: int = DEFAULT_CHUNK_SIZE, encoding: str = "utf-8") -> Iterator[bytes]:
    """A synchronous source as an iterator of non-empty ``bytes`` chunks.

    A contiguous source (bytes-like, ``str``, file, ``Path``) is cut into chunks of
    exactly ``chunk_size`` bytes, the last one shorter; files are read lazily, a
    ``Path`` is opened at the first chunk and closed at the end. The chunks of an
    iterable pass through as they are (as ``bytes``), empty ones dropped.

    :param x: any source but a stream.
    :param chunk_size: the chunk size for contiguous sources.
    :param encoding: for ``str`` (and ``str`` chunks).
    :raises TypeError: at once, for a stream (use :func:`to_stream`) or an unsupported type.
    :raises ValueError: at once, for a ``chunk_size`` below 1.
    """
    _check_chunk_size(chunk_size)
    x = _adapt(x)
    if isinstance(x, _BYTES_LIKE | str):
        return _slices(_contiguous(x, encoding), chunk_size)
    if isinstance(x, pathlib.PurePath):
        return path_chunks(x, chunk_size)
    if _is_stream(x):
        raise TypeError(f"to_chunks() is synchronous and {x!r} is a stream: use to_stream()")
    if _is_file(x):
        return file_chunks(x, chunk_size)
    return _iter_chunks(x, encoding)


# -- streams -------------------------------------------------------------------------


def to_stream(x: Any, chunk_size: int = DEFAULT_CHUNK_SIZE, encoding: str = "utf-8") -> Stream:
    """Any source as a :class:`~aleph_tx.stream.Stream` of non-empty ``bytes`` chunks.

    A synchronous source is read lazily, one chunk ahead of the takes (as
    :func:`to_chunks` cuts it) and the stream is closed at its end; an error while
    reading closes the stream, logged and kept in ``description()["error"]``. A
    stream source gives a derived stream (:func:`aleph_tx.stream.map`) converting
    each chunk to ``bytes`` as it is (``chunk_size`` does not re-cut it).

    :param x: any source.
    :param chunk_size: the chunk size for contiguous sources.
    :param encoding: for ``str`` (and ``str`` chunks).
    :raises TypeError: at once, for an unsupported type.
    :raises ValueError: at once, for a ``chunk_size`` below 1.
    """
    _check_chunk_size(chunk_size)
    x = _adapt(x)
    if _is_stream(x):
        return _s.map(lambda c: to_chunk(c, encoding) or None, x)
    return _s.from_iterable(to_chunks(x, chunk_size, encoding))


def collect_bytes(x: Any, encoding: str = "utf-8") -> Deferred[bytes]:
    """Every byte of any source, streams included.

    For a stream: fires when it is drained. A stream closed by an error (kept in
    its ``description()["error"]``: a derived stream whose function raised, a
    connection lost uncleanly) fails the Deferred with that error, as its bytes
    are incomplete. A chunk that is not bytes-like or ``str`` fails the Deferred
    with :class:`TypeError` and closes the stream. A
    Deferred of a source is awaited first. A synchronous source fires at once
    (reading errors, such as a missing file, fail the Deferred).

    :param x: any source, or a Deferred of one.
    :param encoding: for ``str`` chunks.
    :returns: a Deferred of the ``bytes``.
    :raises TypeError: at once, for an unsupported type.
    """
    if isinstance(x, Deferred):
        return x.addCallback(collect_bytes, encoding)
    x = _adapt(x)
    if not _is_stream(x):
        try:
            return succeed(to_bytes(x, encoding))
        except Exception:
            return fail()
    parts: list[bytes] = []
    source = x

    def add(chunk: Any) -> None:
        parts.append(to_chunk(chunk, encoding))

    def finished(_: object) -> bytes:
        err = error_of(source)
        if err is not None:
            raise err
        return b"".join(parts)

    def failed(f: Failure) -> Failure:
        source.close()
        return f

    done: Deferred[Any] = _s.consume(add, source)
    return done.addCallbacks(finished, failed)


def collect_str(x: Any, encoding: str = "utf-8") -> Deferred[str]:
    """Every byte of any source, decoded (strictly) as ``str``.

    :param x: any source, or a Deferred of one.
    :param encoding: the text encoding.
    :returns: a Deferred of the text; it fails with :class:`UnicodeDecodeError` on
        bytes not valid in ``encoding``.
    :raises TypeError: at once, for an unsupported type.
    """
    if isinstance(x, str):
        return succeed(x)
    return collect_bytes(x, encoding).addCallback(lambda b: b.decode(encoding))


def to_line_stream(x: Any, encoding: str = "utf-8", max_line_length: int | None = 65536) -> Stream:
    """Any source as a stream of ``str`` lines, without their terminators.

    Terminators are ``\\n`` and ``\\r\\n`` (also split across chunks); a lone
    ``\\r`` is text, and so are other Unicode line breaks. Empty lines are ``""``;
    a last line without a terminator is emitted; an empty source gives no line.
    This is ``re.split("\\r?\\n", text)`` without its last element when that is
    ``""``. Bytes are decoded incrementally (multibyte characters may be split
    across chunks); ``str`` chunks of a stream are taken as text. Undecodable bytes
    close the stream, logged and kept in ``description()["error"]``; so does a
    source stream closed by an error (its last, unterminated line is then not
    emitted). Closing the line stream closes the source.

    :param x: any source.
    :param encoding: the text encoding.
    :param max_line_length: the longest line accepted, in characters (without its
        terminator; ``None``: no limit). A longer line (or an unterminated one
        growing past it) closes both streams with a
        :class:`~aleph_tx.errors.ProtocolError` in ``description()["error"]``: a
        peer that never sends a newline cannot grow memory without bound.
    :raises TypeError: at once, for an unsupported type.
    :raises LookupError: at once, for an unknown encoding.
    :raises ValueError: at once, for a ``max_line_length`` below 1.
    """
    if max_line_length is not None and max_line_length < 1:
        raise ValueError(f"max_line_length must be >= 1 or None, not {max_line_length!r}")
    splitter = LineSplitter(encoding, max_line_length)
    x = _adapt(x)
    source = x if _is_stream(x) else _s.from_iterable(to_chunks(x, DEFAULT_CHUNK_SIZE, encoding))
    return line_stream(source, splitter)


# -- convert ---------------------------------------------------------------------------


def _to_memoryview(x: Any, encoding: str) -> memoryview:
    if isinstance(x, bytes):
        return memoryview(x)
    if isinstance(x, memoryview):
        return x if x.format == "B" and x.ndim == 1 else memoryview(x.tobytes())
    return memoryview(to_bytes(x, encoding))


_BUILTIN_TARGETS: dict[type, Callable[[Any, str, int], Any]] = {
    bytes: lambda x, enc, n: to_bytes(x, enc),
    str: lambda x, enc, n: to_str(x, enc),
    memoryview: lambda x, enc, n: _to_memoryview(x, enc),
    bytearray: lambda x, enc, n: bytearray(to_bytes(x, enc)),
    io.BytesIO: lambda x, enc, n: io.BytesIO(to_bytes(x, enc)),
    list: lambda x, enc, n: list(to_chunks(x, n, enc)),
    Stream: lambda x, enc, n: to_stream(x, n, enc),
}
_KNOWN_TARGETS = frozenset(_BUILTIN_TARGETS)


def convert(x: Any, target: type, encoding: str = "utf-8", chunk_size: int = DEFAULT_CHUNK_SIZE) -> Any:
    """``x`` converted to ``target``.

    Targets: ``bytes``, ``str``, ``memoryview``, ``bytearray``, ``io.BytesIO``,
    ``list`` (of ``bytes`` chunks, as :func:`to_chunks`) and
    :class:`~aleph_tx.stream.Stream` (as :func:`to_stream`), from any source the
    target allows (streams only to ``Stream``). A conversion registered for
    ``(type(x) or a base class, target)`` wins over the built-in ones; a type with
    a registered conversion to a built-in target is converted in two steps (its
    conversion, then the built-in one).

    :param x: the source.
    :param target: the type wanted.
    :param encoding: for text.
    :param chunk_size: for ``list`` and ``Stream``.
    :raises TypeError: for an unknown target or an unsupported source.
    """
    fn = _registered(type(x), target)
    if fn is not None:
        return fn(x)
    builtin = _BUILTIN_TARGETS.get(target)
    if builtin is None:
        raise TypeError(f"no conversion from an object of type {_type_name(x)} to {target!r}")
    if _is_stream(x) and target is not Stream:
        raise _stream_error(x, f"convert(x, {target.__name__})")
    return builtin(_adapt(x), encoding, chunk_size)


def register_conversion(src_type: type, dst_type: type, fn: Callable[[Any], Any]) -> None:
    """Teach :func:`convert` (and every function here) a new conversion.

    ``fn(x)`` turns an instance of ``src_type`` (or of a subclass) into a
    ``dst_type``. Registering the same pair again replaces the conversion. A
    conversion to a built-in target (``bytes``, ``str``, ``list``, ...) also makes
    ``src_type`` a source for :func:`to_bytes`, :func:`to_stream` and the rest.

    :raises TypeError: at once, if a type is not a class or ``fn`` is not callable.
    """
    for name, t in (("src_type", src_type), ("dst_type", dst_type)):
        if not isinstance(t, type):
            raise TypeError(f"{name} must be a class, not {t!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {fn!r}")
    _conversions[(src_type, dst_type)] = fn


# -- to_input_stream ------------------------------------------------------------------


def to_input_stream(
    x: Any, reactor: IReactorFromThreads | None = None, encoding: str = "utf-8"
) -> io.RawIOBase:
    """A blocking binary file object (:class:`io.RawIOBase`) over any source.

    For code running in a thread (WSGI's ``wsgi.input``, blocking parsers): over
    a stream, a read blocks the calling thread until a chunk arrives, taken on the
    reactor thread. ``read(n)`` returns ``n`` bytes, fewer only at the end (as a
    buffered file does: WSGI apps read a body with one ``read(n)``), ``read()``
    reads to the end; ``readinto`` and ``read1`` return what one chunk gives
    (``io.BufferedReader`` and ``io.TextIOWrapper`` work on top), ``readline``
    reads across chunks. A read made on the reactor thread that would have to
    wait raises :class:`RuntimeError` rather than deadlock (what was already read
    stays buffered). At the end of a stream closed by an error (its
    ``description()["error"]``), the read raises that error instead of returning
    ``b""``. Synchronous sources are simply read. Closing the file before the end
    closes the stream. A thread blocked in a read waits as long as the stream
    does: close the stream (or give it a timeout upstream) to release it.

    :param x: any source.
    :param reactor: the reactor that runs the stream (``None``: the global reactor,
        looked up now, for a stream source only).
    :param encoding: for ``str`` chunks.
    :raises TypeError: at once, for an unsupported type.
    """

    x = _adapt(x)
    if _is_stream(x):
        reactor = get_reactor(reactor)
        watch_shutdown(reactor)  # a read waiting past the reactor's shutdown gives up
        raw: io.RawIOBase = _InputStream(None, x, reactor, encoding)
    else:
        raw = _InputStream(to_chunks(x, DEFAULT_CHUNK_SIZE, encoding), None, None, encoding)
    return raw


# -- inspection ------------------------------------------------------------------------


def _hexdump_lines(data: bytes) -> Iterator[str]:
    """``hexdump -C``'s lines: offset, 16 bytes in hex (8 + 8), ``|ASCII|``; ``*`` for repeats."""
    previous: bytes | None = None
    starred = False
    for off in range(0, len(data), 16):
        row = data[off : off + 16]
        if row == previous and len(row) == 16:
            if not starred:
                starred = True
                yield "*"
            continue
        previous, starred = row, False
        hexes = " ".join(f"{b:02x}" for b in row[:8])
        if len(row) > 8:
            hexes += "  " + " ".join(f"{b:02x}" for b in row[8:])
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
        yield f"{off:08x}  {hexes:<48}  |{text}|"
    if data:
        yield f"{len(data):08x}"


def print_bytes(x: Any, encoding: str = "utf-8") -> None:
    """Print a hex + ASCII dump of a synchronous source to stdout, as ``hexdump -C``.

    Each line: the offset (8 hex digits), 16 bytes in hex (two groups of 8), and
    the bytes as ASCII between ``|`` (``.`` for non-printable); a row repeating the
    one above is shown once as ``*``; the last line is the total length. Nothing
    is printed for no bytes.

    :param x: any source but a stream.
    :raises TypeError: for a stream (collect it first) or an unsupported type.
    """
    out = sys.stdout
    for line in _hexdump_lines(to_bytes(x, encoding)):
        out.write(line + "\n")


def compare_bytes(a: Any, b: Any) -> int:
    """``-1``, ``0`` or ``1`` as ``a`` sorts before, equal to or after ``b``.

    Lexicographic over unsigned bytes (Python's ``bytes`` order: a prefix sorts
    first); ``str`` compares by its UTF-8 bytes.

    :param a: a synchronous source.
    :param b: a synchronous source.
    :raises TypeError: for a stream or an unsupported type.
    """
    x, y = to_bytes(a), to_bytes(b)
    return (x > y) - (x < y)
