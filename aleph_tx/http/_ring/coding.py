"""Content codings (pure: no Twisted, no I/O): gzip for responses the client accepts
it for (RFC 9110 §8.4), and the client's decoding of ``gzip`` and ``deflate`` bodies.

:class:`ContentDecoder` is fed the encoded bytes as they arrive and read in pieces
of a bounded size, so a small compressed chunk that expands a thousandfold is
handed out 64 KiB at a time, each piece only when the reader wants it (the client's
streamed bodies keep their backpressure). Behaviour follows urllib3 (what
``requests`` users get): gzip bodies may hold several members, and data after the
first one that does not decode is dropped; ``deflate`` is zlib-wrapped as RFC 9110
says, or raw deflate as some servers send it (told apart by the first two bytes).
"""

from __future__ import annotations

import zlib

from aleph_tx.errors import ProtocolError

__all__ = ["ContentDecoder", "Gzipper", "accepts_gzip", "decoder_for"]


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


# -- decoding (the client) ---------------------------------------------------------------

_GZIP_WBITS = 16 + zlib.MAX_WBITS


def decoder_for(content_encoding: str | None) -> ContentDecoder | None:
    """A decoder for a response's ``content-encoding``, or ``None`` to leave the body as is.

    Only a single ``gzip``, ``x-gzip`` or ``deflate`` is decoded; anything else
    (``br``, ``identity``, several codings) is handed over undecoded.
    """
    if not content_encoding:
        return None
    coding = content_encoding.strip().lower()
    if coding in ("gzip", "x-gzip", "deflate"):
        return ContentDecoder(coding)
    return None


def _is_zlib_header(head: bytes) -> bool:
    """Whether two bytes start a zlib stream (RFC 1950: CM 8, and the FCHECK sum)."""
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


class ContentDecoder:
    """Decodes one gzip or deflate body: :meth:`feed` encoded bytes, :meth:`read` decoded ones."""

    __slots__ = ("_d", "_done", "_full", "_gzip", "_one_done", "_seen", "_tail", "coding")

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._gzip = coding != "deflate"
        # deflate waits for two bytes to tell zlib-wrapped from raw
        self._d = zlib.decompressobj(_GZIP_WBITS) if self._gzip else None
        self._tail = b""  # encoded bytes not decoded yet
        self._full = False  # the last read stopped at its limit: zlib may hold more output
        self._one_done = False  # a gzip member (or the deflate stream) ended
        self._seen = False  # any encoded byte arrived
        self._done = False  # the rest of the input is ignored

    def feed(self, data: bytes) -> None:
        """Add encoded bytes (nothing is decoded until :meth:`read`)."""
        if data and not self._done:
            self._seen = True
            self._tail = self._tail + data if self._tail else data

    @property
    def pending(self) -> bool:
        """Whether input was fed that :meth:`read` has not decoded yet."""
        return not self._done and (bool(self._tail) or self._full)

    def read(self, max_length: int = 0) -> bytes:
        """Up to ``max_length`` decoded bytes (0: all there are); ``b""`` when it needs more input.

        :raises ProtocolError: the bytes are not valid gzip or deflate.
        """
        out: list[bytes] = []
        n = 0
        while not self._done:
            d = self._d
            if d is None:
                if len(self._tail) < 2:
                    break
                wbits = zlib.MAX_WBITS if _is_zlib_header(self._tail) else -zlib.MAX_WBITS
                d = self._d = zlib.decompressobj(wbits)
            if d.eof:
                self._one_done = True
                if not self._tail:
                    break
                if not self._gzip:
                    self._done, self._tail = True, b""  # bytes after a deflate stream are ignored
                    break
                d = self._d = zlib.decompressobj(_GZIP_WBITS)  # another gzip member
            if not self._tail and not self._full:
                break
            room = max_length - n if max_length else 0
            data, self._tail = self._tail, b""
            try:
                piece = d.decompress(data, room)
            except zlib.error as e:
                if self._one_done:  # as urllib3: what follows a good member is not gzip
                    self._done, self._tail = True, b""
                    break
                raise ProtocolError(f"malformed {self.coding} response body: {e}") from None
            self._tail = d.unused_data if d.eof else d.unconsumed_tail
            self._full = bool(room) and len(piece) == room
            if piece:
                out.append(piece)
                n += len(piece)
            if max_length and n >= max_length:
                break
        return b"".join(out)

    def close(self) -> None:
        """The body ended: check that it was complete.

        :raises ProtocolError: the encoded body was cut short.
        """
        d = self._d
        if self._seen and not self._done and (d is None or not d.eof):
            raise ProtocolError(f"truncated {self.coding} response body")
