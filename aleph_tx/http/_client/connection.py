"""A pooled HTTP client connection: Twisted's HTTP/1.1 client protocol plus our rules.

:class:`_ClientProtocol` adds to ``HTTP11ClientProtocol``: a limit on the response
header block (:class:`~aleph_tx.errors.ProtocolError` past it), a TLS handshake
signal (for the connection timeout), the switch to HTTP/2 when ALPN chose it, and
the notifications the pool needs (quiescent, lost, given up).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from twisted.web._newclient import HEADER, STATUS, HTTP11ClientProtocol, Request
from twisted.web.iweb import IResponse
from zope.interface import implementer

from aleph_tx.errors import ProtocolError

if TYPE_CHECKING:
    from aleph_tx.http._client.pool import ConnectionPool

__all__ = ["ConnState"]

_DONE = Failure(ConnectionDone())


class ConnState(enum.Enum):
    """The states of a pooled client connection (see the module docstring)."""

    CONNECTING = "connecting"
    ACTIVE = "active"
    IDLE = "idle"
    CLOSED = "closed"


@implementer(IHandshakeListener)
class _ClientProtocol(HTTP11ClientProtocol):
    """``HTTP11ClientProtocol`` plus a header-size limit and pool bookkeeping.

    :ivar conn_state: the :class:`ConnState` (changed only by the pool).
    :ivar requests: how many requests this connection has carried.
    """

    def __init__(self, pool: ConnectionPool, key: Hashable) -> None:
        super().__init__(self._quiescent)  # type: ignore[no-untyped-call]
        self._pool = pool
        self.key = key
        self.conn_state = ConnState.CONNECTING
        self.requests = 0
        self._went_quiescent = False
        self._handshake: Deferred[None] | None = None
        self._handshake_done = False
        self._lost: Failure | None = None
        self.idle_call: IDelayedCall | None = None
        self.last_parser: Any = None
        self.close_waiters: list[Deferred[None]] = []
        self._leftover = False
        self.h2: Any = None  # an H2Connection once ALPN chose h2

    # -- TLS handshake ---------------------------------------------------------

    def handshakeCompleted(self) -> None:  # noqa: N802
        """Called by ``TLSMemoryBIOProtocol`` once the TLS handshake is done."""
        self._handshake_done = True
        d, self._handshake = self._handshake, None
        if d is not None:
            d.callback(None)

    def wait_handshake(self) -> Deferred[None]:
        """Fires once the TLS handshake completed; fails if the connection is lost first."""
        if self._handshake_done:
            return succeed(None)
        if self._lost is not None:
            d0: Deferred[None] = Deferred()
            d0.errback(self._lost)
            return d0
        d: Deferred[None] = Deferred(lambda _: self.abort_connection())
        self._handshake = d
        return d

    def start_h2(self, max_header_size: int) -> None:
        """ALPN chose ``h2``: from now on the bytes go to an HTTP/2 connection."""
        from aleph_tx.http._client.h2 import H2ClientConnection

        self.h2 = H2ClientConnection(self.transport, self._pool._h2_stream_done, max_header_size)
        self.h2.owner = self

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        """HTTP/2 bytes to the h2 connection, else Twisted's HTTP/1.1 handling."""
        if self.h2 is not None:
            self.h2.data_received(data)
        else:
            super().dataReceived(data)  # type: ignore[no-untyped-call]

    # -- requests --------------------------------------------------------------

    def send(self, request: Request, max_header_size: int) -> Deferred[IResponse]:
        """Send ``request``; the response header block is limited to ``max_header_size`` bytes."""
        self.requests += 1
        d: Deferred[IResponse] = self.request(request)
        parser = self._parser
        if parser is not None:
            self.last_parser = parser
            _limit_parser(parser, max_header_size)
        return d

    def _quiescent(self, proto: HTTP11ClientProtocol) -> None:
        # Called by Twisted in the middle of _finishResponse, before the old
        # parser is disconnected: park the connection as IDLE (a request made
        # from the body's end callback, which runs after the parser is
        # disconnected, may take it), but hand it to waiters only once Twisted
        # is done with it.
        self._went_quiescent = True
        if self._leftover:
            # bytes after the end of the response: the peer and we disagree on
            # framing; never send another request on this connection
            self._pool._drop(self)
            self.close()
            return
        self._pool._park(self)

    def _finishResponse_WAITING(self, rest: bytes) -> None:  # noqa: N802
        self._went_quiescent = False
        self._leftover = bool(rest)
        super()._finishResponse_WAITING(rest)
        if self._went_quiescent:
            self._went_quiescent = False
            self._pool._serve_idle(self)

    _finishResponse_TRANSMITTING = _finishResponse_WAITING  # noqa: N815

    def _giveUp(self, reason: Failure) -> None:  # noqa: N802
        # Twisted closes the connection (Connection: close, a parse error):
        # it leaves the pool now rather than when the close completes
        # (before Twisted's handling, which ends the body and runs user code)
        if self.conn_state is not ConnState.CONNECTING:
            self._pool._drop(self)
        super()._giveUp(reason)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = _DONE) -> None:  # noqa: N802
        """Twisted's handling, then free the pool slot."""
        self._lost = reason
        if self.h2 is not None:
            self.h2.connection_lost(reason)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        d, self._handshake = self._handshake, None
        if d is not None:
            d.errback(reason)
        self._pool._on_lost(self)

    def abort_connection(self) -> None:
        """Abort the TCP (or TLS) connection at once; it will not be reused."""
        transport: Any = self.transport
        if transport is not None and self._lost is None:
            transport.abortConnection()

    def close(self) -> None:
        """Close the connection cleanly (an idle one: nothing is in flight)."""
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()


def _limit_parser(parser: Any, max_header_size: int) -> None:
    """Make Twisted's response parser fail with ProtocolError past ``max_header_size``.

    The parser is a ``LineReceiver``: its per-line limit becomes the block limit,
    and every status/header line is counted (with its CRLF) until the body starts.
    """
    parser.MAX_LENGTH = max_header_size
    line_received = parser.lineReceived
    seen = [0]

    def counting_line_received(line: bytes) -> None:
        if parser.state in (STATUS, HEADER):
            seen[0] += len(line) + 1
            if seen[0] > max_header_size:
                raise ProtocolError(
                    f"response header block larger than max_response_header_size={max_header_size}"
                )
        line_received(line)

    def line_length_exceeded(line: bytes) -> None:
        raise ProtocolError(f"response header line larger than max_response_header_size={max_header_size}")

    parser.lineReceived = counting_line_received
    parser.lineLengthExceeded = line_length_exceeded


class _ClientFactory(Factory):
    def __init__(self, pool: ConnectionPool, key: Hashable) -> None:
        self._pool = pool
        self._key = key

    def buildProtocol(self, addr: IAddress | None) -> _ClientProtocol:  # noqa: N802
        return _ClientProtocol(self._pool, self._key)
