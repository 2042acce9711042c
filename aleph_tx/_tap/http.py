"""``twist aleph-http``: an HTTP server (the demo, a Ring handler or a WSGI app).

Every ``start_server`` option is an option with dashes. On start it logs one line
per listening port, ``aleph-http listening on tcp:HOST:PORT``, so a supervisor (or
a test) started with ``--listen tcp:0`` can learn the bound port.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from aleph_tx._tap import _version
from aleph_tx._tap._common import (
    ServerService,
    load_callable,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from aleph_tx._tap._workers import WorkersOptions, check_workers, workers_service  # --workers
from aleph_tx.http._ring.limits import SERVER_VERSIONS, check_versions_tls, is_tls_listen
from aleph_tx.http._ring.versions import check_http_versions

__all__ = ["Options", "makeService"]

_log = Logger()


class Options(WorkersOptions):  # WorkersOptions adds --workers N|auto
    """Options of ``twist aleph-http``."""

    command = "aleph-http"

    synopsis = "[--listen ENDPOINT ...] [--handler pkg.mod:fn | --wsgi pkg.mod:app] [options]"
    longdesc = (
        "Serve HTTP/1.1 with aleph_tx. Without --handler or --wsgi it serves a demo: "
        "/ hello, /stream a chunked response, /events a server-sent clock, /health, /ws a WebSocket echo. "
        "--listen takes Twisted endpoint descriptions and may be repeated (default tcp:8080)."
    )
    optFlags = [  # noqa: N815 - Twisted's name
        ["compression", None, "gzip responses when the client accepts it."],
    ]
    optParameters = [  # noqa: N815 - Twisted's name
        ["handler", None, None, "pkg.module:function, a Ring handler fn(req) -> response."],
        ["wsgi", None, None, "pkg.module:app, a WSGI application (run in the reactor's thread pool)."],
        ["max-request-body-size", None, None, "Larger request bodies get 413 (bytes; default: no limit)."],
        ["max-initial-line-length", None, "8192", "Longer request lines get 414 (bytes)."],
        ["max-header-size", None, "8192", "Larger header blocks get 431 (bytes)."],
        ["idle-timeout", None, None, "Close connections idle this long (seconds; default: never)."],
        ["shutdown-timeout", None, "15", "Seconds in-flight requests get to finish on stop."],
        ["header-timeout", None, "60", "Seconds a request head may take to arrive (0: no limit)."],
        ["executor", None, None, "'thread': run synchronous handlers in the reactor's thread pool."],
        ["continue-handler", None, None, "pkg.module:fn(req) -> bool or response, for Expect: 100-continue."],
        ["error-handler", None, None, "pkg.module:fn(req, failure) -> response, for failed handlers."],
        [
            "http-versions",
            None,
            "http/1.1",
            "Comma-separated protocols to offer: http/1.1, h2 (h2 needs ssl: endpoints).",
        ],
        ["access-log", None, None, "Combined Log Format lines: a file to append to, or - for the twist log."],
    ]

    opt_version = _version.opt_version  # --version: aleph_tx, Twisted and Python versions

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on, e.g. tcp:8080 or ssl:8443:privateKey=key.pem (repeatable; default tcp:8080)."""
        self["listen"].append(description)

    def postOptions(self) -> None:  # noqa: N802 - Twisted's name
        """Check every value; a bad one is a UsageError naming it (``twist`` exits 64)."""
        if not self["listen"]:
            self["listen"] = ["tcp:8080"]
        if self["handler"] and self["wsgi"]:
            raise usage.UsageError("give --handler or --wsgi, not both")
        options: dict[str, Any] = {}
        if self["max-request-body-size"] is not None:
            options["max_request_body_size"] = non_negative_int(
                self["max-request-body-size"], "--max-request-body-size"
            )
        options["max_initial_line_length"] = positive_int(
            self["max-initial-line-length"], "--max-initial-line-length"
        )
        options["max_header_size"] = positive_int(self["max-header-size"], "--max-header-size")
        if self["idle-timeout"] is not None:
            idle = non_negative_float(self["idle-timeout"], "--idle-timeout")
            if idle == 0:
                raise usage.UsageError(f"--idle-timeout must be a number > 0, not {self['idle-timeout']!r}")
            options["idle_timeout"] = idle
        options["shutdown_timeout"] = non_negative_float(self["shutdown-timeout"], "--shutdown-timeout")
        header_timeout = non_negative_float(self["header-timeout"], "--header-timeout")
        options["header_timeout"] = header_timeout or None
        if self["executor"] is not None:
            if self["executor"] != "thread":
                raise usage.UsageError(f"--executor must be 'thread', not {self['executor']!r}")
            options["executor"] = "thread"
        if self["continue-handler"]:
            options["continue_handler"] = load_callable(self["continue-handler"], "--continue-handler")
        if self["error-handler"]:
            options["error_handler"] = load_callable(self["error-handler"], "--error-handler")
        versions = tuple(v.strip() for v in self["http-versions"].split(",") if v.strip())
        try:
            versions = check_http_versions(versions or ("http/1.1",), SERVER_VERSIONS)
            check_versions_tls(versions, is_tls_listen(self["listen"], None))
        except ValueError as e:
            raise usage.UsageError(f"--http-versions {self['http-versions']!r}: {e}") from None
        options["http_versions"] = versions
        options["compression"] = bool(self["compression"])
        self["options"] = options
        if self["wsgi"]:
            from aleph_tx.http import wrap_wsgi

            self["app"] = wrap_wsgi(load_callable(self["wsgi"], "--wsgi"))
        elif self["handler"]:
            self["app"] = load_callable(self["handler"], "--handler")
        else:
            from aleph_tx.demo import handler

            self["app"] = handler
        # Parse only (a throwaway reactor): the real one is installed later by twist.
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.testing import MemoryReactor

        for desc in self["listen"]:
            try:
                serverFromString(MemoryReactor(), desc)
            except Exception as e:
                raise usage.UsageError(f"--listen {desc!r}: {e}") from None
        if self["access-log"] and self["access-log"] != "-":
            try:
                open(self["access-log"], "a").close()  # check it can be appended to
            except OSError as e:
                raise usage.UsageError(f"--access-log {self['access-log']!r}: {e.strerror}") from None
        check_workers(self)  # --workers: an int; above 1 every --listen must be shareable


