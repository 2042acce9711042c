"""The fault matrix, HTTP server side: entry point × fault × expectation, in memory.

Entry points (rows): the HTTP/1.1 front, HTTP/2 (TLS + ALPN, in memory), a WSGI app
(``wrap_wsgi``, the app in the thread pool), ``to_resource`` in a ``make_site``
Site. Faults: the peer aborts, or the server's ``close()`` is called, at each stage
of an exchange: before the request head is complete, mid request body, while the
handler runs (a coroutine waiting; a blocking handler with ``executor="thread"``),
mid response body (a ``Stream`` body, the client reading nothing).

Expectations, checked in every case:

- every Deferred a handler started fires, every body stream closes, every pending
  put fires, every thread handler returns (within a bound);
- nothing is done twice: each handler ran at most once, at most one response per request;
- nothing leaks: no connection tracked by the ``Server``, no timer left on its clock,
  no busy worker thread;
- ``close()`` fires within ``shutdown_timeout`` + 1 s of the clock (at once once the
  aborted connection is gone);
- after an abort, the server still answers a new connection.

``to_resource`` has no ``Server`` (the Site is the user's): it has the abort column only.
The HTTP client rows of the matrix are the client's (tests/test_http_client_*.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from _faults import (
    H2Client,
    Pipe,
    RawClient,
    ThreadedClock,
    Tracker,
    close_within,
    count_responses,
    fill,
    server_factory,
    tls_client,
    until,
)
from twisted.internet.defer import Deferred

from aleph_tx import stream as s
from aleph_tx import tls
from aleph_tx.http import make_site, start_server, to_resource, wrap_wsgi

SHUTDOWN_TIMEOUT = 2.0
STAGES = ("before_head", "mid_request_body", "handler_async", "handler_thread", "mid_response_body")

_PEM: list[bytes] = []


def _tls() -> tuple[Any, bytes]:
    if not _PEM:
        _PEM.extend(tls.self_signed_pem("localhost"))
    return tls.server_context(_PEM[0], _PEM[1]), _PEM[0]


# -- what runs on the server ------------------------------------------------------------------


def _endless(t: Tracker) -> s.Stream:
    """A response body whose producer puts 16 KiB chunks until a put fires ``False``."""
    st = s.stream()
    t.streams.append(st)

    fill(st, b"z" * 16384, t.puts)
    return st


async def _wait(t: Tracker) -> dict[str, Any]:
    d: Deferred[None] = Deferred()
    t.deferreds.append(d)
    await d
    t.errors.append("a handler waiting for nothing was resumed")
    return {"body": "resumed"}


async def _upload(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    body = req["body"]
    t.streams.append(body)
    data = b"".join(await s.collect(body))
    declared = int(req["headers"].get("content-length", "0"))
    if len(data) < declared:
        t.errors.append(f"a truncated body ({len(data)} of {declared} bytes) looked complete to the handler")
    return {"body": b"%d" % len(data)}


def ring_handler(t: Tracker) -> Callable[[dict[str, Any]], Any]:
    def handler(req: dict[str, Any]) -> Any:
        uri = req["uri"]
        t.calls[uri] += 1
        if uri == "/wait":
            d = Deferred.fromCoroutine(_wait(t))
            t.deferreds.append(d)
            return d
        if uri == "/upload":
            d = Deferred.fromCoroutine(_upload(t, req))
            t.deferreds.append(d)
            return d
        if uri == "/stream":
            return {"body": _endless(t)}
        return {"body": "ok"}

    return handler


def thread_handler(t: Tracker) -> Callable[[dict[str, Any]], Any]:
    """A blocking handler (``executor="thread"``): ``/thread`` blocks until released."""

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        uri = req["uri"]
        t.calls[uri] += 1
        if uri != "/thread":
            return {"body": "ok"}
        if not t.enter_thread():
            return {"body": "on the reactor thread"}
        try:
            t.block()
            return {"body": "late"}
        finally:
            t.leave_thread()

    return handler


def wsgi_app(t: Tracker) -> Callable[..., Any]:
    def endless() -> Iterator[bytes]:
        t.enter_thread()
        try:
            while True:
                yield b"z" * 16384
        finally:
            t.leave_thread()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ["PATH_INFO"]
        t.calls[path] += 1
        if path == "/stream":
            start_response("200 OK", [("content-type", "application/octet-stream")])
            return endless()
        if not t.enter_thread():
            start_response("500 Internal Server Error", [])
            return [b"on the reactor thread"]
        try:
            if path == "/thread":
                t.block()
            elif path == "/upload":
                data = environ["wsgi.input"].read()
                declared = int(environ.get("CONTENT_LENGTH") or 0)
                if len(data) < declared:
                    t.errors.append(f"a truncated body ({len(data)} of {declared} bytes) read as complete")
            start_response("200 OK", [("content-type", "text/plain")])
            return [b"ok"]
        finally:
            t.leave_thread()

    return app


# -- the rows ------------------------------------------------------------------------------------


class Conn:
    """One client connection to the server under test."""

    def __init__(self, pipe: Pipe, client: Any) -> None:
        self.pipe = pipe
        self.client = client


class Row:
    """An entry point: builds its server, connects, drives a connection to a stage."""

    stages: tuple[str, ...] = STAGES
    closable = True

    def __init__(self, t: Tracker, thread: bool) -> None:
        self.t = t
        self.clock = ThreadedClock()
        self.server: Any = None
        self.factory: Any = None
        self.build(ring_handler(t) if not thread else thread_handler(t), thread)

    def build(self, handler: Any, thread: bool) -> None:
        options: dict[str, Any] = {"executor": "thread"} if thread else {}
        self.server = start_server(handler, reactor=self.clock, shutdown_timeout=SHUTDOWN_TIMEOUT, **options)
        self.factory = server_factory(self.clock)

    async def connect(self) -> Conn:
        client = RawClient()
        return Conn(Pipe(self.factory, client, self.clock), client)

    def send(self, conn: Conn, stage: str) -> None:
        c = conn.client
        if stage == "before_head":
            c.send(b"GET /ok HTTP/1.1\r\nHo")
        elif stage == "mid_request_body":
            c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"u" * 50)
        elif stage == "handler_async":
            c.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        elif stage == "handler_thread":
            c.send(b"GET /thread HTTP/1.1\r\nHost: x\r\n\r\n")
        elif stage == "mid_response_body":
            conn.pipe.client_reading = False
            c.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")

    async def reach(self, conn: Conn, stage: str) -> None:
        self.send(conn, stage)
        await conn.pipe.settle()
        t = self.t
        if stage == "handler_thread":
            await until(lambda: t.entered.is_set() or bool(t.errors), "the thread handler", [conn.pipe])
        elif stage == "mid_response_body":
            await until(lambda: conn.pipe.st.paused_by_pipe, "the response to back up", [conn.pipe])
        elif stage != "before_head":
            assert sum(t.calls.values()) == 1, f"the handler did not run: {dict(t.calls)}"

    def responses(self, conn: Conn) -> int:
        return count_responses(conn.client.received)

    async def serves(self) -> None:
        conn = await self.connect()
        conn.client.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(
            lambda: conn.client.received.endswith(b"ok"), "an answer on a new connection", [conn.pipe]
        )
        conn.pipe.abort_client()
        await conn.pipe.settle()

    def connections(self) -> int:
        return int(self.server.connection_count)

    def stop(self) -> None:
        self.t.release.set()
        self.clock.stop_threads()


class H2Row(Row):
    def build(self, handler: Any, thread: bool) -> None:
        options: dict[str, Any] = {"executor": "thread"} if thread else {}
        ctx, self.trust = _tls()
        self.server = start_server(
            handler,
            reactor=self.clock,
            ssl_context=ctx,
            http_versions=("http/1.1", "h2"),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            **options,
        )
        self.factory = server_factory(self.clock, tls=True)

    async def connect(self) -> Conn:
        client = H2Client()
        pipe = Pipe(self.factory, tls_client(client, self.trust, [b"h2"]), self.clock)
        await pipe.settle()
        return Conn(pipe, client)

    def send(self, conn: Conn, stage: str) -> None:
        c: H2Client = conn.client
        if stage == "before_head":
            c.partial_request("GET", "/ok")
        elif stage == "mid_request_body":
            c.request("POST", "/upload", b"u" * 50, end=False, headers=[("content-length", "100")])
        elif stage == "handler_async":
            c.request("GET", "/wait")
        elif stage == "handler_thread":
            c.request("GET", "/thread")
        elif stage == "mid_response_body":
            conn.pipe.client_reading = False
            c.request("GET", "/stream")

    def responses(self, conn: Conn) -> int:
        return max((r["heads"] for r in conn.client.responses.values()), default=0)

    async def serves(self) -> None:
        conn = await self.connect()
        sid = conn.client.request("GET", "/ok")
        r = conn.client.responses[sid]
        await until(lambda: r["ended"], "an answer on a new connection", [conn.pipe])
        assert r["body"] == b"ok"
        conn.pipe.abort_client()
        await conn.pipe.settle()


class WSGIRow(Row):
    stages = ("before_head", "mid_request_body", "handler_thread", "mid_response_body")

    def build(self, handler: Any, thread: bool) -> None:
        app = wrap_wsgi(wsgi_app(self.t), reactor=self.clock)
        self.server = start_server(app, reactor=self.clock, shutdown_timeout=SHUTDOWN_TIMEOUT)
        self.factory = server_factory(self.clock)

    async def reach(self, conn: Conn, stage: str) -> None:
        self.send(conn, stage)
        t = self.t
        if stage == "before_head":
            await conn.pipe.settle()
        elif stage == "mid_response_body":
            await until(lambda: conn.pipe.st.paused_by_pipe, "the response to back up", [conn.pipe])
        else:
            await until(lambda: t.entered.is_set() or bool(t.errors), "the WSGI app", [conn.pipe])


class ResourceRow(Row):
    closable = False

    def build(self, handler: Any, thread: bool) -> None:
        options: dict[str, Any] = {"executor": "thread"} if thread else {}
        self.factory = make_site(to_resource(handler, **options))

    def connections(self) -> int:
        return 0  # the Site is the user's: nothing of ours tracks its connections


ROWS: dict[str, type[Row]] = {"http/1.1": Row, "h2": H2Row, "wsgi": WSGIRow, "to_resource": ResourceRow}
CASES = [
    pytest.param(row, stage, action, id=f"{row}-{stage}-{action}")
    for row, cls in ROWS.items()
    for stage in cls.stages
    for action in (("abort", "close") if cls.closable else ("abort",))
]


# -- the matrix ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("row", "stage", "action"), CASES)
@pytest_twisted.ensureDeferred
async def test_fault(row: str, stage: str, action: str) -> None:
    t = Tracker()
    r = ROWS[row](t, thread=stage == "handler_thread")
    try:
        conn = await r.connect()
        await r.reach(conn, stage)
        if action == "abort":
            conn.pipe.abort_client()
            await conn.pipe.settle()
            await r.serves()
            if r.closable:
                await close_within(r.server, r.clock, [conn.pipe], 0.0)  # nothing left to wait for
        else:
            await close_within(r.server, r.clock, [conn.pipe], SHUTDOWN_TIMEOUT + 1.0)
        t.release.set()
        await until(
            lambda: t.running == 0 and r.clock.busy_threads == 0, "thread handlers to end", [conn.pipe]
        )
        await conn.pipe.settle()

        assert not t.errors, t.errors
        assert not t.pending(), f"not ended: {t.pending()}"
        twice = {uri: n for uri, n in t.calls.items() if n > 1}
        assert not twice, f"handlers run twice: {twice}"
        assert r.responses(conn) <= 1, f"{r.responses(conn)} responses to one request"
        assert r.connections() == 0, f"{r.connections()} connection(s) still tracked"
        assert not r.clock.getDelayedCalls(), f"timers left: {r.clock.getDelayedCalls()}"
    finally:
        r.stop()
