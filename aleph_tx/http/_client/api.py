"""The HTTP client: clj-http's request maps on Twisted's HTTP/1.1 client protocol.

``request(method, url, **options)`` returns a ``Deferred`` firing with a response
dict (``status``, ``headers``, ``body``, ``request_time``). Each request takes a
connection from a :class:`~aleph_tx.http._client.pool.ConnectionPool` (the shared default
pool unless ``pool=`` is given), sends the request with Twisted's
``HTTP11ClientProtocol``, and reads the body as ``as_`` asks, decoding gzip and
deflate on the way (``decompress_body``, :mod:`aleph_tx.http._ring.coding`).

Stages and their timeouts: waiting for a pooled connection (``pool_timeout``),
connecting plus the TLS handshake (``connection_timeout``), sending until the
response headers (``request_timeout``), the longest stall reading the body
(``read_timeout``). Cancelling the returned Deferred stops whichever stage is
running and aborts the connection (an HTTP/2 request resets only its stream).

With ``http_versions=("h2", "http/1.1")`` and an ``https://`` URL, ALPN may pick
HTTP/2 (:mod:`aleph_tx.http._client.h2`): the request is a stream on a shared
connection, with the same response dict.
"""

from __future__ import annotations

import base64
import email.message
import functools
import json as jsonlib
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
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

from aleph_tx._time import arm_timeout
from aleph_tx.errors import (
    AlephError,
    ClientResponseError,
    ConnectionLostError,
    ProtocolError,
    RedirectError,
    RequestTimeout,
)
from aleph_tx.http._client.body import BodyCollector, BodyStreamer, Replayable
from aleph_tx.http._client.connect import Target, make_connector, proxy_authorization
from aleph_tx.http._client.connection import _ClientProtocol
from aleph_tx.http._client.options import Options, add_query, host_header, target_and_path
from aleph_tx.http._client.pool import ConnectionPool, connection_pool, default_pool
from aleph_tx.http._ring.coding import ContentDecoder, decoder_for
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

_MAX_REDIRECT_BODY = 65536
_REDIRECTS = (301, 302, 303, 307, 308)
#: Methods retried on a new connection when a reused one was closed before any byte
#: of the response arrived (RFC 9110 §9.2.2: idempotent).
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
_CONNECTION_REASONS = (
    ConnectionDone,
    ConnectionLost,
    ConnectError,
    ConnectionAborted,
    _DataLoss,
    SSL.Error,
    ConnectionLostError,
)


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

    def __init__(self, o: Options) -> None:
        self.o = o

    async def send(
        self, method: bytes, url: str, headers: list[tuple[str, str]], body: Replayable | None
    ) -> tuple[Any, Callable[[], None], list[tuple[bytes, list[bytes]]]]:
        """Send; returns the response, a function aborting this exchange, and the raw headers."""
        o = self.o
        scheme, host, port, path, _ = target_and_path(url)
        target = Target(scheme, host, port, o.ssl_context, o.insecure, o.proxy, o.h2)
        connector = make_connector(
            target, o.reactor, o.connection_timeout, o.clock, o.max_response_header_size
        )
        h = Headers()
        names = {n for n, _ in headers}
        authority = host_header(scheme, host, port)
        if "host" not in names:
            h.addRawHeader(b"Host", authority.encode("ascii"))
        for n, v in headers:
            h.addRawHeader(n.encode("latin-1"), v.encode("latin-1"))
        request_target = path
        if target.via_http_proxy:
            request_target = f"{scheme}://{authority}".encode("ascii") + path
            assert o.proxy is not None
            auth = proxy_authorization(o.proxy)
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

            expired: list[bool] = []

            def expire(d: Deferred[Any] = d, expired: list[bool] = expired) -> None:
                expired.append(True)
                d.cancel()

            arm_timeout(d, o.request_timeout, expire, o.clock)
            try:
                try:
                    response = await d
                except BaseException:
                    if not expired:
                        raise
                    raise RequestTimeout(
                        f"no response headers from {host}:{port} within request_timeout={o.request_timeout!r}"
                    ) from None
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


async def _run(o: Options) -> dict[str, Any]:
    start = o.clock.seconds()
    method = o.method
    url = add_query(o.url, o.query_params)
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
                new_parts = target_and_path(new_url)
            except (ValueError, UnicodeError) as e:
                raise RedirectError(f"bad redirect location {location!r}") from e
            if new_parts[0] not in ("http", "https") or not new_parts[1]:
                raise RedirectError(f"redirect to an unsupported URL {new_url!r}")
            old = target_and_path(url)
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
    o = Options(method, url, options)
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
