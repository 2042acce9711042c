"""The client's four timeouts, cancellation and streaming backpressure.

Each timeout is tested twice: with a ``Clock`` (the timer is armed, fires the right
class, and no delayed call is left behind) and with real time against a server
that stalls at that stage.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
import pytest_twisted
from test_http_client_servers import RawServer, StallAccept, WebServer, itest, sleep
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import (
    ConnectionTimeout,
    PoolTimeout,
    ReadTimeout,
    RequestTimeout,
    TimeoutError,
)
from aleph_tx.http import ConnectionPool


@pytest.fixture
def web() -> Iterator[WebServer]:
    w = WebServer()
    yield w
    pytest_twisted.blockon(w.close())


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    p = http.connection_pool()
    yield p
    p.close()


async def _wait_until(pred: object, timeout: float = 5.0) -> None:
    waited = 0.0
    while not pred():  # type: ignore[operator]
        await sleep(0.01)
        waited += 0.01
        assert waited < timeout, f"condition never became true {pred}"


def _no_leak(pool: ConnectionPool) -> None:
    d = pool.description()
    assert (d["active"], d["waiters"]) == (0, 0), d


def test_timeout_classes() -> None:
    for cls in (PoolTimeout, ConnectionTimeout, RequestTimeout, ReadTimeout):
        assert issubclass(cls, TimeoutError) and issubclass(cls, builtins_timeout())


def builtins_timeout() -> type:
    import builtins

    return builtins.TimeoutError


# -- pool_timeout ---------------------------------------------------------------------------


@itest()
async def test_pool_timeout_clock(web: WebServer) -> None:
    p = http.connection_pool(connections_per_host=1)
    first = http.get(web.url + "/stall", pool=p)
    await _wait_until(lambda: web.site_resource.pending)
    clock = Clock()
    second = http.get(web.url + "/echo", pool=p, pool_timeout=5, clock=clock)
    assert p.description()["waiters"] == 1
    clock.advance(4.9)
    assert not second.called
    clock.advance(0.2)
    with pytest.raises(PoolTimeout):
        await second
    assert clock.getDelayedCalls() == []
    assert p.description()["waiters"] == 0
    first.cancel()
    with pytest.raises(CancelledError):
        await first
    _no_leak(p)


@itest()
async def test_pool_timeout_not_hit_when_slot_frees(web: WebServer) -> None:
    p = http.connection_pool(connections_per_host=1)
    clock = Clock()
    first = http.get(web.url + "/drip?n=2&every=0.05", pool=p)
    second = http.get(web.url + "/echo", pool=p, pool_timeout=5, clock=clock)
    assert (await first)["body"] == b"chunkchunk"
    r = await second
    assert r["status"] == 200
    assert clock.getDelayedCalls() == []
    assert p.description()["connections_opened"] == 1


@itest()
async def test_pool_timeout_real(web: WebServer) -> None:
    p = http.connection_pool(connections_per_host=2)
    stalled = [http.get(web.url + "/stall", pool=p) for _ in range(2)]
    with pytest.raises(PoolTimeout):
        await http.get(web.url + "/echo", pool=p, pool_timeout=0.1)
    for d in stalled:
        d.cancel()
        with pytest.raises(CancelledError):
            await d
    r = await http.get(web.url + "/echo", pool=p, pool_timeout=1)
    assert r["status"] == 200
    _no_leak(p)


# -- connection_timeout ------------------------------------------------------------------------


@itest()
async def test_connection_timeout_clock() -> None:
    stall = StallAccept()
    p = http.connection_pool()
    try:
        clock = Clock()
        d = http.get(f"http://127.0.0.1:{stall.port}/", pool=p, connection_timeout=3, clock=clock)
        await sleep(0.05)
        assert not d.called
        clock.advance(3)
        with pytest.raises(ConnectionTimeout):
            await d
        assert clock.getDelayedCalls() == []
        assert p.description()["total"] == 0
    finally:
        stall.close()


@itest()
async def test_connection_timeout_real_tcp_and_tls_handshake(pool: ConnectionPool) -> None:
    stall = StallAccept()
    try:
        with pytest.raises(ConnectionTimeout):
            await http.get(f"http://127.0.0.1:{stall.port}/", pool=pool, connection_timeout=0.1)
    finally:
        stall.close()
    # TCP accepted, but the server never answers the TLS ClientHello
    silent = RawServer(lambda n: None)
    try:
        url = silent.url.replace("http://", "https://")
        with pytest.raises(ConnectionTimeout):
            await http.get(url, pool=pool, connection_timeout=0.2, insecure=True)
        await _wait_until(lambda: pool.description()["total"] == 0)
    finally:
        await silent.close()


# -- request_timeout -------------------------------------------------------------------------------


@itest()
async def test_request_timeout_clock(web: WebServer, pool: ConnectionPool) -> None:
    clock = Clock()
    d = http.get(web.url + "/stall", pool=pool, request_timeout=2, clock=clock)
    await _wait_until(lambda: web.site_resource.pending)
    clock.advance(2)
    with pytest.raises(RequestTimeout):
        await d
    assert clock.getDelayedCalls() == []
    _no_leak(pool)
    assert pool.description()["idle"] == 0  # that connection is not reused
    # a request answered in time leaves no timer behind
    r = await http.get(web.url + "/echo", pool=pool, request_timeout=2, clock=clock)
    assert r["status"] == 200
    assert clock.getDelayedCalls() == []


@itest()
async def test_request_timeout_real(pool: ConnectionPool) -> None:
    raw = RawServer(lambda n: None)
    try:
        with pytest.raises(RequestTimeout):
            await http.get(raw.url + "/", pool=pool, request_timeout=0.1)
        _no_leak(pool)
        await _wait_until(lambda: raw.lost == 1)
    finally:
        await raw.close()


# -- read_timeout ------------------------------------------------------------------------------------


@itest()
async def test_read_timeout_clock(web: WebServer, pool: ConnectionPool) -> None:
    clock = Clock()
    d = http.get(web.url + "/stall-body", pool=pool, read_timeout=1, clock=clock)
    await _wait_until(lambda: web.site_resource.pending)
    await sleep(0.05)
    clock.advance(0.9)
    assert not d.called
    clock.advance(0.1)
    with pytest.raises(ReadTimeout):
        await d
    assert clock.getDelayedCalls() == []
    _no_leak(pool)
    r = await http.get(web.url + "/drip?n=3&every=0.01", pool=pool, read_timeout=1, clock=clock)
    assert r["body"] == b"chunk" * 3
    assert clock.getDelayedCalls() == []


@itest()
async def test_read_timeout_real_bytes_and_stream(web: WebServer, pool: ConnectionPool) -> None:
    with pytest.raises(ReadTimeout):
        await http.get(web.url + "/stall-body", pool=pool, read_timeout=0.1)
    r = await http.get(web.url + "/stall-body", pool=pool, read_timeout=0.1, as_="stream")
    chunks = await s.collect(r["body"])
    assert b"".join(chunks) == b"partial"
    assert isinstance(r["body"].description()["error"], ReadTimeout)
    # a drip slower overall than read_timeout but never stalling that long is fine
    r = await http.get(web.url + "/drip?n=5&every=0.05", pool=pool, read_timeout=0.5)
    assert r["body"] == b"chunk" * 5
    _no_leak(pool)


@itest()
async def test_slow_reader_is_not_a_read_timeout(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/big?n=2000000", pool=pool, read_timeout=0.3, as_="stream")
    got = 0
    for _ in range(3):
        await sleep(0.4)  # the reader stalls, not the network
        got += len(await r["body"].take(b""))
    rest = await s.collect(r["body"])
    got += sum(len(c) for c in rest)
    assert got == 2_000_000
    assert "error" not in r["body"].description()


# -- cancellation --------------------------------------------------------------------------------------


@itest()
async def test_cancel_at_each_stage_frees_the_slot(web: WebServer) -> None:
    p = http.connection_pool(connections_per_host=1)
    # waiting for headers
    d = http.get(web.url + "/stall", pool=p)
    await _wait_until(lambda: web.site_resource.pending)
    # waiting in the pool
    waiting = http.get(web.url + "/echo", pool=p)
    assert p.description()["waiters"] == 1
    waiting.cancel()
    assert p.description()["waiters"] == 0
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    with pytest.raises(CancelledError):
        await waiting
    _no_leak(p)
    # reading the body
    d = http.get(web.url + "/stall-body", pool=p, as_="bytes")
    await _wait_until(lambda: len(web.site_resource.pending) == 2)
    await sleep(0.05)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    _no_leak(p)
    # connecting
    stall = StallAccept()
    try:
        d = http.get(f"http://127.0.0.1:{stall.port}/", pool=p)
        await sleep(0.02)
        d.cancel()
        with pytest.raises(CancelledError):
            await d
    finally:
        stall.close()
    _no_leak(p)
    assert p.description()["total"] <= 1
    r = await http.get(web.url + "/echo", pool=p)
    assert r["status"] == 200


@itest(timeout=60)
async def test_thousand_cancelled_requests_leave_no_leak(web: WebServer) -> None:
    p = http.connection_pool(connections_per_host=8)
    ds = [http.get(web.url + "/stall", pool=p) for _ in range(1000)]
    await _wait_until(lambda: len(web.site_resource.pending) == 8)
    assert p.description()["waiters"] == 992
    for d in ds:
        d.cancel()
    for d in ds:
        with pytest.raises(CancelledError):
            await d
    _no_leak(p)
    await _wait_until(lambda: p.description()["total"] == 0)
    # and cancelled at random stages, one after the other
    for i in range(200):
        d = http.get(web.url + "/echo", pool=p)
        if i % 3:
            await sleep(0)
        d.cancel()
        try:
            await d
        except CancelledError:
            pass
    _no_leak(p)
    assert p.description()["total"] <= 8
    r = await http.get(web.url + "/echo", pool=p)
    assert r["status"] == 200
    _no_leak(p)


@itest()
async def test_closing_the_body_stream_aborts_the_connection(web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(web.url + "/big?n=5000000", pool=pool, as_="stream")
    first = await r["body"].take()
    assert first
    r["body"].close()
    _no_leak(pool)
    assert pool.description()["idle"] == 0


# -- streaming backpressure -----------------------------------------------------------------------


@itest(timeout=60)
async def test_streamed_download_memory_bounded(web: WebServer, pool: ConnectionPool) -> None:
    total = 32 * 1024 * 1024
    r = await http.get(web.url + f"/big?n={total}", pool=pool, as_="stream")
    body = r["body"]
    got = 0
    max_buffered = 0
    max_in_flight = 0
    for _ in range(40):  # read slowly
        chunk = await body.take()
        got += len(chunk)
        desc = body.description()
        max_buffered = max(max_buffered, desc["buffer_count"] + desc["pending_puts"])
        await sleep(0.005)
        max_in_flight = max(max_in_flight, web.site_resource.stats["written"] - got)
    # the stream holds at most one chunk, and the connection is not being read
    # while the reader stalls: the server is held back by the paused socket (what
    # it wrote beyond what we read sits in kernel socket buffers only)
    assert max_buffered <= 1
    from twisted.internet import reactor

    await sleep(0.05)
    assert body.description()["pending_puts"] == 1
    # the client's socket (the one whose peer is the server's port) is not being read
    assert not [r for r in reactor.getReaders() if _peer_port(r) == web.number]
    # loopback buffers autotune up to net.ipv4.tcp_rmem + tcp_wmem maxima
    kernel = sum(int(pathlib.Path(f"/proc/sys/net/ipv4/tcp_{k}mem").read_text().split()[2]) for k in "rw")
    assert max_in_flight <= kernel + 1024 * 1024, max_in_flight
    async for chunk in body:
        got += len(chunk)
    assert got == total
    await _wait_until(lambda: pool.description()["idle"] == 1)


def _peer_port(reader: object) -> int | None:
    try:
        return reader.getPeer().port  # type: ignore[attr-defined,no-any-return]
    except (AttributeError, NotImplementedError):
        return None


def _unused() -> Deferred[None]:
    return Deferred()
