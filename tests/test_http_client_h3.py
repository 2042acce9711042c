"""``http.request`` over HTTP/3 on real UDP sockets (127.0.0.1): against our server
(``start_server`` with ``"h3"``) and hypercorn's; ``alt-svc`` discovery; the fall
back to TCP when UDP is blocked.

Where time matters (``ma``, the handshake timeout, how long an alternative stays
broken) the requests run on a ``Clock`` while the network runs on the reactor.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")

import pytest_twisted
from test_http_client_servers import itest, sleep
from test_http_h3_peers import hypercorn  # noqa: F401 (a fixture)
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock

from aleph_tx import http, tls
from aleph_tx import stream as s
from aleph_tx.errors import ConnectionTimeout
from aleph_tx.http import ConnectionPool
from aleph_tx.http._client.altsvc import BROKEN_FOR

TLS = tls.self_signed_context()


@pytest.fixture
def pools() -> Iterator[Callable[..., ConnectionPool]]:
    made: list[ConnectionPool] = []

    def make(**options: Any) -> ConnectionPool:
        made.append(http.connection_pool(**options))
        return made[-1]

    yield make
    for pool in made:
        pytest_twisted.blockon(pool.close().addTimeout(5, _reactor()))


@pytest.fixture
def servers() -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def start(handler: Callable[[dict[str, Any]], Any], **options: Any) -> Any:
        options.setdefault("http_versions", ("http/1.1", "h2", "h3"))
        started.append(http.start_server(handler, port=0, host="127.0.0.1", ssl_context=TLS, **options))
        return started[-1]

    yield start
    for server in started:
        pytest_twisted.blockon(server.close())


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def protocol(req: dict[str, Any]) -> dict[str, Any]:
    return {"headers": {"content-type": "text/plain"}, "body": req["protocol"]}


# -- our client against our server ---------------------------------------------------------------


@itest(timeout=30)
async def test_h3_only_against_our_server(
    servers: Callable[..., Any], pools: Callable[..., ConnectionPool], tmp_path: Path
) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        if req["uri"] == "/upload":
            digest = hashlib.sha256()
            while (chunk := await req["body"].take()) is not None:
                digest.update(chunk)
            return {"body": digest.hexdigest()}
        if req["uri"] == "/download":
            return {"body": b"d" * (8 << 20)}
        if req["uri"] == "/redirect":
            return {"status": 307, "headers": {"location": "/upload"}}
        return {"body": f"{req['protocol']} {req['request_method']} {req['uri']}"}

    server = servers(handler, compression=True)
    pool = pools(http_versions=("h3",))
    url = f"https://127.0.0.1:{server.port}"
    resp = await http.get(url + "/a", pool=pool, insecure=True, as_="text")
    assert resp["body"] == "HTTP/3 get /a"
    data = bytes(range(256)) * (12 << 10)  # 3 MiB
    (tmp_path / "up.bin").write_bytes(data)
    resp = await http.post(url + "/redirect", pool=pool, insecure=True, body=tmp_path / "up.bin", as_="text")
    assert resp["body"] == hashlib.sha256(data).hexdigest()  # the file went twice, streamed
    resp = await http.get(url + "/download", pool=pool, insecure=True, as_="stream")
    n = 0
    while (chunk := await resp["body"].take()) is not None:
        n += len(chunk)
    assert n == 8 << 20
    assert resp["headers"]["content-encoding"] == "gzip"  # decoded on the way
    ctx = tls.client_context(trust_roots=TLS.certificate_pem)
    resp = await http.get(
        f"https://localhost:{server.port}/b", ssl_context=ctx, http_versions=("h3",), pool=pool
    )
    assert resp["body"] == b"HTTP/3 get /b"
    desc = pool.description()
    assert (desc["h3_connections"], desc["connections_opened"], desc["active"]) == (2, 2, 0)


@itest(timeout=30)
async def test_many_concurrent_requests_on_one_connection(
    servers: Callable[..., Any], pools: Callable[..., ConnectionPool]
) -> None:
    server = servers(lambda req: {"body": req["uri"]})
    pool = pools(http_versions=("h3",), connections_per_host=1)
    url = f"https://127.0.0.1:{server.port}"
    responses = await gatherResults([http.get(f"{url}/{i}", pool=pool, insecure=True) for i in range(400)])
    assert [r["body"] for r in responses] == [f"/{i}".encode() for i in range(400)]
    assert pool.description()["connections_opened"] == 1


@itest(timeout=30)
async def test_server_close_sends_goaway_and_the_pool_forgets(
    servers: Callable[..., Any], pools: Callable[..., ConnectionPool]
) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        await sleep(0.2)
        return {"body": "whole"}

    server = servers(handler, shutdown_timeout=5)
    pool = pools(http_versions=("h3",))
    d = http.get(f"https://127.0.0.1:{server.port}/", pool=pool, insecure=True)
    await sleep(0.1)
    closing = server.close()
    assert (await d)["body"] == b"whole"
    await closing
    assert pool.description()["total"] == 0


# -- alt-svc -------------------------------------------------------------------------------------------


@itest(timeout=30)
async def test_alt_svc_discovery_until_max_age(
    servers: Callable[..., Any], pools: Callable[..., ConnectionPool]
) -> None:
    server = servers(protocol)
    pool = pools(http_versions=("http/1.1", "h3"))
    clock = Clock()
    url = f"https://127.0.0.1:{server.port}/"

    async def get() -> str:
        resp = await http.get(url, pool=pool, insecure=True, clock=clock, as_="text")
        return str(resp["body"])

    assert [await get() for _ in range(3)] == ["HTTP/1.1", "HTTP/3", "HTTP/3"]
    assert pool.description()["h3_connections"] == 1
    clock.advance(86400)  # ma=86400 ran out
    assert [await get(), await get()] == ["HTTP/1.1", "HTTP/3"]
    assert pool.description()["connections_opened"] == 2  # one TCP, one QUIC


@itest(timeout=30)
async def test_alt_svc_ma_and_clear(
    servers: Callable[..., Any], pools: Callable[..., ConnectionPool]
) -> None:
    advertised = ['h3=":{port}"; ma=5']

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"headers": {"alt-svc": advertised[0].format(port=box[0])}, "body": req["protocol"]}

    box: list[int] = []
    server = servers(handler)
    box.append(server.port)
    pool = pools(http_versions=("h2", "http/1.1", "h3"))
    clock = Clock()
    url = f"https://127.0.0.1:{server.port}/"

    async def get() -> str:
        resp = await http.get(url, pool=pool, insecure=True, clock=clock, as_="text")
        return str(resp["body"])

    assert [await get(), await get()] == ["HTTP/2", "HTTP/3"]
    clock.advance(5)
    assert [await get(), await get()] == ["HTTP/2", "HTTP/3"]
    advertised[0] = "clear"
    assert [await get(), await get()] == ["HTTP/3", "HTTP/2"]  # the answer to the first said clear


# -- falling back to TCP ---------------------------------------------------------------------------------


class UdpSink:
    """A UDP port that takes every datagram and answers none (QUIC blocked)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sources: list[Any] = []

    def read(self) -> int:
        """Datagrams received since the last call."""
        n = 0
        while True:
            try:
                _, source = self.sock.recvfrom(65536)
            except BlockingIOError:
                return n
            n += 1
            if source not in self.sources:
                self.sources.append(source)

    async def wait(self) -> None:
        for _ in range(500):
            if self.read():
                return
            await sleep(0.01)
        raise AssertionError("no datagram arrived")


