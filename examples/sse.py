"""Server-sent events: a live counter pushed to browsers (EventSource) as a Stream.

Run the server:    python examples/sse.py [--port 10000]
then open http://localhost:10000/ in a browser, or:
                   curl -N localhost:10000/events
Check it works:    python examples/sse.py --selftest
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from twisted.internet import defer, task

from aleph_tx import byte_streams as bs
from aleph_tx import http
from aleph_tx import stream as s

PAGE = """<!doctype html>
<title>aleph_tx SSE</title>
<p>count: <b id="n">-</b></p>
<script>
  new EventSource("/events").addEventListener("tick", e => {
    document.getElementById("n").textContent = e.data;
  });
</script>
"""

#: How many clients are connected right now (each has its own ticking source).
listeners = {"connected": 0}


def events(req: dict[str, Any]) -> dict[str, Any]:
    """One event every 0.2 s, forever: ``http.sse`` frames each message of the stream.

    When the client goes away the response body is closed, which closes the
    ticking source: its timer stops, and ``on_closed`` runs.
    """
    counter = itertools.count(1)
    ticks = s.periodically(0.2, lambda: {"event": "tick", "id": str(n := next(counter)), "data": str(n)})
    listeners["connected"] += 1

    def gone() -> None:
        listeners["connected"] -= 1

    ticks.on_closed(gone)
    return http.sse(ticks)


def handler(req: dict[str, Any]) -> dict[str, Any]:
    if req["uri"] == "/events":
        return events(req)
    if req["uri"] == "/":
        return {"headers": {"content-type": "text/html; charset=utf-8"}, "body": PAGE}
    return {"status": 404, "body": "not found"}


def parse_events(lines: list[str]) -> list[dict[str, str]]:
    """``text/event-stream`` lines to event dicts (a blank line ends an event)."""
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if not line:
            if current:
                out.append(current)
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            current[key] = value.removeprefix(" ")
    return out


async def selftest(reactor: Any) -> None:
    server = http.start_server(handler, port=0, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    try:
        resp = await http.get(url + "/", as_="text")
        assert "EventSource" in resp["body"]

        resp = await http.get(url + "/events", as_="stream")
        assert resp["headers"]["content-type"].startswith("text/event-stream")
        lines = bs.to_line_stream(resp["body"])
        got: list[str] = []
        while len(parse_events(got)) < 3:
            got.append(await lines.take())
        assert parse_events(got) == [{"event": "tick", "id": str(i), "data": str(i)} for i in (1, 2, 3)]
        assert listeners["connected"] == 1

        lines.close()  # hang up: the server notices and stops that client's timer
        for _ in range(100):
            if listeners["connected"] == 0:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert listeners["connected"] == 0, "the server kept ticking for a gone client"
    finally:
        await server.close()
    print("sse: ok")


def serve(reactor: Any, port: int) -> defer.Deferred[None]:
    server = http.start_server(handler, port=port)
    reactor.addSystemEventTrigger("before", "shutdown", server.close)
    print(f"sse: open http://localhost:{server.port}/ (Ctrl-C to stop)")
    return defer.Deferred()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=10000)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args()
    if args.selftest:
        task.react(lambda reactor: defer.ensureDeferred(selftest(reactor)).addTimeout(30, reactor))
    else:
        task.react(serve, [args.port])


if __name__ == "__main__":
    main()
