"""The HTTP client's connection pool: per-host and total limits, waiters, idle timeout.

A pooled connection is a :class:`_ClientProtocol` (Twisted's
``HTTP11ClientProtocol`` with a response header limit, a TLS handshake signal
and pool bookkeeping). Each connection is in one :class:`ConnState`:

- ``CONNECTING``: the TCP connect (and TLS handshake) is under way;
- ``ACTIVE``: handed to one request, until its response is fully read;
- ``IDLE``: kept for reuse (keep-alive), closed after ``idle_timeout``;
- ``CLOSED``: lost, aborted or dropped; it never counts against the limits again.

A slot (of ``connections_per_host`` and of ``total_connections``) is held from
the start of the connect until the connection is CLOSED. A connection goes back to
IDLE only when Twisted calls it quiescent: the whole response was read, the server
did not say ``Connection: close``, and nothing failed. Errors, cancellations and
aborts close it, so it is never reused.

HTTP/2 connections (ALPN chose ``h2``) are shared: they stay ACTIVE and every
request to their key gets one while it has room for another stream; an HTTP/2
connection with no stream is closed after ``idle_timeout``. While the first
connection to a key that offers HTTP/2 is being made, other requests to that key
wait to share it instead of opening their own.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from aleph_tx._time import get_clock
from aleph_tx.errors import ConnectionLostError, PoolTimeout
from aleph_tx.http._client.connection import ConnState, _ClientFactory, _ClientProtocol
from aleph_tx.http._ring.versions import check_http_versions

__all__ = ["ConnState", "ConnectionPool", "_ClientProtocol", "connection_pool", "default_pool"]

#: Default response header block limit: 64 KiB is eight times the usual server
#: limit (8 KiB) and still bounds what a hostile server can make us buffer.
DEFAULT_MAX_RESPONSE_HEADER_SIZE = 65536

#: Default idle timeout of pooled connections: shorter than the usual server
#: keep-alive timeouts (nginx 75 s, Apache 5 s is the exception) is not needed
#: because a connection the server closes while idle leaves the pool at once.
DEFAULT_IDLE_TIMEOUT = 60.0


#: ``connect(factory) -> Deferred[_ClientProtocol]``: opens one connection (the
#: client's endpoint plus its connection timeout and TLS handshake wait).
Connector = Callable[[Factory], "Deferred[_ClientProtocol]"]


class _Waiter:
    """A request waiting for a slot; ``opening`` is its connect once a slot freed."""

    __slots__ = ("connect", "d", "h2", "key", "opening", "pool", "timer")

    def __init__(self, pool: ConnectionPool, key: Hashable, connect: Connector, h2: bool = False) -> None:
        self.pool = pool
        self.h2 = h2
        self.key = key
        self.connect = connect
        self.d: Deferred[_ClientProtocol] = Deferred(self._cancel)
        self.timer: IDelayedCall | None = None
        self.opening: Deferred[_ClientProtocol] | None = None

    def _cancel(self, d: Deferred[_ClientProtocol]) -> None:
        # still queued: leave the queue; connecting for it: cancel that
        # connect, which frees the slot
        waiters = self.pool._waiters
        if self in waiters:
            waiters.remove(self)
            self.pool._disarm(self)
        elif self.opening is not None:
            self.opening.cancel()


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections, at most ``connections_per_host`` per host.

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
        if idle_timeout is not None and (not isinstance(idle_timeout, (int, float)) or idle_timeout < 0):
            raise ValueError(f"idle_timeout must be a number >= 0 or None, not {idle_timeout!r}")
        self.connections_per_host = connections_per_host
        self.total_connections = total_connections
        self.idle_timeout = idle_timeout
        self.keep_alive = bool(keep_alive)
        self.http_versions = check_client_versions(http_versions)
        self._clock = clock
        self._idle: dict[Hashable, list[_ClientProtocol]] = {}
        self._live: dict[Hashable, int] = {}
        self._total = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._active: set[_ClientProtocol] = set()
        self._shared: dict[Hashable, list[_ClientProtocol]] = {}  # HTTP/2 connections
        self._connecting: dict[Hashable, int] = {}
        self._h2_keys: set[Hashable] = set()
        self._no_h2_keys: set[Hashable] = set()
        self.connections_opened = 0

    # -- public ----------------------------------------------------------------

    def description(self) -> dict[str, Any]:
        """A snapshot: ``total``, ``idle``, ``active``, ``waiters``, ``per_host`` counts."""
        return {
            "type": "http-connection-pool",
            "connections_per_host": self.connections_per_host,
            "total_connections": self.total_connections,
            "total": self._total,
            "idle": sum(len(v) for v in self._idle.values())
            + sum(1 for v in self._shared.values() for p in v if not p.h2.active_streams),
            "active": len(self._active)
            + sum(1 for v in self._shared.values() for p in v if p.h2.active_streams),
            "h2_connections": sum(len(v) for v in self._shared.values()),
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
            self._disarm(w)
            w.d.cancel()
        closing = []
        for conns in list(self._idle.values()):
            for proto in list(conns):
                lost: Deferred[None] = Deferred()
                proto.close_waiters.append(lost)
                closing.append(lost)
                self._drop(proto)
                proto.close()
        for conns in list(self._shared.values()):
            for proto in list(conns):
                if not proto.h2.active_streams:
                    lost = Deferred()
                    proto.close_waiters.append(lost)
                    closing.append(lost)
                    self._drop(proto)
                    proto.close()
        if not closing:
            return succeed(None)
        return gatherResults(closing).addCallback(lambda _: None)

    def discard(self, proto: _ClientProtocol) -> None:
        """Abort ``proto`` and free its slot now: it saw an error or a cancellation."""
        proto.abort_connection()
        if proto.conn_state is not ConnState.CONNECTING:
            self._drop(proto)

    # -- acquire ---------------------------------------------------------------

    def acquire(
        self,
        key: Hashable,
        connect: Connector,
        pool_timeout: float | None = None,
        clock: IReactorTime | None = None,
        h2: bool = False,
    ) -> Deferred[_ClientProtocol]:
        """A connection for one request: an idle one, a new one, or the next one freed.

        :param key: what makes connections interchangeable.
        :param connect: opens a new connection (with its own connection timeout).
        :param pool_timeout: seconds to wait for a free slot before failing with
            :class:`~aleph_tx.errors.PoolTimeout` (``None``: wait forever).
        :param h2: the connection offers HTTP/2: while one is being made to this
            host, wait to share it rather than open another.
        :returns: fires with an ACTIVE connection; cancelling it frees the slot.
        """
        proto = self._take_shared(key) or self._take_idle(key)
        if proto is not None:
            return succeed(proto)
        if self._may_share(key, h2):
            # an HTTP/2 connection to this host is on its way: share it
            return self._wait(key, connect, pool_timeout, clock, h2)
        if self._has_room(key) or self._evict_idle_elsewhere(key):
            return self._open(key, connect)
        return self._wait(key, connect, pool_timeout, clock, h2)

    def _may_share(self, key: Hashable, h2: bool) -> bool:
        return h2 and key not in self._no_h2_keys and bool(self._connecting.get(key))

    def _take_shared(self, key: Hashable) -> _ClientProtocol | None:
        for proto in self._shared.get(key, ()):
            if proto.h2.can_take():
                if proto.idle_call is not None and proto.idle_call.active():
                    proto.idle_call.cancel()
                proto.idle_call = None
                return proto
        return None

    def _h2_stream_done(self, conn: Any) -> None:
        """A stream of an HTTP/2 connection finished: serve waiters, or start the idle timer."""
        proto: _ClientProtocol = conn.owner
        if proto.conn_state is ConnState.CLOSED:
            return
        self._serve_shared(proto)
        if not conn.active_streams and self.idle_timeout is not None and proto.idle_call is None:
            proto.idle_call = get_clock(self._clock).callLater(self.idle_timeout, self._expire_idle, proto)

    def _serve_shared(self, proto: _ClientProtocol) -> None:
        key = proto.key
        for w in list(self._waiters):
            if not proto.h2.can_take():
                return
            if w.key == key and w in self._waiters:  # (a callback may have served it)
                self._waiters.remove(w)
                self._disarm(w)
                if proto.idle_call is not None and proto.idle_call.active():
                    proto.idle_call.cancel()
                proto.idle_call = None
                w.d.callback(proto)

    def _take_idle(self, key: Hashable) -> _ClientProtocol | None:
        conns = self._idle.get(key)
        while conns:
            proto = conns.pop()
            if not conns:
                del self._idle[key]
            if proto.idle_call is not None and proto.idle_call.active():
                proto.idle_call.cancel()
            proto.idle_call = None
            if proto.state == "QUIESCENT" and proto._lost is None:
                proto.conn_state = ConnState.ACTIVE
                self._active.add(proto)
                return proto
            self._drop(proto)
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
                proto = conns[0]
                self._drop(proto)
                proto.close()
                return True
        return False

    def _open(self, key: Hashable, connect: Connector) -> Deferred[_ClientProtocol]:
        self._live[key] = self._live.get(key, 0) + 1
        self._total += 1
        self._connecting[key] = self._connecting.get(key, 0) + 1
        self.connections_opened += 1
        holder: list[_ClientProtocol] = []
        factory = _ClientFactory(self, key)
        original = factory.buildProtocol

        def build(addr: IAddress) -> _ClientProtocol:
            proto = original(addr)
            holder.append(proto)
            return proto

        factory.buildProtocol = build  # type: ignore[method-assign,assignment]
        try:
            d = connect(factory)
        except Exception:
            d = Deferred()
            d.errback()

        def connecting_done() -> None:
            n = self._connecting.get(key, 0) - 1
            if n > 0:
                self._connecting[key] = n
            else:
                self._connecting.pop(key, None)

        def connected(proto: _ClientProtocol) -> _ClientProtocol:
            connecting_done()
            if proto.h2 is not None and proto.conn_state is not ConnState.CLOSED:
                proto.conn_state = ConnState.ACTIVE
                self._shared.setdefault(key, []).append(proto)
                self._h2_keys.add(key)
                self._no_h2_keys.discard(key)
                self._serve_shared(proto)
                return proto
            if key not in self._no_h2_keys:
                self._no_h2_keys.add(key)
                self._h2_keys.discard(key)
                self._serve_waiters()
            if proto.conn_state is ConnState.CLOSED:
                # lost during the TLS handshake wait: the slot is already free
                raise ConnectionLostError("the connection was lost while connecting", proto._lost)
            proto.conn_state = ConnState.ACTIVE
            self._active.add(proto)
            return proto

        def failed(f: Failure) -> Failure:
            connecting_done()
            if holder:
                proto = holder[0]
                proto.abort_connection()
                self._drop(proto)
            else:
                self._free_slot(key)
            return f

        return d.addCallbacks(connected, failed)

    def _wait(
        self,
        key: Hashable,
        connect: Connector,
        pool_timeout: float | None,
        clock: IReactorTime | None,
        h2: bool = False,
    ) -> Deferred[_ClientProtocol]:
        waiter = _Waiter(self, key, connect, h2)
        d = waiter.d
        self._waiters.append(waiter)
        if pool_timeout is not None:

            def expire() -> None:
                waiter.timer = None
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    d.errback(
                        PoolTimeout(
                            f"no pooled connection to {_key_text(key)} became free "
                            f"within pool_timeout={pool_timeout!r}"
                        )
                    )

            waiter.timer = get_clock(clock).callLater(pool_timeout, expire)
        return d

    @staticmethod
    def _disarm(w: _Waiter) -> None:
        if w.timer is not None and w.timer.active():
            w.timer.cancel()
        w.timer = None

    # -- events from connections -------------------------------------------------

    def _park(self, proto: _ClientProtocol) -> None:
        """The response was fully read and the connection may be reused: make it IDLE."""
        if proto.conn_state is not ConnState.ACTIVE:
            return
        self._active.discard(proto)
        if not self.keep_alive:
            self._drop(proto)
            proto.close()
            return
        proto.conn_state = ConnState.IDLE
        self._idle.setdefault(proto.key, []).append(proto)
        if self.idle_timeout is not None:
            proto.idle_call = get_clock(self._clock).callLater(self.idle_timeout, self._expire_idle, proto)

    def _serve_idle(self, proto: _ClientProtocol) -> None:
        """After Twisted finished with ``proto``: give it to a waiter if one needs it."""
        if proto.conn_state is not ConnState.IDLE or not self._waiters:
            return
        key = proto.key
        for w in self._waiters:
            if w.key == key:
                taken = self._take_idle(key)
                if taken is None:
                    return
                self._waiters.remove(w)
                self._disarm(w)
                w.d.callback(taken)
                return
        if self._total >= self.total_connections:
            # someone else waits on the total limit: give them the slot
            self._drop(proto)
            proto.close()

    def _expire_idle(self, proto: _ClientProtocol) -> None:
        proto.idle_call = None
        if (
            proto.h2 is not None and not proto.h2.active_streams and proto.conn_state is ConnState.ACTIVE
        ) or proto.conn_state is ConnState.IDLE:
            self._drop(proto)
            proto.close()

    def _on_lost(self, proto: _ClientProtocol) -> None:
        for lost in proto.close_waiters:
            lost.callback(None)
        if proto.conn_state is not ConnState.CONNECTING:
            self._drop(proto)
        else:
            # lost during the connect/handshake: `failed` in _open frees the slot
            # when the connect fails; if the connect already fired, free it now.
            proto.conn_state = ConnState.CLOSED
            self._free_slot(proto.key)

    def _drop(self, proto: _ClientProtocol) -> None:
        """Mark ``proto`` CLOSED (idempotent) and free its slot."""
        if proto.conn_state is ConnState.CLOSED:
            return
        if proto.conn_state is ConnState.IDLE:
            conns = self._idle.get(proto.key)
            if conns and proto in conns:
                conns.remove(proto)
                if not conns:
                    del self._idle[proto.key]
            if proto.idle_call is not None and proto.idle_call.active():
                proto.idle_call.cancel()
            proto.idle_call = None
        self._active.discard(proto)
        shared = self._shared.get(proto.key)
        if shared and proto in shared:
            shared.remove(proto)
            if not shared:
                del self._shared[proto.key]
            if proto.idle_call is not None and proto.idle_call.active():
                proto.idle_call.cancel()
            proto.idle_call = None
        proto.conn_state = ConnState.CLOSED
        self._free_slot(proto.key)

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
            if self._may_share(w.key, w.h2):
                continue  # it will share the HTTP/2 connection being made
            if self._has_room(w.key) or self._evict_idle_elsewhere(w.key):
                self._waiters.remove(w)
                self._disarm(w)
                w.opening = self._open(w.key, w.connect)
                w.opening.addCallbacks(w.d.callback, w.d.errback)


def _key_text(key: Hashable) -> str:
    if isinstance(key, tuple) and len(key) >= 3:
        return f"{key[0]}://{key[1]}:{key[2]}"
    return repr(key)


#: The ``http_versions`` the client speaks (ALPN names, RFC 7301).
CLIENT_VERSIONS = ("http/1.1", "h2")


def check_client_versions(versions: Any) -> tuple[str, ...]:
    """``http_versions`` for the client: a tuple of ``"http/1.1"`` and ``"h2"``.

    :raises ValueError: for a string, an empty sequence or an unknown name.
    :raises NotImplementedError: for ``"h2"`` without ``"http/1.1"``.
    """
    out = check_http_versions(versions, CLIENT_VERSIONS)
    if "http/1.1" not in out:
        raise NotImplementedError("an HTTP/2-only client (no 'http/1.1' fallback) is not implemented")
    return out


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
        pool (``("h2", "http/1.1")`` to negotiate HTTP/2); a request's own wins.
    :raises ValueError: for a limit below 1, a negative timeout or a bad ``http_versions``.
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
