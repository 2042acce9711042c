"""The ``Server`` that ``tcp.start_server`` and ``http.start_server`` return.

Shared by every server kind. The interface, for the protocols that use it:

``Server(ports, shutdown_timeout=15, clock=None)``
    ``ports`` are the already-bound :class:`~twisted.internet.interfaces.IListeningPort`
    objects (see :func:`listen`).

``server.port`` / ``server.ports``
    the bound port number of the first listening port (also for port 0) / all ports.

``server.track(conn)`` / ``server.untrack(conn)``
    a protocol calls ``track`` when its connection is ready and ``untrack`` from
    ``connectionLost``. ``conn`` is any object with ``graceful_close() -> None``
    (finish in-flight work, flush, then close) and ``abort() -> None`` (cut now).
    A connection tracked while the server is closing gets ``graceful_close`` at once.

``server.close() -> Deferred[None]``
    stops listening, calls ``graceful_close`` on every tracked connection, fires once
    every connection is untracked; connections still open after ``shutdown_timeout``
    get ``abort()``. Idempotent: every call returns a Deferred for the same completion.

``server.wait_for_close() -> Deferred[None]``
    fires once the server has closed (a new Deferred per call).

``server.closing`` / ``server.closed``
    whether :meth:`Server.close` was called / has completed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._once import Once
from aleph_tx._time import get_clock, get_reactor

__all__ = ["DEFAULT_BACKLOG", "Connection", "Server", "ServerState", "listen"]

#: ``listen(2)`` backlog of every server socket: enough for bursts of
#: connections without SYN drops; an endpoint string's own ``backlog=`` wins.
DEFAULT_BACKLOG = 1024

#: Seconds between aborting the connections still open at ``shutdown_timeout`` and
#: forgetting those that did not go (``close()`` fires within ``shutdown_timeout`` + this).
ABORT_GRACE = 0.5

#: Endpoint types whose string grammar takes ``backlog=``.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})

_log = Logger()


class Connection(Protocol):
    """What :meth:`Server.track` accepts."""

    def graceful_close(self) -> None:
        """Finish in-flight work, flush what was written, then close."""

    def abort(self) -> None:
        """Cut the connection now."""


class ServerState(enum.Enum):
    """``LISTENING`` → ``CLOSING`` (``close()`` called) → ``CLOSED`` (all connections gone)."""

    LISTENING = "listening"
    CLOSING = "closing"
    CLOSED = "closed"


class Server:
    """Listening ports plus their open connections, with a graceful ``close()``.

    :param ports: the bound listening ports (at least one).
    :param shutdown_timeout: seconds ``close()`` lets connections finish before
        aborting them (default 15).
    :param clock: the timer for ``shutdown_timeout`` (``None``: the global reactor).
    :raises ValueError: for no ports or a negative ``shutdown_timeout``.
    """

    def __init__(
        self,
        ports: Sequence[IListeningPort],
        shutdown_timeout: float = 15,
        clock: IReactorTime | None = None,
    ) -> None:
        if not ports:
            raise ValueError("a Server needs at least one listening port")
        if shutdown_timeout is None or shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be a number >= 0, not {shutdown_timeout!r}")
        self._ports = list(ports)
        # a UNIX socket has no port number: 0
        self._port_number = int(getattr(self._ports[0].getHost(), "port", 0))
        self.shutdown_timeout = shutdown_timeout
        self._clock = clock
        self._connections: dict[int, Connection] = {}
        self._state = ServerState.LISTENING
        self._timer: IDelayedCall | None = None
        self._ports_stopped = False
        self._closed = Once()

    # -- introspection ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port number of the first listening port (also when asked for 0)."""
        return self._port_number

    @property
    def ports(self) -> list[IListeningPort]:
        """The Twisted listening ports (for full control)."""
        return list(self._ports)

    @property
    def state(self) -> ServerState:
        """The current :class:`ServerState`."""
        return self._state

    @property
    def closing(self) -> bool:
        """``True`` once :meth:`close` was called."""
        return self._state is not ServerState.LISTENING

    @property
    def closed(self) -> bool:
        """``True`` once the close has completed."""
        return self._state is ServerState.CLOSED

    @property
    def connection_count(self) -> int:
        """How many connections are tracked now."""
        return len(self._connections)

    def __repr__(self) -> str:
        return f"<Server port={self.port} {self._state.value} connections={len(self._connections)}>"

    # -- connections -------------------------------------------------------------

    def track(self, conn: Connection) -> None:
        """Follow ``conn`` until :meth:`untrack`; closes it at once if the server is closing."""
        self._connections[id(conn)] = conn
        if self._state is ServerState.CLOSING:
            _call(conn.graceful_close, conn)
        elif self._state is ServerState.CLOSED:
            _call(conn.abort, conn)

    def untrack(self, conn: Connection) -> None:
        """Forget ``conn`` (its connection is gone). Unknown connections are ignored."""
        if self._connections.pop(id(conn), None) is not None:
            self._maybe_done()

    # -- closing -----------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Stop accepting, close every connection gracefully, abort stragglers.

        :returns: fires ``None`` once every listening port stopped and every
            connection is gone: within ``shutdown_timeout`` + :data:`ABORT_GRACE`
            whatever the connections do.
        """
        if self._state is ServerState.LISTENING:
            self._state = ServerState.CLOSING
            stops = [_stop_listening(p) for p in self._ports]
            DeferredList(stops, consumeErrors=True).addCallback(self._ports_down)
            for conn in list(self._connections.values()):
                _call(conn.graceful_close, conn)
            if self._connections:
                self._timer = get_clock(self._clock).callLater(self.shutdown_timeout, self._abort_all)
        return self.wait_for_close()

    def wait_for_close(self) -> Deferred[None]:
        """A new Deferred firing ``None`` once the server has closed."""
        return self._closed.wait()

    def _ports_down(self, _: object) -> None:
        self._ports_stopped = True
        self._maybe_done()

    def _abort_all(self) -> None:
        self._timer = None
        for conn in list(self._connections.values()):
            _call(conn.abort, conn)
        if self._connections:
            # an abort normally ends a connection at once; one that does not (a
            # transport already broken) is forgotten after a grace, so close() fires
            self._timer = get_clock(self._clock).callLater(ABORT_GRACE, self._forget_all)

    def _forget_all(self) -> None:
        self._timer = None
        if self._connections:
            _log.warn(
                "{n} connection(s) still open {grace}s after being aborted: forgotten",
                n=len(self._connections),
                grace=ABORT_GRACE,
            )
            self._connections.clear()
            self._maybe_done()

    def _maybe_done(self) -> None:
        if self._state is not ServerState.CLOSING or self._connections or not self._ports_stopped:
            return
        self._state = ServerState.CLOSED
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._closed.fire()


def _stop_listening(port: IListeningPort) -> Deferred[None]:
    try:
        result = port.stopListening()
    except Exception:
        _log.failure("stopping {port!r} failed", port=port)
        return succeed(None)
    if isinstance(result, Deferred):
        return result
    return succeed(None)


def _call(fn: Any, conn: object) -> None:
    try:
        fn()
    except Exception:
        _log.failure("closing connection {conn!r} failed", conn=conn)


def _with_backlog(description: str, backlog: int) -> str:
    kind = description.split(":", 1)[0].strip().lower()
    if kind in _BACKLOG_TYPES and "backlog=" not in description:
        return f"{description}:backlog={backlog}"
    return description


def listen(
    factory: IProtocolFactory,
    port: int = 0,
    host: str = "",
    listen: str | Sequence[str] | None = None,
    ssl_context: Any = None,
    reactor: Any = None,
    backlog: int = DEFAULT_BACKLOG,
    tls: list[Any] | None = None,
) -> list[IListeningPort]:
    """Bind ``factory`` now and return the listening ports.

    :param port: TCP port (0: an ephemeral one); ignored when ``listen`` is given.
    :param host: interface to bind (``""``: all IPv4 interfaces).
    :param listen: one Twisted endpoint description (``"tcp:8080"``,
        ``"ssl:8443:privateKey=key.pem"``) or several; they must bind synchronously,
        as every stock TCP, SSL and UNIX endpoint does.
    :param ssl_context: with ``port``: a server TLS context (anything with
        ``getContext()``, e.g. :func:`aleph_tx.tls.self_signed_context`).
    :param reactor: the reactor (``None``: the global one).
    :param backlog: ``listen(2)`` backlog, unless an endpoint string has its own.
    :param tls: if given, gets each port's TLS options (its certificate and key: an
        HTTP/3 listener beside it uses them), or ``None`` for a port without TLS.
    :returns: the bound ports.
    :raises twisted.internet.error.CannotListenError: if a port cannot be bound.
    :raises ValueError: for a bad port, an empty ``listen`` or an endpoint that
        does not bind synchronously.
    """
    reactor = get_reactor(reactor)
    if listen is None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, not {port!r}")
        if tls is not None:
            tls.append(ssl_context)
        if ssl_context is None:
            return [reactor.listenTCP(port, factory, backlog=backlog, interface=host)]
        return [
            reactor.listenSSL(port, factory, _context_factory(ssl_context), backlog=backlog, interface=host)
        ]
    descriptions = [listen] if isinstance(listen, str) else list(listen)
    if not descriptions:
        raise ValueError("listen must name at least one endpoint")
    ports: list[IListeningPort] = []
    try:
        for desc in descriptions:
            if not isinstance(desc, str) or not desc:
                raise ValueError(f"an endpoint description must be a non-empty str, not {desc!r}")
            endpoint = serverFromString(reactor, _with_backlog(desc, backlog))
            tls_options = getattr(endpoint, "_sslContextFactory", None)  # ssl: (private attribute)
            if tls_options is not None:
                _context_factory(tls_options)  # our ALPN callback instead of Twisted's
            ports.append(_bound(endpoint.listen(factory), desc))
            if tls is not None:
                tls.append(tls_options)
    except BaseException:
        for p in ports:
            p.stopListening()
        raise
    return ports


def _bound(d: Deferred[IListeningPort], desc: str) -> IListeningPort:
    """The result of an endpoint's ``listen()`` Deferred, which must have fired."""
    box: list[Any] = []
    d.addBoth(box.append)
    if not box:
        d.cancel()
        raise ValueError(f"endpoint {desc!r} does not bind synchronously")
    result = box[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[no-any-return]


class _ContextFactory:
    """Adapts a bare ``OpenSSL.SSL.Context`` to Twisted's ``getContext()`` protocol."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def getContext(self) -> Any:  # noqa: N802 - Twisted's name
        return self._context


def _alpn_selector(static: tuple[bytes, ...]) -> Callable[[Any, list[bytes]], Any]:
    """An ALPN select callback: the first protocol we speak that the client offered.

    Replaces Twisted's, which answers ``b""`` (a fatal alert) when nothing overlaps,
    so a plain TLS server refused every client that offers ALPN (curl, browsers).
    With no overlap the handshake now completes without a protocol (RFC 7301 §3.2
    allows either; a server that speaks no ALPN protocol must not fail).
    """
    from OpenSSL import SSL
    from twisted.internet._sslverify import protosFromProtocol

    def select(conn: Any, offered: list[bytes]) -> Any:
        for name in protosFromProtocol(conn.get_app_data(), static):
            if name in offered:
                return name
        return SSL.NO_OVERLAPPING_PROTOCOLS

    return select


def _context_factory(ssl_context: Any) -> Any:
    if hasattr(ssl_context, "getContext"):
        context = ssl_context.getContext()
        # once per context: OpenSSL refuses to change a context that has served a
        # connection (a second start_server with the same ssl_context); the callback
        # asks each connection's protocol what it speaks, so one serves every server
        if not getattr(context, "_aleph_alpn", False):
            static = tuple(getattr(ssl_context, "_acceptableProtocols", None) or ())
            context.set_alpn_select_callback(_alpn_selector(static))
            context._aleph_alpn = True
        return ssl_context
    from OpenSSL import SSL

    if isinstance(ssl_context, SSL.Context):
        return _ContextFactory(ssl_context)
    raise TypeError(f"ssl_context must be a TLS server context (with getContext()), not {ssl_context!r}")
