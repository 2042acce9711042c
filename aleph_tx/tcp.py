"""TCP servers and clients whose connections are duplex streams (Aleph's ``aleph.tcp``).

.. code-block:: python

    from aleph_tx import stream as s, tcp

    def echo(conn, info):
        s.connect(conn, conn)

    server = tcp.start_server(echo, port=10001)
    conn = await tcp.client("localhost", 10001)

A connection's stream emits ``bytes`` and accepts anything
:func:`aleph_tx.byte_streams.to_bytes` accepts, with backpressure both ways (see
:mod:`aleph_tx._adapter`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._adapter import ConnectionStream, StreamProtocol
from aleph_tx._eager import install_eager
from aleph_tx._server import DEFAULT_BACKLOG, Server
from aleph_tx._server import listen as _listen
from aleph_tx._time import arm_timeout, get_reactor
from aleph_tx.errors import ConnectionLostError, ConnectionTimeout

__all__ = ["Handler", "Server", "client", "start_server"]

_log = Logger()

#: ``handler(stream, info)``; may return ``None``, a Deferred or a coroutine.
Handler = Callable[[ConnectionStream, dict[str, Any]], Any]


def _connection_info(proto: StreamProtocol) -> dict[str, Any]:
    transport = proto.transport
    assert transport is not None
    host = proto.host
    peer = proto.peer
    session = None
    if proto.tls:
        try:
            session = transport.getHandle().get_session()  # type: ignore[attr-defined]
        except Exception:  # pragma: no cover - defensive: no session on this handle
            session = None
    return {
        "server_name": getattr(host, "host", None),
        "server_port": getattr(host, "port", None),
        "remote_addr": getattr(peer, "host", None),
        "remote_port": getattr(peer, "port", None),
        "ssl_session": session,
    }


class _ServerProtocol(StreamProtocol):
    factory: _ServerFactory

    def connectionMade(self) -> None:  # noqa: N802
        super().connectionMade()
        # Tracked from the start (also mid-handshake), so close() covers every connection.
        server = self.factory.server
        if server is not None:
            server.track(self)

    def connection_ready(self) -> None:
        if self.stream.closed:  # the server closed while the TLS handshake ran
            return
        info = _connection_info(self)
        try:
            result = self.factory.handler(self.stream, info)
        except Exception:
            _log.failure("TCP handler {handler!r} failed", handler=self.factory.handler)
            self.stream.close()
            return
        if inspect.iscoroutine(result):
            result = ensureDeferred(result)
        if isinstance(result, Deferred):
            result.addErrback(self._handler_failed)

    def _handler_failed(self, f: Failure) -> None:
        _log.failure("TCP handler {handler!r} failed", f, handler=self.factory.handler)
        self.stream.close()

    def connection_closed(self, reason: Failure) -> None:
        server = self.factory.server
        if server is not None:
            server.untrack(self)


class _ServerFactory(Factory):
    protocol = _ServerProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: Server | None = None


def start_server(
    handler: Handler,
    port: int = 0,
    host: str = "",
    listen: str | Sequence[str] | None = None,
    ssl_context: Any = None,
    shutdown_timeout: float = 15,
    reactor: Any = None,
) -> Server:
    """Listen now; call ``handler(stream, info)`` for every connection.

    :param handler: gets the connection's duplex stream and ``info`` =
        ``{"server_name", "server_port", "remote_addr", "remote_port", "ssl_session"}``;
        with TLS it is called after the handshake. It may return a Deferred or be
        ``async def``; if it raises or fails, the error is logged and the
        connection closed.
    :param port: port to bind (0: ephemeral; see ``Server.port``).
    :param host: interface (``""``: all IPv4).
    :param listen: Twisted endpoint description(s) used instead of ``port``/``host``.
    :param ssl_context: server TLS context (:func:`aleph_tx.tls.self_signed_context`, ...).
    :param shutdown_timeout: seconds ``Server.close()`` waits before aborting connections.
    :param reactor: the reactor (``None``: the global one).
    :returns: the :class:`~aleph_tx._server.Server` (listening backlog 1024).
    :raises twisted.internet.error.CannotListenError: if the port cannot be bound.
    :raises TypeError: if ``handler`` is not callable.
    :raises ValueError: for a bad port or ``shutdown_timeout``.
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {handler!r}")
    if shutdown_timeout is None or shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must be a number >= 0, not {shutdown_timeout!r}")
    reactor = get_reactor(reactor)
    factory = _ServerFactory(handler)
    ports = _listen(factory, port, host, listen, ssl_context, reactor, DEFAULT_BACKLOG)
    for p in ports:
        # writes sent at once, 256 KiB reads (docs/internals.rst, "The TCP path"); below TLS
        install_eager(p)
    server = Server(ports, shutdown_timeout, clock=reactor)
    factory.server = server
    return server


