"""``http.request`` over HTTP/3 in memory: the pool, its QUIC connections and our
HTTP/3 server joined by a list of datagrams, time from a ``Clock``.

:class:`Net` is the ``reactor`` (and so the clock) of the requests: its
``listenUDP`` gives each QUIC connection a port on the fake network, ``resolve``
answers the server's address, and ``flush`` delivers datagrams a simulated
millisecond at a time. Every timeout, cancel and backpressure case is exact: no
real time, no sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")

from test_http_h3_server import runner_for
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aleph_tx import http, tls
from aleph_tx import stream as s
from aleph_tx.errors import (
    ClientResponseError,
    ConnectionLostError,
    ConnectionTimeout,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RequestTimeout,
)
from aleph_tx.http import ConnectionPool
from aleph_tx.http._client.h3 import H3ClientConnection
from aleph_tx.http._quic.config import server_configuration
from aleph_tx.http._quic.endpoint import QuicDriver, QuicEndpoint
from aleph_tx.http._server.h3 import H3ServerConnection

SERVER_ADDR = ("10.0.0.1", 443)
URL = "https://example.test"
_TLS = tls.self_signed_context()


class _Transport:
    def __init__(self, net: Net, me: tuple[str, int]) -> None:
        self.net = net
        self.me = me

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.net.send(self.me, data, addr)


class _Port:
    def __init__(self, net: Net, addr: tuple[str, int]) -> None:
        self.net = net
        self.addr = addr

    def stopListening(self) -> None:  # noqa: N802
        self.net.ports.remove(self)


class Net(Clock):
    """A reactor for HTTP/3 in memory (see the module docstring).

    :ivar drop: lose every datagram (UDP blocked).
    :ivar servers: the server's connections, in order.
    :ivar ports: the client UDP ports still open.
    """

    def __init__(self, handler: Callable[[dict[str, Any]], Any], **server_options: Any) -> None:
        super().__init__()
        self.drop = False
        self.queue: list[tuple[QuicEndpoint, bytes, tuple[str, int]]] = []
        self.clients: dict[tuple[str, int], QuicEndpoint] = {}
        self.ports: list[_Port] = []
        self.servers: list[H3ServerConnection] = []
        runner = runner_for(handler, **server_options)

        def accept(driver: QuicDriver) -> H3ServerConnection:
            conn = H3ServerConnection(driver, runner, 443)
            self.servers.append(conn)
            return conn

        self.server = QuicEndpoint(server_configuration(_TLS), accept, clock=self)
        self.server.transport = _Transport(self, SERVER_ADDR)

    def resolve(self, host: str) -> Deferred[str]:
        return succeed(SERVER_ADDR[0])

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> _Port:  # noqa: N802, N803
        addr = ("10.0.0.2", 50000 + len(self.clients))
        self.clients[addr] = protocol
        protocol.transport = _Transport(self, addr)
        p = _Port(self, addr)
        self.ports.append(p)
        return p

    def send(self, source: tuple[str, int], data: bytes, dest: tuple[str, int]) -> None:
        if self.drop:
            return
        endpoint = self.server if dest == SERVER_ADDR else self.clients.get(dest)
        if endpoint is not None:
            self.queue.append((endpoint, data, source))

    def flush(self, rounds: int = 50) -> None:
        """Deliver datagrams, a millisecond per round, until nothing moved for ``rounds`` rounds."""
        idle = 0
        while idle < rounds:
            self.advance(0.001)
            if not self.queue:
                idle += 1
                continue
            idle = 0
            queue, self.queue = self.queue, []
            for endpoint, data, source in queue:
                endpoint.datagramReceived(data, source)


class Base(SynchronousTestCase):
    def start(self, handler: Callable[[dict[str, Any]], Any], **server_options: Any) -> Net:
        self.net = Net(handler, **server_options)
        self.pool: ConnectionPool = http.connection_pool(clock=self.net, http_versions=("h3",))
        return self.net

    def get(self, path: str = "/", method: str = "GET", **options: Any) -> Deferred[dict[str, Any]]:
        options.setdefault("pool", self.pool)
        options.setdefault("insecure", True)
        return http.request(method, URL + path, reactor=self.net, **options)

    def conns(self) -> list[H3ClientConnection]:
        return [c for conns in self.pool._shared.values() for c in conns]  # type: ignore[misc]


class RequestTests(Base):
    def test_get_over_h3(self) -> None:
        net = self.start(lambda req: {"body": f"{req['protocol']} {req['uri']} {req['headers']['host']}"})
        d = self.get("/x?y=1", as_="text")
        net.flush()
        resp = self.successResultOf(d)
        self.assertEqual((resp["status"], resp["body"]), (200, "HTTP/3 /x example.test"))
        desc = self.pool.description()
        self.assertEqual((desc["h3_connections"], desc["connections_opened"], desc["active"]), (1, 1, 0))

    def test_requests_share_one_connection(self) -> None:
        net = self.start(lambda req: {"body": req["uri"]})
        ds = [self.get(f"/{i}") for i in range(100)]
        net.flush()
        self.assertEqual(
            [self.successResultOf(d)["body"] for d in ds], [f"/{i}".encode() for i in range(100)]
        )
        self.assertEqual(self.pool.description()["connections_opened"], 1)
        self.assertEqual(len(net.servers), 1)
        d = self.get("/again")  # reused
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], b"/again")
        self.assertEqual(len(net.servers), 1)

    def test_past_the_stream_limit_on_one_connection(self) -> None:
        """More requests than the server's MAX_STREAMS with connections_per_host=1: the
        rest wait for the pool and go on the same connection."""
        net = self.start(lambda req: {"body": req["uri"]})
        self.pool = http.connection_pool(clock=net, http_versions=("h3",), connections_per_host=1)
        ds = [self.get(f"/{i}") for i in range(300)]
        net.flush()
        self.assertEqual(
            [self.successResultOf(d)["body"] for d in ds], [f"/{i}".encode() for i in range(300)]
        )
        self.assertEqual(len(net.servers), 1)

    def test_post_bodies(self) -> None:
        async def handler(req: dict[str, Any]) -> dict[str, Any]:
            data = b"".join(await s.collect(req["body"])) if req["body"] is not None else b""
            return {
                "body": b"%s %d %s"
                % (req["headers"].get("content-length", "-").encode(), len(data), data[:3])
            }

        net = self.start(handler)
        d1 = self.get("/", "POST", body=b"abc" * 1000)
        d2 = self.get("/", "PUT", body=iter([b"x" * 70000] * 10))  # no length: streamed
        d3 = self.get("/", "POST", json={"a": 1})
        d4 = self.get("/", "POST")
        net.flush()
        self.assertEqual(self.successResultOf(d1)["body"], b"3000 3000 abc")
        self.assertEqual(self.successResultOf(d2)["body"], b"- 700000 xxx")
        self.assertEqual(self.successResultOf(d3)["body"], b'7 7 {"a')
        self.assertEqual(self.successResultOf(d4)["body"], b"- 0 ")

    def test_options_keep_their_meaning(self) -> None:
        def handler(req: dict[str, Any]) -> dict[str, Any]:
            uri = req["uri"]
            if uri == "/redirect":
                return {"status": 302, "headers": {"location": "/json"}}
            if uri == "/json":
                return {
                    "headers": {"content-type": "application/json", "set-cookie": "k=v; Path=/"},
                    "body": '{"a": 1}',
                }
            if uri == "/cookie":
                return {"body": req["headers"].get("cookie", "none")}
            if uri == "/gzip":
                return {"body": "z" * 10000}
            return {"status": 404, "body": "missing"}

        import http.cookiejar

        net = self.start(handler, compression=True)
        jar = http.cookiejar.CookieJar()
        d = self.get("/redirect", as_="json", cookie_jar=jar)
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], {"a": 1})
        d = self.get("/cookie", cookie_jar=jar)
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], b"k=v")
        d = self.get("/gzip")
        net.flush()
        resp = self.successResultOf(d)
        self.assertEqual((resp["headers"]["content-encoding"], resp["body"]), ("gzip", b"z" * 10000))
        d = self.get("/nothing")
        net.flush()
        error = self.failureResultOf(d, ClientResponseError).value
        self.assertEqual((error.response["status"], error.response["body"]), (404, b"missing"))
        d = self.get("/nothing", throw_exceptions=False, as_="text")
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], "missing")

    def test_header_block_too_large(self) -> None:
        net = self.start(lambda req: {"headers": {"x-big": "b" * 3000}, "body": "ok"})
        d = self.get("/", max_response_header_size=1000)
        net.flush()
        self.assertIn("max_response_header_size=1000", str(self.failureResultOf(d, ProtocolError).value))
        # that connection is not reused
        d = self.get("/")
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], b"ok")
        self.assertEqual(self.pool.description()["connections_opened"], 2)


class PoolTests(Base):
    def test_idle_connections_close_after_idle_timeout(self) -> None:
        net = self.start(lambda req: {"body": "ok"})
        self.pool = http.connection_pool(clock=net, http_versions=("h3",), idle_timeout=10)
        d = self.get("/")
        net.flush()
        self.successResultOf(d)
        (conn,) = self.conns()
        net.advance(9.9)
        self.assertFalse(conn.driver.terminated)
        net.advance(0.1)
        net.flush()
        for _ in range(10):  # QUIC's closing period (RFC 9000 §10.2)
            net.advance(0.5)
        self.assertTrue(conn.driver.terminated)
        self.assertEqual((self.pool.description()["total"], net.ports), (0, []))

    def test_without_keep_alive_each_request_has_its_connection(self) -> None:
        net = self.start(lambda req: {"body": "ok"})
        self.pool = http.connection_pool(clock=net, http_versions=("h3",), keep_alive=False)
        for _ in range(2):
            d = self.get("/")
            net.flush()
            self.successResultOf(d)
            self.assertEqual(self.pool.description()["total"], 0)
        self.assertEqual(len(net.servers), 2)

    def test_pool_close_closes_idle_connections(self) -> None:
        net = self.start(lambda req: {"body": "ok"})
        d = self.get("/")
        net.flush()
        self.successResultOf(d)
        closed = self.pool.close()
        net.flush()
        for _ in range(10):
            net.advance(0.5)
        self.successResultOf(closed)
        self.assertEqual(net.ports, [])

    def test_head_and_no_content(self) -> None:
        net = self.start(lambda req: {"status": 204} if req["uri"] == "/none" else {"body": b"h" * 100})
        d1 = http.head(URL + "/", pool=self.pool, insecure=True, reactor=net)
        d2 = self.get("/none")
        net.flush()
        resp = self.successResultOf(d1)
        self.assertEqual((resp["headers"]["content-length"], resp["body"]), ("100", b""))
        self.assertEqual(self.successResultOf(d2)["status"], 204)

    def test_connection_lost_while_reading(self) -> None:
        bodies: list[s.Stream] = []

        def handler(req: dict[str, Any]) -> dict[str, Any]:
            bodies.append(s.stream())
            return {"body": bodies[-1]}

        net = self.start(handler)
        d1 = self.get("/", as_="stream")
        d2 = self.get("/")
        net.flush()
        body = self.successResultOf(d1)["body"]
        net.servers[0].abort()
        net.flush()
        self.assertEqual(self.pool.description()["total"], 0)  # forgotten at once: no new requests
        for _ in range(10):  # the draining period (RFC 9000 §10.2.2)
            net.advance(0.5)
        self.assertIsNone(self.successResultOf(body.take()))
        self.assertIn("HTTP/3 connection was closed", str(body.description()["error"]))
        self.failureResultOf(d2, ConnectionLostError)
        self.assertEqual((self.pool.description()["total"], net.ports), (0, []))


class TimeoutTests(Base):
    def test_connection_timeout_is_the_quic_handshake(self) -> None:
        net = self.start(lambda req: {"body": "x"})
        net.drop = True  # no datagram gets through
        d = self.get("/", connection_timeout=5)
        net.advance(4.9)
        self.assertNoResult(d)
        net.advance(0.1)
        self.assertIn("connection_timeout=5", str(self.failureResultOf(d, ConnectionTimeout).value))
        self.assertEqual(net.ports, [])  # the UDP port was released
        self.assertEqual(self.pool.description()["total"], 0)

    def test_without_connection_timeout_quic_gives_up_after_its_idle_timeout(self) -> None:
        net = self.start(lambda req: {"body": "x"})
        net.drop = True
        d = self.get("/")
        for _ in range(59):
            net.advance(1)
        self.assertNoResult(d)
        for _ in range(5):
            net.advance(1)
        self.assertIn("HTTP/3 connection was closed", str(self.failureResultOf(d, ConnectionLostError).value))
        self.assertEqual(net.ports, [])

    def test_request_timeout_resets_the_stream_only(self) -> None:
        calls: list[str] = []

        def handler(req: dict[str, Any]) -> Any:
            if req["uri"] == "/slow":
                calls.append("called")
                return Deferred(lambda _: calls.append("cancelled"))
            return {"body": "fast"}

        net = self.start(handler)
        d = self.get("/slow", request_timeout=5)
        net.flush()
        self.assertNoResult(d)
        net.advance(5)
        self.failureResultOf(d, RequestTimeout)
        net.flush()
        self.assertEqual(calls, ["called", "cancelled"])  # the server saw the reset
        d = self.get("/fast")
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], b"fast")
        self.assertEqual((calls, len(net.servers)), (["called", "cancelled"], 1))  # not re-sent

    def test_read_timeout_is_the_longest_stall(self) -> None:
        bodies: list[s.Stream] = []

        def handler(req: dict[str, Any]) -> dict[str, Any]:
            body = s.stream()
            bodies.append(body)
            return {"body": body}

        net = self.start(handler)
        d = self.get("/", read_timeout=5)
        net.flush()
        for _ in range(3):  # a piece every 4 s: never a 5 s stall
            bodies[0].put(b"piece")
            net.flush()
            net.advance(4)
        self.assertNoResult(d)
        net.advance(1)
        self.failureResultOf(d, ReadTimeout)
        net.flush()
        self.assertTrue(bodies[0].closed)  # the server's body stream is closed

    def test_read_timeout_with_as_stream(self) -> None:
        bodies: list[s.Stream] = []

        def handler(req: dict[str, Any]) -> dict[str, Any]:
            bodies.append(s.stream())
            return {"body": bodies[-1]}

        net = self.start(handler)
        d = self.get("/", read_timeout=5, as_="stream")
        net.flush()
        body = self.successResultOf(d)["body"]
        net.advance(5)
        self.assertIsNone(self.successResultOf(body.take()))
        self.assertIsInstance(body.description()["error"], ReadTimeout)

    def test_pool_timeout_while_the_connection_is_made(self) -> None:
        net = self.start(lambda req: {"body": "x"})
        net.drop = True
        first = self.get("/", connection_timeout=10)
        second = self.get("/", pool_timeout=2)  # waits to share the connection being made
        self.assertEqual(self.pool.description()["waiters"], 1)
        net.advance(2)
        self.failureResultOf(second, PoolTimeout)
        self.assertNoResult(first)
        net.advance(8)
        self.failureResultOf(first, ConnectionTimeout)
        self.assertEqual(self.pool.description()["waiters"], 0)


class CancelTests(Base):
    def slow_net(self) -> tuple[Net, list[str], list[s.Stream]]:
        pending: list[str] = []
        bodies: list[s.Stream] = []

        def handler(req: dict[str, Any]) -> Any:
            if req["uri"] == "/head":
                pending.append("called")
                return Deferred(lambda _: pending.append("cancelled"))
            if req["uri"] == "/body":
                bodies.append(s.stream())
                return {"body": bodies[-1]}
            return {"body": "ok"}

        return self.start(handler), pending, bodies

    def check_carries_on(self, net: Net, servers: int = 1) -> None:
        d = self.get("/other")
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], b"ok")
        self.assertEqual(len(net.servers), servers)
        self.assertEqual(self.pool.description()["active"], 0)

    def test_cancel_while_connecting(self) -> None:
        net, _, _ = self.slow_net()
        net.drop = True
        d = self.get("/")
        net.advance(0.01)
        self.assertEqual(len(net.ports), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((net.ports, self.pool.description()["total"]), ([], 0))
        net.drop = False
        self.check_carries_on(net)

    def test_cancel_while_waiting_for_the_pool(self) -> None:
        net, _, _ = self.slow_net()
        net.drop = True
        first = self.get("/", connection_timeout=10)
        second = self.get("/")
        second.cancel()
        self.failureResultOf(second, CancelledError)
        self.assertEqual(self.pool.description()["waiters"], 0)
        first.cancel()
        self.failureResultOf(first, CancelledError)

    def test_cancel_while_waiting_for_the_head(self) -> None:
        net, pending, _ = self.slow_net()
        d = self.get("/head")
        net.flush()
        self.assertEqual(pending, ["called"])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        net.flush()
        self.assertEqual(pending, ["called", "cancelled"])  # the stream was reset, never sent again
        self.check_carries_on(net)

    def test_cancel_while_reading_the_body(self) -> None:
        net, _, bodies = self.slow_net()
        d = self.get("/body")
        net.flush()
        put = bodies[0].put(b"first")
        net.flush()
        self.assertTrue(self.successResultOf(put))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        net.flush()
        self.assertTrue(bodies[0].closed)
        self.assertEqual(len(bodies), 1)
        self.check_carries_on(net)

    def test_closing_a_streamed_body_resets_the_stream(self) -> None:
        net, _, bodies = self.slow_net()
        d = self.get("/body", as_="stream")
        net.flush()
        body = self.successResultOf(d)["body"]
        bodies[0].put(b"first")
        net.flush()
        self.assertEqual(self.successResultOf(body.take()), b"first")
        body.close()
        net.flush()
        self.assertTrue(bodies[0].closed)
        self.check_carries_on(net)


class BackpressureTests(Base):
    def test_a_reader_that_stops_stops_the_server(self) -> None:
        produced: list[int] = []
        bodies: list[s.Stream] = []

        def handler(req: dict[str, Any]) -> dict[str, Any]:
            body = s.stream()
            bodies.append(body)

            async def produce() -> None:
                for _ in range(256):  # 16 MiB
                    if not await body.put(b"z" * 65536):
                        return
                    produced.append(65536)
                body.close()

            Deferred.fromCoroutine(produce())
            return {"body": body}

        net = self.start(handler)
        d = self.get("/", as_="stream")
        net.flush()
        body = self.successResultOf(d)["body"]
        net.flush(200)
        held = sum(produced)
        # the client's window (1 MiB) + the server's send buffer (1 MiB) + a put or two
        self.assertLess(held, 3 << 20)
        net.flush(200)
        self.assertEqual(sum(produced), held)  # it stays there
        total = 0
        while True:
            taken = body.take()
            net.flush(2)
            chunk = self.successResultOf(taken)
            if chunk is None:
                break
            total += len(chunk)
        self.assertEqual(total, 16 << 20)
        self.assertEqual(self.pool.description()["active"], 0)

    def test_an_upload_to_a_handler_that_does_not_read_waits(self) -> None:
        bodies: list[Any] = []
        net = self.start(lambda req: bodies.append(req["body"]) or Deferred())
        upload = s.stream()
        puts: list[Deferred[bool]] = []
        d = self.get("/", "POST", body=upload)
        for _ in range(64):  # 4 MiB offered
            puts.append(upload.put(b"u" * 65536))
            net.flush(5)
        accepted = sum(1 for p in puts if p.called)
        self.assertLess(accepted, 48)  # the stream's window plus the send buffer, not all
        d.cancel()
        self.failureResultOf(d, CancelledError)
        net.flush()
        self.assertTrue(all(p.called for p in puts))  # the rest fired False: the upload was dropped


class GoawayTests(Base):
    def test_after_goaway_requests_go_on_a_new_connection(self) -> None:
        net = self.start(lambda req: {"body": "ok"})
        d = self.get("/")
        net.flush()
        self.successResultOf(d)
        net.servers[0].graceful_close()
        net.flush()
        self.assertEqual(self.pool.description()["h3_connections"], 0)  # the pool forgot it
        d = self.get("/")
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], b"ok")
        self.assertEqual(len(net.servers), 2)

    def test_a_rejected_request_is_sent_again_whatever_its_method(self) -> None:
        seen: list[str] = []
        net = self.start(lambda req: seen.append(req["request_method"]) or {"body": "done"})
        d = self.get("/")
        net.flush()
        self.successResultOf(d)
        net.servers[0].graceful_close()  # GOAWAY on its way: the next POST crosses it
        d = self.get("/", "POST", body=b"once")
        net.flush()
        self.assertEqual(self.successResultOf(d)["body"], b"done")
        self.assertEqual(seen, ["get", "post"])  # the rejected one was not processed
        self.assertEqual(len(net.servers), 2)

    def test_a_connection_that_takes_no_request_refuses_it_unsent(self) -> None:
        net = self.start(lambda req: {"body": "ok"})
        d = self.get("/")
        net.flush()
        self.successResultOf(d)
        (conn,) = self.conns()
        conn.close()  # no new requests; it closes
        from aleph_tx.http._client.pool import ClientRequest

        handle = conn.send(ClientRequest(b"GET", b"https", b"example.test", b"/", b"/", []))
        self.assertTrue(handle.refused and handle.retryable)
        self.failureResultOf(handle.head)
