"""The HTTP client's connection pool: per-host and total limits, waiters, idle timeout.

The pool holds :class:`PooledConnection` objects of any kind and learns what they
do through the :class:`PoolEvents` it implements (``connection_reusable``,
``connection_gone``); it never looks inside them. Both seams are defined here, with
the :class:`ClientRequest` every connection kind sends.

- A slot (of ``connections_per_host`` and of ``total_connections``) is held from
  the start of a connect until the connection is gone.
- A one-at-a-time connection (HTTP/1.1) is *busy* from the moment it is handed out
  until it says it is reusable (the whole response was read, nothing went wrong),
  then *idle* (kept for reuse, closed after ``idle_timeout``) or given to the
  oldest waiter for its key. Anything else (an error, a cancel, ``Connection:
  close``) makes it gone: its slot is free at once and it is never handed out again.
- A multiplexed connection (HTTP/2, HTTP/3) is shared: every request to its key
  gets it while it has room for another stream; with no stream it is closed after
  ``idle_timeout`` (at once without ``keep_alive``). While the first connection to a
  key that may multiplex is being made, other requests to that key wait to share it
  instead of opening their own.

HTTP/3 connections are one more :class:`PooledConnection` kind, opened by their own
connector (:mod:`~aleph_tx.http._client.h3route`); the pool only adds the memory
of which origins offer HTTP/3 (:attr:`ConnectionPool.alt_svc`).
"""

from __future__ import annotations

import collections
import importlib
import typing
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from aleph_tx._chunks import ChunkSource
from aleph_tx._time import Deadline, arm_timeout
from aleph_tx.errors import ConnectionLostError, PoolTimeout
from aleph_tx.http._client.altsvc import AltSvcCache
from aleph_tx.http._client.body import ResponseHandle
from aleph_tx.http._ring.versions import check_http_versions

__all__ = [
    "CLIENT_VERSIONS",
    "ClientRequest",
    "ConnectionPool",
    "Connector",
    "PoolEvents",
    "PooledConnection",
    "check_client_versions",
    "connection_pool",
    "default_pool",
    "lost_error",
]

#: Default response header block limit: 64 KiB is eight times the usual server
#: limit (8 KiB) and still bounds what a hostile server can make us buffer.
DEFAULT_MAX_RESPONSE_HEADER_SIZE = 65536

#: Default idle timeout of pooled connections: shorter than the usual server
#: keep-alive timeouts (nginx 75 s, Apache 5 s is the exception) is not needed
#: because a connection the server closes while idle leaves the pool at once.
DEFAULT_IDLE_TIMEOUT = 60.0

#: The ``http_versions`` the client speaks (ALPN names, RFC 7301).
CLIENT_VERSIONS = ("http/1.1", "h2", "h3")

#: ``connect(events) -> Deferred[PooledConnection]``: opens one connection (with its
#: own connection timeout); cancelling the Deferred cuts the attempt.
Connector = Callable[[Any], "Deferred[PooledConnection]"]


# -- the seam between the pool and its connections -----------------------------------


class PooledConnection(typing.Protocol):
    """What the pool needs of a connection, whatever its protocol (HTTP/1.1, HTTP/2, HTTP/3).

    :ivar key: connections with equal keys are interchangeable.
    :ivar multiplexed: several requests at once (HTTP/2, HTTP/3); else one at a time.
    :ivar protocol: its ALPN name (``"http/1.1"``, ``"h2"``, ``"h3"``), for ``description()``.
    :ivar requests: how many requests it has carried.
    """

    key: Hashable
    multiplexed: bool
    protocol: str
    requests: int

    def can_take(self) -> bool:
        """Whether a request may start on it now."""

    def in_use(self) -> bool:
        """Whether a request is in flight on it."""

    def send(self, request: ClientRequest) -> ResponseHandle:
        """Start ``request``."""

    def close(self) -> Deferred[None]:
        """Close it cleanly; fires once the connection is closed."""

    def abort(self) -> None:
        """Cut it now."""


class PoolEvents(typing.Protocol):
    """What connections tell their pool (the pool implements it)."""

    def connection_reusable(self, conn: PooledConnection) -> None:
        """``conn`` finished a request and may carry another one."""

    def connection_gone(self, conn: PooledConnection) -> None:
        """``conn`` will carry no more requests (broken, closing or lost); may be repeated."""


