"""HTTP/3 server and client in memory: datagrams handed over by a fake UDP transport,
time from a ``task.Clock`` (deterministic: the QUIC timers, the idle timeout)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")

from test_http_h3_server import runner_for
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aleph_tx import tls
from aleph_tx.http._client.h3 import H3ClientConnection
from aleph_tx.http._quic.config import client_configuration, server_configuration
from aleph_tx.http._quic.endpoint import QuicDriver, QuicEndpoint
from aleph_tx.http._server.h3 import H3ServerConnection

SERVER_ADDR = ("10.0.0.1", 443)
CLIENT_ADDR = ("10.0.0.2", 50000)


class Wire:
    """Two endpoints joined by a list of datagrams in flight, delivered on ``flush``."""

    def __init__(self) -> None:
        self.queue: list[tuple[QuicEndpoint, bytes, tuple[str, int]]] = []
        self.log: list[tuple[tuple[str, int], bytes]] = []  # (sender, datagram)

    def transport(self, peer: Any, me: tuple[str, int]) -> Any:
        wire = self

        class Transport:
            def write(self, data: bytes, addr: tuple[str, int]) -> None:
                wire.log.append((me, data))
                wire.queue.append((peer[0], data, me))

        return Transport()

    def flush(self, clock: Clock, rounds: int = 50) -> None:
        """Deliver datagrams, a millisecond of simulated time per round (ACK delays,
        pacing), until nothing moved for ``rounds`` rounds."""
        idle = 0
        while idle < rounds:
            clock.advance(0.001)
            if not self.queue:
                idle += 1
                continue
            idle = 0
            queue, self.queue = self.queue, []
            for endpoint, data, source in queue:
                endpoint.datagramReceived(data, source)


def pair(clock: Clock, **server_options: Any) -> tuple[Wire, list[H3ServerConnection], H3ClientConnection]:
    options = tls.self_signed_context()
    idle = server_options.get("idle_timeout")
    handler = server_options.pop("handler", lambda req: {"body": "hi " + req["uri"]})
    servers: list[H3ServerConnection] = []

    def accept(driver: QuicDriver) -> H3ServerConnection:
        conn = H3ServerConnection(driver, runner_for(handler, **server_options), 443)
        servers.append(conn)
        return conn

    server = QuicEndpoint(server_configuration(options, idle_timeout=idle), accept, clock=clock)
    client = QuicEndpoint(client_configuration("localhost", insecure=True), None, clock=clock)
    wire = Wire()
    server_box: list[Any] = [server]
    client_box: list[Any] = [client]
    server.transport = wire.transport(client_box, SERVER_ADDR)
    client.transport = wire.transport(server_box, CLIENT_ADDR)
    driver = client.connect(SERVER_ADDR)
    conn = H3ClientConnection(driver)
    driver.handler = conn
    wire.flush(clock)
    return wire, servers, conn


class MemoryTests(SynchronousTestCase):
    def test_request_and_response_without_sockets(self) -> None:
        clock = Clock()
        wire, servers, conn = pair(clock)
        self.successResultOf(conn.ready)
        d = conn.request("GET", "localhost", "/x")
        wire.flush(clock)
        resp = self.successResultOf(d)
        self.assertEqual(resp["status"], 200)
        self.assertEqual(self.successResultOf(resp["body"].take()), b"hi /x")
        self.assertIsNone(self.successResultOf(resp["ended"]))
        self.assertEqual(len(servers), 1)

    def test_idle_timeout_closes_on_the_clock(self) -> None:
        clock = Clock()
        wire, servers, conn = pair(clock, idle_timeout=5)
        self.successResultOf(conn.ready)
        self.assertFalse(servers[0].driver.terminated)
        wire.queue.clear()  # nothing more gets through: both sides go idle
        clock.advance(4.0)
        self.assertFalse(servers[0].driver.terminated)
        for _ in range(30):
            clock.advance(0.5)
        self.assertTrue(servers[0].driver.terminated)
        self.assertTrue(conn.driver.terminated)
        self.assertFalse(conn.available)

    def test_one_timer_per_connection(self) -> None:
        clock = Clock()
        wire, _, conn = pair(clock)
        self.successResultOf(conn.ready)
        wire.flush(clock)
        # a client driver and a server driver: at most one QUIC timer each (and the
        # server connection's header_timeout, armed while no request is in flight)
        timers = [c for c in clock.getDelayedCalls() if c.active()]
        self.assertLessEqual(len(timers), 3)

    def test_lost_first_flight_is_retransmitted(self) -> None:
        clock = Clock()
        options = tls.self_signed_context()
        server = QuicEndpoint(
            server_configuration(options), lambda d: H3ServerConnection(d, runner_for(dict), 443), clock=clock
        )
        client = QuicEndpoint(client_configuration("localhost", insecure=True), None, clock=clock)
        wire = Wire()
        server.transport = wire.transport([client], SERVER_ADDR)
        client.transport = wire.transport([server], CLIENT_ADDR)
        driver = client.connect(SERVER_ADDR)
        conn = H3ClientConnection(driver)
        driver.handler = conn
        clock.advance(0)
        self.assertTrue(wire.queue)
        wire.queue.clear()  # the Initial is lost
        self.assertNoResult(conn.ready)
        for _ in range(20):
            clock.advance(0.2)  # the loss-detection timer fires and resends
            wire.flush(clock)
            if conn.ready.called:
                break
        self.successResultOf(conn.ready)

    def test_header_timeout_closes_an_idle_connection(self) -> None:
        clock = Clock()
        wire, servers, conn = pair(clock, header_timeout=5)
        self.successResultOf(conn.ready)
        d = conn.request("GET", "localhost", "/a")
        wire.flush(clock)
        self.assertEqual(self.successResultOf(d)["status"], 200)
        clock.advance(3)
        wire.flush(clock)
        self.assertTrue(conn.available)  # 3 s + the flushes since the response: not yet
        clock.advance(2)
        wire.flush(clock)
        self.assertFalse(conn.available)  # GOAWAY, then the connection closed
        for _ in range(20):
            clock.advance(0.5)
            wire.flush(clock)
        self.assertTrue(servers[0].driver.terminated)

    def test_header_timeout_answers_408_to_a_partial_head(self) -> None:
        clock = Clock()
        wire, servers, conn = pair(clock, header_timeout=5)
        self.successResultOf(conn.ready)
        seen: list[Any] = []
        handle = conn.h3.handle_event

        def record(event: Any) -> Any:
            out = handle(event)
            seen.extend(out)
            return out

        conn.h3.handle_event = record  # type: ignore[method-assign]
        sid = conn.driver.quic.get_next_available_stream_id()
        # a HEADERS frame (type 1) announcing 80 bytes, of which 7 arrive
        conn.driver.quic.send_stream_data(sid, b"\x01\x40\x50partial")
        conn.driver.transmit_soon()
        wire.flush(clock)
        self.assertEqual(servers[0].h3.partial_requests(), [sid])
        clock.advance(5)
        wire.flush(clock)
        statuses = [dict(e.headers).get(b":status") for e in seen if hasattr(e, "headers")]
        self.assertEqual(statuses, [b"408"])
        self.assertFalse(conn.available)

    def test_retry_validates_the_address_first(self) -> None:
        clock = Clock()
        options = tls.self_signed_context()
        accepted: list[QuicDriver] = []

        def accept(driver: QuicDriver) -> H3ServerConnection:
            accepted.append(driver)
            return H3ServerConnection(driver, runner_for(lambda req: {"body": "validated"}), 443)

        server = QuicEndpoint(server_configuration(options), accept, retry=True, clock=clock)
        client = QuicEndpoint(client_configuration("localhost", insecure=True), None, clock=clock)
        wire = Wire()
        server.transport = wire.transport([client], SERVER_ADDR)
        client.transport = wire.transport([server], CLIENT_ADDR)
        driver = client.connect(SERVER_ADDR)
        conn = H3ClientConnection(driver)
        driver.handler = conn
        wire.flush(clock)
        self.successResultOf(conn.ready)
        self.assertEqual(len(accepted), 1)  # one connection, made for the Initial with the token
        from_server = [data for sender, data in wire.log if sender == SERVER_ADDR]
        # RFC 9000 §17.2.5: the server's first datagram is a Retry (long header, type 3)
        self.assertEqual(from_server[0][0] & 0xF0, 0xF0)
        d = conn.request("GET", "localhost", "/")
        wire.flush(clock)
        self.assertEqual(self.successResultOf(self.successResultOf(d)["body"].take()), b"validated")
