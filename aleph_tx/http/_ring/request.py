"""Ring request dicts (pure): what every front builds from a parsed request head."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["build_request", "headers_dict", "host_name", "split_target"]

_LOWER = {m: m.lower() for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
#: ``Host`` values seen to their host name (bounded): a server sees few.
_SERVER_NAMES: dict[str, str] = {}


def headers_dict(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers as Ring wants them: lower-case names, repeats joined with ``", "``.

    :param pairs: ``(name, value)`` as received (ISO-8859-1, RFC 9110 §5.5).
    """
    headers: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        old = headers.get(name)
        # RFC 9110 §5.3: repeated fields combine with ", "
        headers[name] = value if old is None else f"{old}, {value}"
    return headers


def _absolute(text: str) -> tuple[str, str] | None:
    """``(authority, rest)`` of an absolute-form target (RFC 9112 §3.2.2), else ``None``."""
    if text[:1] == "/" or "://" not in text:
        return None
    rest = text.split("://", 1)[1]
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    authority = rest[:end].rpartition("@")[2]  # userinfo is not part of the host
    path = rest[end:]
    if path[:1] != "/":
        path = "/" + path
    return authority, path


def split_target(target: bytes) -> tuple[str, str | None]:
    """``(path, query_string)`` of a request target; the query is kept raw (not decoded).

    The absolute form (``http://host/path``, RFC 9112 §3.2.2) is reduced to its path.
    """
    text = target.decode("latin-1")
    absolute = _absolute(text)
    if absolute is not None:
        text = absolute[1]
    path, sep, query_string = text.partition("?")
    path = path.partition("#")[0]
    return path, (query_string.partition("#")[0] if sep else None)


def host_name(authority: str) -> str:
    """The host of ``host[:port]`` (RFC 9110 §7.2); an IPv6 literal keeps its brackets."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end > 0 else authority
    return authority.rpartition(":")[0] if ":" in authority else authority


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
    """A Ring request dict with every key of the request contract.

    :param method: the method as received (any case; stored lower-case).
    :param target: the request target bytes (``/path?query``, or the absolute form).
    :param headers: from :func:`headers_dict`.
    :param body: ``None`` or a :class:`~aleph_tx.stream.Stream` of ``bytes`` chunks.
    :param server_name: the server's own name, used when the request names none: an
        absolute-form target's authority wins (RFC 9112 §3.2.2), else the ``Host``
        header's name.
    """
    authority = None
    if target[:1] == b"/" and 63 not in target and 35 not in target:  # no "?" nor "#"; ints: fast
        uri, query_string = target.decode("latin-1"), None
    else:
        uri, query_string = split_target(target)
        absolute = _absolute(target.decode("latin-1"))
        if absolute is not None:
            authority = absolute[0]
    if not authority:
        authority = headers.get("host")
    if authority:
        name = _SERVER_NAMES.get(authority)
        if name is None:
            name = host_name(authority) if ":" in authority or authority[:1] == "[" else authority
            if len(_SERVER_NAMES) < 256:
                _SERVER_NAMES[authority] = name
        server_name = name
    return {
        "request_method": _LOWER.get(method) or method.lower(),
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
