"""``check_stream`` on every stream kind aleph_tx has, with the burst, clogged and dead-peer rules.

Network kinds run on sockets on 127.0.0.1 through a :class:`Proxy` (below), which
acts below the stream: ``burst`` writes more than ``MAX_PENDING`` framed messages
(WebSocket frames, HTTP chunks, SSE events) into the connection in one write, and
``kill_peer`` aborts the connection on both sides. UDP runs on an in-memory datagram
network (a real socket cannot hold a burst: the kernel drops what its buffer cannot).

Run elsewhere with the rules of their time (and kept there): plain memory streams
(``tests/test_stream.py``), TCP and TLS (``tests/test_tcp.py``), WebSocket both ways
(``tests/test_http_ws_streams.py``), HTTP/1.1 request bodies in memory
(``tests/test_http_server_h1.py``). Here every kind runs with every rule that applies.
"""

from __future__ import annotations

import socket as _socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from _faults import ThreadedClock, until, ws_frame
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from aleph_tx import http, tcp, tls, udp
from aleph_tx import stream as s
from aleph_tx.testing import check_stream

BOUND = 60  # seconds for one whole check_stream run


async def bounded(d: Deferred[Any], seconds: float = BOUND) -> Any:
    return await d.addTimeout(seconds, reactor)


def chunked(messages: list[bytes]) -> bytes:
    """``messages`` as HTTP/1.1 chunks (RFC 9112 §7.1), one chunk each."""
    return b"".join(b"%x\r\n%s\r\n" % (len(m), m) for m in messages)


# -- a proxy acting below the streams ------------------------------------------------------------


class _ProxyServer(Protocol):
    """The client's side of one proxied connection (Twisted's port-forward, with flow control)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.peer: _ProxyClient | None = None
        self.early: list[bytes] = []

    def connectionMade(self) -> None:  # noqa: N802
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        self.proxy.conns.append(self)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.target)
        connectProtocol(endpoint, _ProxyClient(self)).addErrback(lambda _: self.abort())

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.peer is None or self.peer.transport is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: N802, B008
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()

    def abort(self) -> None:
        for t in (self.transport, self.peer.transport if self.peer is not None else None):
            if t is not None:
                t.abortConnection()  # type: ignore[attr-defined]


class _ProxyClient(Protocol):
    """The server's side of one proxied connection."""

    def __init__(self, server: _ProxyServer) -> None:
        self.server = server

    def connectionMade(self) -> None:  # noqa: N802
        server = self.server
        server.peer = self
        assert self.transport is not None and server.transport is not None
        # each side's transport pauses the other's reading when its buffer is full
        self.transport.registerProducer(server.transport, True)  # type: ignore[attr-defined]
        server.transport.registerProducer(self.transport, True)  # type: ignore[attr-defined]
        for data in server.early:
            self.transport.write(data)
        server.early = []
        server.transport.resumeProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        assert self.server.transport is not None
        self.server.transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: N802, B008
        if self.server.transport is not None:
            self.server.transport.loseConnection()


class Proxy:
    """A TCP forwarder on 127.0.0.1 in front of ``target``, to act below a stream.

    ``inject(data, to_server)`` writes bytes into the newest connection as if its
    peer had sent them (one write: a burst); ``kill()`` aborts every connection
    through it, both sides at once (a peer gone for good).
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.conns: list[_ProxyServer] = []
        self.listening = reactor.listenTCP(
            0, Factory.forProtocol(lambda: _ProxyServer(self)), interface="127.0.0.1"
        )
        self.port: int = self.listening.getHost().port

    def inject(self, data: bytes, to_server: bool) -> None:
        conn = self.conns[-1]
        target = conn.peer.transport if to_server and conn.peer is not None else conn.transport
        assert target is not None, "the newest proxied connection is not connected"
        target.write(data)

    def kill(self) -> None:
        for conn in self.conns:
            conn.abort()

    async def close(self) -> None:
        self.kill()
        await self.listening.stopListening()


class Running:
    """What a kind started (servers, proxies, pools, requests), ended after the test."""

    def __init__(self) -> None:
        self.servers: list[Any] = []
        self.proxies: list[Proxy] = []
        self.pools: list[Any] = []
        self.requests: list[Deferred[Any]] = []

    def request(self, d: Deferred[Any]) -> Deferred[Any]:
        """Follow a client request; its outcome is the test's business only through the pair."""
        self.requests.append(d)
        d.addErrback(lambda _: None)
        return d

    async def close(self) -> None:
        for p in self.proxies:
            await p.close()
        for srv in self.servers:
            await bounded(srv.close(), 20)
        for d in self.requests:
            await bounded(d, 20)  # every request ended (answered or failed)
        for pool in self.pools:
            pool.close()


