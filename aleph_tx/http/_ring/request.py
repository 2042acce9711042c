"""The Ring core (pure): request dicts in, response heads out.

Every front (the HTTP/1.1 protocol, the twisted.web resource, the testing helper)
builds requests and encodes responses with these functions, so they behave alike.
"""

from __future__ import annotations

import http
import re
import time
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from typing import Any

__all__ = [
    "NO_BODY_STATUSES",
    "build_request",
    "date_line",
    "encode_headers",
    "headers_dict",
    "http_date",
    "response_parts",
    "split_target",
    "status_line",
]

#: Statuses that never carry a body (RFC 9110 §6.4.1, §15.3.5, §15.4.5).
NO_BODY_STATUSES = frozenset({204, 304, *range(100, 200)})

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: CR, LF and NUL are never valid in a field value (response splitting).
_BAD_VALUE = re.compile(r"[\r\n\x00]")

_name_cache: dict[str, bytes] = {}
#: ``(name, value) -> b"name: value\r\n"`` for validated plain headers (bounded);
#: the HTTP/1.1 fast path uses it, so a header is validated once.
_LINE_CACHE: dict[tuple[str, str], bytes] = {}
#: status -> status line; only statuses that may carry a body (the fast path's).
_STATUS_CACHE: dict[int, bytes] = {}
_status_lines: dict[int, bytes] = {}


def headers_dict(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers as Ring wants them: lower-case names, repeats joined with ``", "``.

    :param pairs: ``(name, value)`` as received (ISO-8859-1, RFC 9110 §5.5).
    """
    headers: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        old = headers.get(name)
        headers[name] = value if old is None else f"{old}, {value}"
    return headers


def split_target(target: bytes) -> tuple[str, str | None]:
    """``(path, query_string)`` of a request target; the query is kept raw (not decoded).

    The absolute form (``http://host/path``, RFC 9112 §3.2.2) is reduced to its path.
    """
    text = target.decode("latin-1")
    if text[:1] != "/" and "://" in text:
        rest = text.split("://", 1)[1]
        slash = rest.find("/")
        query = rest.find("?")
        if slash < 0 or (0 <= query < slash):
            text = "/" + (rest[query:] if query >= 0 else "")
        else:
            text = rest[slash:]
    path, sep, query_string = text.partition("?")
    path = path.partition("#")[0]
    return path, (query_string.partition("#")[0] if sep else None)


def build_request(
    method: str,
    target: bytes,
    headers: dict[str, str],
    body: Any,
    scheme: str = "http",
    server_name: str = "localhost",
    server_port: int = 80,
    remote_addr: str = "",
    protocol: str = "HTTP/1.1",
    keep_alive: bool = True,
) -> dict[str, Any]:
    """A Ring request dict with every key of API.md.

    :param method: the method as received (any case; stored lower-case).
    :param target: the request target bytes (``/path?query``).
    :param headers: from :func:`headers_dict`.
    :param body: ``None`` or a :class:`~aleph_tx.stream.Stream` of ``bytes`` chunks.
    :param server_name: the server's own name; the ``Host`` header's name wins.
    """
    if target[:1] == b"/" and b"?" not in target and b"#" not in target:
        uri, query_string = target.decode("latin-1"), None
    else:
        uri, query_string = split_target(target)
    host = headers.get("host")
    if host:
        # RFC 9110 §7.2: Host = uri-host [ ":" port ]; an IPv6 literal is bracketed.
        if host.startswith("["):
            server_name = host[: host.find("]") + 1] or host
        else:
            server_name = (host.rpartition(":")[0] or host) if ":" in host else host
    return {
        "request_method": method.lower(),
        "uri": uri,
        "query_string": query_string,
        "headers": headers,
        "body": body,
        "scheme": scheme,
        "server_name": server_name,
        "server_port": server_port,
        "remote_addr": remote_addr,
        "protocol": protocol,
        "keep_alive": keep_alive,
    }


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
    if status not in NO_BODY_STATUSES:
        _STATUS_CACHE[status] = line
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
_SEEN = _FRAMING | {"content-encoding", "date"}


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
    if not isinstance(headers, Mapping):
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
    if response is None:
        return 204, None, None
    if not isinstance(response, dict):
        raise TypeError(f"a handler must return a response dict or None, not {response!r}")
    status = response.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        raise ValueError(f"response status must be an int in 100..999, not {status!r}")
    return status, response.get("headers"), response.get("body")


class _DateCache:
    """The ``Date`` header value (RFC 9110 §6.6.1), formatted at most once a second."""

    __slots__ = ("line", "second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""
        self.line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True).encode("ascii")
            self.line = b"date: " + self.value + b"\r\n"
        return self.value


_date_cache = _DateCache()


def http_date() -> bytes:
    """The current time as an HTTP date (``Wed, 25 Nov 2026 10:00:00 GMT``)."""
    return _date_cache.get()


def date_line() -> bytes:
    """``date: <now>\\r\\n``."""
    _date_cache.get()
    return _date_cache.line