@pytest.fixture
def sink() -> Iterator[UdpSink]:
    udp = UdpSink()
    yield udp
    udp.sock.close()


@itest(timeout=30)
async def test_fallback_when_the_quic_handshake_times_out(
    servers: Callable[..., Any], pools: Callable[..., ConnectionPool], sink: UdpSink
) -> None:
    def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"headers": {"alt-svc": f'h3=":{sink.port}"; ma=1000000'}, "body": req["protocol"]}

    server = servers(handler, http_versions=("http/1.1",))
    pool = pools(http_versions=("http/1.1", "h3"))
    clock = Clock()
    url = f"https://127.0.0.1:{server.port}/"

    def get() -> Deferred[dict[str, Any]]:
        return http.get(url, pool=pool, insecure=True, clock=clock, connection_timeout=5)

    assert (await get())["body"] == b"HTTP/1.1"
    d = get()
    await sink.wait()  # the QUIC handshake started
    assert not d.called
    clock.advance(5)  # connection_timeout
    assert (await d)["body"] == b"HTTP/1.1"
    sink.read()
    assert (await get())["body"] == b"HTTP/1.1"
    await sleep(0.1)
    assert sink.read() == 0  # broken: not tried again
    clock.advance(BROKEN_FOR)
    d = get()
    await sink.wait()  # tried again after 5 minutes
    clock.advance(5)
    assert (await d)["body"] == b"HTTP/1.1"
    sink.read()
    clock.advance(BROKEN_FOR)
    assert (await get())["body"] == b"HTTP/1.1"
    await sleep(0.1)
    assert sink.read() == 0  # broken twice as long after a second failure
    clock.advance(BROKEN_FOR)
    # requests made while the handshake is attempted share it and all fall back
    sink.sources.clear()
    ds = [get() for _ in range(5)]
    await sink.wait()
    clock.advance(5)
    assert [r["body"] for r in await gatherResults(ds)] == [b"HTTP/1.1"] * 5
    assert len(sink.sources) == 1  # one QUIC connection was attempted, not five


