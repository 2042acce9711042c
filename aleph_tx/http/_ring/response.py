"""Response heads (pure): validated header lines, status lines, dates, whole responses.

The HTTP/1.1 front writes what :func:`head_bytes` and :func:`whole_response` frame;
the other fronts use the validated lines (:func:`encode_headers`) and frame them
their own way. A header is validated once: its encoded line is cached.
"""

from __future__ import annotations

import http
import re
import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

__all__ = [
    "NO_BODY_STATUSES",
    "encode_headers",
    "head_bytes",
    "http_date",
    "response_parts",
    "simple_response",
    "status_line",
    "whole_response",
]

#: Statuses that never carry a body (RFC 9110 §6.4.1, §15.3.5, §15.4.5).
NO_BODY_STATUSES = frozenset({204, 304, *range(100, 200)})

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: CR, LF and NUL are never valid in a field value (response splitting).
_BAD_VALUE = re.compile(r"[\r\n\x00]")

_name_cache: dict[str, bytes] = {}
#: ``(name, value) -> b"name: value\r\n"`` for validated plain headers (bounded):
#: a header is validated once.
_LINE_CACHE: dict[tuple[str, str], bytes] = {}
_status_lines: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n`` (cached).

    :raises ValueError: for a status outside 100–999.
    """
    line = _status_lines.get(status) if type(status) is int else None
    if line is not None:
        return line
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        raise ValueError(f"response status must be an int in 100..999, not {status!r}")
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    line = f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")
    _status_lines[status] = line
    return line


def _encode_name(name: Any) -> bytes:
    cached = _name_cache.get(name)
    if cached is not None:
        return cached
    if not isinstance(name, str):
        raise TypeError(f"a response header name must be a str, not {name!r}")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid response header name {name!r}")
    encoded = name.encode("ascii")
    if len(_name_cache) < 1024:
        _name_cache[name] = encoded
    return encoded


def _encode_value(name: str, value: Any) -> bytes:
    if type(value) is str:
        text: str = value
    elif (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str):
        text = str(value)
    else:
        raise TypeError(f"response header {name!r} must be a str or a list of str, not {value!r}")
    if _BAD_VALUE.search(text):
        raise ValueError(f"response header {name!r} has CR, LF or NUL in its value {text!r}")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"response header {name!r} value {value!r} is not ISO-8859-1") from None


#: Header names the framing code owns; a handler's values for these are replaced.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
#: Header names whose values the front needs to see (never served from the line cache).
_SEEN = _FRAMING | {"alt-svc", "content-encoding", "date"}


def encode_headers(headers: Mapping[str, Any] | None) -> tuple[list[bytes], dict[str, str]]:
    """Validate and encode response headers.

    :param headers: names to a ``str`` (one line) or a list of ``str`` (one line each).
    :returns: the encoded ``name: value\\r\\n`` lines (framing headers left out) and
        the values the front needs (lower-case names: ``content-length``,
        ``transfer-encoding``, ``connection``, ``content-encoding``, ``date``).
    :raises ValueError: for CR, LF or NUL in a name or value (no response splitting).
    :raises TypeError: for a value that is not a ``str`` or a list of ``str``.
    """
    lines: list[bytes] = []
    seen: dict[str, str] = {}
    if not headers:
        return lines, seen
    if type(headers) is not dict and not isinstance(headers, Mapping):
        raise TypeError(f"response headers must be a dict, not {headers!r}")
    for name, value in headers.items():
        if type(value) is str:
            line = _LINE_CACHE.get((name, value))
            if line is not None:
                lines.append(line)
                continue
        raw_name = _encode_name(name)
        lower = name.lower()
        values = value if isinstance(value, (list, tuple)) else (value,)
        for v in values:
            raw_value = _encode_value(name, v)
            if lower in _SEEN:
                seen[lower] = raw_value.decode("latin-1")
                if lower in _FRAMING:
                    continue
            line = raw_name + b": " + raw_value + b"\r\n"
            lines.append(line)
            if type(value) is str and lower not in _SEEN and len(_LINE_CACHE) < 4096:
                _LINE_CACHE[(name, value)] = line
    return lines, seen


def response_parts(response: Any) -> tuple[int, Mapping[str, Any] | None, Any]:
    """``(status, headers, body)`` of a handler's response (``None`` → 204).

    :raises TypeError: for a response that is not a dict or ``None``.
    :raises ValueError: for a status outside 100–999.
    """
    if type(response) is dict:
        status = response.get("status", 200)
        if type(status) is int and 100 <= status <= 999:  # the common case, checked once
            return status, response.get("headers"), response.get("body")
    elif response is None:
        return 204, None, None
    elif not isinstance(response, dict):
        raise TypeError(f"a handler must return a response dict or None, not {response!r}")
    status = response.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        raise ValueError(f"response status must be an int in 100..999, not {status!r}")
    return status, response.get("headers"), response.get("body")


class _DateCache:
    """The ``Date`` header (RFC 9110 §6.6.1), formatted at most once a second."""

    __slots__ = ("line", "second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""
        self.line = b""

    def update(self, now: int) -> None:
        self.second = now
        self.value = formatdate(now, usegmt=True).encode("ascii")
        self.line = b"date: " + self.value + b"\r\n"


_date = _DateCache()


def http_date() -> bytes:
    """The current time as an HTTP date (``Wed, 25 Nov 2026 10:00:00 GMT``)."""
    now = int(time.time())
    if now != _date.second:
        _date.update(now)
    return _date.value


def head_bytes(
    status: int, lines: list[bytes], seen: Mapping[str, str], framing: bytes, keep: bool, version10: bool
) -> list[bytes]:
    """The pieces of an HTTP/1.1 response head (joined by the caller with the body).

    :param lines: validated header lines (:func:`encode_headers`, framing left out).
    :param seen: the values :func:`encode_headers` reported (a handler's ``date`` wins).
    :param framing: ``content-length: N\\r\\n``, ``transfer-encoding: chunked\\r\\n`` or ``b""``.
    :param keep: keep the connection open afterwards (else ``connection: close``).
    :param version10: an HTTP/1.0 request (keep-alive must be said, RFC 9112 §9.3).
    """
    parts = [_status_lines.get(status) or status_line(status), *lines]
    if "date" not in seen:
        now = int(time.time())
        if now != _date.second:
            _date.update(now)
        parts.append(_date.line)
    if framing:
        parts.append(framing)
    if not keep:
        parts.append(b"connection: close\r\n")
    elif version10:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return parts


def whole_response(
    status: int,
    lines: list[bytes],
    seen: Mapping[str, str],
    body: bytes,
    keep: bool,
    head: bool,
    version10: bool,
) -> bytes:
    """A complete HTTP/1.1 response whose body is all here (one write).

    A status without a body (RFC 9110 §6.4.1) sends none and no length; a ``HEAD``
    answer gets the length the body has, or the handler's ``content-length`` when it
    gave no body (RFC 9110 §9.3.2).
    """
    line = _status_lines.get(status)
    if (
        line is not None
        and body
        and keep
        and not head
        and not version10
        and "date" not in seen
        and status not in NO_BODY_STATUSES
    ):  # the common case, framed as head_bytes frames it, in one join
        now = int(time.time())
        if now != _date.second:
            _date.update(now)
        return b"".join((line, *lines, _date.line, b"content-length: %d\r\n\r\n" % len(body), body))
    if status in NO_BODY_STATUSES:
        framing = b""
    else:
        length = len(body)
        if head and not body:
            declared = seen.get("content-length")
            if declared is not None and declared.isdigit():
                length = int(declared)
        framing = b"content-length: %d\r\n" % length
    parts = head_bytes(status, lines, seen, framing, keep, version10)
    if body and not head and framing:
        parts.append(body)
    return b"".join(parts)


def simple_response(status: int, keep_alive: bool = False) -> bytes:
    """A complete plain-text response for ``status`` (protocol errors: no internals leak)."""
    reason = status_line(status).split(b" ", 2)[2].strip()
    lines = [b"content-type: text/plain; charset=utf-8\r\n"]
    return whole_response(status, lines, {}, reason, keep_alive, False, False)
