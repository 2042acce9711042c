"""The HTTP client: clj-http's request maps on HTTP/1.1, HTTP/2 and HTTP/3 connections.

``request(method, url, **options)`` returns a ``Deferred`` firing with a response
dict (``status``, ``headers``, ``body``, ``request_time``). Each request takes a
connection from a :class:`~aleph_tx.http._client.pool.ConnectionPool` (the shared
default pool unless ``pool=`` is given), sends the request on it
(:mod:`~aleph_tx.http._client.connection`, or a stream of
:mod:`~aleph_tx.http._client.h2` or :mod:`~aleph_tx.http._client.h3`; which one
for HTTP/3 is :mod:`~aleph_tx.http._client.h3route`'s choice), and reads the body
as ``as_`` asks, decoding gzip and deflate on the way (``decompress_body``,
:mod:`aleph_tx.http._ring.coding`).

Stages and their timeouts: waiting for a pooled connection (``pool_timeout``),
connecting plus the TLS (or QUIC) handshake (``connection_timeout``), sending until
the response headers (``request_timeout``), the longest stall reading the body
(``read_timeout``). Cancelling the returned Deferred fails it at once with
``CancelledError``, whatever the stage, and aborts the connection (an HTTP/2 or
HTTP/3 request resets only its stream); a cancelled request is never sent again. A
request is sent again on a new connection only when the server did not process it
(``refused``: GOAWAY, ``H3_REQUEST_REJECTED``), or, once, when a reused connection
was closed by the server before any byte of the response arrived, for idempotent
methods (RFC 9110 §9.2.2); in both cases only with a body that can be replayed.
"""

from __future__ import annotations

import base64
import codecs
import email.message
import functools
import json as jsonlib
import urllib.request
from typing import Any
from urllib.parse import urljoin

from twisted.internet.defer import CancelledError, Deferred

from aleph_tx._time import arm_timeout
from aleph_tx.errors import (
    ClientResponseError,
    ConnectionLostError,
    PoolTimeout,
    RedirectError,
    RequestTimeout,
)
from aleph_tx.http._client.body import BodyCollector, BodyStreamer, ResponseHandle
from aleph_tx.http._client.connect import Connector, Target, proxy_authorization
from aleph_tx.http._client.h3route import h3_route, learn_alt_svc
from aleph_tx.http._client.options import Options, add_query, host_header, target_and_path
from aleph_tx.http._client.pool import ClientRequest, PooledConnection
from aleph_tx.http._client.upload import Replayable
from aleph_tx.http._ring.coding import decoder_for
from aleph_tx.stream import from_iterable

__all__ = ["delete", "get", "head", "options", "patch", "post", "put", "request"]

#: A redirect's body is read (and dropped) to keep its connection only up to this size.
_MAX_REDIRECT_BODY = 65536
_REDIRECTS = (301, 302, 303, 307, 308)
#: Methods retried on a new connection when a reused one was closed before any byte
#: of the response arrived (RFC 9110 §9.2.2: idempotent).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Tries of one request on successive connections, at most (the first, then a retry
#: after a reused connection's close, or after refusals: GOAWAY, H3_REQUEST_REJECTED).
_MAX_TRIES = 3
#: Request headers the connection writes itself (framing, RFC 9112 §6).
_FRAMING = frozenset({"content-length", "transfer-encoding"})


@functools.lru_cache(maxsize=256)
def _plain_target(scheme: str, host: str, port: int, insecure: bool, h2: bool) -> Target:
    return Target(scheme, host, port, None, insecure, None, h2)


def _target(o: Options, scheme: str, host: str, port: int) -> Target:
    if o.ssl_context is None and o.proxy is None:
        return _plain_target(scheme, host, port, o.insecure, o.h2)
    return Target(scheme, host, port, o.ssl_context, o.insecure, o.proxy, o.h2)


def _request_parts(
    o: Options, method: str, url: str, headers: list[tuple[str, str]]
) -> tuple[Target, ClientRequest]:
    """Where the request goes, and the request (without its body)."""
    scheme, host, port, path, _ = target_and_path(url)
    target = _target(o, scheme, host, port)
    authority = host_header(scheme, host, port)
    close = not o.pool.keep_alive
    out: list[tuple[bytes, bytes]] = []
    names = set()
    for name, value in headers:
        names.add(name)
        if name == "host":
            authority = value
        elif name in _FRAMING:
            continue
        elif name == "connection" and "close" in [t.strip() for t in value.lower().split(",")]:
            close = True
        else:
            out.append((name.encode("latin-1"), value.encode("latin-1")))
    request_target = path
    if target.via_http_proxy:
        assert o.proxy is not None
        request_target = f"{scheme}://{authority}".encode("latin-1") + path
        auth = proxy_authorization(o.proxy)
        if auth is not None and "proxy-authorization" not in names:
            out.append((b"proxy-authorization", auth))
    request = ClientRequest(
        method.encode("ascii"),
        scheme.encode("ascii"),
        authority.encode("latin-1"),
        request_target,
        path,
        out,
        close=close,
    )
    return target, request


