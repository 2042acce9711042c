"""Loopback integration: start_server on real sockets (127.0.0.1, port 0)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from aleph_tx import stream as s
from aleph_tx._eager import SUPPORTED, EagerServer
from aleph_tx.http import start_server

TIMEOUT = 10


class Raw(protocol.Protocol):
    """Collects everything until the server closes (or ``until`` bytes are seen)."""

    def __init__(self, until: bytes | None = None) -> None:
        self.data = b""
        self.until = until
        self.done: Deferred[bytes] = Deferred()
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data
        if self.until is not None and self.until in self.data and not self.done.called:
            self.done.callback(self.data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if not self.done.called:
            self.done.callback(self.data)
        self.closed.callback(self.data)


def _bounded(d: Deferred[Any], seconds: float = TIMEOUT) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


@defer.inlineCallbacks
def raw(port: int, data: bytes, until: bytes | None = None) -> Generator[Any, Any, Raw]:
    p = Raw(until)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), p)
    if data:
        p.transport.write(data)
    yield _bounded(p.done)
    return p


def hello(req: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello!"}


def test_unknown_option_raises_at_once() -> None:
    with pytest.raises(TypeError, match="max_body"):
        start_server(hello, max_body=3)
    with pytest.raises(ValueError, match="idle_timeout"):
        start_server(hello, idle_timeout=-1)
    with pytest.raises(TypeError, match="callable"):
        start_server("nope")  # type: ignore[arg-type]


@pytest_twisted.inlineCallbacks
def test_hello_keep_alive_and_port() -> Generator[Any, Any, None]:
    server = start_server(hello, port=0, host="127.0.0.1")
    try:
        assert server.port > 0
        p = yield raw(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2, until=b"hello!HTTP")
        yield deferLater(reactor, 0.05, lambda: None)
        assert p.data.count(b"hello!") == 2
        assert p.transport.connected
        p.transport.loseConnection()
    finally:
        yield _bounded(server.close())


@pytest_twisted.inlineCallbacks
def test_eager_write_fast_path_taken() -> Generator[Any, Any, None]:
    assert SUPPORTED
    slow: list[int] = []

    class Counting(tcp.Server):
        def write(self, data: bytes) -> None:
            slow.append(len(data))
            super().write(data)

    class Spy(EagerServer, Counting):
        pass

    server = start_server(hello, port=0, host="127.0.0.1")
    try:
        (port,) = server.ports
        assert port.transport is EagerServer
        port.transport = Spy
        p = yield raw(server.port, b"GET / HTTP/1.1\r\n\r\n" * 20, until=b"hello!" * 1)
        while p.data.count(b"hello!") < 20:
            yield deferLater(reactor, 0.01, lambda: None)
        assert slow == []  # every response went straight to the socket
        p.transport.loseConnection()
    finally:
        yield _bounded(server.close())


@pytest_twisted.inlineCallbacks
def test_eager_write_falls_back_on_big_bodies() -> Generator[Any, Any, None]:
    big = b"x" * (8 << 20)
    server = start_server(lambda req: {"body": big}, port=0, host="127.0.0.1")
    try:
        p = yield raw(server.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert p.data.endswith(big)
    finally:
        yield _bounded(server.close())


@pytest_twisted.inlineCallbacks
def test_streaming_upload_backpressure() -> Generator[Any, Any, None]:
    """A 4 MiB upload to a handler that reads slowly: the server's buffer stays bounded."""
    peak = [0]

    async def slow_reader(req: dict[str, Any]) -> dict[str, Any]:
        body = req["body"]
        total = 0
        while True:
            peak[0] = max(peak[0], body.description()["buffer_weight"])
            chunk = await body.take()
            if chunk is None:
                break
            total += len(chunk)
            await deferLater(reactor, 0.001, lambda: None)
        return {"body": str(total)}

    server = start_server(slow_reader, port=0, host="127.0.0.1")
    try:
        size = 4 << 20
        p = Raw()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), p)
        p.transport.write(b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size)
        p.transport.write(b"y" * size)
        data = yield _bounded(p.closed, 30)
        assert data.endswith(str(size).encode())
        # the body buffer (64 KiB) plus at most one read (256 KiB, EagerServer.bufferSize)
        assert peak[0] <= 65536 + 262144
    finally:
        yield _bounded(server.close())


