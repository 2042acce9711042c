"""Server-sent events framing (pure; the HTML Living Standard's ``text/event-stream``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_event"]


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
