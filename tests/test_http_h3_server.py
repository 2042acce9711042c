"""The HTTP/3 server connection against aioquic's own asyncio HTTP/3 client.

The server runs on the real reactor on 127.0.0.1; the client runs its own asyncio
loop in a reactor pool thread (``deferToThread``), bounded by ``asyncio.wait_for``.
Until the shared handler runner lands, :func:`run_with` below is a test-only runner
(a handler returning a dict with a bytes, ``str``, ``None`` or ``Stream`` body).
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
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from aleph_tx import stream as s
from aleph_tx import tls
from aleph_tx._adapter import Pump
from aleph_tx._chunks import ChunkSource, SourceKind, to_chunk
from aleph_tx.http._quic.config import server_configuration
from aleph_tx.http._quic.endpoint import QuicPort
from aleph_tx.http._server.h3 import ResponseSink, listen_h3

# -- a test-only handler runner -----------------------------------------------------------


class _BodySink:
    """A Pump's sink: body bytes to the response sink."""

    def __init__(self, sink: ResponseSink) -> None:
        self.sink = sink

    def write(self, data: bytes) -> None:
        self.sink.write(data)

    def pump_done(self) -> None:
        self.sink.unregisterProducer()
        self.sink.finish()

    def pump_failed(self, failure: Failure) -> None:
        self.sink.unregisterProducer()
        self.sink.abort()


def run_with(handler: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any], ResponseSink], None]:
    """``run(request, sink)`` for ``handler`` (dict responses; bytes/str/None/Stream bodies)."""

    def run(request: dict[str, Any], sink: ResponseSink) -> None:
        d = maybeDeferred(handler, request)
        sink.on_lost(d.cancel)

        def respond(resp: dict[str, Any] | None) -> None:
            resp = resp or {"status": 204}
            lines = [(k.encode(), v.encode()) for k, v in (resp.get("headers") or {}).items()]
            body = resp.get("body")
            if body is None or isinstance(body, (bytes, str)):
                data = b"" if body is None else to_chunk(body)
                sink.start(resp.get("status", 200), [*lines, (b"content-length", b"%d" % len(data))])
                sink.write(data)
                sink.finish()
                return
            pump = Pump(ChunkSource(SourceKind.STREAM, body, on_close=body.close), _BodySink(sink))
            sink.registerProducer(pump, True)
            sink.start(resp.get("status", 200), lines)
            pump.start()

        def failed(f: Failure) -> None:
            if sink.started:
                sink.abort()
            else:
                sink.start(500, [(b"content-length", b"0")])
                sink.finish()

        d.addCallbacks(respond, failed)

    return run


# -- the server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_options() -> Any:
    return tls.self_signed_context()


class H3Server:
    def __init__(self, handler: Callable[..., Any], tls_options: Any, **limits: Any) -> None:
        config = server_configuration(tls_options, idle_timeout=limits.pop("idle_timeout", None))
        self.port: QuicPort = listen_h3(run_with(handler), config, 0, "127.0.0.1", **limits)
        self.number = self.port.getHost().port

    def close(self) -> Deferred[None]:
        for driver in list(self.port.endpoint.drivers):
            driver.abort()
        return self.port.stopListening()


def serving(tls_options: Any) -> Iterator[Callable[..., H3Server]]:
    """The body of a ``serve`` fixture: start servers, close them at the end."""
    servers: list[H3Server] = []

    def start(handler: Callable[..., Any], **limits: Any) -> H3Server:
        server = H3Server(handler, tls_options, **limits)
        servers.append(server)
        return server

    yield start
    for server in servers:
        pytest_twisted.blockon(server.close())


@pytest.fixture
def serve(tls_options: Any) -> Iterator[Callable[..., H3Server]]:
    yield from serving(tls_options)


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
async def test_get_bytes(serve: Callable[..., H3Server]) -> None:
    seen: list[dict[str, Any]] = []

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        return {"status": 200, "headers": {"content-type": "text/plain", "X-Thing": "a"}, "body": b"hello!"}

    server = serve(handler)
    status, headers, body = await in_thread(server.number, lambda c: c.request("GET", "/path?q=1"))
    assert (status, body) == (200, b"hello!")
    assert headers[b"content-type"] == b"text/plain"
    assert headers[b"x-thing"] == b"a"
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
async def test_post_body_is_a_stream(serve: Callable[..., H3Server]) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        chunks = await s.collect(req["body"])
        return {"body": b"got " + b"".join(chunks)}

    server = serve(handler)
    status, _, body = await in_thread(server.number, lambda c: c.request("POST", "/", body=b"x" * 100_000))
    assert status == 200
    assert body == b"got " + b"x" * 100_000


@itest()
async def test_many_concurrent_requests_on_one_connection(serve: Callable[..., H3Server]) -> None:
    server = serve(lambda req: {"body": req["uri"]})

    async def work(c: H3Client) -> list[Any]:
        return list(await asyncio.gather(*(c.request("GET", f"/{i}") for i in range(50))))

    results = await in_thread(server.number, work)
    assert [r[2] for r in results] == [f"/{i}".encode() for i in range(50)]


@itest()
async def test_stream_body(serve: Callable[..., H3Server]) -> None:
    def handler(req: dict[str, Any]) -> dict[str, Any]:
        body = s.stream()

        async def produce() -> None:
            for i in range(5):
                await body.put(f"part {i}\n")
            body.close()

        Deferred.fromCoroutine(produce())
        return {"body": body}

    server = serve(handler)
    status, _, body = await in_thread(server.number, lambda c: c.request("GET", "/"))
    assert status == 200
    assert body == b"".join(f"part {i}\n".encode() for i in range(5))


@itest()
async def test_interim_response_then_the_head(tls_options: Any) -> None:
    def run(request: dict[str, Any], sink: ResponseSink) -> None:
        sink.inform(103, [(b"link", b"</style.css>; rel=preload")])
        sink.start(200, [(b"content-length", b"2")])
        sink.write(b"ok")
        sink.finish()

    config = server_configuration(tls_options)
    port = listen_h3(run, config, 0, "127.0.0.1")
    try:

        async def work(c: H3Client) -> Any:
            return await c.request("GET", "/"), c.interim

        (status, _, body), interim = await in_thread(port.getHost().port, work)
        assert (interim, status, body) == ([103], 200, b"ok")
    finally:
        await port.stopListening()