@pytest_twisted.async_yield_fixture
async def running() -> AsyncIterator[Running]:
    r = Running()
    yield r
    await r.close()


# -- memory: one call delivering a burst -------------------------------------------------


def _split(msg: bytes) -> list[bytes]:
    """The xform of the burst kind: ``|a|b|c`` is three messages, anything else one."""
    return msg[1:].split(b"|") if msg[:1] == b"|" else [msg]


@pytest_twisted.ensureDeferred
async def test_memory_xform_burst_in_one_call() -> None:
    def make_pair() -> tuple[s.Stream, s.Stream]:
        st = s.stream(xform=_split)
        return st, st

    await bounded(check_stream(make_pair, burst=_put_joined))


def _put_joined(a: s.Stream, b: s.Stream, msgs: list[bytes]) -> None:
    """One put of every message (the put fires once all were taken: not awaited here)."""
    failed: list[Failure] = []
    a.put(b"|" + b"|".join(msgs)).addErrback(failed.append)
    if failed:
        failed[0].raiseException()  # refused at once: the burst fails


@pytest_twisted.ensureDeferred
async def test_memory_mapcat_burst_in_one_call() -> None:
    def make_pair() -> tuple[s.Stream, s.Stream]:
        a = s.stream()
        return a, s.mapcat(_split, a)

    await bounded(check_stream(make_pair, burst=_put_joined))


# -- TCP and TLS ------------------------------------------------------------------------


