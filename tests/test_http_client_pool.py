"""Unit tests of the client connection pool: limits, waiters, idle timeout, reuse rules.

No sockets: ``connect`` functions hand out protocols on ``StringTransport``s,
time is a ``Clock``.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from aleph_tx.errors import PoolTimeout, ProtocolError
from aleph_tx.http._client.body import BodyCollector
from aleph_tx.http._client.connection import ConnState, HTTP11ClientConnection
from aleph_tx.http._client.pool import ClientRequest, ConnectionPool, connection_pool, default_pool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class AbortableTransport(StringTransport):
    """A StringTransport that records ``abortConnection``."""

    aborted = False

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True
        self.loseConnection()


class FakeConnector:
    """``connect(events)``: records the attempt; the test completes or fails it."""

    key = "a"  # the key of the next attempts

    def __init__(self) -> None:
        self.attempts: list[tuple[Any, Deferred[Any], str]] = []

    def __call__(self, events: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((events, d, self.key))
        return d

    def complete(self, i: int = -1) -> HTTP11ClientConnection:
        events, d, key = self.attempts[i]
        conn = HTTP11ClientConnection(events, key)
        conn.makeConnection(AbortableTransport())
        d.callback(conn)
        return conn


def respond(conn: HTTP11ClientConnection, answer: bytes = OK) -> Deferred[bytes]:
    """Send a GET on ``conn`` and feed ``answer``; fires with the body bytes."""
    handle = conn.send(ClientRequest(b"GET", b"http", b"x", b"/", b"/", []))
    conn.dataReceived(answer)
    body: Deferred[bytes] = Deferred()

    def got(h: Any) -> None:
        BodyCollector(h, None, Clock()).wait().chainDeferred(body)

    handle.head.addCallbacks(got, body.errback)
    return body


def lose(conn: HTTP11ClientConnection) -> None:
    conn.connectionLost(Failure(ConnectionDone()))


def deferred(x: Any) -> Deferred[Any]:
    """``pool.acquire``'s answer (a connection now, or a Deferred) as a Deferred."""
    return x if isinstance(x, Deferred) else succeed(x)


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = ConnectionPool(
            connections_per_host=2, total_connections=3, idle_timeout=10, clock=self.clock
        )
        self.c = FakeConnector()

    def acquire(self, key: str = "a", timeout: float | None = None) -> Deferred[Any]:
        self.c.key = key
        return deferred(self.pool.acquire(key, self.c, timeout, self.clock))

    def test_per_host_limit_and_waiter_gets_the_returned_connection(self) -> None:
        d1, d2, d3 = self.acquire(), self.acquire(), self.acquire()
        self.assertEqual(len(self.c.attempts), 2)
        self.assertEqual(self.pool.description()["waiters"], 1)
        p1 = self.c.complete(0)
        self.assertIs(self.successResultOf(d1), p1)
        self.assertEqual(self.successResultOf(respond(p1)), b"ok")
        # the waiter got p1 back, no new connection
        self.assertIs(self.successResultOf(d3), p1)
        self.assertEqual(len(self.c.attempts), 2)
        self.assertNoResult(d2)

    def test_idle_reuse_and_idle_timeout(self) -> None:
        d = self.acquire()
        p = self.c.complete()
        self.successResultOf(d)
        self.successResultOf(respond(p))
        self.assertEqual(p.state, ConnState.IDLE)
        self.assertIs(self.successResultOf(self.acquire()), p)
        self.assertEqual(len(self.c.attempts), 1)
        self.successResultOf(respond(p))
        self.clock.advance(9.9)
        self.assertFalse(p.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(p.transport.disconnecting)
        self.assertEqual(self.pool.description()["total"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lost_while_idle_leaves_the_pool(self) -> None:
        d = self.acquire()
        p = self.c.complete()
        self.successResultOf(d)
        self.successResultOf(respond(p))
        lose(p)
        self.assertEqual(self.pool.description()["idle"], 0)
        self.assertEqual(self.pool.description()["total"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.acquire()
        self.assertEqual(len(self.c.attempts), 2)

    def test_connection_close_not_reused(self) -> None:
        d = self.acquire()
        p = self.c.complete()
        self.successResultOf(d)
        self.successResultOf(
            respond(p, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        )
        self.assertTrue(p.transport.disconnecting)
        lose(p)
        self.assertEqual(self.pool.description()["total"], 0)
        self.assertEqual(self.pool.description()["idle"], 0)

    def test_protocol_error_not_reused(self) -> None:
        d = self.acquire()
        p = self.c.complete()
        self.successResultOf(d)
        self.failureResultOf(
            respond(p, b"HTTP/1.1 200 OK\r\nX: " + b"v" * 70000 + b"\r\n\r\n"), ProtocolError
        )
        self.assertTrue(p.transport.disconnecting)
        lose(p)
        self.assertEqual(self.pool.description()["total"], 0)

    def test_total_limit_evicts_idle_of_other_host(self) -> None:
        pa = []
        for _ in range(2):
            d = self.acquire("a")
            pa.append(self.c.complete())
            self.successResultOf(d)
        for p in pa:
            self.successResultOf(respond(p))
        db = self.acquire("b")
        self.c.complete()
        self.successResultOf(db)
        # total is 3 (2 idle a, 1 active b): another b closes an idle a
        db2 = self.acquire("b")
        self.assertEqual(len(self.c.attempts), 4)
        self.assertEqual(sum(p.transport.disconnecting for p in pa), 1)
        self.c.complete()
        self.successResultOf(db2)
        self.assertEqual(self.pool.description()["total"], 3)

    def test_total_limit_waiter_served_when_other_host_returns(self) -> None:
        ds = [self.acquire("a"), self.acquire("a"), self.acquire("b")]
        protos = [self.c.complete(i) for i in range(3)]
        for d in ds:
            self.successResultOf(d)
        dc = self.acquire("c")
        self.assertNoResult(dc)
        self.assertEqual(len(self.c.attempts), 3)
        # b finishes: nobody waits for b, c waits on the total: b is closed for c
        self.successResultOf(respond(protos[2]))
        self.assertTrue(protos[2].transport.disconnecting)
        self.assertEqual(len(self.c.attempts), 4)
        self.c.complete()
        self.successResultOf(dc)

    def test_pool_timeout(self) -> None:
        self.acquire(), self.acquire()
        d = self.acquire(timeout=5)
        self.clock.advance(5)
        self.failureResultOf(d, PoolTimeout)
        self.assertEqual(self.pool.description()["waiters"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_waiter_and_cancel_connecting(self) -> None:
        d1, _d2 = self.acquire(), self.acquire()
        d3 = self.acquire(timeout=5)
        d3.cancel()
        self.failureResultOf(d3, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.pool.description()["waiters"], 0)
        d1.cancel()  # the connect Deferred has no canceller: it fails with CancelledError
        self.failureResultOf(d1, CancelledError)
        self.assertEqual(self.pool.description()["total"], 1)

    def test_connect_failure_frees_slot_and_serves_waiter(self) -> None:
        d1, _d2, d3 = self.acquire(), self.acquire(), self.acquire()
        self.c.attempts[0][1].errback(ConnectionRefusedError())
        self.failureResultOf(d1, ConnectionRefusedError)
        self.assertEqual(len(self.c.attempts), 3)
        self.c.complete(2)
        self.successResultOf(d3)

    def test_cancelled_waiter_being_connected_cancels_the_connect(self) -> None:
        d1, _d2, d3 = self.acquire(), self.acquire(), self.acquire()
        self.c.attempts[0][1].errback(ConnectionRefusedError())
        self.failureResultOf(d1)
        # d3 got the freed slot and is connecting: cancelling it frees the slot
        d3.cancel()
        self.failureResultOf(d3, CancelledError)
        self.assertEqual(self.pool.description()["total"], 1)

    def test_keep_alive_false(self) -> None:
        pool = ConnectionPool(keep_alive=False, clock=self.clock)
        d = deferred(pool.acquire("a", self.c))
        p = self.c.complete()
        self.successResultOf(d)
        self.successResultOf(respond(p))
        self.assertEqual(pool.description()["idle"], 0)

    def test_close(self) -> None:
        d = self.acquire()
        p = self.c.complete()
        self.successResultOf(d)
        self.successResultOf(respond(p))
        self.acquire("b"), self.acquire("b")
        w = self.acquire("b")
        closed = self.pool.close()
        self.failureResultOf(w, CancelledError)
        self.assertTrue(p.transport.disconnecting)
        self.assertNoResult(closed)
        lose(p)
        self.successResultOf(closed)


def test_validation_and_default_pool() -> None:
    for bad in [
        {"connections_per_host": 0},
        {"total_connections": -1},
        {"connections_per_host": True},
        {"idle_timeout": -1},
    ]:
        with pytest.raises(ValueError):
            connection_pool(**bad)
    assert default_pool() is default_pool()
    assert isinstance(default_pool(), ConnectionPool)


class SyncFailureTests(SynchronousTestCase):
    def test_waiters_served_by_synchronously_failing_connects(self) -> None:
        clock = Clock()
        pool = ConnectionPool(connections_per_host=1, clock=clock)
        fake = FakeConnector()
        failing = [False]

        def connect(events: Any) -> Deferred[Any]:
            if failing[0]:
                raise ConnectionRefusedError()
            return fake(events)

        d1 = deferred(pool.acquire("a", connect))
        waiting = [deferred(pool.acquire("a", connect)) for _ in range(50)]
        failing[0] = True
        fake.attempts[0][1].errback(ConnectionRefusedError())
        self.failureResultOf(d1, ConnectionRefusedError)
        for d in waiting:
            self.failureResultOf(d, ConnectionRefusedError)
        desc = pool.description()
        self.assertEqual((desc["total"], desc["waiters"], desc["active"]), (0, 0, 0))
