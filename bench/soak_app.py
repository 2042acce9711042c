"""The handler ``bench/soak.py`` serves (``twist aleph-http --handler soak_app:handler``).

The demo's paths (``/``, ``/stream``, ``/events``, ``/ws``, ``/health``) plus:

- ``/upload``: reads the request body to its end, answers its length;
- ``/slow?s=SECONDS``: answers after that long (cancelled when the client leaves);
- ``/endless``: a response body whose producer puts 16 KiB chunks until a put
  fires ``False`` (the client left);
- ``/thread?s=SECONDS``: a blocking call in the reactor's thread pool.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from aleph_tx import stream as s
from aleph_tx.demo import handler as demo


def _seconds(req: dict[str, Any], default: float) -> float:
    query = urllib.parse.parse_qs(req.get("query_string") or "")
    return float(query.get("s", [default])[0])


def _endless() -> s.Stream:
    st = s.stream()

    async def produce() -> None:
        while await st.put(b"z" * 16384):
            pass

    Deferred.fromCoroutine(produce())
    return st


def _blocking(seconds: float) -> dict[str, Any]:
    time.sleep(seconds)
    return {"body": "thread done"}


async def _upload(req: dict[str, Any]) -> dict[str, Any]:
    n = 0
    if req["body"] is not None:
        async for chunk in req["body"]:
            n += len(chunk)
    return {"body": str(n)}


async def _slow(req: dict[str, Any]) -> dict[str, Any]:
    await deferLater(reactor, _seconds(req, 1.0), lambda: None)
    return {"body": "slow done"}


async def _thread(req: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await deferToThread(_blocking, _seconds(req, 0.2))
    return result


def handler(req: dict[str, Any]) -> Any:
    uri = req["uri"]
    if uri == "/upload":
        return _upload(req)
    if uri == "/slow":
        return _slow(req)
    if uri == "/endless":
        return {"body": _endless()}
    if uri == "/thread":
        return _thread(req)
    return demo(req)