def _address(port: Any) -> str:
    host = port.getHost()
    from twisted.protocols.tls import TLSMemoryBIOFactory

    if isinstance(getattr(port, "factory", None), TLSMemoryBIOFactory):
        kind = "ssl"
    else:
        kind = getattr(host, "type", "tcp").lower()  # TCP, UDP (HTTP/3), ...
    if hasattr(host, "port"):
        return f"{kind}:{host.host}:{host.port}"
    name = getattr(host, "name", host)
    return "unix:" + (os.fsdecode(name) if isinstance(name, bytes) else str(name))


def makeService(options: Options) -> IService:  # noqa: N802 - Twisted's name
    """The service: binds on start, ``Server.close()`` on stop (SIGTERM/SIGINT).

    With ``--workers`` above 1: the supervisor of that many worker processes.
    """
    if options["workers"] > 1:  # --workers: N processes sharing the port (_workers.py)
        return workers_service("aleph-http", options)
    from aleph_tx.http import start_server

    def start() -> Any:
        app = options["app"]
        if options["access-log"]:
            from aleph_tx._tap._access_log import access_writer, with_access_log

            app = with_access_log(app, access_writer(options["access-log"]))
        server = start_server(app, listen=options["listen"], **options["options"])
        for port in server.ports:
            _log.info("aleph-http listening on {address}", address=_address(port))
        return server

    return ServerService(start, "aleph-http")
