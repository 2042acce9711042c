"""The HTTP/1.1 client connection in memory: every response form, whole and byte by
byte; what is reused and what is not; the request on the wire; backpressure."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.testing import StringTransport

from aleph_tx._chunks import ChunkSource, SourceKind
from aleph_tx.errors import ConnectionLostError, ProtocolError
from aleph_tx.http._client.connection import ConnState, HTTP11ClientConnection
from aleph_tx.http._client.pool import ClientRequest


class Events:
    """The pool side, recorded."""

    def __init__(self) -> None:
        self.reusable: list[Any] = []
        self.gone: list[Any] = []

    def connection_reusable(self, conn: Any) -> None:
        self.reusable.append(conn)

    def connection_gone(self, conn: Any) -> None:
        self.gone.append(conn)


class Sink:
    """A BodySink recording what it got."""

    def __init__(self) -> None:
        self.data = b""
        self.done = False
        self.failed: BaseException | None = None

    def body_data(self, data: bytes) -> None:
        self.data += data

    def body_ending(self) -> BaseException | None:
        return None

    def body_done(self) -> None:
        self.done = True

    def body_failed(self, reason: BaseException) -> None:
        self.failed = reason


class Conn:
    """A connection on a StringTransport, with a request sent."""

    def __init__(
        self, method: bytes = b"GET", body: Any = None, length: int | None = None, **kw: Any
    ) -> None:
        self.events = Events()
        self.conn = HTTP11ClientConnection(self.events, "key", **kw)
        self.transport = StringTransport()
        self.conn.makeConnection(self.transport)
        self.handle = self.conn.send(
            ClientRequest(method, b"http", b"example.com", b"/p?q", b"/p?q", [(b"x-a", b"1")], body, length)
        )
        self.sink = Sink()
        self.head: list[Any] = []
        self.handle.head.addCallbacks(self._head, self.head.append)

    def _head(self, handle: Any) -> None:
        self.head.append(handle)
        handle.deliver_body(self.sink)

    def feed(self, data: bytes, bytewise: bool = False) -> None:
        if bytewise:
            for i in range(len(data)):
                self.conn.dataReceived(data[i : i + 1])
        else:
            self.conn.dataReceived(data)


RESPONSES = [
    # (name, method, response, status, body, reusable)
    ("length", b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello", True),
    (
        "chunked with trailers",
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nX-T: 1\r\n\r\n",
        200,
        b"hello",
        True,
    ),
    ("until close", b"GET", b"HTTP/1.1 200 OK\r\n\r\nhello", 200, b"hello", False),
    (
        "204 ignores its length",
        b"GET",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        204,
        b"",
        True,
    ),
    ("304", b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 304, b"", True),
    ("HEAD", b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", 200, b"", True),
    ("HEAD chunked", b"HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200, b"", True),
    (
        "100 and 103 skipped",
        b"GET",
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        ),
        200,
        b"ok",
        True,
    ),
    ("bare LF", b"GET", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 200, b"ok", True),
    (
        "Connection: close",
        b"GET",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        200,
        b"ok",
        False,
    ),
    ("HTTP/1.0", b"GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
    (
        "HTTP/1.0 keep-alive",
        b"GET",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        200,
        b"ok",
        True,
    ),
]


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(("name", "method", "response", "status", "body", "reusable"), RESPONSES)
def test_response_forms(
    name: str, method: bytes, response: bytes, status: int, body: bytes, reusable: bool, bytewise: bool
) -> None:
    c = Conn(method)
    c.feed(response, bytewise)
    if name == "until close":
        assert not c.sink.done
        c.conn.connectionLost()
    assert c.head == [c.handle]
    assert c.handle.status == status
    assert c.sink.data == body and c.sink.done
    if reusable:
        assert c.conn.state is ConnState.IDLE and c.events.reusable == [c.conn]
    else:
        assert c.conn.state is ConnState.BROKEN and c.events.gone == [c.conn]
        assert c.events.reusable == []


def test_headers_keep_order_and_repeats() -> None:
    c = Conn()
    c.feed(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Expires=Wed, 21 Oct\r\nSET-COOKIE: b=2\r\nContent-Length: 0\r\n\r\n"
    )
    assert c.handle.headers == [
        ("set-cookie", "a=1; Expires=Wed, 21 Oct"),
        ("set-cookie", "b=2"),
        ("content-length", "0"),
    ]


def test_bytes_after_the_response_make_it_unusable() -> None:
    c = Conn()
    c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nhello")
    assert c.sink.data == b"h" and c.sink.done
    assert c.conn.state is ConnState.BROKEN and c.transport.disconnecting


def test_a_second_response_is_not_accepted() -> None:
    c = Conn()
    c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nhHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ni")
    assert c.sink.data == b"h" and c.conn.state is ConnState.BROKEN


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(
    "response",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    ],
)
def test_malformed_responses_fail_with_protocol_error(response: bytes, bytewise: bool) -> None:
    c = Conn()
    c.feed(response, bytewise)
    failure = c.head[0] if c.head and c.head[0] is not c.handle else None
    error = failure.value if failure is not None else c.sink.failed
    assert isinstance(error, ProtocolError), (c.head, c.sink.failed)
    assert c.conn.state is ConnState.BROKEN and c.events.gone == [c.conn]


@pytest.mark.parametrize("bytewise", [False, True])
def test_header_block_limit(bytewise: bool) -> None:
    c = Conn(max_header_size=200)
    c.feed(b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"v" * 300 + b"\r\n\r\n", bytewise)
    assert "max_response_header_size=200" in str(c.head[0].value)
    # a trickled header never ending is cut too, without holding more than the limit
    c = Conn(max_header_size=200)
    for _ in range(100):
        if c.head:
            break
        c.feed(b"X: " + b"v" * 10, bytewise)
    assert c.head and c.head[0].check(ProtocolError)


def test_lost_before_any_byte_is_retryable_only_on_a_reused_connection() -> None:
    c = Conn()
    c.conn.connectionLost()
    assert c.head[0].check(ConnectionLostError) and not c.handle.retryable
    c = Conn()
    c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    second = c.conn.send(ClientRequest(b"GET", b"http", b"x", b"/", b"/", []))
    failures: list[Any] = []
    second.head.addErrback(failures.append)
    c.conn.connectionLost()
    assert failures[0].check(ConnectionLostError) and second.retryable


def test_cancel_aborts_and_never_reuses() -> None:
    c = Conn()
    c.handle.head.cancel()
    assert c.head[0].check(CancelledError)
    assert c.conn.state is ConnState.BROKEN and c.events.gone == [c.conn]
    c.conn.connectionLost()
    assert c.events.reusable == []


def test_the_request_on_the_wire() -> None:
    c = Conn()
    assert c.transport.value() == b"GET /p?q HTTP/1.1\r\nHost: example.com\r\nx-a: 1\r\n\r\n"
    c = Conn(b"POST", b"data")
    assert c.transport.value().endswith(b"x-a: 1\r\nContent-Length: 4\r\n\r\ndata")
    c = Conn(b"POST")
    assert c.transport.value().endswith(b"Content-Length: 0\r\n\r\n")
    source = ChunkSource(SourceKind.ITERATOR, iter([b"ab", b"", "cd"]))
    c = Conn(b"PUT", source)
    assert c.transport.value().endswith(b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
    assert c.conn.state is ConnState.AWAITING_HEAD
    events = Events()
    conn = HTTP11ClientConnection(events, "k")
    transport = StringTransport()
    conn.makeConnection(transport)
    conn.send(ClientRequest(b"GET", b"http", b"x", b"/", b"/", [], close=True))
    assert b"Connection: close\r\n" in transport.value()


def test_a_request_only_on_an_idle_connection() -> None:
    c = Conn()
    with pytest.raises(RuntimeError, match="awaiting head"):
        c.conn.send(ClientRequest(b"GET", b"http", b"x", b"/", b"/", []))


def test_bytes_on_an_idle_connection_cut_it() -> None:
    c = Conn()
    c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert c.conn.state is ConnState.IDLE
    c.feed(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert c.conn.state is ConnState.BROKEN and c.events.gone == [c.conn]


def test_an_early_response_stops_the_upload_and_the_connection() -> None:
    from aleph_tx import stream as s

    body = s.stream()
    c = Conn(b"POST", ChunkSource(SourceKind.STREAM, body, None, body.close))
    assert body.put(b"part").called
    c.feed(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert c.handle.status == 413 and c.sink.done
    assert c.conn.state is ConnState.BROKEN
    assert body.closed


def test_pause_and_resume_reading() -> None:
    c = Conn()
    c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    c.handle.pause_reading()
    assert c.transport.producerState == "paused"
    c.handle.resume_reading()
    assert c.transport.producerState == "producing"
    c.handle.pause_reading()
    c.feed(b"defghij")  # (what was in flight still arrives)
    assert c.sink.done and c.transport.producerState == "producing"  # resumed before reuse
