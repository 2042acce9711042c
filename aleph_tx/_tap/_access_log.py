"""``twist aleph-http --access-log FILE|-``: one Combined Log Format line per request.

Off by default: formatting a line per request costs throughput (twisted.web loses a
quarter of its requests per second to it). When on, the handler is wrapped: the
line is written once the handler's response is known, with its status and, when
the body's length is known before sending (``str``, bytes, a ``Path``, or a
``content-length`` header), its size; else ``-``. A handler that fails is logged
as 500 (the ``error_handler`` then answers); an upgraded WebSocket as 101.

``-`` sends the lines through :mod:`twisted.logger` (namespace
``aleph_tx.access``), so they follow ``twist --log-format`` (text or JSON); a file
gets the bare lines, appended, one write each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["access_writer", "clf_line", "response_size", "with_access_log"]

_log = Logger(namespace="aleph_tx.access")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _quote(value: str) -> str:
    """Escape ``"``, ``\\`` and control characters as nginx does (``\\xHH``): one line per request."""
    out = []
    for ch in value:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def clf_line(req: Mapping[str, Any], status: int, size: int | None, when: float) -> str:
    """The Combined Log Format line of a request (pure).

    ``HOST - - [25/Nov/2026:11:30:00 +0000] "GET /path?q HTTP/1.1" 200 12 "referer" "agent"``

    :param req: the Ring request dict.
    :param status: the response status.
    :param size: the body's length in bytes, ``None`` when not known (``-``).
    :param when: the time the request arrived (seconds since the epoch, UTC).
    """
    t = time.gmtime(when)
    stamp = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    target = str(req.get("uri") or "")
    if req.get("query_string") is not None:
        target += "?" + str(req["query_string"])
    method = str(req.get("request_method") or "-").upper()
    request_line = _quote(f"{method} {target} {req.get('protocol') or 'HTTP/1.1'}")
    headers: Mapping[str, str] = req.get("headers") or {}
    referer = _quote(headers.get("referer", "-"))
    agent = _quote(headers.get("user-agent", "-"))
    host = req.get("remote_addr") or "-"
    length = "-" if size is None else str(size)
    return f'{host} - - [{stamp}] "{request_line}" {status} {length} "{referer}" "{agent}"'


def response_size(resp: Mapping[str, Any]) -> int | None:
    """The body's length when it is known before sending, else ``None``."""
    headers = resp.get("headers") or {}
    for name, value in headers.items():
        if str(name).lower() == "content-length" and isinstance(value, str) and value.isdigit():
            return int(value)
    body = resp.get("body")
    if body is None:
        return 0
    if isinstance(body, str):
        return len(body.encode("utf-8"))
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, memoryview):
        return body.nbytes
    if isinstance(body, Path):
        try:
            return body.stat().st_size
        except OSError:
            return None
    return None


def with_access_log(
    handler: Callable[[dict[str, Any]], Any],
    write: Callable[[str], None],
    clock: Callable[[], float] = time.time,
) -> Callable[[dict[str, Any]], Deferred[Any]]:
    """``handler`` writing one access-log line per request through ``write``.

    :param handler: the Ring handler (value, Deferred or coroutine results).
    :param write: called with each line (no newline).
    :param clock: the time source for the timestamps.
    :returns: a handler that returns a Deferred of the same response (failures pass
        on unchanged, so the server's ``error_handler`` still answers them).
    """
    from aleph_tx.deferred import to_deferred

    def logged(req: dict[str, Any]) -> Deferred[Any]:
        when = clock()
        try:
            result = to_deferred(handler(req))
        except BaseException:
            write(clf_line(req, 500, None, when))
            raise

        def done(resp: Any) -> Any:
            if resp is None:
                upgraded = "websocket" in str((req.get("headers") or {}).get("upgrade", "")).lower()
                write(clf_line(req, 101 if upgraded else 204, None if upgraded else 0, when))
            elif isinstance(resp, Mapping):
                write(clf_line(req, int(resp.get("status", 200)), response_size(resp), when))
            else:  # not a response dict: the server will answer 500
                write(clf_line(req, 500, None, when))
            return resp

        def failed(f: Failure) -> Failure:
            write(clf_line(req, 500, None, when))
            return f

        return result.addCallbacks(done, failed)

    return logged


class _FileWriter:
    """Appends lines to a file, one write (and flush) each."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115

    def __call__(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _to_log(line: str) -> None:
    _log.info("{line}", line=line)


def access_writer(target: str) -> Callable[[str], None]:
    """The line writer for ``--access-log TARGET``: ``-`` is the twist log, else a file appended to.

    :raises OSError: if the file cannot be opened for appending.
    """
    if target == "-":
        return _to_log
    return _FileWriter(target)
