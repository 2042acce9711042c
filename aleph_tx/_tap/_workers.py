"""``--workers N|auto``: N processes sharing the listening port (Linux, SO_REUSEPORT).

One CPython process uses one core. With ``--workers N`` (N > 1) the ``twist``
process becomes a supervisor: it runs N copies of the same subcommand, each
listening on the same port through the ``reuseport:`` endpoint
(:mod:`aleph_tx._reuseport`), and the kernel spreads new connections across them.
The supervisor is Twisted's :class:`~twisted.runner.procmon.ProcessMonitor`:

- a worker that exits (a crash, ``kill -9``) is started again, at once if it had
  run for a second, else after a back-off doubling up to 30 seconds;
- stopping the supervisor (SIGTERM, SIGINT) sends SIGTERM to every worker, which
  closes its servers gracefully (``--shutdown-timeout``); a worker still alive
  ``--shutdown-timeout`` + 5 seconds later gets SIGKILL, and the supervisor exits
  once every worker has;
- workers get SIGTERM if the supervisor dies (``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of the supervisor leaves no worker holding the port;
- the supervisor keeps each port bound (not listening: it gets no connections) for
  its whole life, so port 0 is resolved once and no other program takes the port
  while a worker restarts; it refuses a port that something already listens on,
  which also catches a stale worker of an old run (it would silently join the
  group otherwise).

Each worker's output goes to the supervisor's log, prefixed ``[worker-K]``; its
environment has ``ALEPH_TX_WORKER=K`` (1..N). ``--workers 1`` (the default) runs no
supervisor at all. ``--workers auto`` is the number of cores this process may use.
Linux only: elsewhere ``--workers`` above 1 is a usage error.
"""

from __future__ import annotations

import ctypes
import getopt
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from aleph_tx._tap._common import BriefOptions

__all__ = [
    "ListenSpec",
    "WorkersOptions",
    "WorkersService",
    "check_workers",
    "child_arguments",
    "cpu_count",
    "parse_listen",
    "parse_workers",
    "worker_command",
    "workers_service",
]

_log = Logger()

#: Seconds a worker gets past ``--shutdown-timeout`` to exit before SIGKILL.
KILL_GRACE = 5.0

#: Longest wait before restarting a worker that keeps dying at start (Twisted's default is an hour).
MAX_RESTART_DELAY = 30.0

#: Options the supervisor rewrites for its workers: they never reach a worker as given.
_SUPERVISOR_OPTIONS = frozenset({"workers", "listen"})


def cpu_count() -> int:
    """The number of cores this process may run on (``--workers auto``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_workers(value: Any) -> int:
    """``--workers``: an integer >= 1, or ``auto`` (:func:`cpu_count`).

    :raises usage.UsageError: naming the bad value.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return cpu_count()
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--workers must be an integer >= 1 or 'auto', not {value!r}") from None
    if n < 1:
        raise usage.UsageError(f"--workers must be an integer >= 1 or 'auto', not {value!r}")
    return n


class ListenSpec(NamedTuple):
    """A TCP listening address, from a ``tcp:``, ``tcp6:`` or ``reuseport:`` description."""

    port: int
    interface: str = ""
    backlog: int | None = None

    def reuseport(self, port: int | None = None) -> str:
        """The ``reuseport:`` description of this address (``port`` replaces a 0)."""
        parts = [f"reuseport:{self.port if port is None else port}"]
        if self.interface:
            parts.append("interface=" + self.interface.replace(":", "\\:"))
        if self.backlog is not None:
            parts.append(f"backlog={self.backlog}")
        return ":".join(parts)

    def address(self, port: int | None = None) -> str:
        """``tcp:HOST:PORT`` for log lines."""
        host = self.interface or "0.0.0.0"
        return f"tcp:{host}:{self.port if port is None else port}"


