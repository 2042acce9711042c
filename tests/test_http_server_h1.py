"""The HTTP/1.1 protocol over StringTransport: framing, limits, streaming, fuzz."""

from __future__ import annotations

import gzip
import io
import pathlib
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import httptools
import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from aleph_tx import stream as s
from aleph_tx.errors import WebSocketHandshakeError
from aleph_tx.http._ring.limits import make_options
from aleph_tx.http._server import h1 as _h1
from aleph_tx.http._server.exchange import Runner, UpgradeRequest
from aleph_tx.http._server.h1 import ConnState, HTTP11Protocol, HTTPFactory

Handler = Callable[[dict[str, Any]], Any]


class CountingTransport(StringTransport):
    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def connect(handler: Handler, **options: Any) -> tuple[HTTP11Protocol, CountingTransport]:
    factory = HTTPFactory(Runner(handler, make_options(options), MemoryReactorClock()))
    proto = factory.buildProtocol(None)
    t = CountingTransport()
    proto.makeConnection(t)
    return proto, t


def parse(data: bytes, head: bool = False) -> list[dict[str, Any]]:
    """Every complete response in ``data`` (raises on malformed output)."""
    out: list[dict[str, Any]] = []

    class CB:
        def on_message_begin(self) -> None:
            self.cur: dict[str, Any] = {"headers": {}, "body": b""}

        def on_header(self, n: bytes, v: bytes) -> None:
            self.cur["headers"][n.decode().lower()] = v.decode("latin-1")

        def on_headers_complete(self) -> None:
            self.cur["status"] = p.get_status_code()

        def on_body(self, b: bytes) -> None:
            self.cur["body"] += b

        def on_message_complete(self) -> None:
            out.append(self.cur)

    p = httptools.HttpResponseParser(CB())
    p.feed_data(data)
    return out


def hello(req: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello!"}


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class Collected:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __enter__(self) -> Collected:
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *a: object) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def failures(self) -> list[Any]:
        return [e["log_failure"] for e in self.events if "log_failure" in e]


