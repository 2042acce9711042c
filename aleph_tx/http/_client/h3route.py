"""When a request goes over HTTP/3, and the pool's connector for it.

- ``http_versions=("h3",)``: every request goes over HTTP/3 to the URL's host and
  port (UDP); ``https://`` only.
- ``"h3"`` beside ``"http/1.1"``: a request goes over HTTP/3 once a response of its
  origin advertised an ``h3`` alternative (``alt-svc``, RFC 7838) that is still
  fresh and not broken (:class:`~aleph_tx.http._client.altsvc.AltSvcCache`, kept
  by the pool); otherwise, and through a proxy, over TCP. If the QUIC handshake
  fails (within ``connection_timeout``, or :data:`FALLBACK_TIMEOUT` without one),
  the alternative is marked broken and the request goes over TCP.

:class:`H3Route` is the connector the pool calls; it imports the HTTP/3 client
(and aioquic) only when called, so a client that never speaks HTTP/3 never loads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Hashable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.python.failure import Failure

from aleph_tx.errors import ConnectionLostError
from aleph_tx.http._client.altsvc import AltService, AltSvcCache, Origin
from aleph_tx.http._client.connect import Target
from aleph_tx.http._client.options import Options
from aleph_tx.http._client.pool import PooledConnection, PoolEvents

__all__ = ["FALLBACK_TIMEOUT", "H3Route", "h3_route", "learn_alt_svc"]

#: Seconds a QUIC handshake to an ``alt-svc`` alternative may take when the request
#: has no ``connection_timeout``, before the request falls back to TCP (Chrome
#: gives a QUIC handshake 10 seconds too).
FALLBACK_TIMEOUT = 10.0


class H3Route:
    """Opens HTTP/3 connections for one origin (``route(events)``, for the pool).

    :param fallback: TCP is there to fall back on: a failed handshake marks the
        alternative broken in ``cache``, and a broken one is not tried (the
        connector fails at once, so requests queued for it fall back too).
    :ivar key: the pool key: origin, UDP address and TLS settings.
    """

    __slots__ = (
        "alt",
        "cache",
        "clock",
        "fallback",
        "host",
        "insecure",
        "key",
        "max_header_size",
        "origin",
        "port",
        "reactor",
        "server_name",
        "ssl_context",
        "timeout",
    )

    def __init__(self, o: Options, target: Target, alt: AltService | None) -> None:
        self.origin: Origin = (target.scheme, target.host, target.port)
        self.alt = alt
        self.fallback = alt is not None
        self.server_name = target.host
        self.host = (alt.host or target.host) if alt is not None else target.host
        self.port = alt.port if alt is not None else target.port
        self.ssl_context = target.ssl_context
        self.insecure = target.insecure
        self.cache: AltSvcCache = o.pool.alt_svc
        self.reactor = o.reactor
        self.clock = o.clock
        timeout = o.connection_timeout
        self.timeout = FALLBACK_TIMEOUT if timeout is None and self.fallback else timeout
        self.max_header_size = o.max_response_header_size
        self.key: Hashable = ("h3", target.host, target.port, self.host, self.port, target.tls_key)

    def __call__(self, events: PoolEvents) -> Deferred[PooledConnection]:
        """Open one connection; cancelling the Deferred aborts the attempt."""
        alt = self.alt
        if alt is not None:
            until = self.cache.broken_until(self.origin, alt, self.clock.seconds())
            if until is not None:
                return fail(
                    ConnectionLostError(
                        f"HTTP/3 to {self.host}:{self.port} failed recently; not tried again "
                        f"for {until - self.clock.seconds():.0f} s"
                    )
                )
        h3 = importlib.import_module("aleph_tx.http._client.h3")
        d = h3.connect_h3(
            self.host,
            self.port,
            self.server_name,
            self.ssl_context,
            self.insecure,
            self.timeout,
            self.reactor,
            self.clock,
            self.max_header_size,
        )

        def made(conn: Any) -> PooledConnection:
            if alt is not None:
                self.cache.succeeded(self.origin, alt)
            conn.events = events
            conn.key = self.key
            return conn  # type: ignore[no-any-return]

        def failed(f: Failure) -> Failure:
            if alt is not None and not f.check(CancelledError):
                # before the pool hears of it: requests waiting to share this
                # connection find the alternative broken and go over TCP
                self.cache.failed(self.origin, alt, self.clock.seconds())
            return f

        return d.addCallbacks(made, failed)  # type: ignore[no-any-return]


def h3_route(o: Options, target: Target) -> H3Route | None:
    """The HTTP/3 route of a request with ``"h3"`` in its ``http_versions``, or
    ``None`` when it goes over TCP (see the module docstring)."""
    if target.scheme != "https" or target.proxy is not None:
        return None
    if not o.tcp:
        return H3Route(o, target, None)
    alt = o.pool.alt_svc.lookup((target.scheme, target.host, target.port), o.clock.seconds())
    return H3Route(o, target, alt) if alt is not None else None


def learn_alt_svc(o: Options, target: Target, headers: list[tuple[str, str]]) -> None:
    """Remember the ``alt-svc`` of a response (``"h3"`` beside TCP, ``https://``, no proxy)."""
    if not o.tcp or target.scheme != "https" or target.proxy is not None:
        return
    values = [value for name, value in headers if name == "alt-svc"]
    if values:
        o.pool.alt_svc.learn((target.scheme, target.host, target.port), ", ".join(values), o.clock.seconds())
