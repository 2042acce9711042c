"""QUIC connections on one Twisted UDP port.

:class:`QuicEndpoint` is the port's ``DatagramProtocol``. Every datagram's header
is parsed (RFC 9000 §17) and the datagram goes to the connection that issued its
destination connection ID; a connection can have several IDs (aioquic issues new
ones, retires old ones, and a client that migrates to a new address keeps its IDs,
RFC 9000 §9), so the routing table follows aioquic's ``ConnectionIdIssued`` /
``ConnectionIdRetired`` events. A server endpoint creates a connection for an
Initial packet of at least 1200 bytes (RFC 9000 §14.1), answers an unknown
version with Version Negotiation (§6), and can ask for address validation first
with a Retry (§8.1.2, ``retry=True``). Anything else — malformed datagrams,
unknown connection IDs, short Initials — is dropped silently: with connection IDs
that aioquic draws at random, a stateless reset (§10.3) cannot be built after a
connection is forgotten, so none is sent.

:class:`QuicDriver` drives one connection: datagrams in, events out to its
:class:`ConnectionHandler`, datagrams sent, and one timer (``callLater``, re-armed
to ``get_timer()`` after every send). Work done outside a datagram or a timer
(a handler writing later) asks for :meth:`QuicDriver.transmit_soon`: one send per
reactor turn however many writes.

:class:`QuicPort` is the ``IListeningPort`` a :class:`aleph_tx._server.Server`
holds: ``stopListening()`` stops accepting new connections and fires once the
open ones are gone (the UDP socket is then closed: a QUIC connection needs its
port until its last packet).
"""

from __future__ import annotations

import os
import socket
import typing
from collections.abc import Callable
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from aleph_tx._once import Once
from aleph_tx._time import Timer, get_clock, get_reactor
from aleph_tx.http._quic.flow import FlowControlledConnection

__all__ = ["ConnectionHandler", "QuicDriver", "QuicEndpoint", "QuicPort", "listen_quic"]

_log = Logger()

#: RFC 9000 §14.1: a client's Initial datagram is at least this long.
_MIN_INITIAL_SIZE = 1200

Address = tuple[Any, ...]

#: UDP socket buffer size asked for (each direction): 2 MiB.
SOCKET_BUFFER = 2 << 20


class ConnectionHandler(typing.Protocol):
    """What a :class:`QuicDriver` reports to (the HTTP/3 server or client connection)."""

    def quic_event_received(self, event: events.QuicEvent) -> None:
        """A QUIC event (streams, handshake); connection-ID events are handled here."""

    def connection_terminated(self, event: events.ConnectionTerminated) -> None:
        """The connection is gone (closed by either side, idle, or aborted); called once."""

    def transmitting(self) -> None:
        """Datagrams are about to be built: hand over what was batched this turn."""

    def transmitted(self) -> None:
        """Datagrams were just sent: stream buffers may have room again."""


