"""Writes that go out at once on plain TCP (asyncio's way), for the client's connections.

Twisted's ``tcp.Connection.write`` always buffers and registers the socket for
writability: the request leaves on the next reactor turn, after two ``epoll_ctl``
calls. :func:`write` sends at once when nothing is queued and falls back to
Twisted's path for the rest of a partial send, when data is queued, under old-style
TLS or with a non-streaming producer. It acts only on a ``tcp.Client`` itself: under
TLS the protocol's transport is the TLS layer (another type), which encrypts and
writes through its own transport.

The server does the same per listening port (``EagerServer`` in the server's
``serve`` module); both read the same private attributes of Twisted's
``FileDescriptor``, probed once at import (Twisted 26.x).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import abstract, tcp

__all__ = ["READ_SIZE", "tune", "write"]

#: Bytes per ``recv`` on plain TCP (Twisted reads 64 KiB; asyncio 256 KiB): a 1 MiB
#: body in 4 reads. It is also the send buffer size past which a producer is paused.
READ_SIZE = 262144

_NAMES = [
    "_tempDataLen",
    "dataBuffer",
    "TLS",
    "connected",
    "disconnecting",
    "_writeDisconnecting",
    "_writeDisconnected",
    "producer",
    "streamingProducer",
]


def _supported() -> bool:
    """Whether this Twisted's transports have the private attributes :func:`write` reads."""
    try:
        probe = tcp.Client.__new__(tcp.Client)
        abstract.FileDescriptor.__init__(probe)
    except Exception:
        return False
    return all(hasattr(probe, name) for name in _NAMES)


_EAGER = _supported()


def tune(transport: Any) -> None:
    """Read ``READ_SIZE`` bytes at a time on a plain TCP transport."""
    if type(transport) is tcp.Client:
        transport.bufferSize = READ_SIZE


def write(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent at once when possible (plain TCP, nothing queued)."""
    if (
        _EAGER
        and type(transport) is tcp.Client
        and not transport.dataBuffer
        and not transport._tempDataLen
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
        and (transport.producer is None or transport.streamingProducer)
    ):
        try:
            n = transport.socket.send(data)
        except OSError:  # EAGAIN: queue it; EPIPE, ECONNRESET: Twisted's path reports the loss
            n = 0
        if n == len(data):
            return
        data = data[n:]
    transport.write(data)