async def _exchange(
    o: Options, method: str, url: str, headers: list[tuple[str, str]], body: Replayable | None
) -> ResponseHandle:
    """Send one request; fires with its response once the head arrived."""
    target, request = _request_parts(o, method, url, headers)
    route = h3_route(o, target) if o.h3 else None
    connect: Connector | None = None
    tries = 0
    while True:
        tries += 1
        conn: PooledConnection
        if route is not None:
            try:
                got = o.pool.acquire(route.key, route, o.pool_timeout, o.clock, True)
                conn = (await got) if isinstance(got, Deferred) else got
            except (CancelledError, PoolTimeout):
                raise
            except Exception:
                if not route.fallback:
                    raise
                route = None  # the QUIC handshake failed (now marked broken): over TCP
                tries -= 1
                continue
        else:
            if connect is None:
                connect = Connector(
                    target, o.reactor, o.connection_timeout, o.clock, o.max_response_header_size
                )
            got = o.pool.acquire(target.key, connect, o.pool_timeout, o.clock, target.h2)
            conn = (await got) if isinstance(got, Deferred) else got
        if body is not None:
            request.body, request.length = body.source()
        handle = conn.send(request)
        head = handle.head
        if not (head.called and head.result is handle):  # (else: the response came at once)
            if o.request_timeout is not None:
                arm_timeout(head, o.request_timeout, functools.partial(_expire, handle, target, o), o.clock)
            try:
                await head
            except ConnectionLostError:
                if _may_retry(handle, method, body, tries):
                    continue
                raise
        if o.h3:
            learn_alt_svc(o, target, handle.headers)
        return handle


def _may_retry(handle: ResponseHandle, method: str, body: Replayable | None, tries: int) -> bool:
    """Whether a request whose connection failed it goes once more on a new one: a
    request the server did not process (``refused``), or a kept-alive connection the
    server closed as we reused it (idempotent methods only, once); with a body that
    can be sent again."""
    if not handle.retryable or tries >= _MAX_TRIES or not (body is None or body.replayable):
        return False
    return handle.refused or (tries == 1 and method in _IDEMPOTENT)


def _expire(handle: ResponseHandle, target: Target, o: Options) -> None:
    handle.abort(
        RequestTimeout(
            f"no response headers from {target.host}:{target.port} within "
            f"request_timeout={o.request_timeout!r}"
        )
    )


class _CookieResponse:
    """What ``CookieJar.extract_cookies`` needs of a response."""

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self._msg = email.message.Message()
        for name, value in headers:
            self._msg[name] = value

    def info(self) -> email.message.Message:
        return self._msg


def _header_dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        if name in out:
            out[name] = f"{out[name]}, {value}"
        else:
            out[name] = value
    return out


def _charset(content_type: str | None) -> str:
    if content_type:
        for param in content_type.split(";")[1:]:
            k, _, v = param.strip().partition("=")
            if k.strip().lower() == "charset" and v:
                charset = v.strip().strip('"')
                try:
                    codecs.lookup(charset)
                except LookupError:
                    return "utf-8"
                return charset
    return "utf-8"


def _coerce(data: bytes, as_: str, headers: dict[str, str]) -> Any:
    if as_ == "bytes":
        return data
    if as_ == "text":
        return data.decode(_charset(headers.get("content-type")), errors="replace")
    if as_ == "json":
        if not data.strip():
            return None
        return jsonlib.loads(data.decode(_charset(headers.get("content-type")), errors="replace"))
    return from_iterable([data] if data else [])  # "stream" of an error response


def _cookie_request(url: str, method: str, headers: list[tuple[str, str]]) -> urllib.request.Request:
    return urllib.request.Request(url, method=method, headers=dict(headers))


def _first_headers(o: Options) -> list[tuple[str, str]]:
    headers = o.headers
    body = o.body
    add: list[tuple[str, str]] = []
    names = {n for n, _ in headers} if headers else set()
    if body is not None and body.content_type and "content-type" not in names:
        add.append(("content-type", body.content_type))
    if o.decompress_body and "accept-encoding" not in names:
        add.append(("accept-encoding", "gzip, deflate"))
    if o.basic_auth is not None and "authorization" not in names:
        user, password = o.basic_auth
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        add.append(("authorization", f"Basic {token}"))
    return [*headers, *add] if add else headers


