"""``twist aleph-udp``: a UDP socket (echo unless ``--handler`` is given)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._tap import _version
from aleph_tx._tap._common import BriefOptions, ServerService, load_callable, port_number

__all__ = ["Options", "echo", "makeService"]

_log = Logger()


def echo(sock: Any) -> None:
    """The default handler: send every datagram back to its sender."""
    from aleph_tx import stream as s

    s.connect(sock, sock)


class Options(BriefOptions):
    """Options of ``twist aleph-udp``."""

    command = "aleph-udp"

    synopsis = "[--port N] [--host ADDR] [--handler pkg.mod:fn]"
    longdesc = "A UDP socket with aleph_tx: HANDLER(sock) is called once with its stream (default: echo)."
    optParameters = [  # noqa: N815 - usage.Options API
        ["port", None, "10001", "UDP port to bind."],
        ["host", None, "", 'Interface to bind ("" all IPv4, "::" IPv6).'],
        ["handler", None, None, "pkg.module:function called once as fn(sock) (default: echo)."],
    ]

    opt_version = _version.opt_version  # --version: aleph_tx, Twisted and Python versions

    def postOptions(self) -> None:  # noqa: N802
        self["port"] = port_number(self["port"], "--port")
        self["handler"] = load_callable(self["handler"]) if self["handler"] else echo


class _SocketCloser:
    def __init__(self) -> None:
        self.sock: Any = None

    def close(self) -> Deferred[None]:
        if self.sock is not None:
            self.sock.close()
        return succeed(None)


def makeService(options: Options) -> IService:  # noqa: N802
    """The service: opens the socket on start, closes it on stop."""
    from aleph_tx import udp

    def start() -> Any:
        closer = _SocketCloser()

        def opened(sock: Any) -> None:
            closer.sock = sock
            result = options["handler"](sock)
            if isinstance(result, Deferred):
                result.addErrback(lambda f: _log.failure("UDP handler failed", f))

        # udp.socket binds synchronously: a failure (port in use) is already in the
        # Deferred; raise it so the process exits as `twist` does for a busy TCP port.
        result: list[Any] = []
        udp.socket(port=options["port"], host=options["host"]).addBoth(result.append)
        if isinstance(result[0], Failure):
            result[0].raiseException()
        opened(result[0])
        _log.info(  # the startup line, with the bound address (port 0 resolved)
            "aleph-udp listening on udp:{host}:{port}",
            host=options["host"] or "0.0.0.0",
            port=result[0].description()["port"],
        )
        return closer

    return ServerService(start, "aleph-udp")