def _split(description: str) -> list[str]:
    """Split an endpoint description on ``:`` not escaped by ``\\`` (Twisted's grammar)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_listen(description: str) -> ListenSpec:
    """The TCP address of ``tcp:``, ``tcp6:`` or ``reuseport:`` description.

    Positional values are ``PORT[:INTERFACE[:BACKLOG]]`` (the order of ``tcp:``);
    ``port=``, ``interface=`` and ``backlog=`` are accepted too.

    :raises usage.UsageError: for another endpoint type (workers share a TCP port;
        TLS, UNIX sockets and ``systemd:`` cannot be shared this way) or a bad value.
    """
    kind, *rest = _split(description)
    kind = kind.strip().lower()
    if kind not in ("tcp", "tcp6", "reuseport"):
        raise usage.UsageError(
            f"--workers needs tcp: or reuseport: endpoints (a shared TCP port; TLS, and so "
            f"h2 and h3, cannot be shared), not {description!r}"
        )
    values: dict[str, str] = {}
    names = iter(("port", "interface", "backlog"))
    for part in rest:
        key, eq, value = part.partition("=")
        if eq:
            values[key] = value
        else:
            name = next(names, None)
            if name is None:
                raise usage.UsageError(f"--listen {description!r}: too many values")
            values[name] = part
    unknown = sorted(set(values) - {"port", "interface", "backlog"})
    if unknown:
        raise usage.UsageError(f"--listen {description!r}: --workers cannot share {unknown[0]}=")
    try:
        port = int(values["port"])
        backlog = int(values["backlog"]) if "backlog" in values else None
    except (KeyError, ValueError):
        raise usage.UsageError(f"--listen {description!r}: needs a numeric port and backlog") from None
    if not 0 <= port <= 65535 or (backlog is not None and backlog < 1):
        raise usage.UsageError(f"--listen {description!r}: bad port or backlog")
    interface = values.get("interface", "::" if kind == "tcp6" else "").strip("[]")
    return ListenSpec(port, interface, backlog)


class WorkersOptions(BriefOptions):
    """Base of the ``Options`` of a subcommand that takes ``--workers``.

    It adds the option and remembers the raw arguments (:attr:`raw_arguments`) so
    the supervisor can give its workers the same ones. Call :func:`check_workers`
    at the end of ``postOptions``.
    """

    optParameters = [  # noqa: N815 - usage.Options API
        [
            "workers",
            None,
            "1",
            (
                "Processes sharing the port with SO_REUSEPORT (Linux): an integer, or 'auto' for "
                "one per core. Above 1, this process supervises them (restart on crash, SIGTERM "
                "stops all) and --listen must be tcp: or reuseport:."
            ),
        ],
    ]

    raw_arguments: list[str]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:  # noqa: N802
        """Parse as usual, remembering the arguments for the workers."""
        self.raw_arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)


def check_workers(options: usage.Options) -> None:
    """Check ``--workers`` and, above 1, that every ``--listen`` can be shared.

    Sets ``options["workers"]`` to an int and ``options["listen_specs"]``.

    :raises usage.UsageError: naming the bad value.
    """
    workers = parse_workers(options["workers"])
    options["workers"] = workers
    if workers == 1:
        return
    from aleph_tx._reuseport import reuseport_supported

    if not reuseport_supported():
        raise usage.UsageError(f"--workers {workers} needs Linux (SO_REUSEPORT), not {sys.platform!r}")
    options["listen_specs"] = [parse_listen(d) for d in options["listen"]]


def child_arguments(options: usage.Options, raw: Sequence[str]) -> list[str]:
    """``raw`` (the subcommand's arguments) without ``--workers`` and ``--listen``.

    Parsed with the same ``getopt`` tables as ``usage.Options`` (so abbreviations
    such as ``--work 2`` are recognised) and written back in a normal form:
    ``--name=value`` for parameters, ``--name`` for flags.
    """
    opts, rest = getopt.getopt(list(raw), options.shortOpt, options.longOpt)
    takes_value = {o.rstrip("=") for o in options.longOpt if o.endswith("=")}
    short = options.shortOpt
    short_with_value = {c for i, c in enumerate(short) if c != ":" and short[i + 1 : i + 2] == ":"}
    out: list[str] = []
    for opt, value in opts:
        name = opt.lstrip("-")
        canonical = options.synonyms.get(name, options.synonyms.get(name.replace("-", "_"), name))
        if canonical.replace("_", "-") in _SUPERVISOR_OPTIONS:
            continue
        if opt.startswith("--"):
            out.append(f"{opt}={value}" if name in takes_value else opt)
        else:
            out.extend([opt, value] if name in short_with_value else [opt])
    return out + list(rest)


def worker_command(
    subcommand: str, arguments: Sequence[str], listen: Sequence[str], log_level: str | None = None
) -> list[str]:
    """The argv of a worker: this module's entry point, then ``twist`` arguments.

    :param log_level: the supervisor's ``twist --log-level``, passed on.
    """
    argv = [sys.executable, "-m", "aleph_tx._tap._workers", str(os.getpid()), "--log-format", "text"]
    if log_level is not None:
        argv.append(f"--log-level={log_level}")
    argv += [subcommand, "--workers=1", *arguments]
    for desc in listen:
        argv.append(f"--listen={desc}")
    return argv


def _worker_environment(index: int) -> dict[str, str]:
    """This process's environment, with its ``sys.path`` (so workers import what it does)."""
    env = dict(os.environ)
    path = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    env["ALEPH_TX_WORKER"] = str(index)
    return env


def _probe_free(spec: ListenSpec) -> None:
    """Refuse a port something already listens on (a stale worker would join the group).

    A bind without ``SO_REUSEPORT`` fails on a port with any other socket bound
    (``SO_REUSEADDR`` lets it through TIME_WAIT leftovers).
    """
    if spec.port == 0:
        return
    family = socket.AF_INET6 if ":" in spec.interface else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((spec.interface, spec.port))


class WorkersService(Service):
    """The supervisor: N workers under a ``ProcessMonitor``, the ports reserved.

    :param subcommand: ``aleph-http`` or ``aleph-tcp``.
    :param arguments: the subcommand's other arguments (see :func:`child_arguments`).
    :param listen: where to listen; each becomes a ``reuseport:`` endpoint.
    :param workers: how many processes (>= 1).
    :param shutdown_timeout: what workers have on stop; SIGKILL comes
        :data:`KILL_GRACE` seconds later.
    :param reactor: an ``IReactorProcess`` and ``IReactorTime`` (``None``: the global one).
    :param log_level: ``twist --log-level`` for the workers (``None``: theirs).
    """

    def __init__(
        self,
        subcommand: str,
        arguments: Sequence[str],
        listen: Sequence[ListenSpec],
        workers: int,
        shutdown_timeout: float = 15.0,
        reactor: Any = None,
        log_level: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers!r}")
        if not listen:
            raise ValueError("workers need at least one address to listen on")
        self.subcommand = subcommand
        self.arguments = list(arguments)
        self.listen = list(listen)
        self.workers = workers
        self.shutdown_timeout = shutdown_timeout
        self.log_level = log_level
        self._reactor = reactor
        self.monitor: Any = None
        self.reserved: list[socket.socket] = []
        self.command: list[str] = []

    def _reserve(self) -> list[int]:
        ports = []
        try:
            for spec in self.listen:
                from aleph_tx._reuseport import bind_reuseport

                try:
                    _probe_free(spec)
                    sock = bind_reuseport(spec.port, spec.interface)
                except OSError as e:  # as a single process reports a busy port
                    raise CannotListenError(spec.interface, spec.port, e) from e
                self.reserved.append(sock)
                ports.append(int(sock.getsockname()[1]))
        except BaseException:
            self._release()
            raise
        return ports

    def _release(self) -> None:
        for sock in self.reserved:
            sock.close()
        self.reserved = []

    def startService(self) -> None:  # noqa: N802
        """Reserve the ports, then start the workers."""
        from twisted.runner.procmon import ProcessMonitor

        ports = self._reserve()
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        self.monitor = ProcessMonitor(reactor=self._reactor)
        self.monitor.killTime = self.shutdown_timeout + KILL_GRACE
        self.monitor.maxRestartDelay = MAX_RESTART_DELAY
        listen = [spec.reuseport(port) for spec, port in zip(self.listen, ports, strict=True)]
        self.command = worker_command(self.subcommand, self.arguments, listen, self.log_level)
        for index in range(1, self.workers + 1):
            self.monitor.addProcess(
                f"worker-{index}", self.command, env=_worker_environment(index), cwd=os.getcwd()
            )
        super().startService()  # type: ignore[no-untyped-call]
        self.monitor.startService()
        for spec, port in zip(self.listen, ports, strict=True):
            _log.info(
                "{subcommand} listening on {address} with {n} workers (SO_REUSEPORT)",
                subcommand=self.subcommand,
                address=spec.address(port),
                n=self.workers,
            )

    def pids(self) -> dict[str, int]:
        """The running workers' process ids, by name (``worker-1`` ...)."""
        if self.monitor is None:
            return {}
        out = {}
        for name, proto in self.monitor.protocols.items():
            pid = getattr(proto.transport, "pid", None)
            if pid is not None:
                out[name] = pid
        return out

    def stopService(self) -> Deferred[None]:  # noqa: N802
        """SIGTERM every worker; fires once all have exited (SIGKILL after the grace time)."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self.monitor is None:
            self._release()
            return succeed(None)
        monitor = self.monitor
        monitor.stopService()
        done: Deferred[None] = Deferred()
        from twisted.internet.task import LoopingCall

        # ProcessMonitor.stopService returns nothing: watch its public ``protocols``
        # (an entry is removed when that process has ended).
        def check() -> None:
            if not monitor.protocols:
                poll.stop()

        poll = LoopingCall(check)
        poll.clock = self._reactor
        finished = poll.start(0.05, now=True)

        def finish(_: object) -> None:
            self._release()
            _log.info("{subcommand}: all workers stopped", subcommand=self.subcommand)
            done.callback(None)

        finished.addCallback(finish)
        return done


def workers_service(subcommand: str, options: Any) -> IService:
    """The supervisor service for parsed ``options`` (a :class:`WorkersOptions` after :func:`check_workers`)."""
    # Under ``twist``, the parent options hold ``--log-level`` (a LogLevel); twistd has none.
    level = getattr(getattr(options, "parent", None), "get", lambda key: None)("logLevel")
    return WorkersService(
        subcommand,
        child_arguments(options, options.raw_arguments),
        options["listen_specs"],
        options["workers"],
        shutdown_timeout=float(options.get("shutdown-timeout", 15.0)),
        log_level=getattr(level, "name", None),
    )


def _die_with_parent(parent: int) -> None:
    """Tie this worker to its supervisor.

    It leaves the supervisor's process group, so a signal sent to the group (Ctrl-C
    in a terminal, ``timeout``) reaches the supervisor only, which then stops each
    worker once; and it asks Linux for SIGTERM when the supervisor dies (exiting
    now if it already has).
    """
    os.setpgrp()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:
        sys.exit(f"aleph_tx worker: supervisor {parent} is gone")


def main(argv: Sequence[str]) -> None:
    """A worker: ``python -m aleph_tx._tap._workers SUPERVISOR_PID TWIST_ARGS...``."""
    _die_with_parent(int(argv[0]))
    from twisted.application.twist._twist import Twist

    Twist.main(["twist", *argv[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
