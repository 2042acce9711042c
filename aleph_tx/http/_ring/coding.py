"""Content codings (pure): gzip for responses the client accepts it for (RFC 9110 §8.4)."""

from __future__ import annotations

import zlib

__all__ = ["Gzipper", "accepts_gzip"]


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
