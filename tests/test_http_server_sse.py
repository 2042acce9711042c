"""Server-sent events framing (pure) and the sse() response."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from aleph_tx import stream as s
from aleph_tx.http import sse
from aleph_tx.http._ring.sse import format_event
from aleph_tx.testing import request


@pytest.mark.parametrize(
    ("msg", "framed"),
    [
        ("hi", b"data: hi\n\n"),
        ("", b"data: \n\n"),
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb\rc", b"data: a\ndata: b\ndata: c\n\n"),
        (b"raw", b"data: raw\n\n"),
        (
            {"data": "x", "event": "tick", "id": 7, "retry": 1000},
            b"event: tick\nid: 7\nretry: 1000\ndata: x\n\n",
        ),
        ({"event": "ping"}, b"event: ping\n\n"),
        ({"comment": "keep"}, b": keep\n\n"),
        ({"data": "é"}, "data: é\n\n".encode()),
    ],
)
def test_format_event(msg: Any, framed: bytes) -> None:
    assert format_event(msg) == framed


@pytest.mark.parametrize(
    ("msg", "exc"),
    [
        ({"event": "a\nb", "data": "x"}, ValueError),
        ({"id": "a\rb", "data": "x"}, ValueError),
        ({"retry": -1}, ValueError),
        ({"retry": "5"}, ValueError),
        (42, TypeError),
        (None, TypeError),
    ],
)
def test_format_event_refuses(msg: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        format_event(msg)


def test_sse_response_shape() -> None:
    resp = sse(["a", {"data": "b", "id": "1"}])
    assert resp["status"] == 200
    assert resp["headers"]["content-type"].startswith("text/event-stream")
    assert resp["headers"]["cache-control"] == "no-cache"
    got: list[Any] = []
    s.collect(resp["body"]).addCallback(got.append)
    assert got == [[b"data: a\n\n", b"id: 1\ndata: b\n\n"]]


def test_sse_over_http() -> None:
    got: list[Any] = []
    request(lambda req: sse(["one", "two"]), "GET", "/events").addCallback(got.append)
    (resp,) = got
    assert resp["status"] == 200
    assert resp["headers"]["transfer-encoding"] == "chunked"
    assert resp["body"] == b"data: one\n\ndata: two\n\n"


def test_sse_heartbeat_on_clock() -> None:
    clock = Clock()
    src = s.stream()
    resp = sse(src, heartbeat=5, clock=clock)
    body = resp["body"]
    d = body.take()
    assert not d.called
    clock.advance(5)
    assert d.result == b": heartbeat\n\n"
    src.put("x")
    assert body.take().result == b"data: x\n\n"
    src.close()
    assert body.take().result is None
    assert body.drained
    clock.advance(50)
    assert not clock.getDelayedCalls()


def test_sse_client_gone_closes_source() -> None:
    src = s.stream()
    resp = sse(src)
    resp["body"].close()
    assert src.closed


def test_sse_bad_heartbeat() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        sse([], heartbeat=0)


def test_client_gone_closes_source_and_stops_heartbeats() -> None:
    """The server closes the body when the client goes away: the source and the timer stop."""
    clock = Clock()
    source = s.stream()
    resp = sse(source, heartbeat=1.0, clock=clock)
    assert clock.getDelayedCalls()
    resp["body"].close()
    assert source.closed
    assert not clock.getDelayedCalls()
