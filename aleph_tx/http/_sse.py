"""Server-sent events (the HTML Living Standard's ``text/event-stream``).

:func:`format_event` is pure; :func:`sse` wraps a source of messages into a
response dict whose body is a :class:`~aleph_tx.stream.Stream` of framed events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime

from aleph_tx import stream as s

__all__ = ["format_event", "sse"]


def _field(name: str, value: Any) -> str:
    text = str(value)
    if "\r" in text or "\n" in text:
        raise ValueError(f"SSE field {name!r} must not contain CR or LF, not {text!r}")
    return f"{name}: {text}\n"


def format_event(msg: Any) -> bytes:
    """One event, framed: ``data:`` lines (one per line of the data) and a blank line.

    :param msg: a ``str`` (the data), or a dict with ``data`` and optional
        ``event``, ``id``, ``retry`` (milliseconds) and ``comment``.
    :raises ValueError: for CR/LF in ``event``/``id``, or a bad ``retry``.
    :raises TypeError: for a message that is neither ``str``, bytes nor dict.
    """
    if isinstance(msg, (bytes, bytearray, memoryview)):
        msg = bytes(msg).decode("utf-8")
    if isinstance(msg, str):
        fields: Mapping[str, Any] = {"data": msg}
    elif isinstance(msg, Mapping):
        fields = msg
    else:
        raise TypeError(f"an SSE message must be a str or a dict, not {msg!r}")
    out: list[str] = []
    comment = fields.get("comment")
    if comment is not None:
        out.extend(f": {line}\n" for line in str(comment).splitlines() or [""])
    if fields.get("event") is not None:
        out.append(_field("event", fields["event"]))
    if fields.get("id") is not None:
        out.append(_field("id", fields["id"]))
    retry = fields.get("retry")
    if retry is not None:
        if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
            raise ValueError(f"SSE retry must be an int >= 0 (milliseconds), not {retry!r}")
        out.append(f"retry: {retry}\n")
    data = fields.get("data")
    if data is not None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8")
        # a lone CR, LF or CRLF all end a line in the event-stream grammar
        lines = str(data).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        out.extend(f"data: {line}\n" for line in lines)
    out.append("\n")
    return "".join(out).encode("utf-8")


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
