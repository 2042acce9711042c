"""The HTTP/3 server connection against aioquic's own asyncio HTTP/3 client.

The server runs on the real reactor on 127.0.0.1; the client runs its own asyncio
loop in a reactor pool thread (``deferToThread``), bounded by ``asyncio.wait_for``.
Requests go through the server's one handler runner (``exchange.Runner``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")

import pytest_twisted
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamReset
from test_http_client_servers import itest
from twisted.internet import threads
from twisted.internet.defer import Deferred

from aleph_tx import stream as s
from aleph_tx.http._quic.config import server_configuration
from aleph_tx.http._quic.endpoint import QuicPort
from aleph_tx.http._ring.limits import make_options
from aleph_tx.http._server.exchange import Runner
from aleph_tx.http._server.h3 import listen_h3


def runner_for(handler: Callable[[dict[str, Any]], Any], **options: Any) -> Runner:
    """The server's own handler runner for ``handler`` with ``start_server`` options."""
    return Runner(handler, make_options(options))


# -- the server ---------------------------------------------------------------------------------


class H3Server:
    def __init__(self, handler: Callable[..., Any], tls_options: Any, **limits: Any) -> None:
        config = server_configuration(tls_options, idle_timeout=limits.get("idle_timeout"))
        self.port: QuicPort = listen_h3(runner_for(handler, **limits), config, 0, "127.0.0.1")
        self.number = self.port.getHost().port

    def close(self) -> Deferred[None]:
        for driver in list(self.port.endpoint.drivers):
            driver.abort()
        return self.port.stopListening()


def serving(tls_options: Any) -> Iterator[Callable[..., H3Server]]:
    """The body of a ``h3_serve`` fixture: start servers, close them at the end."""
    servers: list[H3Server] = []

    def start(handler: Callable[..., Any], **limits: Any) -> H3Server:
        server = H3Server(handler, tls_options, **limits)
        servers.append(server)
        return server

    yield start
    for server in servers:
        pytest_twisted.blockon(server.close())


# -- aioquic's asyncio client, in a thread ---------------------------------------------------------


