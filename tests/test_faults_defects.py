"""Regression tests for the server-side defects of issue 13, each as it was seen.

In memory (``tests/_faults.py``): the server is built with ``start_server(...,
reactor=ThreadedClock())`` and driven through a :class:`~_faults.Pipe`, so every
fault lands at an exact point and time is a ``Clock``. The process-level defects
(3: WSGI and SIGTERM, 11: CLI errors) are in ``tests/acceptance/test_faults_process.py``.

- 4: one read carrying more than 16,384 WebSocket frames while nobody takes.
- 5: ``executor="thread"`` on the twisted.web front (``to_resource``, HTTP/2).
- 6: HTTP/2 POST with a body to a handler answering at once; 413 the same way.
- 7: HTTP/1.0 with ``Transfer-Encoding: chunked`` and keep-alive (smuggling).
- 8: two ``Host`` headers; the absolute-form target's authority.
- 9: ``header_timeout`` (default 60 s; 408 with a partial head, silent without).
- 12: a response-body ``Stream`` whose client went away: pending puts fire ``False``.

Found while writing these (same rules, other places): one ``ssl_context`` cannot
start a second server once it served a connection; bursts in one read on request
bodies and client response bodies; an empty chunk ending an HTTP/2 request body.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from _faults import (
    WS_UPGRADE,
    H2Client,
    LoggedFailures,
    Pipe,
    RawClient,
    RawWSServer,
    ThreadedClock,
    client_factory,
    close_within,
    count_responses,
    fill,
    head,
    server_factory,
    take_all,
    tls_client,
    until,
    ws_frame,
)
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from aleph_tx import stream as s
from aleph_tx import tls
from aleph_tx.errors import BackpressureError
from aleph_tx.http import (
    connection_pool,
    get,
    make_site,
    start_server,
    to_resource,
    websocket_client,
    websocket_connection,
)
from aleph_tx.stream import MAX_PENDING

_PEM: list[bytes] = []


def tls_context() -> Any:
    """A server context of its own (a context used by one server is not reusable, see
    :func:`test_ssl_context_can_serve_twice`) from one key pair (key generation is slow)."""
    if not _PEM:
        _PEM.extend(tls.self_signed_pem("localhost"))
    return tls.server_context(_PEM[0], _PEM[1])


def trust_pem() -> bytes:
    tls_context()
    return _PEM[0]


@pytest.fixture
def logged() -> Iterator[LoggedFailures]:
    with LoggedFailures() as seen:
        yield seen


def h1(handler: Any, **options: Any) -> tuple[Any, ThreadedClock]:
    clock = ThreadedClock()
    return start_server(handler, reactor=clock, **options), clock


def h2(handler: Any, **options: Any) -> tuple[Any, ThreadedClock]:
    clock = ThreadedClock()
    srv = start_server(
        handler, reactor=clock, ssl_context=tls_context(), http_versions=("http/1.1", "h2"), **options
    )
    return srv, clock


def h2_pipe(clock: ThreadedClock) -> tuple[Pipe, H2Client]:
    client = H2Client()
    pipe = Pipe(server_factory(clock, tls=True), tls_client(client, trust_pem(), [b"h2"]), clock)
    return pipe, client


# -- 4: a burst of WebSocket frames in one read ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_4_websocket_burst_in_one_read_all_arrive_in_order(logged: LoggedFailures) -> None:
    """20,000 frames in one read while the handler takes nothing: all 20,000 arrive."""
    conns: list[Any] = []

    async def handler(req: dict[str, Any]) -> None:
        conns.append(await websocket_connection(req))

    srv, clock = h1(handler)
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    client.send(WS_UPGRADE)
    await until(lambda: bool(conns), "the upgrade", [pipe])
    assert client.received.startswith(b"HTTP/1.1 101 ")
    n = MAX_PENDING + 3616
    client.send(b"".join(ws_frame(b"%d" % i) for i in range(n)))
    await pipe.settle()
    conn = conns[0]
    got = await take_all(conn, n, pipe)
    assert len(got) == n, f"{len(got)} of {n} messages arrived"
    assert got == [b"%d" % i for i in range(n)], "the messages arrived out of order"
    assert not conn.closed, "the connection closed after a burst"
    assert not logged.of(BackpressureError), logged.of(BackpressureError)[0]
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_4_websocket_client_burst_in_one_read_all_arrive_in_order(logged: LoggedFailures) -> None:
    """The client side: the handshake answer and 20,000 frames in one read, nobody taking."""
    n = MAX_PENDING + 3616
    burst = b"".join(ws_frame(b"%d" % i, mask=False) for i in range(n))
    clock = ThreadedClock()
    connecting = websocket_client("ws://127.0.0.1:8080/ws", reactor=clock)
    pipe = Pipe(Factory.forProtocol(lambda: RawWSServer(burst)), client_factory(clock), clock)
    await until(lambda: connecting.called, "the handshake", [pipe])
    conn = await connecting
    got = await take_all(conn, n, pipe)
    assert len(got) == n, f"{len(got)} of {n} messages arrived"
    assert got == [b"%d" % i for i in range(n)], "the messages arrived out of order"
    assert not logged.of(BackpressureError), logged.of(BackpressureError)[0]
    pipe.abort_server()
    await pipe.settle()


# -- 5: executor="thread" on the twisted.web front ----------------------------------------


def _thread_handler(seen: list[str]) -> Any:
    def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(threading.current_thread().name)
        return {"body": "ran"}

    return handler


@pytest_twisted.ensureDeferred
async def test_5_to_resource_runs_blocking_handler_in_a_thread() -> None:
    seen: list[str] = []
    site = make_site(to_resource(_thread_handler(seen), executor="thread"))
    client = RawClient()
    pipe = Pipe(site, client)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: b"ran" in client.received, "the response", [pipe])
    assert seen and seen[0] != threading.main_thread().name, (
        f"the handler ran on the reactor thread ({seen[0]!r}) with executor='thread'"
    )
    pipe.abort_client()
    await pipe.settle()


@pytest_twisted.ensureDeferred
async def test_5_http2_runs_blocking_handler_in_a_thread() -> None:
    seen: list[str] = []
    srv, clock = h2(_thread_handler(seen), executor="thread")
    pipe, client = h2_pipe(clock)
    await pipe.settle()
    sid = client.request("GET", "/")
    await until(lambda: client.responses[sid]["ended"] or pipe.closed, "the response", [pipe])
    assert client.responses[sid]["body"] == b"ran"
    assert seen and seen[0] != threading.main_thread().name, (
        f"the handler ran on the reactor thread ({seen[0]!r}) with executor='thread'"
    )
    await close_within(srv, clock, [pipe])


# -- 6: HTTP/2 request bodies to handlers that answer at once -------------------------------


@pytest_twisted.ensureDeferred
async def test_6_http2_post_to_a_plain_handler_keeps_the_connection(logged: LoggedFailures) -> None:
    srv, clock = h2(lambda req: {"body": "ok"})
    pipe, client = h2_pipe(clock)
    await pipe.settle()
    first = client.request("POST", "/", b"hello" * 100)
    await pipe.settle()
    assert not pipe.errors, f"the connection was dropped: {pipe.errors[0]!r}"
    assert client.responses[first]["status"] == 200 and client.responses[first]["body"] == b"ok"
    second = client.request("GET", "/again")
    await pipe.settle()
    assert not pipe.closed and client.responses[second]["body"] == b"ok", "the connection did not serve on"
    assert not logged.of(KeyError), logged.of(KeyError)[0]
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_6_http2_413_is_answered_and_close_fires(logged: LoggedFailures) -> None:
    srv, clock = h2(lambda req: {"body": "ok"}, max_request_body_size=10)
    pipe, client = h2_pipe(clock)
    await pipe.settle()
    sid = client.request("POST", "/", b"x" * 100, headers=[("content-length", "100")])
    await pipe.settle()
    assert not pipe.errors, f"the connection was dropped: {pipe.errors[0]!r}"
    assert client.responses[sid]["status"] == 413
    assert not logged.of(KeyError), logged.of(KeyError)[0]
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_6_http2_close_fires_after_a_dropped_connection() -> None:
    """Whatever an HTTP/2 connection did, ``close()`` fires within shutdown_timeout + 1 s."""
    srv, clock = h2(lambda req: {"body": "ok"}, shutdown_timeout=2)
    pipe, client = h2_pipe(clock)
    await pipe.settle()
    client.request("POST", "/", b"hello")
    client.request("POST", "/", b"x" * 60000, end=False)
    await pipe.settle()
    await close_within(srv, clock, [pipe])
    assert srv.connection_count == 0


# -- 7: HTTP/1.0 with Transfer-Encoding (request smuggling) ----------------------------------


@pytest_twisted.ensureDeferred
async def test_7_http10_with_transfer_encoding_is_refused() -> None:
    uris: list[str] = []

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        uris.append(req["uri"])
        return {"body": "ok"}

    srv, clock = h1(handler)
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    client.send(
        b"POST /first HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    await pipe.settle()
    assert client.received.startswith(b"HTTP/1.1 400 "), client.received[:60]
    assert count_responses(client.received) == 1, "a request after the refused one was answered"
    assert "/smuggled" not in uris and "/first" not in uris, uris
    assert pipe.closed, "the connection stayed open after a 400"
    await close_within(srv, clock, [pipe])


# -- 8: Host headers ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_8_two_host_headers_are_refused() -> None:
    seen: list[str] = []
    srv, clock = h1(lambda req: seen.append(req["server_name"]) or {"body": "ok"})
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    client.send(b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
    await pipe.settle()
    assert client.received.startswith(b"HTTP/1.1 400 "), (client.received[:60], seen)
    assert seen == [], f"served with server_name {seen[0]!r}"
    assert pipe.closed
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_8_absolute_form_target_names_the_server() -> None:
    seen: list[tuple[str, str]] = []
    srv, clock = h1(lambda req: seen.append((req["server_name"], req["uri"])) or {"body": "ok"})
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    client.send(b"GET http://target.example/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
    await pipe.settle()
    assert client.received.startswith(b"HTTP/1.1 200 "), client.received[:60]
    assert seen == [("target.example", "/p")], seen
    await close_within(srv, clock, [pipe])


# -- 9: header_timeout ---------------------------------------------------------------------


async def _advance(clock: ThreadedClock, pipe: Pipe, seconds: float, step: float = 0.5) -> None:
    done = 0.0
    while done < seconds - 1e-9:
        clock.advance(min(step, seconds - done))
        done += step
        await pipe.settle()


@pytest_twisted.ensureDeferred
async def test_9_partial_head_gets_408_at_header_timeout() -> None:
    srv, clock = h1(lambda req: {"body": "ok"}, header_timeout=5)
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    client.send(b"GET / HTTP/1.1\r\nHo")
    await _advance(clock, pipe, 4.5)
    assert not pipe.closed, "closed before header_timeout"
    await _advance(clock, pipe, 1.0)
    assert pipe.closed, "a partial head held the connection past header_timeout"
    assert client.received.startswith(b"HTTP/1.1 408 "), client.received[:60]
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_9_trickled_head_is_bounded_from_the_connection_start() -> None:
    """A byte a second does not restart the timer: the whole head must arrive in time."""
    srv, clock = h1(lambda req: {"body": "ok"}, header_timeout=5)
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
        client.send(bytes([byte]))
        await _advance(clock, pipe, 1.0)
        if pipe.closed:
            break
    assert pipe.closed, "a trickled head held the connection past header_timeout"
    assert client.received.startswith(b"HTTP/1.1 408 "), client.received[:60]
    assert clock.seconds() <= 6.0, f"closed only at t={clock.seconds()}"
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_9_silent_connection_is_closed_without_a_response_default_60() -> None:
    srv, clock = h1(lambda req: {"body": "ok"})
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    await _advance(clock, pipe, 59.5, step=5)
    assert not pipe.closed, "closed before the default header_timeout of 60 s"
    await _advance(clock, pipe, 1.0)
    assert pipe.closed, "a connection that sent nothing was kept past 60 s"
    assert client.received == b"", f"answered {client.received[:60]!r} where silence was due"
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_9_idle_keep_alive_connection_is_closed_after_header_timeout() -> None:
    srv, clock = h1(lambda req: {"body": "ok"}, header_timeout=5)
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    await _advance(clock, pipe, 3)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await pipe.settle()
    assert client.received.startswith(b"HTTP/1.1 200 ")
    answered = len(client.received)
    await _advance(clock, pipe, 4.5)
    assert not pipe.closed, "the timer was not restarted by the previous response's end"
    await _advance(clock, pipe, 1.0)
    assert pipe.closed, "an idle keep-alive connection was kept past header_timeout"
    assert len(client.received) == answered, "an idle keep-alive connection got a 408"
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_9_a_complete_head_is_not_timed_out_while_the_handler_runs() -> None:
    release: Deferred[None] = Deferred()

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        await release
        return {"body": "late"}

    srv, clock = h1(handler, header_timeout=5)
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await pipe.settle()
    await _advance(clock, pipe, 30, step=5)
    assert not pipe.closed, "header_timeout cut a request whose head was complete"
    release.callback(None)
    await pipe.settle()
    assert head(client.received)[0] == 200
    await close_within(srv, clock, [pipe])


def test_9_header_timeout_values_are_checked() -> None:
    clock = ThreadedClock()
    for bad in (0, -1, "5", True):
        with pytest.raises(ValueError, match="header_timeout"):
            start_server(lambda req: None, reactor=clock, header_timeout=bad)


# -- 12: response-body streams whose client went away ---------------------------------------


def _producer_handler(puts: list[Deferred[bool]], streams: list[s.Stream]) -> Any:
    """A handler whose body producer puts 16 KiB chunks until a put waits."""

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        st = s.stream()
        streams.append(st)

        fill(st, b"z" * 16384, puts)
        return {"body": st}

    return handler


async def _stalled_then_gone(pipe: Pipe, puts: list[Deferred[bool]], streams: list[s.Stream]) -> None:
    pipe.client_reading = False
    await pipe.settle()
    assert puts and not puts[-1].called, "the producer's put did not wait on a client that reads nothing"
    pipe.abort_client()
    await pipe.settle()
    waiting = puts[-1]
    assert waiting.called, "a put on the response body of a gone client never fired"
    assert waiting.result is False, f"the put fired {waiting.result!r}, not False"
    assert streams[0].closed, "the response body stream was not closed"


@pytest_twisted.ensureDeferred
async def test_12_http11_pending_put_fires_false_when_the_client_is_gone() -> None:
    puts: list[Deferred[bool]] = []
    streams: list[s.Stream] = []
    srv, clock = h1(_producer_handler(puts, streams))
    client = RawClient()
    pipe = Pipe(server_factory(clock), client, clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await _stalled_then_gone(pipe, puts, streams)
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_12_http2_pending_put_fires_false_when_the_client_is_gone() -> None:
    puts: list[Deferred[bool]] = []
    streams: list[s.Stream] = []
    srv, clock = h2(_producer_handler(puts, streams))
    pipe, client = h2_pipe(clock)
    await pipe.settle()
    client.request("GET", "/")
    await _stalled_then_gone(pipe, puts, streams)
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_12_to_resource_pending_put_fires_false_when_the_client_is_gone() -> None:
    puts: list[Deferred[bool]] = []
    streams: list[s.Stream] = []
    client = RawClient()
    pipe = Pipe(make_site(to_resource(_producer_handler(puts, streams))), client)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await _stalled_then_gone(pipe, puts, streams)


# -- found while writing these: one ssl_context, two servers ---------------------------------


@pytest_twisted.ensureDeferred
async def test_ssl_context_can_serve_twice() -> None:
    """A server context that has served a connection can start another server (a restart).

    Each ``start_server`` sets the ALPN callback on the context's ``OpenSSL.SSL.Context``,
    which pyOpenSSL refuses once a connection was made from it ("Context has already
    been used to create a Connection, it cannot be mutated again").
    """
    ctx = tls_context()
    clock = ThreadedClock()
    for answer in (b"first", b"second"):
        srv = start_server(lambda req, a=answer: {"body": a}, reactor=clock, ssl_context=ctx)
        client = RawClient()
        pipe = Pipe(server_factory(clock, tls=True), tls_client(client, trust_pem(), [b"http/1.1"]), clock)
        await pipe.settle()
        client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await pipe.settle()
        assert client.received.endswith(b"\r\n\r\n" + answer), client.received[-80:]
        await close_within(srv, clock, [pipe])


# -- found while writing these: bursts in one read on request and response bodies -------------
#
# The defect 4 pattern (one put per message of a read, more than MAX_PENDING of them
# pending) on the other message-framed streams: a request body of small chunks, a
# client response body of small chunks. Past 16,384 waiting puts the rest is dropped
# with a BackpressureError logged. A socket read of 64-256 KiB stays under that; one
# dataReceived of more (an in-memory transport, a future read size) does not.

_N_CHUNKS = 30000
_CHUNKED = b"".join(b"8\r\n%08d\r\n" % i for i in range(_N_CHUNKS)) + b"0\r\n\r\n"
_CHUNKS_DATA = b"".join(b"%08d" % i for i in range(_N_CHUNKS))


def _collecting_handler(release: Deferred[None]) -> Any:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        await release  # nobody takes while the burst arrives
        data = b"".join(await s.collect(req["body"]))
        return {"body": b"same" if data == _CHUNKS_DATA else b"%d bytes" % len(data)}

    return handler


@pytest.mark.parametrize("front", ["http/1.1", "to_resource"])
@pytest_twisted.ensureDeferred
async def test_request_body_burst_in_one_read_all_arrives(front: str, logged: LoggedFailures) -> None:
    release: Deferred[None] = Deferred()
    clock = ThreadedClock()
    if front == "http/1.1":
        start_server(_collecting_handler(release), reactor=clock)
        factory = server_factory(clock)
    else:
        factory = make_site(to_resource(_collecting_handler(release)))
    client = RawClient()
    pipe = Pipe(factory, client, clock)
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + _CHUNKED)
    await pipe.settle()
    release.callback(None)
    await until(lambda: client.received.endswith((b"same", b"bytes")) or pipe.closed, "the answer", [pipe])
    assert client.received.endswith(b"same"), f"the handler got {client.received[-20:]!r} of the body"
    assert not logged.of(BackpressureError), logged.of(BackpressureError)[0]
    pipe.abort_client()
    await pipe.settle()


class _ChunkedAnswer(Protocol):
    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if b"\r\n\r\n" in data:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _CHUNKED)


@pytest_twisted.ensureDeferred
async def test_client_response_body_burst_in_one_read_all_arrives(logged: LoggedFailures) -> None:
    clock = ThreadedClock()
    pool = connection_pool(clock=clock)
    d = get("http://127.0.0.1:8080/", as_="stream", reactor=clock, pool=pool)
    pipe = Pipe(Factory.forProtocol(_ChunkedAnswer), client_factory(clock), clock)
    await until(lambda: d.called, "the response", [pipe])
    body = (await d)["body"]
    got = bytearray()
    while True:
        t = body.take()
        if not t.called:
            await pipe.settle()
            if not t.called:
                break
        if t.result is None:
            break
        got += t.result
    assert bytes(got) == _CHUNKS_DATA, f"{len(got)} of {len(_CHUNKS_DATA)} bytes arrived"
    assert not logged.of(BackpressureError), logged.of(BackpressureError)[0]
    pipe.abort_server()
    await pipe.settle()
    pool.close()


# -- found while writing these: an empty chunk at the end of an HTTP/2 request body --------------


@pytest_twisted.ensureDeferred
async def test_http2_request_body_has_no_empty_chunks() -> None:
    """An empty DATA frame that ends the stream (RFC 9113 §6.1 allows it) is no message."""
    chunks: list[bytes] = []

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        chunks.extend(await s.collect(req["body"]))
        return {"body": "ok"}

    srv, clock = h2(handler)
    pipe, client = h2_pipe(clock)
    await pipe.settle()
    sid = client.request("POST", "/", b"hello", end=False)
    client.send_data(sid, b"", end=True)
    await pipe.settle()
    assert client.responses[sid]["status"] == 200
    assert b"".join(chunks) == b"hello"
    assert b"" not in chunks, f"the body stream delivered an empty chunk: {chunks!r}"
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_9_tls_handshake_is_bounded_by_header_timeout() -> None:
    """A client that opens TCP and never completes TLS is cut at header_timeout."""
    srv, clock = h2(lambda req: {"body": "ok"}, header_timeout=5)
    client = RawClient()  # speaks no TLS: the handshake never completes
    pipe = Pipe(server_factory(clock, tls=True), client, clock)
    await _advance(clock, pipe, 4.5)
    assert not pipe.closed, "closed before header_timeout"
    await _advance(clock, pipe, 1.0)
    assert pipe.closed, "a stalled TLS handshake held the connection past header_timeout"
    await close_within(srv, clock, [pipe])


@pytest_twisted.ensureDeferred
async def test_9_idle_http2_connection_is_closed_after_header_timeout() -> None:
    srv, clock = h2(lambda req: {"body": "ok"}, header_timeout=5)
    pipe, client = h2_pipe(clock)
    await _advance(clock, pipe, 3)
    sid = client.request("GET", "/")
    await pipe.settle()
    await _advance(clock, pipe, 0.5)
    assert client.responses[sid]["status"] == 200 and client.responses[sid]["ended"]
    await _advance(clock, pipe, 4.0)
    assert not pipe.closed, "the timer was not restarted when the last stream ended"
    await _advance(clock, pipe, 1.5)
    assert client.terminated, "no GOAWAY at header_timeout on an idle HTTP/2 connection"
    await _advance(clock, pipe, 5.0)  # the GOAWAY's grace (H2_ABORT_TIMEOUT), then cut
    assert pipe.closed, "an idle HTTP/2 connection was kept past header_timeout"
    await close_within(srv, clock, [pipe])