class QuicDriver:
    """One QUIC connection on a :class:`QuicEndpoint`: events, sends and its timer.

    :ivar quic: the aioquic connection.
    :ivar handler: where events go (set by whoever created the driver).
    """

    def __init__(self, endpoint: QuicEndpoint, quic: FlowControlledConnection, clock: IReactorTime) -> None:
        self.quic = quic
        self.handler: ConnectionHandler | None = None
        self.terminated = False
        self.cids: set[bytes] = set()
        self._endpoint = endpoint
        self.clock = clock
        self._timer = Timer(None, self._on_timer, clock)
        self._timer_at: float | None = None
        self._soon: Any = None
        self._busy = False  # in the timer: a transmit follows anyway

    @property
    def peer_address(self) -> Address | None:
        """The peer's current address (it may change: connection migration)."""
        return self.quic.get_peer_address()

    # -- input ---------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Feed one datagram, handle the events it caused, send what is due."""
        if self.terminated:
            return
        self.quic.receive_datagram(data, addr, now=self.clock.seconds())
        self._process_events()
        # one send per reactor turn: Twisted reads a burst of datagrams per turn, and
        # building packets (datagrams_to_send) costs as much as reading one
        self.transmit_soon()

    def _on_timer(self) -> None:
        if self.terminated:
            return
        at = self._timer_at
        self._timer_at = None
        now = self.clock.seconds()
        self._busy = True
        try:
            self.quic.handle_timer(now=now if at is None else max(now, at))
            self._process_events()
        finally:
            self._busy = False
        self.transmit()

    def _process_events(self) -> None:
        quic = self.quic
        event = quic.next_event()
        while event is not None:
            kind = type(event)
            if kind is events.ConnectionIdIssued:
                self._endpoint.add_cid(event.connection_id, self)  # type: ignore[attr-defined]
            elif kind is events.ConnectionIdRetired:
                self._endpoint.remove_cid(event.connection_id, self)  # type: ignore[attr-defined]
            elif kind is events.ConnectionTerminated:
                self._terminate(event)  # type: ignore[arg-type]
                return
            elif self.handler is not None:
                try:
                    self.handler.quic_event_received(event)
                except Exception:
                    _log.failure("HTTP/3 connection handler failed on {event!r}", event=event)
            event = quic.next_event()

    # -- output --------------------------------------------------------------------

    def transmit(self) -> None:
        """Send the datagrams due now and re-arm the timer."""
        soon, self._soon = self._soon, None
        if soon is not None and soon.active():
            soon.cancel()
        if self.terminated:
            return
        handler = self.handler
        if handler is not None:
            handler.transmitting()  # user code runs here: it may abort the connection
            if self.terminated:
                return  # type: ignore[unreachable]
        quic = self.quic
        now = self.clock.seconds()
        send = self._endpoint.send
        for data, addr in quic.datagrams_to_send(now=now):
            send(data, addr)
        timer_at = quic.get_timer()
        if timer_at is None:
            self._timer.stop()
        elif timer_at != self._timer_at or not self._timer.active:
            self._timer.start(max(0.0, timer_at - now))
        self._timer_at = timer_at
        if handler is not None:
            handler.transmitted()

    def transmit_soon(self) -> None:
        """Send at the end of this reactor turn (coalesces writes made outside a datagram)."""
        if self._soon is None and not self._busy and not self.terminated:
            self._soon = self.clock.callLater(0, self.transmit)

    # -- ending ----------------------------------------------------------------------

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close gracefully: CONNECTION_CLOSE now, the state kept for the closing period."""
        if not self.terminated:
            self.quic.close(error_code=error_code, reason_phrase=reason)
            self.transmit()

    def abort(self, error_code: int = 0, reason: str = "aborted") -> None:
        """Send CONNECTION_CLOSE once and forget the connection now."""
        if self.terminated:
            return
        self.quic.close(error_code=error_code, reason_phrase=reason)
        send = self._endpoint.send
        for data, addr in self.quic.datagrams_to_send(now=self.clock.seconds()):
            send(data, addr)
        self._terminate(
            events.ConnectionTerminated(error_code=error_code, frame_type=None, reason_phrase=reason)
        )

    def _terminate(self, event: events.ConnectionTerminated) -> None:
        if self.terminated:
            return
        self.terminated = True
        self._timer.stop()
        soon, self._soon = self._soon, None
        if soon is not None and soon.active():
            soon.cancel()
        self._endpoint.forget(self)
        if self.handler is not None:
            try:
                self.handler.connection_terminated(event)
            except Exception:
                _log.failure("HTTP/3 connection handler failed on termination")

    def __repr__(self) -> str:
        state = "terminated" if self.terminated else "open"
        return f"<QuicDriver {state} peer={self.peer_address!r}>"


class QuicEndpoint(DatagramProtocol):
    """Routes a UDP port's datagrams to QUIC connections by connection ID.

    :param configuration: used for every connection this endpoint accepts (server),
        and for parsing connection IDs (their length).
    :param accept: server side: ``accept(driver) -> handler`` for each new
        connection; ``None`` for a client endpoint (connections come from :meth:`connect`).
    :param retry: validate client addresses with a Retry packet first (RFC 9000 §8.1.2).
    :param clock: the time source and timers (``None``: the global reactor).
    """

    def __init__(
        self,
        configuration: QuicConfiguration,
        accept: Callable[[QuicDriver], ConnectionHandler] | None = None,
        retry: bool = False,
        clock: IReactorTime | None = None,
    ) -> None:
        self.configuration = configuration
        self.accepting = accept is not None
        self._accept = accept
        self._retry = QuicRetryTokenHandler() if retry else None
        self.clock = get_clock(clock)
        self._cids: dict[bytes, QuicDriver] = {}
        self.drivers: set[QuicDriver] = set()
        self._idle = Once()  # fired when the last connection goes, once not accepting
        self._sendto: Callable[[bytes, Address], object] | None = None

    # -- transport -------------------------------------------------------------------

    def startProtocol(self) -> None:  # noqa: N802 - Twisted's name
        sock = getattr(self.transport, "socket", None)
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    # a burst that finds the kernel's default buffer (208 KiB) full is
                    # dropped and costs a congestion-window halving; the kernel caps
                    # this at net.core.rmem_max / wmem_max (docs/http3.rst)
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError:
                    pass
        # the port's own socket: Twisted's write() re-validates the address on every
        # datagram; QUIC only sends to addresses it received from.
        self._sendto = sock.sendto if sock is not None else None

    def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram; one the kernel refuses now is dropped (QUIC retransmits)."""
        try:
            if self._sendto is not None:
                self._sendto(data, addr)
            elif self.transport is not None:
                self.transport.write(data, addr)
        except (OSError, MessageLengthError):
            pass

    # -- routing ---------------------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:  # noqa: N802
        """Route ``datagram`` to its connection; create one for a valid Initial."""
        try:
            header = pull_quic_header(
                Buffer(data=datagram), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            return  # not a QUIC packet
        driver = self._cids.get(header.destination_cid)
        if driver is None:
            if not self.accepting:
                return
            driver = self._new_connection(datagram, header, addr)
            if driver is None:
                return
        try:
            driver.datagram_received(datagram, addr)
        except Exception:
            _log.failure("QUIC connection failed on a datagram from {addr!r}", addr=addr)
            driver.abort(reason="internal error")

    def _new_connection(self, datagram: bytes, header: Any, addr: Address) -> QuicDriver | None:
        config = self.configuration
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in config.supported_versions
        ):
            # RFC 9000 §6.1; never in answer to a Version Negotiation (no reflection loop)
            self.send(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=config.supported_versions,
                ),
                addr,
            )
            return None
        if header.packet_type != QuicPacketType.INITIAL or len(datagram) < _MIN_INITIAL_SIZE:
            return None
        original_dcid: bytes | None = header.destination_cid
        retry_scid: bytes | None = None
        if self._retry is not None:
            now = self.clock.seconds()
            if not header.token:
                scid = os.urandom(8)
                token = self._retry.create_token(
                    address=addr,
                    original_destination_connection_id=header.destination_cid,
                    retry_source_connection_id=scid,
                    now=now,
                )
                self.send(
                    encode_quic_retry(
                        version=header.version,
                        source_cid=scid,
                        destination_cid=header.source_cid,
                        original_destination_cid=header.destination_cid,
                        retry_token=token,
                    ),
                    addr,
                )
                return None
            try:
                original_dcid = self._retry.validate_token(
                    address=addr, destination_cid=header.destination_cid, token=header.token, now=now
                )
            except ValueError:
                return None  # RFC 9000 §8.1.3: an invalid token may be discarded
            retry_scid = header.destination_cid
        quic = FlowControlledConnection(
            configuration=config,
            original_destination_connection_id=original_dcid,
            retry_source_connection_id=retry_scid,
        )
        driver = QuicDriver(self, quic, self.clock)
        self._register(driver, header.destination_cid, quic.host_cid)
        assert self._accept is not None
        driver.handler = self._accept(driver)
        return driver

    def connect(self, addr: Address, configuration: QuicConfiguration | None = None) -> QuicDriver:
        """Start a client connection to ``addr`` (set ``driver.handler`` before the reactor runs).

        The first flight is sent at the end of this reactor turn.
        """
        quic = FlowControlledConnection(configuration=configuration or self.configuration)
        quic.connect(addr, now=self.clock.seconds())
        driver = QuicDriver(self, quic, self.clock)
        self._register(driver, quic.host_cid)
        driver.transmit_soon()
        return driver

    def _register(self, driver: QuicDriver, *cids: bytes) -> None:
        self.drivers.add(driver)
        for cid in cids:
            self.add_cid(cid, driver)

    def add_cid(self, cid: bytes, driver: QuicDriver) -> None:
        """Route ``cid`` to ``driver``."""
        self._cids[cid] = driver
        driver.cids.add(cid)

    def remove_cid(self, cid: bytes, driver: QuicDriver) -> None:
        """Stop routing ``cid`` (retired)."""
        if self._cids.get(cid) is driver:
            del self._cids[cid]
        driver.cids.discard(cid)

    def forget(self, driver: QuicDriver) -> None:
        """``driver``'s connection is gone: drop its routes."""
        for cid in driver.cids:
            if self._cids.get(cid) is driver:
                del self._cids[cid]
        driver.cids.clear()
        self.drivers.discard(driver)
        if not self.drivers and not self.accepting:
            self._idle.fire()

    # -- stopping ----------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Refuse new connections (datagrams for them are dropped); open ones go on."""
        self.accepting = False
        if not self.drivers:
            self._idle.fire()

    def wait_idle(self) -> Deferred[None]:
        """Once not accepting: fires when no connection is open (at once if none is)."""
        return self._idle.wait()


