"""The HTTP client: clj-http's request maps on Twisted's HTTP/1.1 client protocol.

``request(method, url, **options)`` returns a ``Deferred`` firing with a response
dict (``status``, ``headers``, ``body``, ``request_time``). Each request takes a
connection from a :class:`~aleph_tx.http._pool.ConnectionPool` (the shared default
pool unless ``pool=`` is given), sends the request with Twisted's
``HTTP11ClientProtocol``, and reads the body as ``as_`` asks, decoding gzip and
deflate on the way (``decompress_body``, :mod:`._decode`).

Stages and their timeouts: waiting for a pooled connection (``pool_timeout``),
connecting plus the TLS handshake (``connection_timeout``), sending until the
response headers (``request_timeout``), the longest stall reading the body
(``read_timeout``). Cancelling the returned Deferred stops whichever stage is
running and aborts the connection (an HTTP/2 request resets only its stream).

With ``http_versions=("h2", "http/1.1")`` and an ``https://`` URL, ALPN may pick
HTTP/2 (:mod:`aleph_tx.http._client_h2`): the request is a stream on a shared
connection, with the same response dict.
"""

from __future__ import annotations

import base64
import email.message
import functools
import json as jsonlib
import urllib.request
from collections.abc import Callable, Mapping
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web._newclient import (
    ConnectionAborted,
    Request,
    RequestGenerationFailed,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import _DataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from aleph_tx.errors import (
    AlephError,
    ClientResponseError,
    ConnectionLostError,
    ProtocolError,
    RedirectError,
    RequestTimeout,
)
from aleph_tx.http._client_body import (
    BodyCollector,
    BodyStreamer,
    Replayable,
    encode_form,
    encode_json,
    encode_multipart,
    make_producer,
)
from aleph_tx.http._client_connect import Target, check_ssl_context, make_connector, with_timeout
from aleph_tx.http._client_connect import proxy_authorization as _proxy_auth
from aleph_tx.http._decode import ContentDecoder, decoder_for
from aleph_tx.http._pool import (
    DEFAULT_MAX_RESPONSE_HEADER_SIZE,
    ConnectionPool,
    _ClientProtocol,
    _global_reactor,
    check_http_versions,
    connection_pool,
    default_pool,
)
from aleph_tx.stream import from_iterable

__all__ = [
    "ClientResponseError",
    "ConnectionPool",
    "connection_pool",
    "default_pool",
    "delete",
    "get",
    "head",
    "options",
    "patch",
    "post",
    "put",
    "request",
]

_NOTHING: Any = object()

#: option name -> default (API.md's client table, plus reactor and clock).
_OPTIONS: dict[str, Any] = {
    "headers": None,
    "query_params": None,
    "form_params": None,
    "json": _NOTHING,
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

_AS = ("bytes", "text", "json", "stream")
#: A redirect's body is read (and dropped) to keep its connection only up to this size.
_MAX_REDIRECT_BODY = 65536
_REDIRECTS = (301, 302, 303, 307, 308)
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CONNECTION_REASONS = (
    ConnectionDone,
    ConnectionLost,
    ConnectError,
    ConnectionAborted,
    _DataLoss,
    SSL.Error,
    ConnectionLostError,
)


class _Options:
    """The validated options of one call (raises at once for a bad one)."""

    def __init__(self, method: str, url: str, kwargs: dict[str, Any]) -> None:
        unknown = set(kwargs) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)!r}; known: {sorted(_OPTIONS)!r}")
        o = dict(_OPTIONS)
        o.update(kwargs)
        if not isinstance(method, str) or not method or not set(method) <= _TOKEN:
            raise ValueError(f"bad HTTP method {method!r}")
        self.method = method.upper()
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {url!r}")
        split = urlsplit(url)
        if split.scheme.lower() not in ("http", "https") or not split.hostname:
            raise ValueError(f"url must be an absolute http:// or https:// URL, not {url!r}")
        self.url = url
        content = [n for n in ("form_params", "body", "multipart") if o[n] is not None]
        if o["json"] is not _NOTHING:
            content.append("json")
        if len(content) > 1:
            raise ValueError(f"give at most one of body, form_params, json, multipart; got {content!r}")
        self.body: Replayable | None = None
        if o["body"] is not None:
            self.body = make_producer(o["body"])
        elif o["form_params"] is not None:
            self.body = encode_form(o["form_params"])
        elif o["json"] is not _NOTHING:
            self.body = encode_json(o["json"])
        elif o["multipart"] is not None:
            self.body = encode_multipart(o["multipart"])
        if o["as_"] not in _AS:
            raise ValueError(f"as_ must be one of {_AS!r}, not {o['as_']!r}")
        self.as_: str = o["as_"]
        self.decompress_body = bool(o["decompress_body"])
        for name in ("pool_timeout", "connection_timeout", "request_timeout", "read_timeout"):
            v = o[name]
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0):
                raise ValueError(f"{name} must be a number >= 0 or None, not {v!r}")
        mr = o["max_redirects"]
        if not isinstance(mr, int) or isinstance(mr, bool) or mr < 0:
            raise ValueError(f"max_redirects must be an int >= 0, not {mr!r}")
        mh = o["max_response_header_size"]
        if not isinstance(mh, int) or isinstance(mh, bool) or mh < 64:
            raise ValueError(f"max_response_header_size must be an int >= 64, not {mh!r}")
        pool = o["pool"]
        if pool is not None and not isinstance(pool, ConnectionPool):
            raise TypeError(f"pool must come from http.connection_pool(), not {pool!r}")
        if o["http_versions"] is not None:
            versions = check_http_versions(o["http_versions"])
        else:
            versions = (pool if pool is not None else default_pool()).http_versions
        self.h2 = "h2" in versions
        jar = o["cookie_jar"]
        if jar is not None and not isinstance(jar, CookieJar):
            raise TypeError(f"cookie_jar must be an http.cookiejar.CookieJar, not {jar!r}")
        auth = o["basic_auth"]
        if auth is not None and (not isinstance(auth, (tuple, list)) or len(auth) != 2):
            raise TypeError(f"basic_auth must be a (user, password) pair, not {auth!r}")
        proxy = o["proxy"]
        if proxy is not None:
            if not isinstance(proxy, Mapping) or "host" not in proxy or "port" not in proxy:
                raise TypeError(f"proxy must be a dict with host and port, not {proxy!r}")
            if proxy.get("protocol", "http") not in ("http", "https"):
                raise ValueError(f"proxy protocol must be 'http' or 'https', not {proxy.get('protocol')!r}")
            unknown_p = set(proxy) - {"host", "port", "protocol", "user", "password"}
            if unknown_p:
                raise TypeError(f"unknown proxy key(s) {sorted(unknown_p)!r}")
        if o["ssl_context"] is not None and o["insecure"]:
            raise ValueError("give ssl_context or insecure=True, not both")
        check_ssl_context(o["ssl_context"])
        self.headers = _user_headers(o["headers"])
        self.query_params = o["query_params"]
        self.basic_auth = auth
        self.cookie_jar: CookieJar | None = jar
        self.follow_redirects = bool(o["follow_redirects"])
        self.max_redirects: int = mr
        self.throw_exceptions = bool(o["throw_exceptions"])
        self.pool: ConnectionPool = pool if pool is not None else default_pool()
        self.pool_timeout = o["pool_timeout"]
        self.connection_timeout = o["connection_timeout"]
        self.request_timeout = o["request_timeout"]
        self.read_timeout = o["read_timeout"]
        self.proxy: dict[str, Any] | None = dict(proxy) if proxy is not None else None
        self.ssl_context = o["ssl_context"]
        self.insecure = bool(o["insecure"])
        self.max_response_header_size: int = mh
        reactor = o["reactor"]
        if reactor is None:
            reactor = _global_reactor()
        self.reactor = reactor
        self.clock: IReactorTime = o["clock"] if o["clock"] is not None else reactor


