"""Unit tests of aleph_tx._server: graceful close on a Clock, listen() on MemoryReactor."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from aleph_tx._server import DEFAULT_BACKLOG, Server, ServerState, listen


class FakePort:
    def __init__(self, port: int = 1234, synchronous: bool = True) -> None:
        self.number = port
        self.stopped = 0
        self.stop_d: Deferred[None] = succeed(None) if synchronous else Deferred()

    def getHost(self) -> object:  # noqa: N802
        return type("Addr", (), {"port": self.number})()

    def stopListening(self) -> Deferred[None]:  # noqa: N802
        self.stopped += 1
        return self.stop_d


class FakeConn:
    def __init__(self, server: Server, untrack_on_close: bool = True) -> None:
        self.server = server
        self.events: list[str] = []
        self.untrack_on_close = untrack_on_close

    def graceful_close(self) -> None:
        self.events.append("graceful")
        if self.untrack_on_close:
            self.server.untrack(self)

    def abort(self) -> None:
        self.events.append("abort")
        self.server.untrack(self)


class ServerTests(SynchronousTestCase):
    def test_port_and_ports(self) -> None:
        p1, p2 = FakePort(80), FakePort(81)
        server = Server([p1, p2])
        self.assertEqual(server.port, 80)
        self.assertEqual(server.ports, [p1, p2])
        self.assertIs(server.state, ServerState.LISTENING)

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, Server, [])
        self.assertRaises(ValueError, Server, [FakePort()], shutdown_timeout=-1)

    def test_close_with_no_connections(self) -> None:
        port = FakePort()
        server = Server([port], clock=Clock())
        self.successResultOf(server.close())
        self.assertEqual(port.stopped, 1)
        self.assertTrue(server.closed)

    def test_close_waits_for_ports(self) -> None:
        port = FakePort(synchronous=False)
        server = Server([port], clock=Clock())
        d = server.close()
        self.assertNoResult(d)
        port.stop_d.callback(None)
        self.successResultOf(d)

    def test_graceful_close_then_done(self) -> None:
        clock = Clock()
        server = Server([FakePort()], shutdown_timeout=15, clock=clock)
        conn = FakeConn(server, untrack_on_close=False)
        server.track(conn)
        d = server.close()
        self.assertEqual(conn.events, ["graceful"])
        self.assertNoResult(d)
        clock.advance(5)
        server.untrack(conn)
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(conn.events, ["graceful"])

    def test_stragglers_aborted_after_timeout(self) -> None:
        clock = Clock()
        server = Server([FakePort()], shutdown_timeout=15, clock=clock)
        conn = FakeConn(server, untrack_on_close=False)
        server.track(conn)
        d = server.close()
        clock.advance(14.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(conn.events, ["graceful", "abort"])
        self.successResultOf(d)

    def test_close_is_idempotent(self) -> None:
        clock = Clock()
        port = FakePort()
        server = Server([port], clock=clock)
        conn = FakeConn(server, untrack_on_close=False)
        server.track(conn)
        d1, d2 = server.close(), server.close()
        waiter = server.wait_for_close()
        self.assertEqual(port.stopped, 1)
        self.assertEqual(conn.events, ["graceful"])
        server.untrack(conn)
        for d in (d1, d2, waiter):
            self.successResultOf(d)
        self.successResultOf(server.close())
        self.successResultOf(server.wait_for_close())

    def test_track_while_closing_closes_at_once(self) -> None:
        clock = Clock()
        server = Server([FakePort()], clock=clock)
        first = FakeConn(server, untrack_on_close=False)
        server.track(first)
        server.close()
        late = FakeConn(server, untrack_on_close=False)
        server.track(late)
        self.assertEqual(late.events, ["graceful"])
        self.assertEqual(server.connection_count, 2)

    def test_failing_graceful_close_is_logged_not_raised(self) -> None:
        server = Server([FakePort()], clock=Clock())

        class Broken(FakeConn):
            def graceful_close(self) -> None:
                raise RuntimeError("boom")

        conn = Broken(server)
        server.track(conn)
        server.close()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ListenTests(SynchronousTestCase):
    def test_listen_tcp_with_backlog(self) -> None:
        reactor = MemoryReactor()
        ports = listen(Factory.forProtocol(Protocol), 0, "127.0.0.1", reactor=reactor)
        self.assertEqual(len(ports), 1)
        port, _factory, backlog, interface = reactor.tcpServers[0]
        self.assertEqual((port, backlog, interface), (0, DEFAULT_BACKLOG, "127.0.0.1"))

    def test_listen_endpoint_strings(self) -> None:
        reactor = MemoryReactor()
        ports = listen(
            Factory.forProtocol(Protocol), listen=["tcp:8080", "tcp:8081:backlog=5"], reactor=reactor
        )
        self.assertEqual(len(ports), 2)
        self.assertEqual([s[2] for s in reactor.tcpServers], [DEFAULT_BACKLOG, 5])

    def test_listen_ssl_needs_context(self) -> None:
        reactor = MemoryReactor()
        self.assertRaises(TypeError, listen, Factory(), 0, "", None, object(), reactor)

    def test_bad_port(self) -> None:
        for bad in (-1, 70000, "80", True):
            self.assertRaises(ValueError, listen, Factory(), bad, reactor=MemoryReactor())
        self.assertRaises(ValueError, listen, Factory(), listen=[], reactor=MemoryReactor())


@pytest_twisted.inlineCallbacks
def test_port_in_use_raises() -> object:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(CannotListenError):
            listen(Factory.forProtocol(Protocol), taken.getsockname()[1], "127.0.0.1")
        with pytest.raises(CannotListenError):
            listen(Factory.forProtocol(Protocol), listen=f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1")
    finally:
        taken.close()
    yield succeed(None)