@implementer(IListeningPort)
class QuicPort:
    """The ``IListeningPort`` of a QUIC endpoint, for :class:`aleph_tx._server.Server`.

    :param udp_port: the Twisted UDP port the endpoint runs on.
    :param endpoint: its :class:`QuicEndpoint`.
    """

    def __init__(self, udp_port: Any, endpoint: QuicEndpoint) -> None:
        self.udp_port = udp_port
        self.endpoint = endpoint
        self.tracker: Any = None  # what new connections report to (a Server), if any
        self._stopping = False
        self._stopped = Once()

    def startListening(self) -> None:  # noqa: N802 - Twisted's name
        """Already listening (bound by :func:`listen_quic`)."""

    def stopListening(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        """Stop accepting; fires once every open connection is gone and the socket closed."""
        if not self._stopping:
            self._stopping = True
            self.endpoint.stop_accepting()
            self.endpoint.wait_idle().addCallback(self._idle)
        return self._stopped.wait()

    def _idle(self, _: object) -> None:
        stopping = self.udp_port.stopListening()
        if isinstance(stopping, Deferred):
            stopping.addBoth(self._stopped_now)
        else:
            self._stopped_now(None)

    def _stopped_now(self, _: object) -> None:
        self._stopped.fire()

    def getHost(self) -> Any:  # noqa: N802 - Twisted's name
        """The UDP address the port is bound to."""
        return self.udp_port.getHost()


def listen_quic(
    endpoint: QuicEndpoint, port: int = 0, interface: str = "", reactor: Any = None, reuse_port: bool = False
) -> QuicPort:
    """Bind a UDP port for ``endpoint`` now.

    :param reuse_port: bind with ``SO_REUSEPORT`` (Linux), so that several processes
        (``--workers``) share the port: the kernel hashes each client address to one
        of them (see docs/http3.rst for what that means for connection migration).
    :raises twisted.internet.error.CannotListenError: if the port cannot be bound.
    """
    reactor = get_reactor(reactor)
    if not reuse_port:
        udp_port = reactor.listenUDP(port, endpoint, interface=interface, maxPacketSize=65535)
        return QuicPort(udp_port, endpoint)
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((interface, port))
        # adoptDatagramPort duplicates the descriptor; ours is closed below
        udp_port = reactor.adoptDatagramPort(sock.fileno(), family, endpoint, maxPacketSize=65535)
    except (OSError, AttributeError) as e:
        raise CannotListenError(interface, port, e) from e
    finally:
        sock.close()
    return QuicPort(udp_port, endpoint)
