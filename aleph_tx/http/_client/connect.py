"""How the HTTP client opens a connection: endpoints, TLS, proxies, connection timeout.

TLS goes through :func:`aleph_tx.tls.client_creator` (what ``ssl_context`` accepts
is listed there), with ALPN ``h2``/``http/1.1`` offered when HTTP/2 is wanted.
HTTPS through an HTTP proxy is a ``CONNECT`` tunnel (RFC 9110 §9.3.6); an HTTPS
proxy is reached over TLS verified with the system's trust roots (or nothing with
``insecure``).
"""

from __future__ import annotations

import base64
from collections.abc import Hashable
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx._time import arm_timeout
from aleph_tx.errors import ConnectionLostError, ConnectionTimeout, ProtocolError
from aleph_tx.http._client.connection import HTTP11ClientConnection
from aleph_tx.http._client.h2 import H2ClientConnection
from aleph_tx.http._client.pool import PooledConnection, PoolEvents, lost_error
from aleph_tx.tls import client_creator

__all__ = ["Connector", "Target", "proxy_authorization"]


class Target:
    """Where one request goes: scheme, host, port, TLS and proxy settings.

    :ivar key: the pool key: connections with equal keys are interchangeable.
    :ivar via_http_proxy: requests carry the absolute URI (plain HTTP through a proxy).
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        ssl_context: Any = None,
        insecure: bool = False,
        proxy: dict[str, Any] | None = None,
        h2: bool = False,
    ) -> None:
        self.scheme = scheme
        #: offer HTTP/2 with ALPN (https only; plain http stays HTTP/1.1)
        self.h2 = h2 and scheme == "https"
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.insecure = insecure
        self.proxy = proxy
        tls_key: Hashable = None
        if scheme == "https":
            tls_key = "insecure" if insecure else ("ctx", id(ssl_context)) if ssl_context else "system"
        #: the TLS settings, as part of a pool key
        self.tls_key = tls_key
        proxy_key: Hashable = None
        if proxy is not None:
            proxy_key = (
                proxy.get("protocol", "http"),
                proxy["host"],
                int(proxy["port"]),
                proxy.get("user"),
                proxy.get("password"),
            )
        self.via_http_proxy = proxy is not None and scheme == "http"
        self.key: Hashable = (scheme, host, port, tls_key, proxy_key, self.h2)


def _tcp_endpoint(reactor: Any, host: str, port: int) -> IStreamClientEndpoint:
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port)
    return HostnameEndpoint(reactor, host.encode("idna"), port)


_ALPN = (b"h2", b"http/1.1")


# -- CONNECT tunnels (https through an HTTP proxy) -------------------------------


class _TunnelProtocol(Protocol):
    """Sends ``CONNECT host:port``; on a 2xx answer hands the connection to the real
    protocol (RFC 9110 §9.3.6). ``done`` fires once: with the real protocol, or with
    the first failure; what happens after it fired (a cancel, a timeout) goes to the
    real protocol or nowhere."""

    MAX_HEAD = 65536

    def __init__(self, request: bytes, factory: IProtocolFactory, done: Deferred[IProtocol]) -> None:
        self._request = request
        self._factory = factory
        self._done = done
        self._buf = b""
        self._inner: Protocol | None = None

    def connectionMade(self) -> None:  # noqa: N802
        transport: Any = self.transport
        transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        if self._done.called:
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self.MAX_HEAD:
                self._fail(ProtocolError("proxy CONNECT response header too large"))
            return
        head, rest = self._buf[:end], self._buf[end + 4 :]
        self._buf = b""
        status_line = head.split(b"\r\n", 1)[0]
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].startswith(b"2"):
            self._fail(ProtocolError(f"proxy refused CONNECT: {status_line.decode('latin-1')!r}"))
            return
        transport: Any = self.transport
        inner: Any = self._factory.buildProtocol(transport.getPeer())
        self._inner = inner
        inner.makeConnection(transport)
        self._done.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def _fail(self, error: Exception) -> None:
        transport: Any = self.transport
        transport.abortConnection()
        if not self._done.called:
            self._done.errback(error)

    def connectionLost(self, reason: Failure = Failure(ConnectionLostError())) -> None:  # noqa: N802, B008
        if self._inner is not None:
            self._inner.connectionLost(reason)
        elif not self._done.called:
            self._done.errback(lost_error(reason, "the proxy closed the connection during CONNECT"))


@implementer(IStreamClientEndpoint)
class _TunnelEndpoint:
    """An endpoint through an HTTP proxy's ``CONNECT`` tunnel to ``host:port``."""

    def __init__(
        self, proxy_endpoint: IStreamClientEndpoint, host: str, port: int, auth: bytes | None
    ) -> None:
        self._proxy_endpoint = proxy_endpoint
        self._host = host
        self._port = port
        self._auth = auth

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:  # noqa: N803
        authority = _authority(self._host, self._port).encode("idna")
        lines = [b"CONNECT " + authority + b" HTTP/1.1", b"Host: " + authority]
        if self._auth is not None:
            lines.append(b"Proxy-Authorization: " + self._auth)
        request = b"\r\n".join(lines) + b"\r\n\r\n"
        tunnel: list[_TunnelProtocol] = []

        def cancel(_: Deferred[IProtocol]) -> None:
            if not connecting.called:
                connecting.cancel()
            elif tunnel and tunnel[0].transport is not None:
                tunnel[0].transport.abortConnection()  # type: ignore[attr-defined]

        done: Deferred[IProtocol] = Deferred(cancel)

        def build() -> _TunnelProtocol:
            tunnel.append(_TunnelProtocol(request, protocolFactory, done))
            return tunnel[0]

        connecting = self._proxy_endpoint.connect(Factory.forProtocol(build))
        connecting.addErrback(lambda f: None if done.called else done.errback(f))
        return done


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if isIPv6Address(host) else f"{host}:{port}"