@itest(timeout=30)
async def test_fallback_in_real_time(
    servers: Callable[..., Any], pools: Callable[..., ConnectionPool], sink: UdpSink
) -> None:
    def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"headers": {"alt-svc": f'h3=":{sink.port}"'}, "body": req["protocol"]}

    server = servers(handler, http_versions=("http/1.1",))
    pool = pools(http_versions=("http/1.1", "h3"))
    url = f"https://127.0.0.1:{server.port}/"
    await http.get(url, pool=pool, insecure=True)
    started = time.monotonic()
    resp = await http.get(url, pool=pool, insecure=True, connection_timeout=0.3)
    took = time.monotonic() - started
    assert resp["body"] == b"HTTP/1.1"
    assert 0.3 <= took < 2, took
    assert sink.read() > 0


@itest(timeout=30)
async def test_h3_only_does_not_fall_back(sink: UdpSink, pools: Callable[..., ConnectionPool]) -> None:
    pool = pools(http_versions=("h3",))
    with pytest.raises(ConnectionTimeout):
        await http.get(f"https://127.0.0.1:{sink.port}/", pool=pool, insecure=True, connection_timeout=0.2)
    assert pool.description()["total"] == 0


# -- hypercorn's HTTP/3 server ---------------------------------------------------------------------------


@itest(timeout=60)
async def test_against_hypercorn(hypercorn: int, pools: Callable[..., ConnectionPool]) -> None:  # noqa: F811
    pool = pools(http_versions=("h3",))
    url = f"https://127.0.0.1:{hypercorn}"
    resp = None
    for _ in range(20):  # its QUIC socket may come up just after the log line
        try:
            resp = await http.get(url + "/x", pool=pool, insecure=True, connection_timeout=1)
            break
        except ConnectionTimeout:
            await sleep(0.1)
    assert resp is not None
    assert (resp["headers"]["x-peer"], resp["body"]) == ("hypercorn", b"GET /x 0 3")
    resp = await http.post(url + "/y", pool=pool, insecure=True, body=b"q" * 500_000)
    assert resp["body"] == b"POST /y 500000 3"
    upload = s.from_iterable([b"i" * 65536] * 20)
    resp = await http.put(url + "/z", pool=pool, insecure=True, body=upload)
    assert resp["body"] == b"PUT /z 1310720 3"
    responses = await gatherResults([http.get(f"{url}/{i}", pool=pool, insecure=True) for i in range(30)])
    assert [r["body"] for r in responses] == [f"GET /{i} 0 3".encode() for i in range(30)]
    resp = await http.get(url + "/big", pool=pool, insecure=True, as_="stream")
    n = 0
    while (chunk := await resp["body"].take()) is not None:
        n += len(chunk)
    assert n == 4 << 20
    assert pool.description()["connections_opened"] == 1
