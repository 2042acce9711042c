"""The one exception hierarchy of aleph_tx.

Every error the library raises or fails a Deferred with derives from
:class:`AlephError`, and also from the matching builtin where one fits
(:class:`TimeoutError`, :class:`ValueError`), so ``except TimeoutError`` works.
"you closed it" and "the peer or network broke it" are kept apart:
:class:`ConnectionLostError` is only ever the peer's or the network's doing.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "AlephError",
    "BackpressureError",
    "ClientResponseError",
    "ConnectionLostError",
    "ConnectionTimeout",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RedirectError",
    "RequestTimeout",
    "TimeoutError",
    "WebSocketHandshakeError",
]


class AlephError(Exception):
    """Base class of every aleph_tx error."""


class BackpressureError(AlephError):
    """More than 16384 puts (or takes) are pending on one stream.

    A caller that keeps putting without waiting for the previous puts to fire
    has a bug: the limit turns unbounded memory growth into this error.
    """


class TimeoutError(AlephError, builtins.TimeoutError):  # noqa: A001
    """An operation did not complete in time (also a builtin :class:`TimeoutError`)."""


class PoolTimeout(TimeoutError):
    """No pooled HTTP client connection became free within ``pool_timeout``."""


class ConnectionTimeout(TimeoutError):
    """TCP connect plus TLS handshake did not finish within the connect timeout."""


class RequestTimeout(TimeoutError):
    """No response headers arrived within ``request_timeout`` of sending the request."""


class ReadTimeout(TimeoutError):
    """Reading a response body stalled for longer than ``read_timeout``."""


class ConnectionLostError(AlephError):
    """The peer went away (or the network failed) in the middle of an operation.

    :ivar reason: the underlying failure or exception, when known.
    """

    def __init__(self, message: str = "connection lost", reason: Any = None) -> None:
        super().__init__(message)
        self.reason = reason


class ProtocolError(AlephError):
    """The peer broke the protocol: a malformed or oversize response or frame."""


class RedirectError(AlephError):
    """Too many redirects (``max_redirects``), or a redirect loop."""


class ClientResponseError(AlephError):
    """An HTTP response with status >= 400 while ``throw_exceptions`` is on.

    :ivar response: the response dict, its body read and coerced with ``as_``.
    """

    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__(f"HTTP status {response.get('status')!r}")
        self.response = response

    @property
    def status(self) -> Any:
        """The response status code."""
        return self.response.get("status")


class WebSocketHandshakeError(AlephError, ValueError):
    """A request is not a valid WebSocket upgrade (the server answers 400)."""