class BasicsTests(SynchronousTestCase):
    def test_hello_one_write_keep_alive(self) -> None:
        proto, t = connect(hello)
        proto.dataReceived(GET)
        assert t.writes == 1
        (r,) = parse(t.value())
        assert r["status"] == 200 and r["body"] == b"hello!"
        assert r["headers"]["content-length"] == "6"
        assert "date" in r["headers"]
        assert "connection" not in r["headers"]
        assert not t.disconnecting
        proto.dataReceived(GET)
        assert len(parse(t.value())) == 2

    def test_fast_path_allocates_no_stream_or_deferred(self) -> None:
        counts = {"stream": 0, "deferred": 0}
        orig_stream, orig_deferred = s.Stream.__init__, Deferred.__init__

        def stream_init(self: Any, *a: Any, **k: Any) -> None:
            counts["stream"] += 1
            orig_stream(self, *a, **k)

        def deferred_init(self: Any, *a: Any, **k: Any) -> None:
            counts["deferred"] += 1
            orig_deferred(self, *a, **k)

        proto, t = connect(hello)
        self.patch(s.Stream, "__init__", stream_init)
        self.patch(Deferred, "__init__", deferred_init)
        proto.dataReceived(GET * 3)
        assert counts == {"stream": 0, "deferred": 0}
        assert t.writes == 3
        assert len(parse(t.value())) == 3

    def test_request_dict(self) -> None:
        seen: list[dict[str, Any]] = []

        def h(req: dict[str, Any]) -> None:
            seen.append(req)

        proto, t = connect(h)
        proto.dataReceived(b"GET /p/q?a=1&b=%20 HTTP/1.1\r\nHost: ex.com:81\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
        (req,) = seen
        assert req["request_method"] == "get"
        assert req["uri"] == "/p/q"
        assert req["query_string"] == "a=1&b=%20"
        assert req["headers"] == {"host": "ex.com:81", "x-a": "1, 2"}
        assert req["body"] is None
        assert req["scheme"] == "http"
        assert req["server_name"] == "ex.com"
        assert req["server_port"] == 12345
        assert req["remote_addr"] == "192.168.1.1"
        assert req["protocol"] == "HTTP/1.1"
        assert req["keep_alive"] is True
        assert parse(t.value())[0]["status"] == 204

    def test_fast_and_general_request_dicts_agree(self) -> None:
        """The reader's request dict is what _ring.build_request builds."""
        from aleph_tx.http._ring.request import build_request

        for head in (
            b"GET /a/b?x=1 HTTP/1.1\r\nHost: ex.com:81\r\nA: 1\r\na: 2\r\n\r\n",
            b"HEAD / HTTP/1.0\r\n\r\n",
            b"DELETE /%20#f HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            b"PROPFIND /x HTTP/1.1\r\n\r\n",
        ):
            seen: list[dict[str, Any]] = []
            proto, _t = connect(seen.append)
            proto.dataReceived(head)
            (req,) = seen
            expected = build_request(
                head.split(b" ", 1)[0].decode(),
                head.split(b" ")[1],
                req["headers"],
                None,
                scheme="http",
                server_name="10.0.0.1",
                server_port=12345,
                remote_addr="192.168.1.1",
                protocol=req["protocol"],
                keep_alive=req["keep_alive"],
            )
            assert req == expected

    def test_content_length_zero_body_is_none(self) -> None:
        seen: list[Any] = []
        proto, _t = connect(lambda req: seen.append(req["body"]))
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert seen == [None]

    def test_http10(self) -> None:
        proto, t = connect(hello)
        proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        (r,) = parse(t.value())
        assert r["headers"]["connection"] == "close"
        assert t.disconnecting

    def test_http10_keep_alive(self) -> None:
        seen: list[Any] = []
        proto, t = connect(lambda req: seen.append(req) or hello(req))
        proto.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        (r,) = parse(t.value())
        assert r["headers"]["connection"] == "keep-alive"
        assert seen[0]["protocol"] == "HTTP/1.0" and seen[0]["keep_alive"] is True
        assert not t.disconnecting

    def test_http10_streamed_body_close_delimited(self) -> None:
        proto, t = connect(lambda req: {"body": iter([b"a", b"b"])})
        proto.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, _, body = t.value().partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head and b"content-length" not in head
        assert b"connection: close" in head
        assert body == b"ab"
        assert t.disconnecting

    def test_connection_close_request(self) -> None:
        proto, t = connect(hello)
        proto.dataReceived(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert parse(t.value())[0]["headers"]["connection"] == "close"
        assert t.disconnecting

    def test_pipelined_answered_in_order(self) -> None:
        pending: list[Deferred[Any]] = []

        def h(req: dict[str, Any]) -> Any:
            if req["uri"] == "/slow":
                d: Deferred[Any] = Deferred()
                pending.append(d)
                return d
            return {"body": req["uri"]}

        proto, t = connect(h)
        proto.dataReceived(b"GET /slow HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n")
        assert t.value() == b""
        assert t.producerState == "paused"  # queued requests stop the reading
        pending[0].callback({"body": "slow"})
        assert [r["body"] for r in parse(t.value())] == [b"slow", b"/fast", b"/x"]
        assert t.producerState == "producing"

    def test_none_is_204(self) -> None:
        proto, t = connect(lambda req: None)
        proto.dataReceived(GET)
        (r,) = parse(t.value())
        assert r["status"] == 204 and "content-length" not in r["headers"]

    def test_head_has_length_no_body(self) -> None:
        proto, t = connect(hello)
        proto.dataReceived(b"HEAD / HTTP/1.1\r\n\r\n")
        assert t.value().endswith(b"content-length: 6\r\n\r\n")
        proto.dataReceived(GET)
        assert t.value().endswith(b"hello!")

    def test_head_streamed_body_closed(self) -> None:
        body = s.stream()
        proto, t = connect(lambda req: {"body": body})
        proto.dataReceived(b"HEAD / HTTP/1.1\r\n\r\n")
        assert t.value().endswith(b"transfer-encoding: chunked\r\n\r\n")
        assert body.closed

    def test_repeated_headers(self) -> None:
        proto, t = connect(lambda req: {"headers": {"set-cookie": ["a=1", "b=2"]}})
        proto.dataReceived(GET)
        assert b"set-cookie: a=1\r\nset-cookie: b=2\r\n" in t.value()

    def test_status_and_reason(self) -> None:
        proto, t = connect(lambda req: {"status": 418})
        proto.dataReceived(GET)
        assert t.value().startswith(b"HTTP/1.1 418 I'm a Teapot\r\n") or t.value().startswith(
            b"HTTP/1.1 418 "
        )

    def test_handler_framing_headers_replaced(self) -> None:
        proto, t = connect(
            lambda req: {"headers": {"content-length": "99", "transfer-encoding": "x"}, "body": "ab"}
        )
        proto.dataReceived(GET)
        (r,) = parse(t.value())
        assert r["headers"]["content-length"] == "2" and "transfer-encoding" not in r["headers"]


class BodyTypeTests(SynchronousTestCase):
    def roundtrip(self, body: Any, head: bytes = GET) -> dict[str, Any]:
        proto, t = connect(lambda req: {"body": body})
        proto.dataReceived(head)
        (r,) = parse(t.value())
        return r

    def test_bytes_likes(self) -> None:
        for body in (b"ab", bytearray(b"ab"), memoryview(b"ab"), "ab"):
            r = self.roundtrip(body)
            assert r["body"] == b"ab" and r["headers"]["content-length"] == "2"

    def test_path_streamed_with_length(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        p = pathlib.Path(tmp.name) / "f.bin"
        p.write_bytes(b"z" * 200_000)
        r = self.roundtrip(p)
        assert r["headers"]["content-length"] == "200000"
        assert r["body"] == b"z" * 200_000

    def test_file_object_chunked(self) -> None:
        f = io.BytesIO(b"q" * 100_000)
        r = self.roundtrip(f)
        assert r["headers"]["transfer-encoding"] == "chunked" and r["body"] == b"q" * 100_000
        assert f.closed

    def test_iterable(self) -> None:
        r = self.roundtrip(["a", b"", bytearray(b"b"), memoryview(b"c")])
        assert r["body"] == b"abc"

    def test_async_iterable(self) -> None:
        gate: Deferred[None] = Deferred()

        async def agen() -> AsyncIterator[bytes]:
            yield b"one"
            await gate
            yield b"two"

        proto, t = connect(lambda req: {"body": agen()})
        proto.dataReceived(GET)
        assert t.value().endswith(b"3\r\none\r\n")
        gate.callback(None)
        assert parse(t.value())[0]["body"] == b"onetwo"

    def test_stream(self) -> None:
        body = s.stream()
        proto, t = connect(lambda req: {"body": body})
        proto.dataReceived(GET)
        assert body.put(b"a").called
        body.put("b")
        body.close()
        (r,) = parse(t.value())
        assert r["body"] == b"ab" and r["headers"]["transfer-encoding"] == "chunked"
        assert not t.disconnecting

    def test_deferred_response_and_body(self) -> None:
        d: Deferred[Any] = Deferred()
        proto, t = connect(lambda req: succeed({"body": d}))
        proto.dataReceived(GET)
        assert t.value() == b""
        d.callback("later")
        assert parse(t.value())[0]["body"] == b"later"

    def test_coroutine_handler(self) -> None:
        async def h(req: dict[str, Any]) -> dict[str, Any]:
            return {"body": "co"}

        proto, t = connect(h)
        proto.dataReceived(GET)
        assert parse(t.value())[0]["body"] == b"co"

    def test_user_content_length_on_stream(self) -> None:
        proto, t = connect(lambda req: {"headers": {"content-length": "3"}, "body": iter([b"ab", b"c"])})
        proto.dataReceived(GET)
        (r,) = parse(t.value())
        assert r["headers"]["content-length"] == "3" and r["body"] == b"abc"
        assert not t.disconnecting

    def test_user_content_length_too_short_body_closes(self) -> None:
        proto, t = connect(lambda req: {"headers": {"content-length": "5"}, "body": iter([b"ab"])})
        proto.dataReceived(GET)
        assert t.disconnecting

    def test_bad_chunk_mid_stream_aborts(self) -> None:
        with Collected():
            proto, t = connect(lambda req: {"body": iter([b"ok", 42])})
            proto.dataReceived(GET)
        self.flushLoggedErrors(TypeError)
        assert t.disconnecting
        assert b"2\r\nok\r\n" in t.value()
        assert not t.value().endswith(b"0\r\n\r\n")

    def test_stream_taken_only_while_not_paused(self) -> None:
        body = s.stream()
        proto, t = connect(lambda req: {"body": body})
        proto.dataReceived(GET)
        writer = t.producer
        assert writer is not None
        writer.pauseProducing()
        assert body.put(b"x").called  # the take issued before the pause
        d = body.put(b"y")
        assert not d.called  # nobody takes while the transport is full
        writer.resumeProducing()
        assert d.called and t.value().endswith(b"1\r\ny\r\n")

    def test_client_gone_closes_stream_body(self) -> None:
        body = s.stream()
        proto, _t = connect(lambda req: {"body": body})
        proto.dataReceived(GET)
        closed: list[bool] = []
        body.on_closed(lambda: closed.append(True))
        proto.connectionLost()
        assert closed == [True]

    def test_client_gone_cancels_pending_handler(self) -> None:
        cancelled: list[bool] = []
        d: Deferred[Any] = Deferred(lambda _: cancelled.append(True))
        proto, _t = connect(lambda req: d)
        proto.dataReceived(GET)
        proto.connectionLost()
        assert cancelled == [True]

    def test_compression(self) -> None:
        body = "x" * 1000
        proto, t = connect(lambda req: {"body": body}, compression=True)
        proto.dataReceived(b"GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
        (r,) = parse(t.value())
        assert r["headers"]["content-encoding"] == "gzip"
        assert gzip.decompress(r["body"]) == body.encode()
        proto.dataReceived(GET)
        assert parse(t.value())[1]["body"] == body.encode()

    def test_compression_streamed(self) -> None:
        proto, t = connect(lambda req: {"body": iter([b"ab", b"cd"])}, compression=True)
        proto.dataReceived(b"GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
        (r,) = parse(t.value())
        assert r["headers"]["transfer-encoding"] == "chunked"
        assert gzip.decompress(r["body"]) == b"abcd"

    def test_compression_not_twice(self) -> None:
        proto, t = connect(lambda req: {"headers": {"content-encoding": "br"}, "body": "x"}, compression=True)
        proto.dataReceived(b"GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
        assert parse(t.value())[0]["body"] == b"x"


class RequestBodyTests(SynchronousTestCase):
    def test_content_length_body_stream(self) -> None:
        bodies: list[Any] = []
        proto, t = connect(lambda req: bodies.append(req["body"]) or {"body": req["body"]})
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel")
        assert isinstance(bodies[0], s.Stream)
        proto.dataReceived(b"lo")
        (r,) = parse(t.value())
        assert r["body"] == b"hello"
        assert bodies[0].drained

    def test_chunked_body(self) -> None:
        got: list[Any] = []

        def h(req: dict[str, Any]) -> Deferred[Any]:
            return s.collect(req["body"]).addCallback(lambda cs: got.append(b"".join(cs)))

        proto, t = connect(h)
        data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nT: 1\r\n\r\n"
        for i in range(len(data)):
            proto.dataReceived(data[i : i + 1])
        assert got == [b"abcde"]
        assert parse(t.value())[0]["status"] == 204

    def test_backpressure_pauses_reading(self) -> None:
        bodies: list[s.Stream] = []
        proto, t = connect(lambda req: bodies.append(req["body"]) or Deferred())
        proto.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
        proto.dataReceived(chunk)
        assert t.producerState == "producing"  # within the 64 KiB read-ahead
        proto.dataReceived(chunk)
        assert t.producerState == "paused"
        body = bodies[0]
        assert body.take().called
        assert t.producerState == "producing"

    def test_unread_body_closes_connection(self) -> None:
        proto, t = connect(hello)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        (r,) = parse(t.value())
        assert r["headers"]["connection"] == "close"
        assert t.disconnecting

    def test_read_body_keeps_alive(self) -> None:
        proto, t = connect(hello)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" + GET)
        assert len(parse(t.value())) == 2 and not t.disconnecting

    def test_expect_continue(self) -> None:
        proto, t = connect(_collect_then_echo)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert t.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
        proto.dataReceived(b"ok")
        assert t.value().endswith(b"\r\n\r\nok")
        assert not t.disconnecting

    def test_continue_handler_refuses_417(self) -> None:
        called: list[Any] = []
        proto, t = connect(lambda req: called.append(1), continue_handler=lambda req: False)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert t.value().startswith(b"HTTP/1.1 417 ")
        assert not called and t.disconnecting

    def test_continue_handler_response(self) -> None:
        proto, t = connect(hello, continue_handler=lambda req: {"status": 401, "body": "no"})
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        (r,) = parse(t.value())
        assert r["status"] == 401 and b"100 Continue" not in t.value()

    def test_continue_handler_deferred(self) -> None:
        d: Deferred[bool] = Deferred()
        proto, t = connect(_collect_then_echo, continue_handler=lambda req: d)
        proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert t.value() == b""
        d.callback(True)
        assert t.value() == b"HTTP/1.1 100 Continue\r\n\r\n"

    def test_unknown_expectation_417(self) -> None:
        proto, t = connect(hello)
        proto.dataReceived(b"GET / HTTP/1.1\r\nExpect: magic\r\n\r\n")
        assert t.value().startswith(b"HTTP/1.1 417 ")


def _collect_then_echo(req: dict[str, Any]) -> Any:
    if req["body"] is None:
        return hello(req)
    return s.collect(req["body"]).addCallback(lambda chunks: {"body": b"".join(chunks)})


ERRORS = [
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Header: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00", 400),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: aaaaaaaaaaaaaaaa\r\n" % i for i in range(500)) + b"\r\n", 431),
]


@pytest.mark.parametrize(("data", "status"), ERRORS)
@pytest.mark.parametrize("bytewise", [False, True])
def test_malformed(data: bytes, status: int, bytewise: bool) -> None:
    called: list[Any] = []
    proto, t = connect(lambda req: called.append(req) or _collect_then_echo(req))
    if bytewise:
        for i in range(len(data)):
            proto.dataReceived(data[i : i + 1])
    else:
        proto.dataReceived(data)
    (r,) = parse(t.value())
    assert r["status"] == status
    assert r["headers"]["connection"] == "close"
    assert t.disconnecting
    assert not called or status == 400  # a bad chunk arrives after the head was handled
    assert b"Traceback" not in t.value() and b"httptools" not in t.value()


def test_413_on_content_length_before_reading() -> None:
    called: list[Any] = []
    proto, t = connect(lambda req: called.append(req), max_request_body_size=10)
    proto.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
    assert t.value().startswith(b"HTTP/1.1 413 ") and not called and t.disconnecting


def test_413_mid_stream_chunked() -> None:
    bodies: list[s.Stream] = []
    proto, t = connect(lambda req: bodies.append(req["body"]) or Deferred(), max_request_body_size=10)
    proto.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n")
    assert t.value() == b""
    proto.dataReceived(b"6\r\nghijkl\r\n")
    assert t.value().startswith(b"HTTP/1.1 413 ") and t.disconnecting
    assert bodies[0].closed


def test_pipelined_before_error_answered_first() -> None:
    proto, t = connect(hello)
    proto.dataReceived(GET + b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    rs = parse(t.value())
    assert [r["status"] for r in rs] == [200, 400]


class ErrorTests(SynchronousTestCase):
    def tearDown(self) -> None:
        # every test here makes the handler fail on purpose: the failures are logged
        self.flushLoggedErrors()

    def test_default_500_no_traceback(self) -> None:
        def boom(req: dict[str, Any]) -> None:
            raise RuntimeError("secret detail")

        with Collected() as log:
            proto, t = connect(boom)
            proto.dataReceived(GET)
        (r,) = parse(t.value())
        assert r["status"] == 500 and b"secret" not in t.value()
        assert any(f.check(RuntimeError) for f in log.failures())

    def test_failed_deferred_500(self) -> None:
        with Collected():
            proto, t = connect(lambda req: Deferred.fromCoroutine(_raise()))
            proto.dataReceived(GET)
        assert parse(t.value())[0]["status"] == 500

    def test_error_handler(self) -> None:
        def eh(req: dict[str, Any], failure: Any) -> dict[str, Any]:
            return {"status": 503, "body": type(failure.value).__name__}

        with Collected():
            proto, t = connect(_boom, error_handler=eh)
            proto.dataReceived(GET)
        (r,) = parse(t.value())
        assert r["status"] == 503 and r["body"] == b"KeyError"

    def test_error_handler_failing_falls_back(self) -> None:
        with Collected():
            proto, t = connect(_boom, error_handler=lambda req, f: {"status": 99})
            proto.dataReceived(GET)
        assert parse(t.value())[0]["status"] == 500

    def test_header_splitting_refused(self) -> None:
        with Collected():
            proto, t = connect(lambda req: {"headers": {"x": "a\r\nSet-Cookie: evil=1"}})
            proto.dataReceived(GET)
        assert parse(t.value())[0]["status"] == 500 and b"evil" not in t.value()

    def test_bad_status_and_body(self) -> None:
        for resp in ({"status": 1000}, {"status": 99}, {"body": 42}, "not a dict"):
            with Collected():
                proto, t = connect(lambda req, resp=resp: resp)
                proto.dataReceived(GET)
            assert parse(t.value())[0]["status"] == 500

    def test_websocket_handshake_error_400(self) -> None:
        def h(req: dict[str, Any]) -> None:
            raise WebSocketHandshakeError("not an upgrade")

        proto, t = connect(h)
        proto.dataReceived(GET)
        assert parse(t.value())[0]["status"] == 400


async def _raise() -> None:
    raise ValueError("x")


def _boom(req: dict[str, Any]) -> None:
    raise KeyError("k")


class TimeoutAndCloseTests(SynchronousTestCase):
    def test_idle_timeout(self) -> None:
        clock = Clock()
        proto, t = connect(hello, idle_timeout=10, clock=clock)
        clock.advance(6)
        proto.dataReceived(GET)  # bytes moved: the timer restarts
        clock.advance(9)
        assert not t.disconnecting
        clock.advance(1.5)
        assert t.disconnecting and t.value().count(b"HTTP/1.1") == 1
        proto.connectionLost()
        assert not clock.getDelayedCalls()

    def test_idle_timeout_reset_by_writes(self) -> None:
        clock = Clock()
        body = s.stream()
        proto, t = connect(lambda req: {"body": body}, idle_timeout=10, clock=clock)
        proto.dataReceived(GET)
        for _ in range(5):
            clock.advance(6)
            body.put(b"x")
        assert not t.disconnecting
        clock.advance(10)
        assert t.disconnecting

    def test_graceful_close_idle(self) -> None:
        proto, t = connect(hello)
        proto.graceful_close()
        assert t.disconnecting

    def test_graceful_close_finishes_in_flight(self) -> None:
        d: Deferred[Any] = Deferred()
        proto, t = connect(lambda req: d)
        proto.dataReceived(GET)
        proto.graceful_close()
        assert not t.disconnecting
        d.callback({"body": "done"})
        (r,) = parse(t.value())
        assert r["body"] == b"done" and r["headers"]["connection"] == "close"
        assert t.disconnecting

    def test_abort(self) -> None:
        proto, t = connect(hello)
        proto.abort()
        assert t.disconnected


class UpgradeTests(SynchronousTestCase):
    UPGRADE = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

    def test_upgrade_request_reaches_handler(self) -> None:
        seen: list[Any] = []
        proto, t = connect(lambda req: seen.append(req) or hello(req))
        proto.dataReceived(self.UPGRADE + b"frame")
        assert isinstance(seen[0], UpgradeRequest)
        assert seen[0]["headers"]["upgrade"] == "websocket"
        (r,) = parse(t.value())
        assert r["status"] == 200 and r["headers"]["connection"] == "close"

    def test_hand_off(self) -> None:
        class Echo(Protocol):
            got = b""

            def dataReceived(self, data: bytes) -> None:  # noqa: N802
                self.got += data
                self.transport.write(data.upper())

        echo = Echo()

        def h(req: dict[str, Any]) -> dict[str, Any]:
            if isinstance(req, UpgradeRequest):
                req.upgrade.hand_off(echo)
            return {"status": 200, "body": "ignored"}  # ignored after the hand-off (fast path)

        lost: list[Any] = []
        echo.connectionLost = lost.append  # type: ignore[method-assign]
        proto, t = connect(h)
        proto.dataReceived(GET)  # a plain response first: the return value is ignored only after
        t.clear()
        proto.dataReceived(self.UPGRADE + b"abc")
        assert t.value() == echo.got.upper()  # only what the new protocol wrote
        assert echo.transport is t
        # the head is rebuilt from the request dict: lower-case names (RFC 9110 §5.1)
        assert (
            echo.got == b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\nabc"
        )
        assert proto.state is ConnState.HANDED_OFF
        assert t.producerState == "producing"
        proto.dataReceived(b"def")  # later bytes go to the new protocol
        assert echo.got.endswith(b"abcdef")
        proto.connectionLost(Failure(ConnectionDone()))  # and so does the connection's loss
        assert len(lost) == 1 and lost[0].check(ConnectionDone)
        assert proto.state is ConnState.CLOSED


# -- fuzz ------------------------------------------------------------------------

_methods = st.sampled_from(
    [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"get", b"CONNECT", b"X"]
)
_paths = st.sampled_from([b"/", b"/a?b=c", b"*", b"http://h/p", b"/%00", b"/\xff", b""])
_versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b""])
_header = st.tuples(
    st.sampled_from(
        [
            b"Host",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Connection",
            b"Expect",
            b"Upgrade",
            b"X",
            b"Bad Name",
        ]
    ),
    st.sampled_from(
        [
            b"1",
            b"0",
            b"5",
            b"chunked",
            b"gzip, chunked",
            b"close",
            b"keep-alive",
            b"100-continue",
            b"websocket",
            b"-1",
            b"a\x00",
        ]
    ),
)
_body = st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"zz\r\n", b"x" * 70])


@st.composite
def _requests(draw: Any) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        line = draw(_methods) + b" " + draw(_paths) + b" " + draw(_versions) + b"\r\n"
        headers = b"".join(n + b": " + v + b"\r\n" for n, v in draw(st.lists(_header, max_size=4)))
        parts.append(line + headers + b"\r\n" + draw(_body))
    data = b"".join(parts)
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if op == "flip":
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
        elif op == "cut":
            data = data[:i]
        elif op == "insert":
            data = data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
        else:
            data = data[:i] + data[i + 1 :]
    return data


def _fuzz_handler(req: dict[str, Any]) -> Any:
    if req["request_method"] == "head":
        return {"status": 200}  # content-length: 0, so the checking parser needs no method
    if req["body"] is not None:
        return {"body": req["body"]}  # echo, streaming
    if req["uri"] == "/a":
        return succeed({"body": iter([b"x", b"y"])})
    return {"body": req["uri"]}


def _check_fuzz(data: bytes, bytewise: bool) -> None:
    proto, t = connect(
        _fuzz_handler, max_request_body_size=64, max_header_size=512, max_initial_line_length=256
    )
    with Collected() as log:
        if bytewise:
            for i in range(len(data)):
                if t.disconnecting:
                    break
                proto.dataReceived(data[i : i + 1])
        else:
            proto.dataReceived(data)
    # every byte written is valid HTTP/1.1 output (complete responses, maybe one in progress)
    out = t.value()
    parse(out)
    assert out.count(b"HTTP/1.1 5") == out.count(b"HTTP/1.1 505") + out.count(b"HTTP/1.1 501"), out
    assert not log.failures(), log.failures()
    if not t.disconnecting:
        # not closed: the server is waiting for more request bytes, never stuck on its own
        assert proto.state in (ConnState.OPEN,), proto.state
        cur = proto._current
        assert cur is None or not cur.body_done or cur.pending is not None, cur
    proto.connectionLost()
    assert proto._current is None and not proto._queue


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests(), st.booleans())
def test_fuzz_requests(data: bytes, bytewise: bool) -> None:
    _check_fuzz(data, bytewise)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_random_bytes(data: bytes, bytewise: bool) -> None:
    _check_fuzz(data, bytewise)


