"""``twist aleph-tcp``: a TCP server (echo unless ``--handler`` is given)."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from aleph_tx._tap import _version
from aleph_tx._tap._common import ServerService, load_callable, non_negative_float
from aleph_tx._tap._workers import WorkersOptions, check_workers, workers_service  # --workers

__all__ = ["Options", "echo", "makeService"]

_log = Logger()


def echo(conn: Any, info: dict[str, Any]) -> None:
    """The default handler: send back every byte received."""
    from aleph_tx import stream as s

    s.connect(conn, conn)


class Options(WorkersOptions):  # WorkersOptions adds --workers N|auto
    """Options of ``twist aleph-tcp``."""

    command = "aleph-tcp"

    synopsis = (
        "[--listen ENDPOINT ...] [--handler pkg.mod:fn] [--shutdown-timeout SECONDS] [--workers N|auto]"
    )
    longdesc = (
        "Serve TCP with aleph_tx: HANDLER(stream, info) is called for each connection "
        "(default: echo). --listen takes Twisted endpoint descriptions and may be repeated."
    )
    optParameters = [  # noqa: N815 - usage.Options API
        [
            "handler",
            None,
            None,
            "pkg.module:function called as fn(stream, info) per connection (default: echo).",
        ],
        ["shutdown-timeout", None, "15", "Seconds connections get to finish on stop before being cut."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []

    opt_version = _version.opt_version  # --version: aleph_tx, Twisted and Python versions

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on, e.g. tcp:10001 or ssl:10443:privateKey=key.pem (repeatable; default tcp:10001)."""
        self["listen"].append(description)

    def postOptions(self) -> None:  # noqa: N802
        if not self["listen"]:
            self["listen"] = ["tcp:10001"]
        self["handler"] = load_callable(self["handler"]) if self["handler"] else echo
        self["shutdown-timeout"] = non_negative_float(self["shutdown-timeout"], "--shutdown-timeout")
        # Parse only (a throwaway reactor): the real one is installed later by twist.
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.testing import MemoryReactor

        for desc in self["listen"]:
            try:
                serverFromString(MemoryReactor(), desc)
            except Exception as e:
                raise usage.UsageError(f"--listen {desc!r}: {e}") from None
        check_workers(self)  # --workers: an int; above 1 every --listen must be shareable


def makeService(options: Options) -> IService:  # noqa: N802
    """The service: binds on start, ``Server.close()`` on stop (or the ``--workers`` supervisor)."""
    if options["workers"] > 1:  # --workers: N processes sharing the port (_workers.py)
        return workers_service("aleph-tcp", options)
    from aleph_tx import tcp

    def start() -> Any:
        server = tcp.start_server(
            options["handler"], listen=options["listen"], shutdown_timeout=options["shutdown-timeout"]
        )
        for port in server.ports:  # the startup line, with the bound address (port 0 resolved)
            host: Any = port.getHost()
            if hasattr(host, "port"):
                address = f"{host.type.lower()}:{host.host}:{host.port}"
            else:  # a UNIX socket: its path is bytes
                name = getattr(host, "name", host)
                address = "unix:" + (os.fsdecode(name) if isinstance(name, bytes) else str(name))
            _log.info("aleph-tcp listening on {address}", address=address)
        return server

    return ServerService(start, "aleph-tcp")
