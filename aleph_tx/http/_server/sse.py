"""Server-sent events: :func:`sse` wraps a source of messages into a response dict
whose body is a :class:`~aleph_tx.stream.Stream` of events framed by
:func:`aleph_tx.http._ring.sse.format_event`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime

from aleph_tx import stream as s
from aleph_tx.http._ring.sse import format_event

__all__ = ["sse"]


def sse(
    source: Any,
    heartbeat: float | None = None,
    headers: Mapping[str, Any] | None = None,
    clock: IReactorTime | None = None,
) -> dict[str, Any]:
    """A streaming ``text/event-stream`` response of ``source``'s messages.

    :param source: a :class:`~aleph_tx.stream.Stream`, iterable or async iterable
        of messages (see :func:`format_event`).
    :param heartbeat: send a comment line every ``heartbeat`` seconds (keeps
        proxies from closing an idle stream); ``None``: none.
    :param headers: extra response headers.
    :param clock: the heartbeat timer's clock.
    :returns: a response dict (status 200).
    :raises ValueError: for a heartbeat that is not a positive number.
    """
    if heartbeat is not None and (
        isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)) or heartbeat <= 0
    ):
        raise ValueError(f"heartbeat must be None or a number > 0, not {heartbeat!r}")
    if not isinstance(source, s.Stream):
        if hasattr(source, "__aiter__"):
            source = _from_async(source)
        else:
            source = s.from_iterable(source)
    events = s.map(format_event, source)
    # the client gone (the body dropped) ends the source too: its producers'
    # pending puts fire False; at its normal end the source is drained already
    events.on_closed(source._drop)
    body: s.Stream = events
    if heartbeat is not None:
        body = s.stream()
        s.connect(events, body, upstream=True)  # a client gone closes the source too
        beats = s.periodically(heartbeat, lambda: b": heartbeat\n\n", initial_delay=heartbeat, clock=clock)
        s.connect(beats, body, downstream=False, upstream=True)
        body.on_closed(beats.close)
    all_headers: dict[str, Any] = {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
    if headers:
        all_headers.update(headers)
    return {"status": 200, "headers": all_headers, "body": body}


def _from_async(source: Any) -> s.Stream:
    out = s.stream()

    async def pump() -> None:
        try:
            async for msg in source:
                if not await out.put(msg):
                    break
        finally:
            out.close()

    from twisted.internet.defer import Deferred

    Deferred.fromCoroutine(pump()).addErrback(lambda f: None)
    return out
