"""``http_versions``: the one check, for the server, the client and the command line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["KNOWN_VERSIONS", "check_http_versions"]

#: ALPN names (RFC 7301) of the protocols aleph_tx speaks, in order of preference.
KNOWN_VERSIONS = ("h3", "h2", "http/1.1")


def check_http_versions(versions: Any, allowed: Iterable[str] = KNOWN_VERSIONS) -> tuple[str, ...]:
    """``versions`` as a tuple without repeats, checked against ``allowed``.

    :param versions: a sequence of ALPN names such as ``("http/1.1", "h2")``.
    :param allowed: the names this caller accepts.
    :raises ValueError: for a ``str`` (not a sequence of names), an empty sequence or
        an unknown name (each named in the message).
    """
    allowed = tuple(allowed)
    known = ", ".join(repr(v) for v in allowed)
    if isinstance(versions, (str, bytes)) or not isinstance(versions, Iterable):
        raise ValueError(f"http_versions must be a sequence of {known}, not {versions!r}")
    out: list[str] = []
    for v in versions:
        if v not in allowed:
            raise ValueError(f"unknown HTTP version {v!r} in http_versions (known: {known})")
        if v not in out:
            out.append(v)
    if not out:
        raise ValueError(f"http_versions must name at least one of {known}")
    return tuple(out)