@pytest_twisted.inlineCallbacks
def test_abandoned_streaming_responses_leak_nothing() -> Generator[Any, Any, None]:
    bodies: weakref.WeakSet[s.Stream] = weakref.WeakSet()
    closed = [0]

    def streaming(req: dict[str, Any]) -> dict[str, Any]:
        body = s.stream()
        bodies.add(body)
        body.on_closed(lambda: closed.__setitem__(0, closed[0] + 1))
        body.put(b"first")
        return {"body": body}

    server = start_server(streaming, port=0, host="127.0.0.1")
    try:
        n = 1000

        @defer.inlineCallbacks
        def one() -> Generator[Any, Any, None]:
            p = Raw(until=b"first")
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), p)
            p.transport.write(b"GET / HTTP/1.1\r\n\r\n")
            yield _bounded(p.done)
            p.transport.abortConnection()

        for _i in range(0, n, 50):
            yield defer.gatherResults([one() for _ in range(50)])
        for _ in range(200):
            if server.connection_count == 0 and closed[0] == n:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        assert server.connection_count == 0
        assert closed[0] == n
        gc.collect()
        assert len(bodies) == 0
    finally:
        yield _bounded(server.close())


@pytest_twisted.inlineCallbacks
def test_graceful_close_finishes_in_flight() -> Generator[Any, Any, None]:
    gate: Deferred[None] = Deferred()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        await gate
        return {"body": "finished"}

    server = start_server(slow, port=0, host="127.0.0.1", shutdown_timeout=5)
    p = Raw()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), p)
    p.transport.write(b"GET / HTTP/1.1\r\n\r\n")
    while server.connection_count == 0:
        yield deferLater(reactor, 0.01, lambda: None)
    yield deferLater(reactor, 0.05, lambda: None)
    closing = server.close()
    assert not closing.called
    gate.callback(None)
    data = yield _bounded(p.closed)
    assert data.endswith(b"finished") and b"connection: close" in data
    yield _bounded(closing)
    assert server.closed


@pytest_twisted.inlineCallbacks
def test_shutdown_timeout_cuts() -> Generator[Any, Any, None]:
    server = start_server(lambda req: Deferred(), port=0, host="127.0.0.1", shutdown_timeout=0.2)
    p = Raw()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), p)
    p.transport.write(b"GET / HTTP/1.1\r\n\r\n")
    while server.connection_count == 0:
        yield deferLater(reactor, 0.01, lambda: None)
    yield _bounded(server.close(), 5)
    data = yield _bounded(p.closed)
    assert data == b""


@pytest_twisted.inlineCallbacks
def test_idle_timeout_real_clock() -> Generator[Any, Any, None]:
    server = start_server(hello, port=0, host="127.0.0.1", idle_timeout=0.2)
    try:
        p = Raw()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), p)
        data = yield _bounded(p.closed, 5)
        assert data == b""
    finally:
        yield _bounded(server.close())


@pytest_twisted.inlineCallbacks
def test_listen_endpoint_string() -> Generator[Any, Any, None]:
    server = start_server(hello, listen=["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"])
    try:
        assert len(server.ports) == 2
        for port in server.ports:
            p = yield raw(port.getHost().port, b"GET / HTTP/1.0\r\n\r\n")
            assert p.data.endswith(b"hello!")
    finally:
        yield _bounded(server.close())


@pytest_twisted.inlineCallbacks
def test_tls_ssl_context() -> Generator[Any, Any, None]:
    from twisted.internet import ssl

    from aleph_tx.tls import self_signed_context

    seen: list[str] = []

    def h(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req["scheme"])
        return {"body": "secure " + "z" * 100_000}

    server = start_server(h, port=0, host="127.0.0.1", ssl_context=self_signed_context())
    try:
        p = Raw()
        options = ssl.CertificateOptions(verify=False)
        yield connectProtocol(SSL4ClientEndpoint(reactor, "127.0.0.1", server.port, options), p)
        p.transport.write(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = yield _bounded(p.closed)
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"z" * 100_000)
        assert seen == ["https"]
    finally:
        yield _bounded(server.close())


@pytest_twisted.inlineCallbacks
def test_executor_thread() -> Generator[Any, Any, None]:
    import threading

    main = threading.current_thread()
    seen: list[bool] = []

    def h(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(threading.current_thread() is main)
        return {"body": "threaded"}

    server = start_server(h, port=0, host="127.0.0.1", executor="thread")
    try:
        p = yield raw(server.port, b"GET / HTTP/1.0\r\n\r\n")
        assert p.data.endswith(b"threaded") and seen == [False]
    finally:
        yield _bounded(server.close())