class H3Client(QuicConnectionProtocol):
    """aioquic's HTTP/3 client protocol (as its examples/http3_client.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiters: dict[int, asyncio.Future[Any]] = {}
        self.responses: dict[int, list[Any]] = {}
        self.interim: list[int] = []

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.waiters:
            waiter = self.waiters.pop(event.stream_id)
            if not waiter.done():
                waiter.set_exception(ConnectionResetError(f"stream reset {event.error_code:#x}"))
        for ev in self.h3.handle_event(event):
            if isinstance(ev, (h3e.HeadersReceived, h3e.DataReceived)) and ev.stream_id in self.waiters:
                self.responses[ev.stream_id].append(ev)
                if ev.stream_ended:
                    waiter = self.waiters.pop(ev.stream_id)
                    if not waiter.done():
                        waiter.set_result(self.responses.pop(ev.stream_id))

    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            sid,
            [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", path.encode()),
                *(headers or []),
            ],
            end_stream=body is None,
        )
        if body is not None:
            self.h3.send_data(sid, body, end_stream=True)
        waiter = self._loop.create_future()
        self.waiters[sid] = waiter
        self.responses[sid] = []
        self.transmit()
        events = await asyncio.shield(waiter)
        heads = [dict(e.headers) for e in events if isinstance(e, h3e.HeadersReceived)]
        self.interim = [int(h[b":status"]) for h in heads if int(h[b":status"]) < 200]
        head = next(
            e.headers for e in events if isinstance(e, h3e.HeadersReceived) and e.headers[0][1][:1] != b"1"
        )
        status = int(dict(head)[b":status"])
        data = b"".join(e.data for e in events if isinstance(e, h3e.DataReceived))
        return status, {k: v for k, v in head if not k.startswith(b":")}, data


def client_config() -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN))
    config.verify_mode = ssl.CERT_NONE
    return config


def in_thread(port: int, work: Callable[[H3Client], Any], timeout: float = 20) -> Deferred[Any]:
    """Run ``await work(client)`` on a fresh asyncio loop in a pool thread."""

    async def main() -> Any:
        async with connect("127.0.0.1", port, configuration=client_config(), create_protocol=H3Client) as c:
            return await work(c)  # type: ignore[arg-type]

    def run() -> Any:
        return asyncio.run(asyncio.wait_for(main(), timeout))

    return threads.deferToThread(run)


# -- tests ---------------------------------------------------------------------------------------


@itest()
async def test_get_bytes(h3_serve: Callable[..., H3Server]) -> None:
    seen: list[dict[str, Any]] = []

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        return {"status": 200, "headers": {"content-type": "text/plain", "X-Thing": "a"}, "body": b"hello!"}

    server = h3_serve(handler)
    status, headers, body = await in_thread(server.number, lambda c: c.request("GET", "/path?q=1"))
    assert (status, body) == (200, b"hello!")
    assert headers[b"content-type"] == b"text/plain"
    assert headers[b"x-thing"] == b"a"
    assert headers[b"date"].endswith(b" GMT")
    req = seen[0]
    assert req["request_method"] == "get"
    assert req["uri"] == "/path"
    assert req["query_string"] == "q=1"
    assert req["protocol"] == "HTTP/3"
    assert req["scheme"] == "https"
    assert req["headers"]["host"] == "localhost"
    assert req["server_port"] == server.number
    assert req["remote_addr"] == "127.0.0.1"
    assert req["body"] is None


@itest()
async def test_post_body_is_a_stream(h3_serve: Callable[..., H3Server]) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        chunks = await s.collect(req["body"])
        return {"body": b"got " + b"".join(chunks)}

    server = h3_serve(handler)
    status, _, body = await in_thread(server.number, lambda c: c.request("POST", "/", body=b"x" * 100_000))
    assert status == 200
    assert body == b"got " + b"x" * 100_000


@itest()
async def test_many_concurrent_requests_on_one_connection(h3_serve: Callable[..., H3Server]) -> None:
    server = h3_serve(lambda req: {"body": req["uri"]})

    async def work(c: H3Client) -> list[Any]:
        return list(await asyncio.gather(*(c.request("GET", f"/{i}") for i in range(50))))

    results = await in_thread(server.number, work)
    assert [r[2] for r in results] == [f"/{i}".encode() for i in range(50)]


@itest()
async def test_stream_body(h3_serve: Callable[..., H3Server]) -> None:
    def handler(req: dict[str, Any]) -> dict[str, Any]:
        body = s.stream()

        async def produce() -> None:
            for i in range(5):
                await body.put(f"part {i}\n")
            body.close()

        Deferred.fromCoroutine(produce())
        return {"body": body}

    server = h3_serve(handler)
    status, _, body = await in_thread(server.number, lambda c: c.request("GET", "/"))
    assert status == 200
    assert body == b"".join(f"part {i}\n".encode() for i in range(5))


@itest()
async def test_expect_100_continue_gets_an_interim_response(h3_serve: Callable[..., H3Server]) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"body": b"got %d" % len(b"".join(await s.collect(req["body"])))}

    server = h3_serve(handler)

    async def work(c: H3Client) -> Any:
        return await c.request("POST", "/", [(b"expect", b"100-continue")], body=b"abc"), c.interim

    (status, _, body), interim = await in_thread(server.number, work)
    assert (interim, status, body) == ([100], 200, b"got 3")


@itest()
async def test_handler_errors_through_the_runner(h3_serve: Callable[..., H3Server]) -> None:
    # (HEAD is tested with our client: aioquic's own client closes the connection on
    # a HEAD response that announces a length, RFC 9110 §8.6 notwithstanding)
    def handler(req: dict[str, Any]) -> dict[str, Any]:
        if req["uri"] == "/boom":
            raise RuntimeError("boom")
        return {"headers": {"content-type": "text/plain"}, "body": b"twelve bytes"}

    server = h3_serve(handler)

    async def work(c: H3Client) -> Any:
        return await c.request("GET", "/boom"), await c.request("GET", "/")

    (err_status, _, err_body), (status, headers, body) = await in_thread(server.number, work)
    assert (err_status, err_body) == (500, b"Internal Server Error")
    assert (status, headers[b"content-length"], body) == (200, b"12", b"twelve bytes")
