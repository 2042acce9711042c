"""Server options and limit checks (pure: plain values in, plain values out).

Each check returns the HTTP status to answer (an ``int``) or ``None`` when the
request is within its limits, as h11's ``error_status_hint`` does, so the
protocol front only has to write the answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aleph_tx.http._ring.versions import check_http_versions

__all__ = [
    "DEFAULTS",
    "SERVER_VERSIONS",
    "ServerOptions",
    "check_content_length",
    "check_framing",
    "check_header_size",
    "check_request_line",
    "check_version",
    "check_versions_tls",
    "is_tls_listen",
    "make_options",
]

#: The ``start_server`` options and their defaults.
DEFAULTS: Mapping[str, Any] = {
    # No default cap: the body is a stream with backpressure, so memory stays
    # bounded whatever the size; set one to refuse large uploads early (413).
    "max_request_body_size": None,
    # 8 KiB, as Netty (Aleph), nginx and uvicorn: longer request lines are 414.
    "max_initial_line_length": 8192,
    # 8 KiB, as Netty (Aleph): a larger header block is 431.
    "max_header_size": 8192,
    "idle_timeout": None,
    "shutdown_timeout": 15,
    # 60 s, as nginx's client_header_timeout: a client trickling a head, or an idle
    # keep-alive connection, holds a socket at most this long.
    "header_timeout": 60,
    "continue_handler": None,
    "error_handler": None,
    "compression": False,
    "executor": None,
    "http_versions": ("http/1.1",),
    "clock": None,
}

#: The protocols ``start_server`` speaks (``h3`` needs the ``http3`` extra: aioquic).
SERVER_VERSIONS = ("http/1.1", "h2", "h3")


@dataclasses.dataclass(frozen=True, slots=True)
class ServerOptions:
    """Validated ``start_server`` options (see :data:`DEFAULTS`)."""

    max_request_body_size: int | None = None
    max_initial_line_length: int = 8192
    max_header_size: int = 8192
    idle_timeout: float | None = None
    shutdown_timeout: float = 15
    header_timeout: float | None = 60
    continue_handler: Callable[[dict[str, Any]], Any] | None = None
    error_handler: Callable[[dict[str, Any], Any], Any] | None = None
    compression: bool = False
    executor: str | None = None
    http_versions: tuple[str, ...] = ("http/1.1",)
    clock: Any = None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def make_options(options: Mapping[str, Any]) -> ServerOptions:
    """Check ``options`` (keyword arguments of ``start_server``) and fill in defaults.

    :param options: option names to values.
    :returns: the validated options.
    :raises TypeError: for an unknown option name (named in the message).
    :raises ValueError: for a bad value (named in the message).
    """
    for name in options:
        if name not in DEFAULTS:
            known = ", ".join(sorted(DEFAULTS))
            raise TypeError(f"unknown HTTP server option {name!r} (known: {known})")
    merged = {**DEFAULTS, **options}
    body = merged["max_request_body_size"]
    if body is not None and (not _is_int(body) or body < 0):
        raise ValueError(f"max_request_body_size must be None or an int >= 0, not {body!r}")
    for name in ("max_initial_line_length", "max_header_size"):
        v = merged[name]
        if not _is_int(v) or v <= 0:
            raise ValueError(f"{name} must be an int > 0, not {v!r}")
    idle = merged["idle_timeout"]
    if idle is not None and (not _is_number(idle) or idle <= 0):
        raise ValueError(f"idle_timeout must be None or a number > 0, not {idle!r}")
    shutdown = merged["shutdown_timeout"]
    if not _is_number(shutdown) or shutdown < 0:
        raise ValueError(f"shutdown_timeout must be a number >= 0, not {shutdown!r}")
    head = merged["header_timeout"]
    if head is not None and (not _is_number(head) or head <= 0):
        raise ValueError(f"header_timeout must be None or a number > 0, not {head!r}")
    for name in ("continue_handler", "error_handler"):
        fn = merged[name]
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be callable or None, not {fn!r}")
    if not isinstance(merged["compression"], bool):
        raise ValueError(f"compression must be a bool, not {merged['compression']!r}")
    if merged["executor"] not in (None, "thread"):
        raise ValueError(f"executor must be None or 'thread', not {merged['executor']!r}")
    versions = check_http_versions(merged["http_versions"], SERVER_VERSIONS)
    if "http/1.1" not in versions:
        raise ValueError(f"http_versions must include 'http/1.1', not {versions!r}")
    merged["http_versions"] = versions
    return ServerOptions(**merged)


def check_versions_tls(versions: Sequence[str], tls: bool) -> None:
    """:raises ValueError: for ``h2`` (or ``h3``) without TLS: ALPN negotiates them (RFC 7301)."""
    for v in versions:
        if v != "http/1.1" and not tls:
            raise ValueError(
                f"http_versions with {v!r} needs TLS (ssl_context=, or ssl: endpoints): "
                "it is negotiated with ALPN"
            )


def is_tls_listen(listen: str | Sequence[str] | None, ssl_context: Any) -> bool:
    """Whether a ``start_server`` ``listen``/``ssl_context`` pair serves TLS only."""
    if listen is None:
        return ssl_context is not None
    descriptions = [listen] if isinstance(listen, str) else list(listen)
    return bool(descriptions) and all(d.lower().startswith("ssl:") for d in descriptions)


def check_request_line(method_len: int, url_len: int, max_initial_line_length: int) -> int | None:
    """414 when ``METHOD SP target SP HTTP/1.1`` is longer than the limit.

    :param method_len: length of the method token (0 if not known yet).
    :param url_len: length of the request target seen so far.
    """
    # RFC 9112 §3: request-line = method SP request-target SP HTTP-version
    if method_len + url_len + 10 > max_initial_line_length:
        return 414
    return None


def check_header_size(size: int, max_header_size: int) -> int | None:
    """431 when the header block (``name: value\\r\\n`` lines) exceeds the limit (RFC 6585 §5)."""
    if size > max_header_size:
        return 431
    return None


def check_content_length(length: int | None, received: int, max_body: int | None) -> int | None:
    """413 when the declared ``length`` or the bytes ``received`` so far exceed ``max_body``."""
    if max_body is None:
        return None
    if length is not None and length > max_body:
        return 413
    if received > max_body:
        return 413
    return None


def check_version(version: str) -> int | None:
    """505 for anything but HTTP/1.0 and HTTP/1.1 (HTTP/0.9 has no headers to frame with)."""
    if version == "1.1" or version == "1.0":
        return None
    return 505


def _digits(v: str) -> bool:
    return v.isascii() and v.isdigit()


def check_framing(
    content_lengths: Sequence[str], transfer_encodings: Sequence[str], version: str = "1.1"
) -> int | None:
    """400 for ambiguous body framing (RFC 9112 §6.1, §6.3): refuse, never guess.

    :param content_lengths: every ``Content-Length`` field value, as received.
    :param transfer_encodings: every ``Transfer-Encoding`` field value, as received.
    :param version: the request's HTTP version (``"1.0"`` or ``"1.1"``).
    :returns: 400 for both headers, differing or invalid lengths, a transfer coding
        list that does not end in ``chunked``, or any transfer coding in an HTTP/1.0
        request (RFC 9112 §6.1: such a message is faulty; answering it and keeping the
        connection would invite request smuggling); 501 for a transfer coding this
        server does not implement before a final ``chunked``; else ``None``.
    """
    if content_lengths and transfer_encodings:
        return 400
    if transfer_encodings and version == "1.0":
        return 400
    if content_lengths:
        values = {v.strip() for cl in content_lengths for v in cl.split(",")}
        if len(values) != 1:
            return 400
        (value,) = values
        if not _digits(value):
            return 400
        return None
    if transfer_encodings:
        codings = [c.strip().lower() for te in transfer_encodings for c in te.split(",")]
        if not codings or codings[-1] != "chunked":
            return 400
        if len(codings) > 1:
            return 400 if "chunked" in codings[:-1] else 501
    return None