def test_fuzz_known_cases() -> None:
    for data, _ in ERRORS:
        _check_fuzz(data, False)
    _check_fuzz(GET * 3 + b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", True)


def test_module_exports() -> None:
    assert _h1.__all__


# -- the stream contract on request bodies ---------------------------------------------


class _PumpTransport(StringTransport):
    """Calls ``on_resume`` when the protocol resumes reading."""

    on_resume: Callable[[], None] | None = None

    def resumeProducing(self) -> None:  # noqa: N802
        super().resumeProducing()
        if self.on_resume is not None:
            self.on_resume()


def _body_pair() -> tuple[s.Stream, s.Stream]:
    """``(a, b)``: what is put into ``a`` is sent as a chunked request body; ``b`` is ``req["body"]``."""
    bodies: list[s.Stream] = []
    factory = HTTPFactory(
        Runner(lambda req: bodies.append(req["body"]) or Deferred(), make_options({}), MemoryReactorClock())
    )
    proto = factory.buildProtocol(None)
    t = _PumpTransport()
    proto.makeConnection(t)
    proto.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    a = s.stream()
    end = object()
    state = {"waiting": False, "done": False}

    def handle(msg: Any) -> None:
        if msg is end:
            state["done"] = True
            proto.dataReceived(b"0\r\n\r\n")
        else:
            proto.dataReceived(b"%x\r\n%b\r\n" % (len(msg), msg))

    def got(msg: Any) -> None:
        state["waiting"] = False
        handle(msg)
        run()

    def run() -> None:
        while t.producerState == "producing" and not state["done"] and not state["waiting"]:
            d = a.take(end)
            if not d.called:
                state["waiting"] = True
                d.addCallback(got)
                return
            handle(d.result)

    t.on_resume = run
    run()
    return a, bodies[0]


@pytest_twisted.inlineCallbacks
def test_request_body_stream_contract() -> Any:
    from aleph_tx.testing import check_stream

    yield check_stream(_body_pair)
