"""Streaming both ways: a Stream response body, server-sent events, limits.

Runs without sockets: ``aleph_tx.testing.request`` drives
the real HTTP/1.1 protocol over an in-memory transport.
"""

from typing import Any

from twisted.internet import task

from aleph_tx import deferred as dd
from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.testing import request


def events(req: dict[str, Any]) -> dict[str, Any]:
    """Server-sent events: each message of the source becomes one event."""
    return http.sse(["hello", {"event": "tick", "data": "1", "id": "7"}])


def live(req: dict[str, Any]) -> dict[str, Any]:
    """A Stream body: each message is sent as it is put (long polling, feeds)."""
    body = s.stream()
    body.put(b"first;")
    body.put("second")
    body.close()
    return {"headers": {"content-type": "text/plain"}, "body": body}


async def upload_size(req: dict[str, Any]) -> dict[str, Any]:
    """Read the request body chunk by chunk (the socket is not read faster than this)."""
    total = 0
    async for chunk in req["body"]:
        total += len(chunk)
    return {"body": str(total)}


async def main(reactor: Any) -> None:
    resp = await request(events, "GET", "/events")
    assert resp["headers"]["content-type"].startswith("text/event-stream")
    assert resp["body"] == b"data: hello\n\nevent: tick\nid: 7\ndata: 1\n\n"

    resp = await request(live, "GET", "/live")
    assert resp["headers"]["transfer-encoding"] == "chunked"
    assert resp["body"] == b"first;second"

    resp = await request(upload_size, "POST", "/upload", body=[b"x" * 1000] * 10)
    assert resp["body"] == b"10000"

    # limits answer with their status code before the handler runs
    resp = await request(upload_size, "POST", "/upload", body=b"x" * 2000, max_request_body_size=1000)
    assert resp["status"] == 413
    print("http_streaming: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(main(reactor)))
