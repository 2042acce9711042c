"""Writes that go out at once on plain TCP, server and client (docs/internals.rst,
"The eager write path").

Twisted's ``tcp.Connection.write`` always buffers and registers the socket for
writability: two ``epoll_ctl`` calls, and the data leaves on the next reactor turn.
:func:`send_now` sends at once when nothing is queued (what asyncio's transports
do); the caller gives the rest, after a partial send, to Twisted's own path. It
acts only on plain TCP transports (under TLS the protocol's transport is the TLS
layer, which encrypts and writes through its own transport; never reach the raw
socket from above TLS: that would send plaintext). It reads private attributes of
Twisted's ``FileDescriptor``, probed once at import (:data:`SUPPORTED`).

- :class:`EagerServer`, installed per listening port (:func:`install_eager`), for
  the HTTP/1.1 server;
- :func:`write`, for the client's connections (``tcp.Client``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import abstract, tcp
from twisted.logger import Logger

__all__ = ["READ_SIZE", "SUPPORTED", "EagerServer", "install_eager", "send_now", "tune", "write"]

_log = Logger()

#: Bytes per ``recv`` (Twisted reads 64 KiB; asyncio 256 KiB): a 10 MiB upload
#: measured 654 → 850 MB/s. Also the send buffer size past which a streaming
#: producer is paused.
READ_SIZE = 262144

#: The private attributes of ``FileDescriptor`` / ``tcp.Connection`` read here.
_REQUIRED = (
    "_tempDataLen",
    "dataBuffer",
    "TLS",
    "connected",
    "disconnecting",
    "_writeDisconnecting",
    "_writeDisconnected",
    "producer",
    "streamingProducer",
)


def _supported() -> bool:
    """Whether this Twisted's transports have what :func:`send_now` reads."""
    try:
        probe = tcp.Server.__new__(tcp.Server)
        abstract.FileDescriptor.__init__(probe)
    except Exception:
        return False
    return all(hasattr(probe, name) for name in _REQUIRED) and hasattr(tcp.Port, "transport")


#: Whether the eager path may be used with the installed Twisted.
SUPPORTED = _supported()
if not SUPPORTED:  # pragma: no cover - depends on the installed Twisted
    _log.warn("eager writes disabled: this Twisted lacks the attributes they need")


def send_now(transport: Any, data: bytes) -> bytes:
    """Send ``data`` on ``transport``'s socket now if nothing is queued; the unsent rest.

    Returns ``data`` itself when it cannot be sent now (something is queued, the
    connection is closing, TLS, a pull producer), ``b""`` when all of it went.
    """
    if (
        data
        and not transport._tempDataLen
        and not transport.dataBuffer
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
        return data[n:] if n else data
    return data


class EagerServer(tcp.Server):
    """A ``tcp.Server`` whose ``write`` sends at once when nothing is queued, reading
    :data:`READ_SIZE` bytes at a time."""

    bufferSize = READ_SIZE  # noqa: N815 - Twisted's name

    def write(self, data: bytes) -> None:
        """Send now if the socket takes it all; queue the rest the Twisted way."""
        if type(data) is bytes:
            data = send_now(self, data)
            if not data:
                return
        super().write(data)  # type: ignore[no-untyped-call]

    def writeSequence(self, iovec: Sequence[bytes]) -> None:  # type: ignore[override]  # noqa: N802
        """One ``write`` of the joined pieces."""
        self.write(b"".join(iovec))


def install_eager(port: Any, server_class: type[tcp.Server] = EagerServer) -> bool:
    """Make the listening ``port`` build ``server_class`` transports (``tcp.Port`` only).

    :returns: whether it was installed (``False`` for other port kinds, or when the
        probe failed: then the plain Twisted write path is used).
    """
    if not SUPPORTED or type(port) is not tcp.Port or port.transport is not tcp.Server:
        return False
    port.transport = server_class
    return True


def tune(transport: Any) -> None:
    """Read :data:`READ_SIZE` bytes at a time on a plain TCP client transport."""
    if type(transport) is tcp.Client:
        transport.bufferSize = READ_SIZE


def write(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent at once when possible (a plain ``tcp.Client``)."""
    if SUPPORTED and type(transport) is tcp.Client:
        data = send_now(transport, data)
        if not data:
            return
    transport.write(data)
