"""How the HTTP client opens a connection: endpoints, TLS, proxies, connection timeout.

TLS (``ssl_context``) accepts, in this order:

- a ``twisted.web.iweb.IPolicyForHTTPS`` (``creatorForNetloc(host, port)`` is
  called per host: Twisted's own ``BrowserLikePolicyForHTTPS`` and treq's policies);
- a ``twisted.internet.interfaces.IOpenSSLClientConnectionCreator`` (for example
  ``twisted.internet.ssl.optionsForClientTLS("host", trustRoot=...)``), used as is;
- an ``OpenSSL.SSL.Context`` or anything with ``getContext()`` returning one
  (``twisted.internet.ssl.CertificateOptions``): the client sends SNI and checks
  the server's certificate against the host name (``service_identity``) after the
  handshake; the context's own settings decide the chain verification.

Without ``ssl_context`` the system trust store is used with host name checks;
``insecure=True`` checks nothing (tests and development only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl as tssl
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
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from aleph_tx.errors import ConnectionLostError, ConnectionTimeout, ProtocolError
from aleph_tx.http._pool import Connector, _ClientProtocol

__all__ = ["Target", "make_connector", "with_timeout"]


def with_timeout(
    d: Deferred[Any],
    seconds: float | None,
    make_error: Callable[[], Exception],
    clock: IReactorTime,
) -> Deferred[Any]:
    """Cancel ``d`` after ``seconds`` and fail it with ``make_error()`` instead.

    The timer is cancelled as soon as ``d`` fires, so no delayed call is left behind.
    """
    if seconds is None or d.called:
        return d
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        d.cancel()

    call = clock.callLater(seconds, expire)

    def done(result: Any) -> Any:
        if call.active():
            call.cancel()
        if expired and isinstance(result, Failure):
            return Failure(make_error())
        return result

    return d.addBoth(done)


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


@functools.lru_cache(maxsize=256)
def _system_creator(host: str, h2: bool = False) -> IOpenSSLClientConnectionCreator:
    return tssl.optionsForClientTLS(host, acceptableProtocols=list(_ALPN) if h2 else None)


@functools.lru_cache(maxsize=1)
def _insecure_context() -> SSL.Context:
    ctx: SSL.Context = tssl.CertificateOptions(verify=False).getContext()
    return ctx


@implementer(IOpenSSLClientConnectionCreator)
class _ContextCreator:
    """TLS connections from one ``SSL.Context``, with SNI for ``host``."""

    def __init__(self, ctx: SSL.Context, host: str, alpn: bool = False) -> None:
        self._ctx = ctx
        self._host = host
        self._alpn = alpn

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802, N803
        conn = SSL.Connection(self._ctx, None)
        conn.set_app_data(tlsProtocol)
        if not isIPAddress(self._host) and not isIPv6Address(self._host):
            conn.set_tlsext_host_name(self._host.encode("idna"))
        if self._alpn:
            conn.set_alpn_protos(list(_ALPN))
        conn.set_connect_state()
        return conn


def _tls_creator(target: Target) -> tuple[IOpenSSLClientConnectionCreator, bool]:
    """The connection creator for ``target`` and whether to check the host name after."""
    host, ctx, h2 = target.host, target.ssl_context, target.h2
    if target.insecure:
        return _ContextCreator(_insecure_context(), host, h2), False
    if ctx is None:
        return _system_creator(host, h2), False
    creator = getattr(ctx, "creator", None)
    if h2 and callable(creator):
        # aleph_tx.tls.ClientContext: it can offer ALPN itself
        return creator(host, list(_ALPN)), False
    if IPolicyForHTTPS.providedBy(ctx):
        return ctx.creatorForNetloc(host.encode("idna"), target.port), False
    if IOpenSSLClientConnectionCreator.providedBy(ctx):
        return ctx, False
    if isinstance(ctx, SSL.Context):
        return _ContextCreator(ctx, host, h2), True
    get_context = getattr(ctx, "getContext", None)
    if callable(get_context):
        return _ContextCreator(get_context(), host, h2), True
    raise TypeError(
        "ssl_context must be an IPolicyForHTTPS, an IOpenSSLClientConnectionCreator, "
        f"an OpenSSL.SSL.Context or have getContext(), not {ctx!r}"
    )


def check_ssl_context(ctx: Any) -> None:
    """Raise ``TypeError`` at once for an ``ssl_context`` of no supported kind."""
    if ctx is None:
        return
    if (
        IPolicyForHTTPS.providedBy(ctx)
        or IOpenSSLClientConnectionCreator.providedBy(ctx)
        or isinstance(ctx, SSL.Context)
        or callable(getattr(ctx, "getContext", None))
    ):
        return
    raise TypeError(
        "ssl_context must be an IPolicyForHTTPS, an IOpenSSLClientConnectionCreator, "
        f"an OpenSSL.SSL.Context or have getContext(), not {ctx!r}"
    )


def _verify_hostname(proto: _ClientProtocol, host: str) -> None:
    from service_identity import VerificationError
    from service_identity.pyopenssl import verify_hostname, verify_ip_address

    transport: Any = proto.transport
    conn = transport.getHandle()
    try:
        if isIPAddress(host) or isIPv6Address(host):
            verify_ip_address(conn, host)
        else:
            verify_hostname(conn, host)
    except VerificationError:
        proto.abort_connection()
        raise


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
    built: list[tuple[IStreamClientEndpoint, bool]] = []

    def build() -> tuple[IStreamClientEndpoint, bool]:
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
                if target.insecure:
                    proxy_creator: Any = _ContextCreator(_insecure_context(), proxy_host)
                else:
                    proxy_creator = _system_creator(proxy_host)
                base = wrapClientTLS(proxy_creator, base)
            if tls:
                base = _TunnelEndpoint(base, target.host, target.port, proxy_authorization(proxy))
        else:
            base = _tcp_endpoint(reactor, target.host, target.port)
        check_host = False
        endpoint = base
        if tls:
            creator, check_host = _tls_creator(target)
            endpoint = wrapClientTLS(creator, base)
        built.append((endpoint, check_host))
        return built[0]

    def connect(factory: Factory) -> Deferred[_ClientProtocol]:
        endpoint, check_host = build()
        d: Deferred[Any] = endpoint.connect(factory)
        if tls:

            def handshake(proto: _ClientProtocol) -> Deferred[_ClientProtocol]:
                def verified(_: None) -> _ClientProtocol:
                    if check_host:
                        _verify_hostname(proto, host)
                    transport: Any = proto.transport
                    if getattr(transport, "negotiatedProtocol", None) == b"h2":
                        proto.start_h2(max_header_size)
                    return proto

                return proto.wait_handshake().addCallback(verified)

            d.addCallback(handshake)

        def timed_out() -> Exception:
            return ConnectionTimeout(
                f"connecting to {host}:{target.port} took longer than "
                f"connection_timeout={connection_timeout!r}"
            )

        def cancelled(f: Failure) -> Failure:
            # the user's cancellation, as a plain CancelledError
            if f.check(ConnectingCancelledError):
                return Failure(CancelledError())
            return f

        d.addErrback(cancelled)
        return with_timeout(d, connection_timeout, timed_out, clock)

    return connect


__all__ += ["check_ssl_context", "proxy_authorization"]
