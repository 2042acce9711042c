"""One TLS port for HTTP/2 and HTTP/1.1: ALPN decides after the handshake.

``h2`` goes to twisted.web's HTTP/2 connection (through :class:`H2Server`, serving
the server's twisted.web front, :mod:`.web`); anything else, including no ALPN,
to our HTTP/1.1 protocol (:mod:`.h1`). See docs/internals.rst, "ALPN dispatch".
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHandshakeListener, IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web._http2 import H2Connection
from zope.interface import implementer

from aleph_tx._time import Deadline

__all__ = ["ALPNFactory", "H2Server"]

_log = Logger()

#: Seconds an HTTP/2 connection closed for a timeout (GOAWAY sent) may linger before
#: it is cut (twisted.web's default: 15).
H2_ABORT_TIMEOUT = 5

#: HTTP/2 connection-level receive window: a paused stream holds at most its own
#: (64 KiB) window of it, so 256 paused streams are needed to stall a connection.
H2_CONNECTION_WINDOW = 16 << 20


class H2Server(H2Connection):
    """twisted.web's HTTP/2 connection, tolerating a request that outlives its response.

    A server may answer before the request body ended (RFC 9113 §8.1: an early 413,
    or a handler that does not read). twisted.web forgets a stream once its response
    is sent, then fails on the request's later DATA or END_STREAM (``KeyError``, the
    connection dropped). Those frames are acknowledged (the connection window stays
    open) and dropped instead.

    :ivar head_timer: ``header_timeout`` (a :class:`~aleph_tx._time.Deadline`): runs
        while no stream is open, stopped by a request's headers.
    """

    head_timer: Deadline | None = None

    def _requestReceived(self, event: Any) -> None:  # noqa: N802 - twisted.web's name
        if self.head_timer is not None:
            self.head_timer.stop()
        super()._requestReceived(event)  # type: ignore[no-untyped-call]

    def _requestDone(self, streamID: int) -> None:  # noqa: N802, N803 - twisted.web's names
        super()._requestDone(streamID)  # type: ignore[no-untyped-call]
        if not self.streams and self.head_timer is not None:
            self.head_timer.start()

    def _requestDataReceived(self, event: Any) -> None:  # noqa: N802 - twisted.web's name
        if event.stream_id in self.streams:
            super()._requestDataReceived(event)  # type: ignore[no-untyped-call]
            return
        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _requestEnded(self, event: Any) -> None:  # noqa: N802 - twisted.web's name
        if event.stream_id in self.streams:
            super()._requestEnded(event)  # type: ignore[no-untyped-call]

    def _requestAborted(self, event: Any) -> None:  # noqa: N802 - twisted.web's name
        if event.stream_id in self.streams:
            super()._requestAborted(event)  # type: ignore[no-untyped-call]


@implementer(IHandshakeListener)
class _ALPNDispatcher(Protocol):
    """Chooses the protocol once TLS negotiated one: ``h2`` → :class:`H2Server`, else ours.

    For HTTP/1.1 it steps aside (the TLS layer's ``wrappedProtocol`` becomes our
    protocol, which tracks itself with the ``Server``); for ``h2`` it stays in
    between so the ``Server`` can follow (and close) the connection.
    """

    transport: Any

    def __init__(self, factory: ALPNFactory, addr: Any) -> None:
        self.factory = factory
        self.addr = addr
        self._buffer: list[bytes] = []
        self._real: Any = None
        self._tracked = False
        runner = factory.h1.runner
        # header_timeout bounds the TLS handshake too, and on HTTP/2 the wait for a
        # request while no stream is open (an idle connection)
        self._head_timer = Deadline(runner.options.header_timeout, self._head_timeout, runner.clock)

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        """The TCP connection is up: the handshake must complete within ``header_timeout``."""
        self._head_timer.start()

    def _head_timeout(self) -> None:
        if self._real is None:
            self.transport.abortConnection()  # no handshake in time
        else:
            self._real.timeoutConnection()  # HTTP/2, idle: GOAWAY, close (abort if it lingers)

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted's name
        """Build the real protocol for the negotiated ALPN name."""
        transport = self.transport
        negotiated = getattr(transport, "negotiatedProtocol", None)
        real: Any
        if negotiated == b"h2":
            real = self._h2()
            real.head_timer = self._head_timer
            server = self.factory.h1.server
            if server is not None:
                self._tracked = True
                server.track(self)
        else:
            self._head_timer.cancel()  # the HTTP/1.1 protocol has its own
            real = self.factory.h1.buildProtocol(self.addr)
            if hasattr(transport, "wrappedProtocol"):
                transport.wrappedProtocol = real
        self._real = real
        real.makeConnection(transport)
        if negotiated == b"h2":
            self._widen_window(real)
            transport.registerProducer(real, True)
        for data in self._buffer:
            real.dataReceived(data)
        self._buffer = []

    def _h2(self) -> Any:
        site = self.factory.site
        conn: Any = H2Server(self.factory.reactor)  # type: ignore[no-untyped-call]
        conn.requestFactory = site.requestFactory
        conn.site = site
        conn.factory = site
        conn.timeOut = site.timeOut
        conn.callLater = self.factory.reactor.callLater  # its timers on the server's reactor
        conn.abortTimeout = H2_ABORT_TIMEOUT
        return conn

    def _widen_window(self, conn: Any) -> None:
        """Give the HTTP/2 connection a 16 MiB receive window.

        A stream whose handler does not read keeps its (at most 64 KiB) stream
        window unacknowledged; with the default 64 KiB *connection* window that alone
        would stall every other stream's request body.
        """
        try:
            conn.conn.increment_flow_control_window(H2_CONNECTION_WINDOW - 65535)
            self.transport.write(conn.conn.data_to_send())
        except Exception:
            _log.failure("widening the HTTP/2 connection window failed")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Forward (or keep until the handshake completed)."""
        if self._real is None:
            self._buffer.append(data)
            return
        self._real.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        """Forward; stop being tracked."""
        self._head_timer.cancel()
        try:
            if self._real is not None:
                self._real.connectionLost(reason)
        finally:
            if self._tracked:
                self._tracked = False
                self.factory.h1.server.untrack(self)

    def graceful_close(self) -> None:
        """``Server.close``: an HTTP/2 connection closes once its streams are written."""
        self.transport.loseConnection()

    def abort(self) -> None:
        """Cut now."""
        self.transport.abortConnection()


@implementer(IProtocolNegotiationFactory)
class ALPNFactory(Factory):
    """One TLS port: ``h2`` through twisted.web's HTTP/2, ``http/1.1`` through ours.

    :param h1: the HTTP/1.1 factory (its ``server`` tracks the connections).
    :param site: the twisted.web ``Site`` of the HTTP/2 front.
    :param reactor: for twisted.web's HTTP/2 timers.
    """

    noisy = False

    def __init__(self, h1: Any, site: server.Site, reactor: Any) -> None:
        self.h1 = h1
        self.site = site
        self.reactor = reactor

    def acceptableProtocols(self) -> list[bytes]:  # noqa: N802 - Twisted's name
        """Offered in ALPN, preferred first."""
        return [b"h2", b"http/1.1"]

    def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802 - Twisted's name
        """A dispatcher deciding after the handshake."""
        return _ALPNDispatcher(self, addr)