class ClientRequest:
    """A request as every connection kind needs it.

    :ivar method: upper-case, e.g. ``b"GET"``.
    :ivar target: the HTTP/1.1 request target (origin-form, or absolute-form through a proxy).
    :ivar path: the origin-form target (HTTP/2's ``:path``).
    :ivar headers: ``(name, value)`` pairs without ``Host`` and framing headers.
    :ivar body: ``None``, the whole body, or a source of chunks.
    :ivar length: the body length when known (``None``: chunked).
    :ivar close: ask for ``Connection: close``.
    """

    __slots__ = ("authority", "body", "close", "headers", "length", "method", "path", "scheme", "target")

    def __init__(
        self,
        method: bytes,
        scheme: bytes,
        authority: bytes,
        target: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | ChunkSource | None = None,
        length: int | None = None,
        close: bool = False,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.target = target
        self.path = path
        self.headers = headers
        self.body = body
        self.length = length
        self.close = close


def lost_error(
    reason: Failure | BaseException | None, what: str = "the connection was lost"
) -> BaseException:
    """What a request fails with when its connection went away: a TLS error as it is
    (``OpenSSL.SSL.Error``, a host name mismatch), anything else as a
    :class:`ConnectionLostError` carrying the reason."""
    exc = reason.value if isinstance(reason, Failure) else reason
    if exc is not None and type(exc).__module__.startswith(("OpenSSL", "service_identity")):
        return exc
    return ConnectionLostError(f"{what}: {exc!r}" if exc is not None else what, exc)


def check_client_versions(versions: Any) -> tuple[str, ...]:
    """``http_versions`` for the client: a tuple of ``"http/1.1"``, ``"h2"``, ``"h3"``.

    :raises ValueError: for a string, an empty sequence or an unknown name; for
        ``"h3"`` without aioquic installed (the message names the install line).
    :raises NotImplementedError: for ``"h2"`` without ``"http/1.1"``.
    """
    out = check_http_versions(versions, CLIENT_VERSIONS)
    if "http/1.1" not in out and "h2" in out:
        raise NotImplementedError("an HTTP/2-only client (no 'http/1.1' fallback) is not implemented")
    if "h3" in out:
        try:  # the QUIC layer: aioquic, checked for the internals it relies on
            importlib.import_module("aleph_tx.http._quic.flow")
        except ImportError as e:
            raise ValueError(
                f"http_versions with 'h3' needs aioquic: pip install 'aleph_tx[http3]' ({e})"
            ) from e
    return out


class _Waiter:
    """A request waiting for a connection; ``opening`` is its connect once it got a slot."""

    __slots__ = ("connect", "d", "key", "multiplexed", "opening", "pool")

    def __init__(self, pool: ConnectionPool, key: Hashable, connect: Connector, multiplexed: bool) -> None:
        self.pool = pool
        self.key = key
        self.connect = connect
        self.multiplexed = multiplexed
        self.d: Deferred[PooledConnection] = Deferred(self._cancel)
        self.opening: Deferred[PooledConnection] | None = None

    def _cancel(self, d: Deferred[PooledConnection]) -> None:
        # still queued: leave the queue; connecting for it: cancel that connect,
        # which frees the slot
        if not self.pool.withdraw(self) and self.opening is not None:
            self.opening.cancel()


class ConnectionPool:
    """Keep-alive connections, at most ``connections_per_host`` per host.

    :param connections_per_host: connections open at once to one (scheme, host,
        port, TLS settings, proxy); more requests wait for a free one.
    :param total_connections: connections open at once in this pool; an idle
        connection to another host is closed to make room for a waiter.
    :param idle_timeout: seconds an idle connection is kept for reuse (``None``: forever).
    :param keep_alive: ``False`` sends ``Connection: close`` and never reuses.
    :param clock: the clock of the idle timers (``None``: the global reactor).
    :param http_versions: the default ``http_versions`` of requests using this pool.
    """

    def __init__(
        self,
        connections_per_host: int = 8,
        total_connections: int = 1024,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        keep_alive: bool = True,
        clock: IReactorTime | None = None,
        http_versions: tuple[str, ...] = ("http/1.1",),
    ) -> None:
        for name, value in (
            ("connections_per_host", connections_per_host),
            ("total_connections", total_connections),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        if idle_timeout is not None and (
            not isinstance(idle_timeout, (int, float)) or isinstance(idle_timeout, bool) or idle_timeout < 0
        ):
            raise ValueError(f"idle_timeout must be a number >= 0 or None, not {idle_timeout!r}")
        self.connections_per_host = connections_per_host
        self.total_connections = total_connections
        self.idle_timeout = idle_timeout
        self.keep_alive = bool(keep_alive)
        self.http_versions = check_client_versions(http_versions)
        self._clock = clock
        self._idle: dict[Hashable, list[PooledConnection]] = {}  # one-at-a-time, idle (LIFO)
        self._busy: set[PooledConnection] = set()  # one-at-a-time, carrying a request
        self._shared: dict[Hashable, list[PooledConnection]] = {}  # multiplexed
        self._live: dict[Hashable, int] = {}  # slots per key (connecting or open)
        self._total = 0
        self._connecting: dict[Hashable, int] = {}
        self._single_keys: set[Hashable] = set()  # keys whose server did not multiplex
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._deadlines: dict[PooledConnection, Deadline] = {}  # idle timeouts
        self.connections_opened = 0
        #: which origins offer HTTP/3, learnt from their ``alt-svc`` fields
        self.alt_svc = AltSvcCache()

    # -- public ----------------------------------------------------------------------

    def description(self) -> dict[str, Any]:
        """A snapshot: ``total``, ``idle``, ``active``, ``waiters``, ``per_host``,
        ``h2_connections``, ``h3_connections`` counts."""
        shared = [c for conns in self._shared.values() for c in conns]
        busy_shared = sum(1 for c in shared if c.in_use())
        return {
            "type": "http-connection-pool",
            "connections_per_host": self.connections_per_host,
            "total_connections": self.total_connections,
            "total": self._total,
            "idle": sum(len(v) for v in self._idle.values()) + len(shared) - busy_shared,
            "active": len(self._busy) + busy_shared,
            "h2_connections": sum(1 for c in shared if c.protocol == "h2"),
            "h3_connections": sum(1 for c in shared if c.protocol == "h3"),
            "waiters": len(self._waiters),
            "per_host": dict(self._live),
            "connections_opened": self.connections_opened,
        }

    def close(self) -> Deferred[None]:
        """Close the idle connections and fail the waiters; fires when the idle ones are closed.

        Connections in use are left to finish (they are closed, not pooled, when done).
        """
        self.keep_alive = False
        waiters, self._waiters = self._waiters, collections.deque()
        for w in waiters:
            w.d.cancel()
        idle = [c for conns in self._idle.values() for c in conns]
        idle += [c for conns in self._shared.values() for c in conns if not c.in_use()]
        closing = []
        for conn in idle:
            self._forget(conn)
            closing.append(conn.close())
        if not closing:
            return succeed(None)
        return gatherResults(closing).addCallback(lambda _: None)

    # -- acquire ---------------------------------------------------------------------

    def acquire(
        self,
        key: Hashable,
        connect: Connector,
        pool_timeout: float | None = None,
        clock: IReactorTime | None = None,
        multiplexed: bool = False,
    ) -> PooledConnection | Deferred[PooledConnection]:
        """A connection for one request: an idle one now, else a Deferred of a new one
        or of the next one freed.

        :param key: what makes connections interchangeable.
        :param connect: opens a new connection (with its own connection timeout).
        :param pool_timeout: seconds to wait for a free slot before failing with
            :class:`~aleph_tx.errors.PoolTimeout` (``None``: wait forever).
        :param clock: the clock of ``pool_timeout`` (``None``: the global reactor).
        :param multiplexed: the connection may be multiplexed (HTTP/2 offered): while
            one is being made to this key, wait to share it rather than open another.
        :returns: a connection that can take the request at once, or a Deferred of
            one; cancelling the Deferred frees the slot.
        """
        conn = self._take_shared(key) if self._shared else None
        if conn is None:
            conn = self._take_idle(key)
        if conn is not None:
            return conn
        if self._may_share(key, multiplexed):
            return self._wait(key, connect, pool_timeout, clock, multiplexed)
        if self._has_room(key) or self._evict_idle_elsewhere(key):
            return self._open(key, connect)
        return self._wait(key, connect, pool_timeout, clock, multiplexed)

    def withdraw(self, waiter: _Waiter) -> bool:
        """Take ``waiter`` off the queue (it was cancelled); ``False`` if it was not queued."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return False
        return True

    def _may_share(self, key: Hashable, multiplexed: bool) -> bool:
        return multiplexed and key not in self._single_keys and bool(self._connecting.get(key))

    def _take_shared(self, key: Hashable) -> PooledConnection | None:
        for conn in self._shared.get(key, ()):
            if conn.can_take():
                self._stop_idle(conn)
                return conn
        return None

    def _take_idle(self, key: Hashable) -> PooledConnection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if not conns:
                del self._idle[key]
            self._stop_idle(conn)
            if conn.can_take():
                self._busy.add(conn)
                return conn
            self._forget(conn)  # closed while idle and not yet told us
            conns = self._idle.get(key)
        return None

    def _has_room(self, key: Hashable) -> bool:
        return self._live.get(key, 0) < self.connections_per_host and self._total < self.total_connections

    def _evict_idle_elsewhere(self, key: Hashable) -> bool:
        """Total limit reached but ``key`` has room: close an idle connection of another key."""
        if self._live.get(key, 0) >= self.connections_per_host:
            return False
        for other, conns in self._idle.items():
            if other != key and conns:
                conn = conns[0]
                self._forget(conn)
                conn.close()
                return True
        return False

    def _open(self, key: Hashable, connect: Connector) -> Deferred[PooledConnection]:
        self._live[key] = self._live.get(key, 0) + 1
        self._total += 1
        self._connecting[key] = self._connecting.get(key, 0) + 1
        self.connections_opened += 1
        try:
            d = connect(self)
        except Exception as e:
            d = fail(e)
        done = [False]

        def connecting_done() -> None:
            done[0] = True
            n = self._connecting.get(key, 0) - 1
            if n > 0:
                self._connecting[key] = n
            else:
                self._connecting.pop(key, None)

        def opened(conn: PooledConnection) -> PooledConnection:
            connecting_done()
            if conn.multiplexed:
                self._shared.setdefault(key, []).append(conn)
                self._single_keys.discard(key)
                self._serve_shared(conn)
                return conn
            if key not in self._single_keys:
                self._single_keys.add(key)
                self._serve_waiters()  # those waiting to share may open their own now
            if not conn.can_take():  # lost as it was handed over: the slot is free again
                self._free_slot(key)
                raise ConnectionLostError("the connection was lost while connecting")
            self._busy.add(conn)
            return conn

        def failed(f: Any) -> Any:
            connecting_done()
            self._free_slot(key)
            return f

        return d.addCallbacks(opened, failed)

    def _wait(
        self,
        key: Hashable,
        connect: Connector,
        pool_timeout: float | None,
        clock: IReactorTime | None,
        multiplexed: bool,
    ) -> Deferred[PooledConnection]:
        waiter = _Waiter(self, key, connect, multiplexed)
        self._waiters.append(waiter)

        def expire() -> None:
            if self.withdraw(waiter):  # (still queued: not yet connecting for it)
                waiter.d.errback(
                    PoolTimeout(
                        f"no pooled connection to {_key_text(key)} became free "
                        f"within pool_timeout={pool_timeout!r}"
                    )
                )

        return arm_timeout(waiter.d, pool_timeout, expire, clock)

    # -- PoolEvents --------------------------------------------------------------------

    def connection_reusable(self, conn: PooledConnection) -> None:
        """``conn`` finished a request: serve a waiter, keep it idle, or close it."""
        if conn.multiplexed:
            if conn in self._shared.get(conn.key, ()):
                self._serve_shared(conn)
                if not conn.in_use():
                    if self.keep_alive:
                        self._arm_idle(conn)
                    elif self._forget(conn):
                        conn.close()
                        self._serve_waiters()
            return
        if conn not in self._busy:
            return
        key = conn.key
        if self.keep_alive:
            for w in self._waiters:
                if w.key == key:
                    self._waiters.remove(w)
                    w.d.callback(conn)  # (it stays busy)
                    return
            if not self._waiters or self._total < self.total_connections:
                self._busy.discard(conn)
                self._idle.setdefault(key, []).append(conn)
                self._arm_idle(conn)
                return
        # no keep-alive, or someone waits on the total limit: give them the slot
        self._forget(conn)
        conn.close()
        self._serve_waiters()

    def connection_gone(self, conn: PooledConnection) -> None:
        """``conn`` carries no more requests: free its slot and serve the waiters."""
        if self._forget(conn):
            self._serve_waiters()

    # -- bookkeeping -------------------------------------------------------------------

    def _serve_shared(self, conn: PooledConnection) -> None:
        key = conn.key
        for w in list(self._waiters):
            if not conn.can_take():
                return
            if w.key == key and self.withdraw(w):  # (a callback may have served it)
                self._stop_idle(conn)
                w.d.callback(conn)

    def _arm_idle(self, conn: PooledConnection) -> None:
        """Close ``conn`` once it has been idle for ``idle_timeout`` (a ``Deadline``:
        restarted per request with a clock read, not a new delayed call)."""
        if self.idle_timeout is None:
            return
        deadline = self._deadlines.get(conn)
        if deadline is None:
            deadline = self._deadlines[conn] = Deadline(
                self.idle_timeout, lambda: self._idle_expired(conn), self._clock
            )
        deadline.start()

    def _stop_idle(self, conn: PooledConnection) -> None:
        deadline = self._deadlines.get(conn)
        if deadline is not None:
            deadline.stop()

    def _idle_expired(self, conn: PooledConnection) -> None:
        if self._forget(conn):
            conn.close()

    def _forget(self, conn: PooledConnection) -> bool:
        """Remove ``conn`` everywhere and free its slot; ``False`` if it was not known."""
        key = conn.key
        known = False
        if conn in self._busy:
            self._busy.discard(conn)
            known = True
        else:
            for table in (self._idle, self._shared):
                conns = table.get(key)
                if conns and conn in conns:
                    conns.remove(conn)
                    if not conns:
                        del table[key]
                    known = True
                    break
        if not known:
            return False
        deadline = self._deadlines.pop(conn, None)
        if deadline is not None:
            deadline.cancel()
        n = self._live.get(key, 0) - 1
        if n > 0:
            self._live[key] = n
        else:
            self._live.pop(key, None)
        self._total -= 1
        return True

    def _free_slot(self, key: Hashable) -> None:
        n = self._live.get(key, 0) - 1
        if n > 0:
            self._live[key] = n
        else:
            self._live.pop(key, None)
        self._total -= 1
        self._serve_waiters()

    def _serve_waiters(self) -> None:
        """Start connections for the oldest waiters that now have room."""
        if not self._waiters:
            return
        for w in list(self._waiters):
            if w not in self._waiters:
                continue  # served meanwhile (a synchronous connect failure re-entered)
            if self._total >= self.total_connections and not self._idle:
                return
            if self._may_share(w.key, w.multiplexed):
                continue  # it will share the multiplexed connection being made
            if self._has_room(w.key) or self._evict_idle_elsewhere(w.key):
                self._waiters.remove(w)
                w.opening = self._open(w.key, w.connect)
                w.opening.addCallbacks(w.d.callback, w.d.errback)


def _key_text(key: Hashable) -> str:
    if isinstance(key, tuple) and len(key) >= 3:
        return f"{key[0]}://{key[1]}:{key[2]}"
    return repr(key)


def connection_pool(
    connections_per_host: int = 8,
    total_connections: int = 1024,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    keep_alive: bool = True,
    clock: IReactorTime | None = None,
    http_versions: tuple[str, ...] = ("http/1.1",),
) -> ConnectionPool:
    """A new :class:`ConnectionPool` to pass as the ``pool`` option of requests.

    :param connections_per_host: connections open at once per host (more requests wait).
    :param total_connections: connections open at once in the pool.
    :param idle_timeout: seconds an unused keep-alive connection stays open.
    :param keep_alive: ``False``: one connection per request, ``Connection: close``.
    :param clock: clock of the idle timers (tests pass a ``Clock``).
    :param http_versions: the default ``http_versions`` of the requests using the
        pool (``("h2", "http/1.1")`` to negotiate HTTP/2, ``"h3"`` for HTTP/3); a
        request's own wins.
    :raises ValueError: for a limit below 1, a negative timeout or a bad
        ``http_versions`` (``"h3"`` without aioquic installed, too).
    :raises NotImplementedError: for ``"h2"`` without ``"http/1.1"``.
    """
    return ConnectionPool(
        connections_per_host, total_connections, idle_timeout, keep_alive, clock, http_versions
    )


_default: list[ConnectionPool] = []


def default_pool() -> ConnectionPool:
    """The shared pool used by requests without a ``pool`` option (created on first use)."""
    if not _default:
        _default.append(ConnectionPool())
    return _default[0]
