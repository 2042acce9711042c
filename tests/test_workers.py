"""``--workers`` (aleph_tx/_tap/_workers.py) and the ``reuseport:`` endpoint (aleph_tx/_reuseport.py).

The supervisor is driven with a fake process reactor on a :class:`Clock` (no real
processes: tests/acceptance/test_workers_acceptance.py runs real ones); the
endpoint listens on real sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from aleph_tx import _reuseport
from aleph_tx._reuseport import ReusePortEndpoint, bind_reuseport, parse_reuseport
from aleph_tx._tap import _workers, tcp
from aleph_tx._tap._common import ServerService
from aleph_tx._tap._workers import (
    KILL_GRACE,
    ListenSpec,
    WorkersService,
    child_arguments,
    cpu_count,
    parse_listen,
    parse_workers,
    worker_command,
)

linux_only = pytest.mark.skipif(
    not _reuseport.reuseport_supported(), reason="SO_REUSEPORT balancing is Linux only"
)


# --- --workers and --listen parsing -------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("2", 2), (" 8 ", 8), (3, 3)])
def test_parse_workers(value: Any, expected: int) -> None:
    assert parse_workers(value) == expected


def test_parse_workers_auto_is_the_usable_cores() -> None:
    assert parse_workers("auto") == parse_workers("AUTO") == cpu_count() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "-2", "two", "", "1.5", None])
def test_parse_workers_refuses_naming_the_value(value: Any) -> None:
    with pytest.raises(usage.UsageError, match="--workers") as info:
        parse_workers(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("description", "spec"),
    [
        ("tcp:8080", ListenSpec(8080)),
        ("tcp:8080:interface=127.0.0.1", ListenSpec(8080, "127.0.0.1")),
        ("tcp:port=8080:backlog=10", ListenSpec(8080, "", 10)),
        ("tcp:8080:127.0.0.1:20", ListenSpec(8080, "127.0.0.1", 20)),
        ("TCP:0", ListenSpec(0)),
        ("tcp6:8080", ListenSpec(8080, "::")),
        (r"tcp6:8080:interface=\:\:1", ListenSpec(8080, "::1")),
        ("reuseport:9000:interface=127.0.0.1:backlog=5", ListenSpec(9000, "127.0.0.1", 5)),
    ],
)
def test_parse_listen(description: str, spec: ListenSpec) -> None:
    assert parse_listen(description) == spec


@pytest.mark.parametrize(
    "description",
    [
        "ssl:8443:privateKey=key.pem",
        "unix:/tmp/sock",
        "systemd:domain=INET:index=0",
        "tcp:http",
        "tcp:70000",
        "tcp:8080:backlog=0",
        "tcp:8080:reuse=1",
        "tcp",
    ],
)
def test_parse_listen_refuses_what_workers_cannot_share(description: str) -> None:
    with pytest.raises(usage.UsageError) as info:
        parse_listen(description)
    assert repr(description) in str(info.value)


@pytest.mark.parametrize(
    "spec",
    [ListenSpec(8080), ListenSpec(8080, "127.0.0.1", 7), ListenSpec(0, "::1"), ListenSpec(1, "::", None)],
)
def test_listen_spec_round_trips_through_reuseport_strings(spec: ListenSpec) -> None:
    description = spec.reuseport()
    assert description.startswith("reuseport:")
    assert parse_listen(description) == spec
    endpoint = serverFromString(MemoryReactor(), description)  # through the plugin
    assert isinstance(endpoint, ReusePortEndpoint)
    assert (endpoint.port, endpoint.interface) == (spec.port, spec.interface)
    assert endpoint.backlog == (spec.backlog or _reuseport.DEFAULT_BACKLOG)


def test_listen_spec_replaces_port_zero() -> None:
    assert ListenSpec(0, "127.0.0.1").reuseport(4321) == "reuseport:4321:interface=127.0.0.1"
    assert ListenSpec(0, "127.0.0.1").address(4321) == "tcp:127.0.0.1:4321"
    assert ListenSpec(80).address() == "tcp:0.0.0.0:80"


# --- the arguments workers get ------------------------------------------------------


class _Flagged(_workers.WorkersOptions):
    optFlags = [["compression", "c", "a flag"]]  # noqa: N815
    optParameters = [["handler", "H", None, "a parameter"]]  # noqa: N815

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        self["listen"].append(description)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], []),
        (["--workers", "2", "--listen", "tcp:1"], []),
        (["--workers=auto", "--listen=tcp:1", "--listen", "tcp:2"], []),
        (["--work", "2", "--lis", "tcp:1", "--hand", "m:f"], ["--handler=m:f"]),  # getopt abbreviations
        (["--compression", "--handler", "--weird"], ["--compression", "--handler=--weird"]),
        (["-c", "-H", "m:f", "--workers", "3"], ["-c", "-H", "m:f"]),
        (["-cHm:f"], ["-c", "-H", "m:f"]),
        (["--handler", ""], ["--handler="]),
    ],
)
def test_child_arguments_drop_workers_and_listen_only(raw: list[str], expected: list[str]) -> None:
    options = _Flagged()
    options.parseOptions(raw)
    assert options.raw_arguments == raw
    assert child_arguments(options, raw) == expected
    again = _Flagged()
    again.parseOptions(expected)  # what a worker parses means the same
    assert again["compression"] == options["compression"]
    assert again["handler"] == options["handler"]


def test_worker_command_runs_twist_through_the_worker_entry_point() -> None:
    argv = worker_command("aleph-tcp", ["--handler=m:f"], ["reuseport:80", "reuseport:81"])
    assert argv[:4] == [sys.executable, "-m", "aleph_tx._tap._workers", str(os.getpid())]
    assert argv[4:] == [
        "--log-format",
        "text",
        "aleph-tcp",
        "--workers=1",
        "--handler=m:f",
        "--listen=reuseport:80",
        "--listen=reuseport:81",
    ]


def test_worker_command_passes_the_log_level() -> None:
    argv = worker_command("aleph-http", [], ["reuseport:80"], log_level="debug")
    assert argv[4:8] == ["--log-format", "text", "--log-level=debug", "aleph-http"]


@linux_only
def test_workers_get_twists_log_level() -> None:
    from twisted.logger import LogLevel

    options = tcp.Options()
    options.parent = {"logLevel": LogLevel.warn}  # what twist's TwistOptions holds (twistd: nothing)
    options.parseOptions(["--workers", "2", "--listen", "tcp:0"])
    service = tcp.makeService(options)
    assert isinstance(service, WorkersService)
    assert service.log_level == "warn"


def test_worker_environment_mirrors_sys_path() -> None:
    env = _workers._worker_environment(3)
    assert env["ALEPH_TX_WORKER"] == "3"
    path = env["PYTHONPATH"].split(os.pathsep)
    for entry in sys.path:
        assert (os.path.abspath(entry) if entry else os.getcwd()) in path


# --- twist aleph-tcp --workers ------------------------------------------------------


def test_tcp_options_default_is_one_worker_and_no_supervisor() -> None:
    options = tcp.Options()
    options.parseOptions([])
    assert options["workers"] == 1
    assert isinstance(tcp.makeService(options), ServerService)


@linux_only
def test_tcp_options_with_workers_make_the_supervisor() -> None:
    options = tcp.Options()
    options.parseOptions(
        [
            "--workers",
            "3",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--shutdown-timeout",
            "2",
            "--handler",
            "os:getpid",
        ]
    )
    service = tcp.makeService(options)
    assert isinstance(service, WorkersService)
    assert IService.providedBy(service)
    assert service.workers == 3
    assert service.listen == [ListenSpec(0, "127.0.0.1")]
    assert service.arguments == ["--shutdown-timeout=2", "--handler=os:getpid"]
    assert service.shutdown_timeout == 2.0


@linux_only
def test_tcp_options_workers_auto() -> None:
    options = tcp.Options()
    options.parseOptions(["--workers", "auto"])
    assert options["workers"] == cpu_count()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--workers", "0"], "'0'"),
        (["--workers", "many"], "'many'"),
        (["--workers", "2", "--listen", "unix:/tmp/x.sock"], "unix:/tmp/x.sock"),
    ],
)
def test_tcp_options_bad_workers(args: list[str], named: str) -> None:
    with pytest.raises(usage.UsageError, match=named.replace(".", r"\.")):
        tcp.Options().parseOptions(args)


def test_workers_above_one_need_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reuseport.sys, "platform", "darwin")
    with pytest.raises(usage.UsageError, match="Linux"):
        tcp.Options().parseOptions(["--workers", "2"])
    with pytest.raises(OSError, match="Linux"):
        bind_reuseport(0, "127.0.0.1")


# --- the supervisor, with a fake process reactor ------------------------------------


class _FakeProcess:
    def __init__(
        self, reactor: _ProcessClock, protocol: Any, argv: list[str], env: dict[str, str], path: str
    ) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.argv = argv
        self.env = env
        self.path = path
        self.pid = 1000 + len(reactor.spawned)
        self.signals: list[str] = []
        self.ended = False

    def signalProcess(self, name: str) -> None:  # noqa: N802
        self.signals.append(name)

    def end(self, reason: Failure) -> None:
        assert not self.ended
        self.ended = True
        self.protocol.processEnded(reason)


@implementer(IReactorProcess)
class _ProcessClock(Clock):
    """A Clock that records spawnProcess calls (the bits of IReactorProcess ProcessMonitor uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[_FakeProcess] = []

    def spawnProcess(  # noqa: N802
        self,
        processProtocol: Any,  # noqa: N803
        executable: str,
        args: list[str],
        env: dict[str, str],
        path: str,
        **kw: Any,
    ) -> _FakeProcess:
        assert executable == args[0]
        process = _FakeProcess(self, processProtocol, args, env, path)
        self.spawned.append(process)
        processProtocol.makeConnection(process)
        return process

    def running(self) -> list[_FakeProcess]:
        return [p for p in self.spawned if not p.ended]


def _terminated() -> Failure:
    return Failure(ProcessTerminated(signal=15))


@linux_only
def test_supervisor_starts_n_workers_on_one_reserved_port() -> None:
    reactor = _ProcessClock()
    service = WorkersService(
        "aleph-tcp", ["--handler=m:f"], [ListenSpec(0, "127.0.0.1")], 3, shutdown_timeout=2, reactor=reactor
    )
    service.startService()
    try:
        assert len(reactor.spawned) == 3
        port = service.reserved[0].getsockname()[1]
        assert port != 0
        for index, process in enumerate(reactor.spawned, 1):
            assert process.argv == service.command
            assert process.argv[-1] == f"--listen=reuseport:{port}:interface=127.0.0.1"
            assert process.env["ALEPH_TX_WORKER"] == str(index)
            assert process.path == os.getcwd()
        assert service.pids() == {"worker-1": 1000, "worker-2": 1001, "worker-3": 1002}
        assert service.monitor.killTime == 2 + KILL_GRACE
        assert service.monitor.maxRestartDelay == _workers.MAX_RESTART_DELAY
        # The reserved socket is bound, not listening: it takes no connections.
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    finally:
        for process in reactor.running():
            process.end(_terminated())
        service.stopService()
    assert service.reserved == []


@linux_only
def test_supervisor_shares_every_listen_address() -> None:
    reactor = _ProcessClock()
    specs = [ListenSpec(0, "127.0.0.1"), ListenSpec(0, "127.0.0.1", 64)]
    service = WorkersService("aleph-http", [], specs, 2, reactor=reactor)
    service.startService()
    first, second = (sock.getsockname()[1] for sock in service.reserved)
    assert first != second
    assert service.command[-2:] == [
        f"--listen=reuseport:{first}:interface=127.0.0.1",
        f"--listen=reuseport:{second}:interface=127.0.0.1:backlog=64",
    ]
    for process in reactor.running():
        process.end(_terminated())
    service.stopService()
    assert service.reserved == []


@linux_only
def test_supervisor_restarts_a_crashed_worker() -> None:
    reactor = _ProcessClock()
    service = WorkersService("aleph-tcp", [], [ListenSpec(0, "127.0.0.1")], 2, reactor=reactor)
    service.startService()
    reactor.advance(5)  # the workers have been up a while
    crashed = reactor.spawned[0]
    crashed.end(Failure(ProcessTerminated(signal=9)))
    assert len(reactor.running()) == 1
    reactor.advance(0)  # up for more than a second: restarted at once
    assert len(reactor.running()) == 2
    replacement = reactor.spawned[-1]
    assert replacement.argv == crashed.argv
    assert replacement.env["ALEPH_TX_WORKER"] == crashed.env["ALEPH_TX_WORKER"] == "1"
    # A worker dying at once is restarted after a back-off, not in a tight loop.
    replacement.end(Failure(ProcessTerminated(exitCode=1)))
    reactor.advance(0)
    assert len(reactor.running()) == 1
    reactor.advance(1)
    assert len(reactor.running()) == 2
    for process in reactor.running():
        process.end(_terminated())
    service.stopService()


@linux_only
def test_supervisor_back_off_is_capped() -> None:
    """A worker that keeps dying at start is retried at least every MAX_RESTART_DELAY seconds."""
    reactor = _ProcessClock()
    service = WorkersService("aleph-tcp", [], [ListenSpec(0, "127.0.0.1")], 1, reactor=reactor)
    service.startService()
    for _ in range(10):  # uncapped, the 6th wait would be 32 s (Twisted's cap is an hour)
        (worker,) = reactor.running()
        worker.end(Failure(ProcessTerminated(exitCode=1)))
        assert reactor.running() == []
        reactor.advance(_workers.MAX_RESTART_DELAY)
        assert len(reactor.running()) == 1
    reactor.running()[0].end(_terminated())
    service.stopService()


@linux_only
def test_supervisor_stop_terms_every_worker_and_waits_for_them() -> None:
    reactor = _ProcessClock()
    service = WorkersService(
        "aleph-tcp", [], [ListenSpec(0, "127.0.0.1")], 2, shutdown_timeout=3, reactor=reactor
    )
    service.startService()
    first, second = reactor.spawned
    stopped = service.stopService()
    assert not stopped.called
    assert first.signals == second.signals == ["TERM"]
    first.end(Failure(ProcessDone(0)))
    reactor.advance(1)
    assert not stopped.called
    assert service.reserved  # the port stays reserved until every worker is gone
    reactor.advance(3 + KILL_GRACE)  # second ignored TERM: killed after the grace time
    assert second.signals == ["TERM", "KILL"]
    assert not stopped.called
    second.end(Failure(ProcessTerminated(signal=9)))
    reactor.advance(0.1)
    assert stopped.called
    assert service.reserved == []
    assert len(reactor.spawned) == 2  # nothing restarted while stopping


@linux_only
def test_supervisor_refuses_a_port_already_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        service = WorkersService("aleph-tcp", [], [ListenSpec(port, "127.0.0.1")], 2, reactor=_ProcessClock())
        with pytest.raises(CannotListenError):
            service.startService()
        assert service.reserved == []
        # Even a stale SO_REUSEPORT listener (an old worker) is refused, not joined.
        stale = bind_reuseport(0, "127.0.0.1")
        stale.listen(1)
        service = WorkersService(
            "aleph-tcp", [], [ListenSpec(stale.getsockname()[1], "127.0.0.1")], 2, reactor=_ProcessClock()
        )
        with stale, pytest.raises(CannotListenError):
            service.startService()


def test_supervisor_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="workers"):
        WorkersService("aleph-tcp", [], [ListenSpec(0)], 0)
    with pytest.raises(ValueError, match="listen"):
        WorkersService("aleph-tcp", [], [], 2)