def proxy_authorization(proxy: dict[str, Any]) -> bytes | None:
    """The ``Proxy-Authorization`` value for a proxy dict with ``user``/``password``."""
    user = proxy.get("user")
    if user is None:
        return None
    raw = f"{user}:{proxy.get('password') or ''}".encode()
    return b"Basic " + base64.b64encode(raw)


# -- opening a pooled connection ------------------------------------------------------------


class Connector:
    """Opens pooled connections to one :class:`Target` (``connector(events)``, for the pool).

    TCP (or the proxy, and its ``CONNECT``), the TLS handshake, ALPN's choice between
    :class:`~aleph_tx.http._client.connection.HTTP11ClientConnection` and
    :class:`~aleph_tx.http._client.h2.H2ClientConnection`, all within
    ``connection_timeout`` (:class:`~aleph_tx.errors.ConnectionTimeout`). Nothing is
    built before the first connect: most requests reuse a pooled connection.
    """

    __slots__ = ("clock", "max_header_size", "reactor", "target", "timeout")

    def __init__(
        self,
        target: Target,
        reactor: Any,
        connection_timeout: float | None,
        clock: IReactorTime,
        max_header_size: int = 65536,
    ) -> None:
        self.target = target
        self.reactor = reactor
        self.timeout = connection_timeout
        self.clock = clock
        self.max_header_size = max_header_size

    def __call__(self, events: PoolEvents) -> Deferred[PooledConnection]:
        """Open one connection; cancelling the Deferred cuts whatever stage is running."""
        return _Attempt(self, events).result

    def endpoint(self) -> tuple[IStreamClientEndpoint, bool]:
        """The endpoint, and whether our protocol runs right under a TLS layer."""
        target, reactor = self.target, self.reactor
        proxy = target.proxy
        tls = target.scheme == "https"
        base: IStreamClientEndpoint
        if proxy is None:
            base = _tcp_endpoint(reactor, target.host, target.port)
        else:
            proxy_host = str(proxy["host"])
            base = _tcp_endpoint(reactor, proxy_host, int(proxy["port"]))
            if proxy.get("protocol", "http") == "https":
                # as requests' verify=False: ``insecure`` covers the proxy too; else
                # the system's trust roots (SSL_CERT_FILE / SSL_CERT_DIR apply)
                base = wrapClientTLS(client_creator(proxy_host, insecure=target.insecure), base)
                if not tls:
                    return base, True
            if tls:
                base = _TunnelEndpoint(base, target.host, target.port, proxy_authorization(proxy))
        if tls:
            alpn = _ALPN if target.h2 else None
            creator = client_creator(target.host, target.ssl_context, target.insecure, alpn, target.port)
            return wrapClientTLS(creator, base), True
        return base, False


class _Attempt:
    """One connect: its ``result`` fires once, with the connection or the first failure."""

    __slots__ = ("connecting", "connector", "events", "proto", "result")

    def __init__(self, connector: Connector, events: PoolEvents) -> None:
        self.connector = connector
        self.events = events
        self.result: Deferred[PooledConnection] = Deferred(lambda _: self.fail(CancelledError()))
        try:
            endpoint, tls = connector.endpoint()
        except Exception as e:
            self.result.errback(e)
            return
        self.proto = HTTP11ClientConnection(
            events, connector.target.key, connector.max_header_size, tls, connector.reactor
        )
        self.connecting: Deferred[Any] = connectProtocol(endpoint, self.proto)
        self.connecting.addCallbacks(self._connected, self._failed)
        arm_timeout(self.result, connector.timeout, self._expire, connector.clock)

    def _connected(self, _: Any) -> None:
        if not self.result.called:
            self.proto.when_ready().addCallbacks(self._ready, self._failed)

    def _ready(self, _: Any) -> None:
        if self.result.called:
            return
        proto = self.proto
        conn: PooledConnection = proto
        transport: Any = proto.transport
        if getattr(transport, "negotiatedProtocol", None) == b"h2":
            conn = H2ClientConnection(
                transport, self.events, proto.key, self.connector.max_header_size, self.connector.reactor
            )
            proto.hand_over(conn)
        self.result.callback(conn)

    def _failed(self, f: Failure) -> None:
        if not self.result.called:
            self.result.errback(f)

    def _expire(self) -> None:
        c = self.connector
        self.fail(
            ConnectionTimeout(
                f"connecting to {c.target.host}:{c.target.port} took longer than connection_timeout={c.timeout!r}"
            )
        )

    def fail(self, error: BaseException) -> None:
        """Cut the attempt wherever it is, and fail with ``error`` (a cancel, a timeout)."""
        if self.result.called:
            return
        self.result.errback(error)
        if not self.connecting.called:
            self.connecting.cancel()  # (its failure finds the result fired)
        else:
            self.proto.abort()