@pytest.mark.parametrize("use_tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("client_first", [True, False], ids=["client-to-server", "server-to-client"])
@pytest_twisted.ensureDeferred
async def test_tcp_and_tls(running: Running, use_tls: bool, client_first: bool) -> None:
    accepted: list[Any] = []
    ctx = tls.self_signed_context() if use_tls else None
    srv = tcp.start_server(lambda c, i: accepted.append(c), host="127.0.0.1", ssl_context=ctx)
    running.servers.append(srv)
    proxy = Proxy(srv.port)
    running.proxies.append(proxy)
    trust = tls.client_context(trust_roots=ctx.certificate_pem) if ctx is not None else None

    async def make_pair() -> tuple[Any, Any]:
        n = len(accepted)
        client = await bounded(tcp.client("localhost", proxy.port, ssl_context=trust), 10)
        await until(lambda: len(accepted) > n, "the server's side of the connection")
        return (client, accepted[-1]) if client_first else (accepted[-1], client)

    await bounded(check_stream(make_pair, kill_peer=lambda a, b: proxy.kill()))


# -- UDP, on an in-memory datagram network --------------------------------------------------


class _Datagrams(ThreadedClock):
    """A memory reactor with a lossless datagram network: ``listenUDP`` on 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[int, _UDPPort] = {}
        self._next = 20000

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> Any:  # noqa: N802, N803
        if not port:
            self._next += 1
            port = self._next
        p = _UDPPort(self, port, protocol)
        self.ports[port] = p
        protocol.makeConnection(p)
        return p


class _UDPPort:
    """A bound UDP port of :class:`_Datagrams`; while not reading, datagrams wait (the kernel's buffer)."""

    addressFamily = _socket.AF_INET  # noqa: N815 - Twisted's name

    def __init__(self, net: _Datagrams, number: int, protocol: Any) -> None:
        self.net = net
        self.number = number
        self.protocol = protocol
        self.connected = True
        self.reading = True
        self.waiting: deque[tuple[bytes, tuple[str, int]]] = deque()

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("UDP", "127.0.0.1", self.number)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        dest = self.net.ports.get(addr[1])
        if dest is not None:
            dest.deliver(data, ("127.0.0.1", self.number))

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        self.waiting.append((data, addr))
        self.startReading() if self.reading else None

    def stopReading(self) -> None:  # noqa: N802
        self.reading = False

    def startReading(self) -> None:  # noqa: N802
        self.reading = True
        while self.reading and self.waiting:
            self.protocol.datagramReceived(*self.waiting.popleft())

    def stopListening(self) -> None:  # noqa: N802
        if self.connected:
            self.connected = False
            self.net.ports.pop(self.number, None)
            self.protocol.doStop()

    def setBroadcastAllowed(self, enabled: bool) -> None:  # noqa: N802
        pass


@pytest_twisted.ensureDeferred
async def test_udp_datagrams() -> None:
    net = _Datagrams()
    sockets: list[Any] = []

    async def make_pair() -> tuple[s.Stream, s.Stream]:
        sender = await udp.socket(host="127.0.0.1", reactor=net)
        receiver = await udp.socket(host="127.0.0.1", reactor=net)
        sockets.extend((sender, receiver))
        to = receiver.description()["port"]
        a = s.stream(xform=lambda m: [{"host": "127.0.0.1", "port": to, "message": m}])
        s.connect(a, sender)
        return a, s.map(lambda d: d["message"], receiver)

    def burst(a: s.Stream, b: s.Stream, msgs: list[bytes]) -> None:
        port = net.ports[sockets[-1].description()["port"]]
        sender = ("127.0.0.1", sockets[-2].description()["port"])
        for m in msgs:  # one read of a burst: delivered whether or not the port reads
            port.protocol.datagramReceived(m, sender)

    await bounded(check_stream(make_pair, burst=burst, datagram=True))
    for sock in sockets:
        sock.close()


# -- WebSocket, both sides -------------------------------------------------------------------


@pytest.mark.parametrize("client_first", [True, False], ids=["client-to-server", "server-to-client"])
@pytest_twisted.ensureDeferred
async def test_websocket(running: Running, client_first: bool) -> None:
    conns: list[Any] = []

    async def handler(req: dict[str, Any]) -> None:
        conns.append(await http.websocket_connection(req))

    srv = http.start_server(handler, host="127.0.0.1")
    running.servers.append(srv)
    proxy = Proxy(srv.port)
    running.proxies.append(proxy)

    async def make_pair() -> tuple[Any, Any]:
        n = len(conns)
        client = await bounded(http.websocket_client(f"ws://127.0.0.1:{proxy.port}/ws"), 10)
        await until(lambda: len(conns) > n, "the server's side of the WebSocket")
        return (client, conns[-1]) if client_first else (conns[-1], client)

    def burst(a: Any, b: Any, msgs: list[bytes]) -> None:
        # frames from a client are masked (RFC 6455 §5.3), from a server not
        proxy.inject(b"".join(ws_frame(m, mask=client_first) for m in msgs), to_server=client_first)

    await bounded(check_stream(make_pair, burst=burst, kill_peer=lambda a, b: proxy.kill()))


# -- server request bodies on every front ------------------------------------------------------


async def _body_handler(bodies: list[s.Stream], req: dict[str, Any]) -> dict[str, Any]:
    """Keeps the request body as ``b`` of a pair; answers once it drained."""
    body = req["body"]
    bodies.append(body)
    drained: Deferred[None] = Deferred()
    body.on_drained(lambda: drained.callback(None))
    await drained
    return {"body": "ok"}


def _request_body_pairs(
    running: Running, url: str, bodies: list[s.Stream], **client: Any
) -> Callable[[], Any]:
    async def make_pair() -> tuple[s.Stream, s.Stream]:
        # a connection per pair: the pool's reuse and multiplexing are not the subject here
        pool = http.connection_pool(
            keep_alive=False, http_versions=client.get("http_versions", ("http/1.1",))
        )
        running.pools.append(pool)
        n = len(bodies)
        a = s.stream()
        running.request(http.post(url, body=a, pool=pool, **client))
        await until(lambda: len(bodies) > n, "the server's request body")
        return a, bodies[-1]

    return make_pair


@pytest.mark.parametrize("front", ["http/1.1", "h2", "to_resource"])
@pytest_twisted.ensureDeferred
async def test_server_request_bodies(running: Running, front: str) -> None:
    bodies: list[s.Stream] = []

    def handler(req: dict[str, Any]) -> Any:
        return Deferred.fromCoroutine(_body_handler(bodies, req))

    client: dict[str, Any] = {}
    if front == "to_resource":
        port = reactor.listenTCP(0, http.make_site(http.to_resource(handler)), interface="127.0.0.1")
        running.servers.append(_Listening(port))
        target, scheme = port.getHost().port, "http"
    elif front == "h2":
        srv = http.start_server(
            handler, host="127.0.0.1", ssl_context=tls.self_signed_context(), http_versions=("http/1.1", "h2")
        )
        running.servers.append(srv)
        target, scheme = srv.port, "https"
        client = {"http_versions": ("http/1.1", "h2"), "insecure": True}
    else:
        srv = http.start_server(handler, host="127.0.0.1")
        running.servers.append(srv)
        target, scheme = srv.port, "http"
    proxy = Proxy(target)
    running.proxies.append(proxy)
    make_pair = _request_body_pairs(running, f"{scheme}://127.0.0.1:{proxy.port}/", bodies, **client)

    def burst(a: s.Stream, b: s.Stream, msgs: list[bytes]) -> None:
        proxy.inject(chunked(msgs), to_server=True)  # the client sends its body chunked

    await bounded(
        check_stream(
            make_pair,
            burst=None if front == "h2" else burst,  # below TLS: no injecting frames
            kill_peer=lambda a, b: proxy.kill(),
        )
    )


class _Listening:
    """A bare listening port with the ``close()`` of a Server (for a twisted.web Site)."""

    def __init__(self, port: Any) -> None:
        self.port = port

    def close(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        Deferred.fromCoroutine(self._stop()).addBoth(lambda _: d.callback(None))
        return d

    async def _stop(self) -> None:
        await self.port.stopListening()


# -- client response bodies and SSE ------------------------------------------------------------


class _SSEData:
    """Decodes ``text/event-stream`` chunks into the ``data`` of each event (hex-decoded)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self.buffer += chunk
        out = []
        while b"\n\n" in self.buffer:
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            data = [line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")]
            if data:
                out.append(bytes.fromhex(b"".join(data).decode("ascii")))
        return out


def _event(msg: bytes) -> bytes:
    return b"data: " + msg.hex().encode("ascii") + b"\n\n"


@pytest.mark.parametrize("kind", ["response", "sse"])
@pytest_twisted.ensureDeferred
async def test_client_response_bodies(running: Running, kind: str) -> None:
    produced: list[s.Stream] = []

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        if kind == "sse":
            st = s.stream(xform=lambda m: [m.hex()])
            produced.append(st)
            return http.sse(st)
        st = s.stream()
        produced.append(st)
        return {"body": st}

    srv = http.start_server(handler, host="127.0.0.1")
    running.servers.append(srv)
    proxy = Proxy(srv.port)
    running.proxies.append(proxy)
    pool = http.connection_pool(keep_alive=False)
    running.pools.append(pool)

    async def make_pair() -> tuple[s.Stream, s.Stream]:
        resp = await bounded(
            running.request(http.get(f"http://127.0.0.1:{proxy.port}/", as_="stream", pool=pool)), 10
        )
        body = resp["body"]
        return produced[-1], s.mapcat(_SSEData().feed, body) if kind == "sse" else body

    def burst(a: s.Stream, b: s.Stream, msgs: list[bytes]) -> None:
        framed = [_event(m) for m in msgs] if kind == "sse" else msgs
        proxy.inject(chunked(framed), to_server=False)

    await bounded(check_stream(make_pair, burst=burst, kill_peer=lambda a, b: proxy.kill()))


# -- the new rules can fail ------------------------------------------------------------------------


class _CloseDropsWaitingPuts(s.Stream):
    """A broken stream: close() throws away the messages whose put was waiting."""

    def close(self) -> None:
        super().close()
        end = object()
        while not self.drained:
            self.take(end)


class _TryPutNeverWithdraws(s.Stream):
    """A broken stream: a try_put that times out fires timeout_value but still delivers."""

    def try_put(
        self, msg: Any, timeout: float, timeout_value: Any = False, clock: Any = None
    ) -> Deferred[Any]:
        self.put(msg)
        out: Deferred[Any] = Deferred()
        call = (clock or Clock()).callLater(timeout, out.callback, timeout_value)
        out.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return out


def _single(cls: type[s.Stream]) -> Callable[[], tuple[s.Stream, s.Stream]]:
    def make_pair() -> tuple[s.Stream, s.Stream]:
        st = cls()
        return st, st

    return make_pair


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({"make_pair": _single(_CloseDropsWaitingPuts)}, "closing a clogged stream"),
        ({"make_pair": _single(_TryPutNeverWithdraws)}, "never arrives"),
        (
            # puts past MAX_PENDING fail: a burst put one by one is not burst-safe
            {"make_pair": _single(s.Stream), "burst": lambda a, b, msgs: [a.put(m) for m in msgs] and None},
            "arrives whole and in order",
        ),
        ({"make_pair": _single(s.Stream), "kill_peer": lambda a, b: None}, "pending puts fire False"),
    ],
    ids=["clogged-close", "clogged-try-put", "burst", "dead-peer"],
)
@pytest_twisted.ensureDeferred
async def test_check_stream_names_the_broken_new_rule(options: dict[str, Any], rule: str) -> None:
    make_pair = options.pop("make_pair")
    with pytest.raises(AssertionError, match=rule):
        await bounded(check_stream(make_pair, seconds=0.2, **options), 20)