async def _run(o: Options) -> dict[str, Any]:
    clock = o.clock
    start = clock.seconds()
    method = o.method
    url = add_query(o.url, o.query_params) if o.query_params else o.url
    body = o.body
    headers = _first_headers(o)
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
        handle = await _exchange(o, method, url, send_headers, body)
        try:
            if jar is not None and creq is not None:
                jar.extract_cookies(_CookieResponse(handle.headers), creq)  # type: ignore[arg-type]
            status = handle.status
            hdrs = _header_dict(handle.headers)
            location = hdrs.get("location")
            redirect = o.follow_redirects and status in _REDIRECTS and location
        except BaseException:
            handle.abort()
            raise
        if redirect:
            assert location is not None
            length = hdrs.get("content-length", "")
            if length.isdigit() and int(length) <= _MAX_REDIRECT_BODY:
                # read and drop it, so the connection can be reused
                await BodyCollector(handle, o.read_timeout, clock, discard=True).wait()
            else:
                handle.abort()  # a long or endless redirect body is not worth reading
            method, url, body, headers = _follow(o, status, method, url, location, body, headers, visited)
            redirects += 1
            if redirects > o.max_redirects:
                raise RedirectError(
                    f"more than max_redirects={o.max_redirects} redirects, last to {location!r}"
                )
            continue
        decoder = decoder_for(hdrs.get("content-encoding")) if o.decompress_body else None
        if o.as_ == "stream" and not (o.throw_exceptions and status >= 400):
            resp_body: Any = BodyStreamer(handle, o.read_timeout, clock, decoder).stream
        else:
            collector = BodyCollector(handle, o.read_timeout, clock, decoder)
            data = collector.data
            if data is None:
                data = await collector.wait()
            resp_body = _coerce(data, o.as_, hdrs)
        result = {
            "status": status,
            "headers": hdrs,
            "body": resp_body,
            "request_time": clock.seconds() - start,
        }
        if o.throw_exceptions and status >= 400:
            raise ClientResponseError(result)
        return result


def _follow(
    o: Options,
    status: int,
    method: str,
    url: str,
    location: str,
    body: Replayable | None,
    headers: list[tuple[str, str]],
    visited: set[tuple[str, str]],
) -> tuple[str, str, Replayable | None, list[tuple[str, str]]]:
    """The next request of a redirect: method, URL, body and headers (RFC 9110 §15.4)."""
    new_url = urljoin(url, location.strip())
    try:
        new_parts = target_and_path(new_url)
    except (ValueError, UnicodeError) as e:
        raise RedirectError(f"bad redirect location {location!r}") from e
    if new_parts[0] not in ("http", "https") or not new_parts[1]:
        raise RedirectError(f"redirect to an unsupported URL {new_url!r}")
    if new_parts[0] == "http" and not o.tcp:
        raise RedirectError(f"redirect to {new_url!r}: http_versions=('h3',) needs https:// URLs")
    old = target_and_path(url)
    if not visited:
        visited.add((method, old[4]))
    if status in (301, 302, 303) and method != "HEAD":
        method = "GET"
        body = None
        headers = [(n, v) for n, v in headers if n not in ("content-type", "content-length")]
    elif body is not None and not body.replayable:
        raise RedirectError(f"cannot resend a streamed request body to {new_url!r} after {status}")
    if new_parts[:3] != old[:3]:
        # RFC 9110 §15.4: do not leak credentials to another origin
        headers = [(n, v) for n, v in headers if n not in ("authorization", "cookie", "host")]
    key = (method, new_parts[4])
    if key in visited:
        raise RedirectError(f"redirect loop: {method} {new_url!r} was already visited")
    visited.add(key)
    return method, new_url, body, headers


def request(method: str, url: str, **options: Any) -> Deferred[dict[str, Any]]:
    """Send one HTTP request; fires with the response dict.

    :param method: any case; sent upper-case.
    :param url: an absolute ``http://`` or ``https://`` URL.
    :param options: see the client table of the docs (``headers``, ``query_params``,
        ``body``, ``as_``, ``pool``, the four timeouts, ...), plus ``reactor`` and
        ``clock``.
    :returns: a Deferred firing with ``{"status", "headers", "body", "request_time"}``;
        it fails with :class:`~aleph_tx.errors.ClientResponseError` (status >= 400
        while ``throw_exceptions``), a :class:`~aleph_tx.errors.TimeoutError`
        subclass, :class:`~aleph_tx.errors.ProtocolError`,
        :class:`~aleph_tx.errors.ConnectionLostError` or
        :class:`~aleph_tx.errors.RedirectError`; cancelling it fails it at once with
        ``CancelledError`` and aborts the connection.
    :raises TypeError: at once, for an unknown option name or an option of the wrong type.
    :raises ValueError: at once, for a bad method, URL or option value (``"h3"``
        without aioquic installed; ``http_versions=("h3",)`` with an ``http://`` URL).
    :raises NotImplementedError: at once, for ``http_versions=("h2",)`` without
        ``"http/1.1"``, and for ``("h3",)`` with a ``proxy``.
    """
    return Deferred.fromCoroutine(_run(Options(method, url, options)))


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
