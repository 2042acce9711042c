"""Handlers for the acceptance tests (loaded by ``twist aleph-http --handler http_app:...``)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from aleph_tx import stream as s


async def handler(req: dict[str, Any]) -> dict[str, Any]:
    uri = req["uri"]
    if uri == "/echo":
        body = req["body"]
        data = b""
        if body is not None:
            chunks = await s.collect(body)
            data = b"".join(chunks)
        return {"status": 200, "headers": {"x-length": str(len(data))}, "body": data}
    if uri == "/slow":
        await deferLater(reactor, 1.0, lambda: None)
        return {"body": "slow done"}
    if uri == "/big":
        return {"body": (b"0123456789abcdef" * 65536 for _ in range(4))}  # 4 MiB, chunked
    if uri == "/req":
        return {"body": repr(sorted((k, v) for k, v in req.items() if k != "body"))}
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello!"}


def refuse_continue(req: dict[str, Any]) -> Any:
    return req["uri"] != "/refuse"
