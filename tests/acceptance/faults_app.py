"""Apps for the fault acceptance tests and the soak (``twist aleph-http --handler faults_app:handler``).

``handler`` routes:

- ``/`` hello; ``/echo`` the request body back (read with backpressure);
- ``/slow?s=SECONDS`` answers after that long (cancelled if the client goes away);
- ``/stream`` an endless response body: a producer puts 16 KiB chunks until a put
  fires ``False`` (the client went away);
- ``/thread?s=SECONDS`` blocks a reactor thread-pool thread that long, then answers;
- ``/stats`` JSON: open file descriptors, threads, live producers and handlers in
  flight, so a test can see that nothing leaked.

``slow_wsgi`` is a WSGI app whose view sleeps (``?s=SECONDS``, default 3) and then
returns an iterator (as Flask does); ``?mark=PATH`` creates ``PATH`` when the view starts.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from aleph_tx import stream as s

_live = {"producers": 0, "handlers": 0}


def _seconds(req: dict[str, Any], default: float) -> float:
    query = urllib.parse.parse_qs(req.get("query_string") or "")
    return float(query.get("s", [default])[0])


def _stats() -> dict[str, Any]:
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "producers": _live["producers"],
        "handlers": _live["handlers"],
    }


def _endless() -> s.Stream:
    st = s.stream()
    _live["producers"] += 1

    async def produce() -> None:
        try:
            while await st.put(b"z" * 16384):
                pass
        finally:
            _live["producers"] -= 1

    Deferred.fromCoroutine(produce())
    return st


def _blocking(seconds: float) -> dict[str, Any]:
    time.sleep(seconds)
    return {"body": "thread done"}


async def handler(req: dict[str, Any]) -> dict[str, Any]:
    uri = req["uri"]
    _live["handlers"] += 1
    try:
        if uri == "/echo":
            chunks = await s.collect(req["body"]) if req["body"] is not None else []
            return {"body": b"".join(chunks)}
        if uri == "/slow":
            await deferLater(reactor, _seconds(req, 1.0), lambda: None)
            return {"body": "slow done"}
        if uri == "/stream":
            return {"body": _endless()}
        if uri == "/thread":
            result: dict[str, Any] = await deferToThread(_blocking, _seconds(req, 1.0))
            return result
        if uri == "/stats":
            return {"headers": {"content-type": "application/json"}, "body": json.dumps(_stats())}
        return {"body": "hello!"}
    finally:
        _live["handlers"] -= 1


def slow_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "mark" in query:
        pathlib.Path(query["mark"][0]).touch()
    time.sleep(float(query.get("s", ["3"])[0]))
    start_response("200 OK", [("content-type", "text/plain")])
    return iter([b"done"])


def blocking_handler(req: dict[str, Any]) -> dict[str, Any]:
    """A synchronous handler for ``--executor thread``: ``/sleep?s=SECONDS`` blocks its thread."""
    if req["uri"] == "/sleep":
        return _blocking(_seconds(req, 1.0))
    if req["uri"] == "/stats":
        return {"headers": {"content-type": "application/json"}, "body": json.dumps(_stats())}
    return {"body": "hello!"}