def _user_headers(headers: Any) -> list[tuple[str, str]]:
    """The ``headers`` option as (lower-case name, value) pairs; rejects CR/LF/NUL."""
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    out = []
    for name, value in items:
        if not isinstance(name, str) or not name or not set(name) <= _TOKEN:
            raise ValueError(f"bad header name {name!r}")
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bytes):
                v = v.decode("latin-1")
            if not isinstance(v, str):
                v = str(v)
            if any(c in v for c in "\r\n\0"):
                raise ValueError(f"header {name!r} value contains CR, LF or NUL: {v!r}")
            out.append((name.lower(), v))
    return out


def _add_query(url: str, params: Any) -> str:
    if not params:
        return url
    items = params.items() if hasattr(params, "items") else params
    query = urlencode(list(items), doseq=True)
    s = urlsplit(url)
    return urlunsplit((s.scheme, s.netloc, s.path, f"{s.query}&{query}" if s.query else query, ""))


def _target_and_path(url: str) -> tuple[str, str, int, bytes, str]:
    """scheme, host, port, request path (bytes), and the URL without fragment."""
    s = urlsplit(url)
    scheme = s.scheme.lower()
    host = s.hostname or ""
    try:
        port = s.port or (443 if scheme == "https" else 80)
    except ValueError as e:
        raise ValueError(f"bad port in {url!r}") from e
    path = quote(s.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if s.query:
        path += "?" + quote(s.query, safe="/%:@!$&'()*+,;=-._~?")
    return scheme, host, port, path.encode("ascii"), urlunsplit((scheme, s.netloc, s.path, s.query, ""))


def _host_header(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    if (scheme, port) in (("http", 80), ("https", 443)):
        return shown
    return f"{shown}:{port}"


def translate_failure(f: Failure) -> BaseException:
    """Twisted's client errors as aleph_tx errors (ProtocolError, ConnectionLostError)."""
    exc: BaseException = f.value  # type: ignore[assignment]
    if isinstance(exc, (AlephError, CancelledError)):
        return exc
    if isinstance(exc, RequestNotSent):
        return ConnectionLostError("the connection closed before the request was sent", exc)
    if isinstance(exc, RequestGenerationFailed):
        inner = exc.reasons[0].value if exc.reasons else None
        return inner if inner is not None else exc
    if isinstance(exc, (ResponseFailed, RequestTransmissionFailed)):
        reasons = [r.value for r in exc.reasons]
        for r in reasons:
            if isinstance(r, (AlephError, CancelledError)):
                return r
        for r in reasons:
            if isinstance(r, SSL.Error):
                return r  # a TLS failure (an HTTPS proxy's certificate), as on direct connections
            if not isinstance(r, _CONNECTION_REASONS):
                return ProtocolError(f"malformed response: {r!r}")
        return ConnectionLostError(f"connection lost: {reasons[0]!r}" if reasons else "connection lost", exc)
    if isinstance(exc, (ConnectionDone, ConnectionLost)):
        return ConnectionLostError(f"connection lost: {exc!r}", exc)
    return exc


class _CookieResponse:
    """What ``CookieJar.extract_cookies`` needs of a response."""

    def __init__(self, raw: list[tuple[bytes, list[bytes]]]) -> None:
        self._msg = email.message.Message()
        for name, values in raw:
            for v in values:
                self._msg[name.decode("latin-1")] = v.decode("latin-1")

    def info(self) -> email.message.Message:
        return self._msg


def _raw_headers(response: IResponse, proto: _ClientProtocol) -> list[tuple[bytes, list[bytes]]]:
    raw = list(response.headers.getAllRawHeaders())
    parser = proto.last_parser
    if parser is not None and proto.h2 is None:
        raw.extend(parser.connHeaders.getAllRawHeaders())
    return raw


def _header_dict(raw: list[tuple[bytes, list[bytes]]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, values in raw:
        key = name.decode("latin-1").lower()
        joined = ", ".join(v.decode("latin-1") for v in values)
        out[key] = f"{out[key]}, {joined}" if key in out else joined
    return out


def _charset(content_type: str | None) -> str:
    if content_type:
        for param in content_type.split(";")[1:]:
            k, _, v = param.strip().partition("=")
            if k.strip().lower() == "charset" and v:
                charset = v.strip().strip('"')
                import codecs

                try:
                    codecs.lookup(charset)
                except LookupError:
                    return "utf-8"
                return charset
    return "utf-8"


def _coerce(data: bytes, as_: str, headers: dict[str, str]) -> Any:
    if as_ == "text":
        return data.decode(_charset(headers.get("content-type")), errors="replace")
    if as_ == "json":
        if not data.strip():
            return None
        return jsonlib.loads(data.decode(_charset(headers.get("content-type")), errors="replace"))
    if as_ == "stream":
        return from_iterable([data] if data else [])
    return data


class _Exchange:
    """One request/response on one pooled connection (HTTP/1.1, or a stream of HTTP/2)."""

    def __init__(self, o: _Options) -> None:
        self.o = o

    async def send(
        self, method: bytes, url: str, headers: list[tuple[str, str]], body: Replayable | None
    ) -> tuple[Any, Callable[[], None], list[tuple[bytes, list[bytes]]]]:
        """Send; returns the response, a function aborting this exchange, and the raw headers."""
        o = self.o
        scheme, host, port, path, _ = _target_and_path(url)
        target = Target(scheme, host, port, o.ssl_context, o.insecure, o.proxy, o.h2)
        connector = make_connector(
            target, o.reactor, o.connection_timeout, o.clock, o.max_response_header_size
        )
        h = Headers()
        names = {n for n, _ in headers}
        authority = _host_header(scheme, host, port)
        if "host" not in names:
            h.addRawHeader(b"Host", authority.encode("ascii"))
        for n, v in headers:
            h.addRawHeader(n.encode("latin-1"), v.encode("latin-1"))
        request_target = path
        if target.via_http_proxy:
            request_target = f"{scheme}://{authority}".encode("ascii") + path
            assert o.proxy is not None
            auth = _proxy_auth(o.proxy)
            if auth is not None and "proxy-authorization" not in names:
                h.addRawHeader(b"Proxy-Authorization", auth)
        attempts = 2 if method in _IDEMPOTENT else 1
        while True:
            attempts -= 1
            producer = body.producer() if body is not None else None
            proto = await o.pool.acquire(target.key, connector, o.pool_timeout, o.clock, target.h2)
            reused = proto.requests > 0
            req = Request(method, request_target, h, producer, persistent=o.pool.keep_alive)
            abort: Callable[[], None]
            if proto.h2 is not None:
                proto.requests += 1
                stream = proto.h2.request(req, scheme.encode("ascii"), authority.encode("ascii"))
                d = stream.response_d
                abort = stream.abort
            else:
                d = proto.send(req, o.max_response_header_size)
                abort = functools.partial(o.pool.discard, proto)

            def timed_out() -> Exception:
                return RequestTimeout(
                    f"no response headers from {host}:{port} within request_timeout={o.request_timeout!r}"
                )

            d = with_timeout(d, o.request_timeout, timed_out, o.clock)
            try:
                response = await d
            except (ResponseNeverReceived, RequestNotSent) as e:
                abort()
                # a kept-alive connection the server closed as we reused it: retry
                # once on a new one (idempotent methods with a replayable body only)
                if reused and attempts > 0 and (body is None or body.replayable):
                    continue
                raise translate_failure(Failure(e)) from None
            except (ResponseFailed, RequestTransmissionFailed, RequestGenerationFailed) as e:
                abort()
                raise translate_failure(Failure(e)) from None
            except BaseException:
                abort()
                raise
            return response, abort, _raw_headers(response, proto)

    def read_body(
        self,
        response: Any,
        abort: Callable[[], None],
        decoder: ContentDecoder | None = None,
        discard: bool = False,
    ) -> Deferred[bytes]:
        """The whole body, decoded by ``decoder`` (``discard``: read and drop it, for redirects)."""
        collector = BodyCollector(
            abort, translate_failure, self.o.read_timeout, self.o.clock, discard=discard, decoder=decoder
        )
        response.deliverBody(collector)
        return collector.done

    def stream_body(self, response: Any, abort: Callable[[], None], decoder: ContentDecoder | None) -> Any:
        """The body as a Stream of chunks, with backpressure."""
        streamer = BodyStreamer(abort, translate_failure, self.o.read_timeout, self.o.clock, decoder)
        response.deliverBody(streamer)
        return streamer.stream


def _cookie_request(url: str, method: str, headers: list[tuple[str, str]]) -> urllib.request.Request:
    return urllib.request.Request(url, method=method, headers=dict(headers))


async def _run(o: _Options) -> dict[str, Any]:
    start = o.clock.seconds()
    method = o.method
    url = _add_query(o.url, o.query_params)
    body = o.body
    headers = list(o.headers)
    names = {n for n, _ in headers}
    if body is not None and body.content_type and "content-type" not in names:
        headers.append(("content-type", body.content_type))
    if o.decompress_body and "accept-encoding" not in names:
        headers.append(("accept-encoding", "gzip, deflate"))
    if o.basic_auth is not None and "authorization" not in names:
        user, password = o.basic_auth
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers.append(("authorization", f"Basic {token}"))
    exchange = _Exchange(o)
    visited: set[tuple[str, str]] = set()
    redirects = 0
    while True:
        send_headers = headers
        jar = o.cookie_jar
        creq = None
        if jar is not None:
            creq = _cookie_request(url, method, headers)
            jar.add_cookie_header(creq)
            cookie = creq.get_header("Cookie") or creq.unredirected_hdrs.get("Cookie")
            if cookie and "cookie" not in {n for n, _ in headers}:
                send_headers = [*headers, ("cookie", cookie)]
        response, abort, raw = await exchange.send(method.encode("ascii"), url, send_headers, body)
        if jar is not None and creq is not None:
            jar.extract_cookies(_CookieResponse(raw), creq)  # type: ignore[arg-type]
        status = response.code
        hdrs = _header_dict(raw)
        location = hdrs.get("location")
        if o.follow_redirects and status in _REDIRECTS and location:
            length: Any = getattr(response, "length", UNKNOWN_LENGTH)
            if isinstance(length, int) and length <= _MAX_REDIRECT_BODY:
                # read and drop it, so the connection can be reused
                await exchange.read_body(response, abort, discard=True)
            else:
                abort()  # a long or endless redirect body is not worth reading
            redirects += 1
            if redirects > o.max_redirects:
                raise RedirectError(
                    f"more than max_redirects={o.max_redirects} redirects, last to {location!r}"
                )
            new_url = urljoin(url, location.strip())
            try:
                new_parts = _target_and_path(new_url)
            except (ValueError, UnicodeError) as e:
                raise RedirectError(f"bad redirect location {location!r}") from e
            if new_parts[0] not in ("http", "https") or not new_parts[1]:
                raise RedirectError(f"redirect to an unsupported URL {new_url!r}")
            old = _target_and_path(url)
            if not visited:
                visited.add((method, old[4]))
            if status in (301, 302, 303) and method != "HEAD":
                method = "GET"
                body = None
                headers = [(n, v) for n, v in headers if n not in ("content-type", "content-length")]
            elif body is not None and not body.replayable:
                raise RedirectError(f"cannot resend a streamed request body to {new_url!r} after {status}")
            if (new_parts[0], new_parts[1], new_parts[2]) != (old[0], old[1], old[2]):
                # RFC 9110 section 15.4: do not leak credentials to another origin
                headers = [(n, v) for n, v in headers if n not in ("authorization", "cookie", "host")]
            key = (method, new_parts[4])
            if key in visited:
                raise RedirectError(f"redirect loop: {method} {new_url!r} was already visited")
            visited.add(key)
            url = new_url
            continue
        decoder = decoder_for(hdrs.get("content-encoding")) if o.decompress_body else None
        if o.as_ == "stream" and not (o.throw_exceptions and status >= 400):
            resp_body: Any = exchange.stream_body(response, abort, decoder)
        else:
            data = await exchange.read_body(response, abort, decoder)
            resp_body = _coerce(data, o.as_, hdrs)
        result = {
            "status": status,
            "headers": hdrs,
            "body": resp_body,
            "request_time": o.clock.seconds() - start,
        }
        if o.throw_exceptions and status >= 400:
            raise ClientResponseError(result)
        return result


def request(method: str, url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """Send one HTTP request; fires with the response dict.

    :param method: any case; sent upper-case.
    :param url: an absolute ``http://`` or ``https://`` URL.
    :param options: see the client table of the API (``headers``, ``query_params``,
        ``body``, ``as_``, ``pool``, the four timeouts, ...), plus ``reactor`` and
        ``clock``.
    :returns: a Deferred firing with ``{"status", "headers", "body", "request_time"}``;
        it fails with :class:`~aleph_tx.errors.ClientResponseError` (status >= 400
        while ``throw_exceptions``), a :class:`~aleph_tx.errors.TimeoutError`
        subclass, :class:`~aleph_tx.errors.ProtocolError`,
        :class:`~aleph_tx.errors.ConnectionLostError` or
        :class:`~aleph_tx.errors.RedirectError`; cancelling it aborts the connection.
    :raises TypeError: at once, for an unknown option name or an option of the wrong type.
    :raises ValueError: at once, for a bad method, URL or option value.
    :raises NotImplementedError: at once, for ``http_versions=("h2",)`` without ``"http/1.1"``.
    """
    o = _Options(method, url, options)
    return Deferred.fromCoroutine(_run(o))


def get(url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """``request("GET", url, **options)``."""
    return request("GET", url, **options)


def head(url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """``request("HEAD", url, **options)``."""
    return request("HEAD", url, **options)


def post(url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """``request("POST", url, **options)``."""
    return request("POST", url, **options)


def put(url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """``request("PUT", url, **options)``."""
    return request("PUT", url, **options)


def patch(url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """``request("PATCH", url, **options)``."""
    return request("PATCH", url, **options)


def delete(url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """``request("DELETE", url, **options)``."""
    return request("DELETE", url, **options)


def options(url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """``request("OPTIONS", url, **options)``."""
    return request("OPTIONS", url, **options)