# --- the reuseport: endpoint --------------------------------------------------------


def test_endpoint_provides_the_interface() -> None:
    endpoint = parse_reuseport(MemoryReactor(), "8080", interface="127.0.0.1", backlog="10")
    verifyObject(IStreamServerEndpoint, endpoint)
    assert (endpoint.port, endpoint.interface, endpoint.backlog) == (8080, "127.0.0.1", 10)
    assert "127.0.0.1:8080" in repr(endpoint)
    assert parse_reuseport(MemoryReactor(), port="80").port == 80


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((), {}, "exactly one port"),
        (("1", "2"), {}, "exactly one port"),
        (("http",), {}, "'http'"),
        (("70000",), {}, "70000"),
        (("80",), {"backlog": "0"}, "backlog"),
        (("80",), {"backlog": "x"}, "'x'"),
        (("80",), {"reuse": "1"}, "'reuse'"),
    ],
)
def test_endpoint_string_errors_name_the_value(
    args: tuple[str, ...], kwargs: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        parse_reuseport(MemoryReactor(), *args, **kwargs)


def test_endpoint_needs_a_reactor_that_adopts_sockets() -> None:
    failure = _failure_of(ReusePortEndpoint(Clock(), 0, "127.0.0.1").listen(Factory()))
    assert failure.check(CannotListenError)


def _failure_of(d: defer.Deferred[Any]) -> Failure:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box and isinstance(box[0], Failure), box
    return box[0]


class _Hello(Protocol):
    def connectionMade(self) -> None:  # noqa: N802
        assert self.transport is not None
        self.transport.write(self.factory.greeting)  # type: ignore[attr-defined]
        self.transport.loseConnection()


def _hello_factory(greeting: bytes) -> Factory:
    factory = Factory.forProtocol(_Hello)
    factory.greeting = greeting  # type: ignore[attr-defined]
    return factory


def _read_all(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = b""
        while chunk := sock.recv(100):
            data += chunk
        return data


@linux_only
@pytest_twisted.inlineCallbacks
def test_two_reuseport_listeners_share_a_port_and_both_answer() -> Any:
    from twisted.internet import reactor, threads

    first = yield serverFromString(reactor, "reuseport:0:interface=127.0.0.1").listen(_hello_factory(b"one"))
    number = first.getHost().port
    second = yield serverFromString(reactor, f"reuseport:{number}:interface=127.0.0.1").listen(
        _hello_factory(b"two")
    )
    try:
        assert second.getHost().port == number
        # Client sockets block: run them off the reactor thread, bounded by their timeouts.
        seen = yield threads.deferToThread(lambda: {_read_all(number) for _ in range(40)})
        assert seen == {b"one", b"two"}  # the kernel spreads connections over both
        # A plain (non-SO_REUSEPORT) listener cannot take the port meanwhile.
        with pytest.raises(CannotListenError):
            reactor.listenTCP(number, Factory(), interface="127.0.0.1")
    finally:
        yield first.stopListening()
        yield second.stopListening()


@linux_only
def test_endpoint_fails_on_a_port_held_without_reuseport() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        from twisted.internet import reactor

        endpoint = ReusePortEndpoint(reactor, taken.getsockname()[1], "127.0.0.1")
        failure = _failure_of(endpoint.listen(Factory()))
    assert failure.check(CannotListenError)