class _ClientProtocol(StreamProtocol):
    factory: _ClientFactory

    def connection_ready(self) -> None:
        self.factory.ready(self)

    def connection_failed(self, reason: Failure) -> None:
        self.factory.failed(reason)


class _ClientFactory(Factory):
    protocol = _ClientProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, result: Deferred[ConnectionStream]) -> None:
        self.result = result
        self.proto: _ClientProtocol | None = None

    def buildProtocol(self, addr: Any) -> _ClientProtocol:  # type: ignore[override]  # noqa: N802
        proto = _ClientProtocol()
        proto.factory = self
        self.proto = proto
        return proto

    def ready(self, proto: _ClientProtocol) -> None:
        if not self.result.called:
            self.result.callback(proto.stream)

    def failed(self, reason: Failure) -> None:
        if not self.result.called:
            if _is_plain_loss(reason):
                self.result.errback(ConnectionLostError("connection lost before it was ready", reason))
            else:
                self.result.errback(reason)


def _is_plain_loss(reason: Failure) -> bool:
    from twisted.internet.error import ConnectionDone, ConnectionLost

    return reason.check(ConnectionDone, ConnectionLost) is not None


def client(
    host: str,
    port: int,
    ssl: bool = False,
    ssl_context: Any = None,
    insecure: bool = False,
    connect_timeout: float | None = None,
    reactor: Any = None,
) -> Deferred[ConnectionStream]:
    """Connect to ``host:port``; fires with the connection's duplex stream.

    :param ssl: use TLS (implied by ``ssl_context`` or ``insecure``); the server's
        certificate is checked against ``host`` unless ``insecure``.
    :param ssl_context: a :func:`aleph_tx.tls.client_context` (``None``: platform trust).
    :param insecure: no certificate or hostname verification.
    :param connect_timeout: seconds for TCP connect plus TLS handshake; past it the
        Deferred fails with :class:`~aleph_tx.errors.ConnectionTimeout`.
    :param reactor: the reactor (``None``: the global one); also the timer's clock.
    :returns: fires the stream once connected (after the TLS handshake); fails with
        the connect error, or the TLS verification error. Cancelling it aborts.
    :raises ValueError: for a bad port or a negative ``connect_timeout``, or
        ``ssl_context`` with ``insecure``.
    """
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty str, not {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
        raise ValueError(f"port must be an int in 1..65535, not {port!r}")
    if connect_timeout is not None and connect_timeout < 0:
        raise ValueError(f"connect_timeout must be a number >= 0, not {connect_timeout!r}")
    reactor = get_reactor(reactor)
    endpoint: Any = HostnameEndpoint(reactor, host, port)
    if ssl or ssl_context is not None or insecure:
        from aleph_tx.tls import client_creator

        endpoint = wrapClientTLS(client_creator(host, ssl_context, insecure), endpoint)

    connecting: Deferred[Any] | None = None

    def cancel(_: Deferred[ConnectionStream]) -> None:
        abort_attempt()

    def abort_attempt() -> None:
        if connecting is not None and not connecting.called:
            connecting.cancel()
        elif factory.proto is not None and factory.proto.transport is not None:
            factory.proto.transport.abortConnection()  # type: ignore[attr-defined]

    result: Deferred[ConnectionStream] = Deferred(cancel)
    factory = _ClientFactory(result)
    connecting = endpoint.connect(factory)

    def connect_failed(f: Failure) -> None:
        if not result.called:
            result.errback(f)

    connecting.addErrback(connect_failed)

    def expire() -> None:
        result.errback(ConnectionTimeout(f"connecting to {host}:{port} took longer than {connect_timeout}s"))
        abort_attempt()

    return arm_timeout(result, connect_timeout, expire, reactor)
