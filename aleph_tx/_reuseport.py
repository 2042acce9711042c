"""The ``reuseport:`` server endpoint: several processes listening on one TCP port.

``reuseport:PORT[:interface=ADDR][:backlog=N]`` binds its own socket with
``SO_REUSEADDR`` and ``SO_REUSEPORT``, listens, and hands the descriptor to
``reactor.adoptStreamPort`` (which duplicates it; our copy is then closed). Every
process of the same user that listens on the same address this way joins one
group, and the Linux kernel spreads incoming connections across the group's
sockets (by a hash of the connection's addresses). This is how ``--workers N``
shares a port (docs/internals.rst, "Workers sharing a port").

Linux only: other systems either lack ``SO_REUSEPORT`` or give it other semantics
(on the BSDs and macOS the last socket bound takes every connection). Listening
fails there with :class:`~twisted.internet.error.CannotListenError`.

The string grammar is registered through the plugin
``twisted/plugins/aleph_tx_endpoints.py``, so ``serverFromString(reactor,
"reuseport:8080")`` and ``twist aleph-http --listen reuseport:8080`` work.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorSocket,
    IStreamServerEndpoint,
)
from zope.interface import implementer

__all__ = [
    "DEFAULT_BACKLOG",
    "ReusePortEndpoint",
    "bind_reuseport",
    "parse_reuseport",
    "reuseport_supported",
]

#: ``listen(2)`` backlog when the description has no ``backlog=``: the same 1024
#: as every other aleph_tx server socket (aleph_tx._server.DEFAULT_BACKLOG).
DEFAULT_BACKLOG = 1024


def reuseport_supported() -> bool:
    """Whether this system balances connections across ``SO_REUSEPORT`` listeners (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _family(interface: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in interface else socket.AF_INET


def bind_reuseport(port: int, interface: str = "") -> socket.socket:
    """A TCP socket bound to ``(interface, port)`` with ``SO_REUSEADDR`` and ``SO_REUSEPORT``.

    It is not listening yet (a bound socket that never listens receives no
    connections, but keeps the port for the group: the workers' supervisor holds
    one). The socket is non-blocking and not inherited by child processes.

    :param port: 0..65535 (0: an ephemeral port, read it with ``getsockname()``).
    :param interface: the address to bind (``""``: all IPv4 addresses; an address
        with ``:`` is IPv6).
    :raises OSError: if the system lacks ``SO_REUSEPORT`` or the bind fails.
    """
    if not reuseport_supported():
        raise OSError(f"SO_REUSEPORT load balancing needs Linux, not {sys.platform!r}")
    sock = socket.socket(_family(interface), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((interface, port))
    except BaseException:
        sock.close()
        raise
    return sock


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP server endpoint whose socket has ``SO_REUSEPORT`` set before it binds.

    :param reactor: an :class:`~twisted.internet.interfaces.IReactorSocket` (the
        default epoll/poll/select reactors are).
    :param port: the TCP port; give every process the same one.
    :param interface: the address to bind (``""``: all IPv4 addresses).
    :param backlog: the ``listen(2)`` backlog.
    """

    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = DEFAULT_BACKLOG) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"reuseport: port must be an int in 0..65535, not {port!r}")
        if not isinstance(backlog, int) or isinstance(backlog, bool) or backlog < 1:
            raise ValueError(f"reuseport: backlog must be an int >= 1, not {backlog!r}")
        self._reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def __repr__(self) -> str:
        return f"<ReusePortEndpoint {self.interface or '0.0.0.0'}:{self.port} backlog={self.backlog}>"

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:  # noqa: N803
        """Bind, listen and adopt the socket into the reactor, synchronously.

        :returns: a Deferred that has already fired with the listening port, or
            failed with :class:`~twisted.internet.error.CannotListenError`.
        """
        try:
            reactor = IReactorSocket(self._reactor)
        except TypeError:
            return fail(
                CannotListenError(
                    self.interface, self.port, TypeError(f"{self._reactor!r} cannot adopt sockets")
                )
            )
        try:
            sock = bind_reuseport(self.port, self.interface)
        except OSError as e:
            return fail(CannotListenError(self.interface, self.port, e))
        try:
            sock.listen(self.backlog)
            # adoptStreamPort duplicates the descriptor: ours is closed below either way.
            port = reactor.adoptStreamPort(sock.fileno(), sock.family, cast(Any, protocolFactory))
        except OSError as e:
            return fail(CannotListenError(self.interface, self.port, e))
        except Exception as e:
            return fail(e)
        finally:
            sock.close()
        return succeed(port)


def _integer(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"reuseport: {what} must be an integer, not {value!r}") from None


def parse_reuseport(reactor: Any, *args: object, **kwargs: object) -> ReusePortEndpoint:
    """The endpoint for ``reuseport:PORT[:interface=ADDR][:backlog=N]`` (the plugin's parser).

    ``PORT`` may also be given as ``port=PORT``. An IPv6 address is written with
    escaped colons, as for ``tcp6:``: ``interface=\\:\\:1``.

    :raises ValueError: naming a missing or bad port, a bad backlog or an unknown key.
    """
    unknown = sorted(set(kwargs) - {"port", "interface", "backlog"})
    if unknown:
        raise ValueError(f"reuseport: unknown parameter {unknown[0]!r} (known: port, interface, backlog)")
    ports = [*args, *([kwargs["port"]] if "port" in kwargs else [])]
    if len(ports) != 1:
        raise ValueError(f"reuseport: give exactly one port (reuseport:PORT), not {ports!r}")
    interface = str(kwargs.get("interface", "")).strip("[]")
    backlog = _integer(kwargs.get("backlog", DEFAULT_BACKLOG), "backlog")
    return ReusePortEndpoint(reactor, _integer(ports[0], "port"), interface, backlog)
