"""The client's options, checked once per call, and the URL and header helpers.

:class:`Options` holds the validated options of one ``request`` call: everything
that is wrong whatever the state (an unknown option, a bad value) raises here, at
once; everything later fails the Deferred.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from aleph_tx._time import get_reactor
from aleph_tx.http._client.pool import (
    DEFAULT_MAX_RESPONSE_HEADER_SIZE,
    ConnectionPool,
    check_client_versions,
    default_pool,
)
from aleph_tx.http._client.upload import Replayable, encode_form, encode_json, encode_multipart, make_body
from aleph_tx.tls import client_creator

__all__ = [
    "Options",
    "add_query",
    "host_header",
    "target_and_path",
]

NOTHING: Any = object()

#: option name -> default (the client table of the docs, plus reactor and clock).
DEFAULTS: dict[str, Any] = {
    "headers": None,
    "query_params": None,
    "form_params": None,
    "json": NOTHING,
    "body": None,
    "multipart": None,
    "basic_auth": None,
    "cookie_jar": None,
    "as_": "bytes",
    "decompress_body": True,
    "follow_redirects": True,
    "max_redirects": 20,
    "throw_exceptions": True,
    "pool": None,
    "pool_timeout": None,
    "connection_timeout": None,
    "request_timeout": None,
    "read_timeout": None,
    "proxy": None,
    "ssl_context": None,
    "insecure": False,
    "http_versions": None,  # the pool's (default ("http/1.1",))
    "max_response_header_size": DEFAULT_MAX_RESPONSE_HEADER_SIZE,
    "reactor": None,
    "clock": None,
}

AS_VALUES = ("bytes", "text", "json", "stream")
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TIMEOUTS = ("pool_timeout", "connection_timeout", "request_timeout", "read_timeout")
_PROXY_KEYS = frozenset({"host", "port", "protocol", "user", "password"})


class Options:
    """The validated options of one call (raises at once for a bad one)."""

    __slots__ = (
        "as_",
        "basic_auth",
        "body",
        "clock",
        "connection_timeout",
        "cookie_jar",
        "decompress_body",
        "follow_redirects",
        "h2",
        "h3",
        "headers",
        "insecure",
        "max_redirects",
        "max_response_header_size",
        "method",
        "pool",
        "pool_timeout",
        "proxy",
        "query_params",
        "reactor",
        "read_timeout",
        "request_timeout",
        "ssl_context",
        "tcp",
        "throw_exceptions",
        "url",
    )

    def __init__(self, method: str, url: str, kwargs: dict[str, Any]) -> None:
        upper = _METHODS.get(method) if type(method) is str else None
        if upper is None:
            upper = _check_method(method)
        self.method = upper
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {url!r}")
        scheme, host, _, _, _ = target_and_path(url)
        if scheme not in ("http", "https") or not host:
            raise ValueError(f"url must be an absolute http:// or https:// URL, not {url!r}")
        self.url = url
        # the defaults are valid: only what was given is checked
        for name, value in kwargs.items():
            check = _CHECKS.get(name)
            if check is None:
                if name not in DEFAULTS:
                    unknown = sorted(set(kwargs) - set(DEFAULTS))
                    raise TypeError(f"unknown option(s) {unknown!r}; known: {sorted(DEFAULTS)!r}")
            elif value is not None or DEFAULTS[name] is not None:
                check(name, value)
        o = DEFAULTS | kwargs if kwargs else DEFAULTS
        self.body = _content(o)
        pool = o["pool"]
        if pool is None:
            pool = default_pool()
        self.pool: ConnectionPool = pool
        versions = o["http_versions"]
        if versions is None:
            versions = pool.http_versions
        #: HTTP/2 offered over TLS; HTTP/3 wanted; any TCP version at all
        self.h2 = "h2" in versions
        self.h3 = "h3" in versions
        self.tcp = "http/1.1" in versions
        if o["ssl_context"] is not None and self.tcp:
            # the same check as at connect time: a bad kind raises now
            client_creator(host, o["ssl_context"], bool(o["insecure"]))
        if self.h3:
            _check_h3(scheme, self.tcp, o)
        headers = o["headers"]
        self.headers = user_headers(headers) if headers else []
        self.query_params = o["query_params"]
        self.basic_auth = o["basic_auth"]
        self.cookie_jar: CookieJar | None = o["cookie_jar"]
        self.as_: str = o["as_"]
        self.decompress_body = bool(o["decompress_body"])
        self.follow_redirects = bool(o["follow_redirects"])
        self.max_redirects: int = o["max_redirects"]
        self.throw_exceptions = bool(o["throw_exceptions"])
        self.pool_timeout: float | None = o["pool_timeout"]
        self.connection_timeout: float | None = o["connection_timeout"]
        self.request_timeout: float | None = o["request_timeout"]
        self.read_timeout: float | None = o["read_timeout"]
        proxy = o["proxy"]
        self.proxy: dict[str, Any] | None = dict(proxy) if proxy is not None else None
        self.ssl_context = o["ssl_context"]
        self.insecure = bool(o["insecure"])
        self.max_response_header_size: int = o["max_response_header_size"]
        reactor = o["reactor"]
        self.reactor = reactor if reactor is not None else get_reactor()
        clock = o["clock"]
        self.clock = clock if clock is not None else self.reactor


def _check_h3(scheme: str, tcp: bool, o: dict[str, Any]) -> None:
    """What HTTP/3 cannot do raises at once: an ``http://`` URL or a proxy without
    TCP to fall back on; an ``ssl_context`` QUIC cannot take."""
    if o["ssl_context"] is not None:
        from aleph_tx.http._quic.config import client_configuration

        client_configuration("localhost", o["ssl_context"], bool(o["insecure"]))
    if tcp:
        return
    if scheme != "https":
        raise ValueError("http_versions=('h3',) speaks HTTP/3, which needs an https:// URL")
    if o["proxy"] is not None:
        raise NotImplementedError("HTTP/3 through a proxy (CONNECT-UDP, RFC 9298) is not implemented")


#: Methods already checked, as they were given -> upper-case (a handful in practice).
_METHODS: dict[str, str] = {}


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or not method or not set(method) <= TOKEN:
        raise ValueError(f"bad HTTP method {method!r}")
    upper = method.upper()
    if len(_METHODS) < 256:
        _METHODS[method] = upper
    return upper


def _check_timeout(name: str, v: Any) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{name} must be a number >= 0 or None, not {v!r}")


def _check_max_redirects(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"max_redirects must be an int >= 0, not {v!r}")


def _check_header_size(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 64:
        raise ValueError(f"max_response_header_size must be an int >= 64, not {v!r}")


def _check_as(name: str, v: Any) -> None:
    if v not in AS_VALUES:
        raise ValueError(f"as_ must be one of {AS_VALUES!r}, not {v!r}")


def _check_pool(name: str, v: Any) -> None:
    if not isinstance(v, ConnectionPool):
        raise TypeError(f"pool must come from http.connection_pool(), not {v!r}")


def _check_versions(name: str, v: Any) -> None:
    check_client_versions(v)


def _check_jar(name: str, v: Any) -> None:
    if not isinstance(v, CookieJar):
        raise TypeError(f"cookie_jar must be an http.cookiejar.CookieJar, not {v!r}")


def _check_auth(name: str, v: Any) -> None:
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise TypeError(f"basic_auth must be a (user, password) pair, not {v!r}")


def _check_proxy(name: str, proxy: Any) -> None:
    if not isinstance(proxy, Mapping) or "host" not in proxy or "port" not in proxy:
        raise TypeError(f"proxy must be a dict with host and port, not {proxy!r}")
    if proxy.get("protocol", "http") not in ("http", "https"):
        raise ValueError(f"proxy protocol must be 'http' or 'https', not {proxy.get('protocol')!r}")
    unknown = set(proxy) - _PROXY_KEYS
    if unknown:
        raise TypeError(f"unknown proxy key(s) {sorted(unknown)!r}")


#: option -> its check (given a value other than None); options without one take anything.
_CHECKS: dict[str, Any] = {
    "as_": _check_as,
    "max_redirects": _check_max_redirects,
    "max_response_header_size": _check_header_size,
    "pool": _check_pool,
    "http_versions": _check_versions,
    "cookie_jar": _check_jar,
    "basic_auth": _check_auth,
    "proxy": _check_proxy,
    **dict.fromkeys(_TIMEOUTS, _check_timeout),
}


def _content(o: dict[str, Any]) -> Replayable | None:
    """The request body from ``body``, ``form_params``, ``json`` or ``multipart`` (one at most)."""
    given = [n for n in ("form_params", "body", "multipart") if o[n] is not None]
    if o["json"] is not NOTHING:
        given.append("json")
    if not given:
        return None
    if len(given) > 1:
        raise ValueError(f"give at most one of body, form_params, json, multipart; got {given!r}")
    if o["body"] is not None:
        return make_body(o["body"])
    if o["form_params"] is not None:
        return encode_form(o["form_params"])
    if o["multipart"] is not None:
        return encode_multipart(o["multipart"])
    return encode_json(o["json"])


def user_headers(headers: Any) -> list[tuple[str, str]]:
    """The ``headers`` option as (lower-case name, value) pairs; rejects CR/LF/NUL."""
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    out = []
    for name, value in items:
        if not isinstance(name, str) or not name or not set(name) <= TOKEN:
            raise ValueError(f"bad header name {name!r}")
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bytes):
                v = v.decode("latin-1")
            if not isinstance(v, str):
                v = str(v)
            if "\r" in v or "\n" in v or "\0" in v:
                raise ValueError(f"header {name!r} value contains CR, LF or NUL: {v!r}")
            out.append((name.lower(), v))
    return out


def add_query(url: str, params: Any) -> str:
    """``url`` with ``params`` (a dict or pairs; lists repeat the key) added to its query."""
    if not params:
        return url
    items = params.items() if hasattr(params, "items") else params
    query = urlencode(list(items), doseq=True)
    s = urlsplit(url)
    return urlunsplit((s.scheme, s.netloc, s.path, f"{s.query}&{query}" if s.query else query, ""))


_SAFE_PATH = "/%:@!$&'()*+,;=-._~"


@functools.lru_cache(maxsize=1024)
def target_and_path(url: str) -> tuple[str, str, int, bytes, str]:
    """scheme, host, port, request target (origin-form bytes) and the URL without fragment.

    Cached: the same URLs come back again and again.

    :raises ValueError: for a bad port.
    """
    s = urlsplit(url)
    scheme = s.scheme.lower()
    host = s.hostname or ""
    try:
        port = s.port or (443 if scheme == "https" else 80)
    except ValueError as e:
        raise ValueError(f"bad port in {url!r}") from e
    path = quote(s.path or "/", safe=_SAFE_PATH)
    if s.query:
        path += "?" + quote(s.query, safe=_SAFE_PATH + "?")
    return scheme, host, port, path.encode("ascii"), urlunsplit((scheme, s.netloc, s.path, s.query, ""))


@functools.lru_cache(maxsize=256)
def host_header(scheme: str, host: str, port: int) -> str:
    """The ``Host`` value (RFC 9112 §3.2): IDNA host, brackets for IPv6, port unless the default."""
    shown = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    if (scheme, port) in (("http", 80), ("https", 443)):
        return shown
    return f"{shown}:{port}"
