"""UDP sockets as duplex streams of datagram dicts (Aleph's ``aleph.udp``).

.. code-block:: python

    sock = await udp.socket(port=10001)
    await sock.put({"host": "127.0.0.1", "port": 10002, "message": "hi"})
    msg = await sock.take()   # {"host": ..., "port": ..., "message": b"..."}

Takes get ``{"host", "port", "message": bytes}`` (the sender's address). Puts take
the same dict, ``message`` being anything :func:`aleph_tx.byte_streams.to_bytes`
accepts; ``host`` may be an IP address or a name (resolved first). The socket
stops reading while nobody takes (the kernel drops what overflows its buffer, as
UDP does; what one wake-up had already read, at most Twisted's ``maxThroughput``
of 256 KiB, is held); an ICMP error from an unreachable peer does not close it.
"""

from __future__ import annotations

import socket as _socket_mod
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._adapter import ConnectionStream, Sender, to_bytes
from aleph_tx._receiver import Receiver

__all__ = ["MAX_DATAGRAM_IPV4", "MAX_DATAGRAM_IPV6", "UDPStream", "socket"]

_log = Logger()

#: Largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header).
MAX_DATAGRAM_IPV4 = 65507
#: Largest UDP payload over IPv6 without jumbograms: 65535 - 8 (UDP header).
MAX_DATAGRAM_IPV6 = 65527
#: recvfrom() buffer: Twisted's default (8192) would truncate larger datagrams.
_MAX_PACKET = 65536


class _PortProducer:
    """Pauses a UDP port's reading (a UDP port is no IPushProducer itself)."""

    def __init__(self, port: Any) -> None:
        self._port = port

    def pauseProducing(self) -> None:  # noqa: N802
        self._port.stopReading()

    def resumeProducing(self) -> None:  # noqa: N802
        if self._port.connected:
            self._port.startReading()

    def stopProducing(self) -> None:  # noqa: N802
        self._port.stopListening()


class UDPStream(ConnectionStream):
    """The stream of a UDP socket (see the module docstring)."""

    __slots__ = ("_ipv6", "_reactor")

    def __init__(self, sender: Sender, ipv6: bool, reactor: Any, description: Any) -> None:
        super().__init__(sender, self._convert_datagram, description)
        self._ipv6 = ipv6
        self._reactor = reactor

    def _convert_datagram(self, msg: Any) -> tuple[bytes, tuple[str, int]]:
        if not isinstance(msg, dict):
            raise TypeError(f"a UDP message must be a dict with host, port and message, not {msg!r:.80}")
        missing = [k for k in ("host", "port", "message") if msg.get(k) is None]
        if missing:
            raise ValueError(f"a UDP message needs {', '.join(missing)}: {msg!r:.80}")
        host, port = msg["host"], msg["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
            raise ValueError(f"UDP port must be an int in 1..65535, not {port!r}")
        data = to_bytes(msg["message"])
        limit = MAX_DATAGRAM_IPV6 if self._ipv6 else MAX_DATAGRAM_IPV4
        if len(data) > limit:
            raise ValueError(f"datagram of {len(data)} bytes is over the {limit}-byte limit")
        if self._ipv6 and isIPAddress(host):
            host = "::ffff:" + host
        return data, (host, port)

    def put_now(self, msg: Any, cb: object = None) -> Any:
        """Send one datagram (what :meth:`put` and ``connect`` call); a host name is
        resolved first.

        ``put`` fires ``True`` once the datagram is handed to the kernel, ``False`` if
        the socket is closed; it fails with :class:`TypeError`/:class:`ValueError` for
        a bad message (over the datagram limit, missing keys).

        :raises ValueError: at once, for ``None``.
        """
        host = msg.get("host") if isinstance(msg, dict) else None
        if isinstance(host, str) and host and not isIPAddress(host) and not isIPv6Address(host):
            resolved: Deferred[str] = self._reactor.resolve(host)
            return resolved.addCallback(lambda ip: super(UDPStream, self).put(dict(msg, host=ip)))
        return super().put_now(msg, cb)


class _UDPProtocol(DatagramProtocol):
    stream: UDPStream
    receiver: Receiver
    sender: Sender

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        host = addr[0]
        if host.startswith("::ffff:") and isIPAddress(host[7:]):
            host = host[7:]
        self.receiver.write({"host": host, "port": addr[1], "message": datagram})

    def connectionRefused(self) -> None:  # noqa: N802
        """An ICMP port-unreachable: UDP is best effort, the socket stays open."""

    def stopProtocol(self) -> None:  # noqa: N802
        self.sender.lost()
        self.receiver.finish()

    def write(self, item: tuple[bytes, tuple[str, int]]) -> None:
        data, addr = item
        try:
            self.transport.write(data, addr)  # type: ignore[union-attr]
        except MessageLengthError:
            _log.warn("datagram of {n} bytes to {addr} too long for the network", n=len(data), addr=addr)
        except OSError as e:
            _log.warn("sending a datagram to {addr} failed: {error}", addr=addr, error=e)

    def finish(self) -> None:
        if self.transport is not None:
            self.transport.stopListening()


def socket(
    port: int | None = None,
    host: str = "",
    broadcast: bool = False,
    reactor: Any = None,
) -> Deferred[UDPStream]:
    """Open a UDP socket; fires with its duplex stream.

    :param port: port to bind (``None``: ephemeral, see ``description()["port"]``).
    :param host: interface: ``""`` all IPv4, ``"::"`` IPv6 (and IPv4-mapped), or an address.
    :param broadcast: allow sending to broadcast addresses.
    :param reactor: the reactor (``None``: the global one).
    :returns: fires the stream; fails with ``CannotListenError`` if it cannot bind.
    :raises ValueError: for a bad port.
    """
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535):
        raise ValueError(f"port must be None or an int in 0..65535, not {port!r}")
    if not isinstance(host, str):
        raise ValueError(f"host must be a str, not {host!r}")
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    proto = _UDPProtocol()
    try:
        udp_port = reactor.listenUDP(port or 0, proto, interface=host, maxPacketSize=_MAX_PACKET)
    except Exception:
        return fail(Failure())
    if broadcast:
        udp_port.setBroadcastAllowed(True)
    ipv6 = udp_port.addressFamily == _socket_mod.AF_INET6
    sender = Sender(proto.write, proto.finish, lambda item: len(item[0]))
    bound = udp_port.getHost()

    def describe() -> dict[str, Any]:
        return {
            "type": "udp",
            "host": bound.host,
            "port": bound.port,
            "broadcast": broadcast,
            "reading_paused": proto.receiver.paused,
        }

    st = UDPStream(sender, ipv6, reactor, describe)
    proto.sender = sender
    proto.stream = st
    proto.receiver = Receiver(st._receive, st._end_input, _PortProducer(udp_port))  # type: ignore[arg-type]
    return succeed(st)
