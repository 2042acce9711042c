"""How the HTTP client opens a connection: endpoints, TLS, proxies, connection timeout.

TLS goes through :func:`aleph_tx.tls.client_creator` (what ``ssl_context`` accepts
is listed there), with ALPN ``h2``/``http/1.1`` offered when HTTP/2 is wanted.
HTTPS through an HTTP proxy is a ``CONNECT`` tunnel (RFC 9110 §9.3.6); an HTTPS
proxy is reached over TLS verified with the system's trust roots (or nothing with
``insecure``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
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
from aleph_tx.http._client.connection import _ClientProtocol
from aleph_tx.http._client.pool import Connector
from aleph_tx.tls import client_creator

__all__ = ["Target", "make_connector", "proxy_authorization"]


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


def _tls_creator(target: Target) -> IOpenSSLClientConnectionCreator:
    """The connection creator for ``target`` (ALPN offered when HTTP/2 is wanted)."""
    alpn = _ALPN if target.h2 else None
    return client_creator(target.host, target.ssl_context, target.insecure, alpn, target.port)


# -- CONNECT tunnels (https through an HTTP proxy) -------------------------------


class _TunnelProtocol(Protocol):
    """Sends ``CONNECT host:port``; on 200 hands the connection to the real protocol."""

    MAX_HEAD = 65536

    def __init__(self, request: bytes, factory: IProtocolFactory, done: Deferred[IProtocol]) -> None:
        self._request = request
        self._factory = factory
        self._done: Deferred[IProtocol] | None = done
        self._buf = b""
        self._inner: Protocol | None = None

    def connectionMade(self) -> None:  # noqa: N802
        transport: Any = self.transport
        transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._inner is not None:
            self._inner.dataReceived(data)
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
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or parts[1] != b"200":
            self._fail(ProtocolError(f"proxy refused CONNECT: {status_line.decode('latin-1')!r}"))
            return
        transport: Any = self.transport
        inner: Any = self._factory.buildProtocol(transport.getPeer())
        if inner is None:
            self._fail(ConnectionLostError("the protocol factory refused the connection"))
            return
        self._inner = inner
        inner.makeConnection(transport)
        d, self._done = self._done, None
        if d is not None:
            d.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def _fail(self, error: Exception) -> None:
        d, self._done = self._done, None
        transport: Any = self.transport
        transport.abortConnection()
        if d is not None:
            d.errback(error)

    def connectionLost(self, reason: Failure = Failure(ConnectionLostError())) -> None:  # noqa: N802, B008
        if self._inner is not None:
            self._inner.connectionLost(reason)
            return
        d, self._done = self._done, None
        if d is not None:
            d.errback(ConnectionLostError("proxy closed the connection during CONNECT", reason))


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
        holder: list[_TunnelProtocol] = []

        def cancel(_: Deferred[IProtocol]) -> None:
            connecting.cancel()
            transport: Any = holder[0].transport if holder else None
            if transport is not None:
                transport.abortConnection()

        done: Deferred[IProtocol] = Deferred(cancel)

        class _F(Factory):
            def buildProtocol(self, addr: IAddress | None) -> _TunnelProtocol:  # noqa: N802
                p = _TunnelProtocol(request, protocolFactory, done)
                holder.append(p)
                return p

        connecting = self._proxy_endpoint.connect(_F())
        connecting.addErrback(lambda f: None if done.called else done.errback(f))
        return done


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if isIPv6Address(host) else f"{host}:{port}"


def proxy_authorization(proxy: dict[str, Any]) -> bytes | None:
    """The ``Proxy-Authorization`` value for a proxy dict with ``user``/``password``."""
    import base64

    user = proxy.get("user")
    if user is None:
        return None
    raw = f"{user}:{proxy.get('password') or ''}".encode()
    return b"Basic " + base64.b64encode(raw)


def make_connector(
    target: Target,
    reactor: Any,
    connection_timeout: float | None,
    clock: IReactorTime,
    max_header_size: int = 65536,
) -> Connector:
    """``connect(factory)`` for the pool: TCP (or proxy), TLS handshake, timeout.

    The endpoint is built on the first call only: most requests reuse a pooled
    connection and never connect.
    """
    tls = target.scheme == "https"
    host = target.host
    built: list[IStreamClientEndpoint] = []

    def build() -> IStreamClientEndpoint:
        if built:
            return built[0]
        proxy = target.proxy
        base: IStreamClientEndpoint
        if proxy is not None:
            proxy_host = str(proxy["host"])
            proxy_port = int(proxy["port"])
            base = _tcp_endpoint(reactor, proxy_host, proxy_port)
            if proxy.get("protocol", "http") == "https":
                # as requests' verify=False: ``insecure`` covers the proxy too; else
                # the system's trust roots (SSL_CERT_FILE / SSL_CERT_DIR apply)
                base = wrapClientTLS(client_creator(proxy_host, insecure=target.insecure), base)
            if tls:
                base = _TunnelEndpoint(base, target.host, target.port, proxy_authorization(proxy))
        else:
            base = _tcp_endpoint(reactor, target.host, target.port)
        endpoint = wrapClientTLS(_tls_creator(target), base) if tls else base
        built.append(endpoint)
        return endpoint

    def connect(factory: Factory) -> Deferred[_ClientProtocol]:
        d: Deferred[Any] = build().connect(factory)
        if tls:

            def handshake(proto: _ClientProtocol) -> Deferred[_ClientProtocol]:
                def verified(_: None) -> _ClientProtocol:
                    transport: Any = proto.transport
                    if getattr(transport, "negotiatedProtocol", None) == b"h2":
                        proto.start_h2(max_header_size)
                    return proto

                return proto.wait_handshake().addCallback(verified)

            d.addCallback(handshake)

        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        def cancelled(f: Failure) -> Failure:
            if expired:
                return Failure(
                    ConnectionTimeout(
                        f"connecting to {host}:{target.port} took longer than "
                        f"connection_timeout={connection_timeout!r}"
                    )
                )
            if f.check(ConnectingCancelledError):
                return Failure(CancelledError())  # the user's cancellation, as a plain CancelledError
            return f

        d.addErrback(cancelled)
        return arm_timeout(d, connection_timeout, expire, clock)

    return connect
