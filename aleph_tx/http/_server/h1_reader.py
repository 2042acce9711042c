"""HTTP/1.1 requests from bytes: httptools (llhttp) callbacks to exchanges.

:class:`RequestReader` owns the parser. Each complete request head becomes an
:class:`H1Exchange` (the Ring request built by
:func:`~aleph_tx.http._ring.request.build_request`), handed to the connection
(:class:`ReaderEvents`); a body is put into a :class:`~aleph_tx.stream.Stream` by
a :class:`~aleph_tx._receiver.Receiver`, which pauses reading while the handler is
not taking. Limits are checked as bytes arrive (414, 431, 413, 400, 417, 505:
:mod:`~aleph_tx.http._ring.limits`); a violation is reported once with its status
and nothing more is parsed.
"""

from __future__ import annotations

import typing
from typing import Any

import httptools
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._receiver import Receiver
from aleph_tx.http._ring.limits import (
    ServerOptions,
    check_content_length,
    check_framing,
    check_request_line,
    check_version,
)
from aleph_tx.http._ring.request import build_request
from aleph_tx.http._server.exchange import Exchange, ResponseSink, Runner, UpgradeRequest
from aleph_tx.stream import Stream

__all__ = ["BODY_BUFFER_BYTES", "H1Exchange", "ReaderEvents", "RequestReader"]

_log = Logger()

#: Request body buffer: up to 64 KiB (plus the chunk that crosses it) is read ahead
#: of the handler; past it the socket is not read until the handler takes.
BODY_BUFFER_BYTES = 65536

#: Raw header names seen to their lower-case str (bounded).
_NAMES: dict[bytes, str] = {}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class H1Exchange(Exchange):
    """An exchange with what the HTTP/1.1 connection needs to frame its answer."""

    keep_alive = True
    version10 = False
    upgrade = False
    body_done = True  # the request body was read to its end
    error_status: int | None = None
    receiver: Receiver | None = None
    head_bytes = b""  # the request head, rebuilt, for an upgrade hand-off


class ReaderEvents(typing.Protocol):
    """What the reader tells its connection."""

    def request_ready(self, ex: H1Exchange) -> None:
        """A request head is complete (its body may still be arriving)."""

    def upgrade_requested(self, tail: bytes) -> None:
        """An ``Upgrade``/``CONNECT`` request ended; ``tail`` is what followed it."""

    def broken(self, status: int, ex: H1Exchange | None) -> None:
        """The input broke the protocol or a limit: answer ``status``, then close.

        ``ex`` is the request whose body was arriving when it broke (else ``None``).
        """


class RequestReader:
    """The httptools callbacks of one connection.

    :param events: the connection.
    :param sink: where the exchanges' responses go (the connection).
    :param runner: the server's handler runner.
    :param body_producer: paused while a body put waits (merged with the
        connection's other reasons to stop reading).
    :param scheme: ``"http"`` or ``"https"``.
    """

    def __init__(
        self,
        events: ReaderEvents,
        sink: ResponseSink,
        runner: Runner,
        body_producer: Any,
        scheme: str,
        server_name: str,
        server_port: int,
        remote_addr: str,
    ) -> None:
        opts: ServerOptions = runner.options
        self._events = events
        self._sink = sink
        self._runner = runner
        self._body_producer = body_producer
        self._max_line = opts.max_initial_line_length
        self._max_header = opts.max_header_size
        self._max_body = opts.max_request_body_size
        self._scheme = scheme
        self._server_name = server_name
        self._server_port = server_port
        self._remote_addr = remote_addr
        self._parser = httptools.HttpRequestParser(self)
        self._error_status: int | None = None
        self.in_head = False
        self._head_bytes = 0
        self._url: list[bytes] = []
        self._url_len = 0
        self._headers: dict[str, str] = {}
        self._hdr_size = 0
        self._parsing: H1Exchange | None = None  # the exchange whose body is arriving
        self._received = 0

    def feed(self, data: bytes) -> None:
        """Parse ``data``; report requests, the end of bodies, an upgrade or an error."""
        was_in_head = self.in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = int(e.args[0]) if e.args else len(data)
            self._events.upgrade_requested(data[offset:])
        except httptools.HttpParserError as e:
            status = self._error_status
            if status is None:
                if isinstance(e, httptools.HttpParserCallbackError):
                    _log.failure("HTTP/1.1 parser callback failed", Failure(e.__context__ or e))
                    status = 500
                else:
                    status = 400
            self._broken(status)
        else:
            if was_in_head and self.in_head:
                # A head that never ends: llhttp buffers a partial header line
                # without calling us, so count the bytes too.
                self._head_bytes += len(data)
                if self._head_bytes > self._max_line + self._max_header + 4:
                    self._broken(431 if self._headers else 414)

    def _broken(self, status: int) -> None:
        ex, self._parsing = self._parsing, None
        self._events.broken(status, ex)

    def _fail(self, status: int, why: str) -> None:
        """Stop parsing: ``status`` is answered (raising makes llhttp stop)."""
        self._error_status = status
        raise ValueError(why)

    # -- httptools callbacks (inside feed_data; never user code) -------------------

    def on_message_begin(self) -> None:
        """A request starts."""
        self.in_head = True
        self._head_bytes = 0
        self._url = []
        self._url_len = 0
        self._headers = {}
        self._hdr_size = 0

    def on_url(self, url: bytes) -> None:
        """Part of the request target."""
        self._url.append(url)
        self._url_len += len(url)
        if self._url_len + 10 > self._max_line:
            self._fail(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header (or trailer) line."""
        self._hdr_size += len(name) + len(value) + 4
        if self._hdr_size > self._max_header:
            self._fail(431, "header block too large")
        if not self.in_head:
            return  # trailers (RFC 9112 §7.1.2) are counted, not kept
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < 512:
                _NAMES[name] = key
        headers = self._headers
        old = headers.get(key)
        if old is None:
            headers[key] = value.decode("latin-1")
        elif key == "host":
            self._fail(400, "more than one Host header")  # RFC 9112 §3.2
        else:
            # RFC 9110 §5.3: repeated fields combine with ", " (Ring's join)
            headers[key] = old + ", " + value.decode("latin-1")

    def on_headers_complete(self) -> None:
        """The head is complete: check it, build the request, queue the exchange."""
        self.in_head = False
        self._hdr_size = 0  # trailers get their own budget
        p = self._parser
        raw_method = p.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        version = p.get_http_version()
        headers = self._headers
        version10 = version == "1.0"
        plain = (
            len(method) + len(url) + 10 <= self._max_line
            and (version10 or version == "1.1")
            and "content-length" not in headers
            and "transfer-encoding" not in headers
            and "expect" not in headers
            and "upgrade" not in headers
            and method != "CONNECT"
        )
        body: Stream | None = None
        if not plain:  # the checks a request without body, expectation or upgrade needs not
            body = self._check_head(method, url, version, headers)
        keep_alive = p.should_keep_alive()
        req = build_request(
            method,
            url,
            headers,
            body,
            self._scheme,
            self._server_name,
            self._server_port,
            self._remote_addr,
            "HTTP/1.0" if version10 else "HTTP/1.1",
            keep_alive,
        )
        if plain:
            ex = H1Exchange(self._runner, self._sink, req, None)
            if not keep_alive:
                ex.keep_alive = False
            if version10:
                ex.version10 = True
            if method == "HEAD":
                ex.head = True
            self._events.request_ready(ex)
            return
        upgrade = method == "CONNECT" or (
            "upgrade" in headers and "upgrade" in headers.get("connection", "").lower()
        )
        if upgrade:
            req = UpgradeRequest(req)
        ex = H1Exchange(self._runner, self._sink, req, body)
        ex.keep_alive = keep_alive
        ex.version10 = version10
        ex.head = method == "HEAD"
        if upgrade:
            ex.upgrade = True
            ex.head_bytes = self._rebuild_head(method, url, version)
        if "expect" in headers and not version10:
            ex.expect = True
        if body is not None:
            ex.body_done = False
            ex.receiver = Receiver(body.put, body.close, self._body_producer)
            self._parsing = ex
            self._received = 0
        self._events.request_ready(ex)

    def _check_head(self, method: str, url: bytes, version: str, headers: dict[str, str]) -> Stream | None:
        """Limits and framing of a head (RFC 9112 §6); the body stream if it has a body."""
        status = check_request_line(len(method), len(url), self._max_line) or check_version(version)
        cl = headers.get("content-length")
        te = headers.get("transfer-encoding")
        length: int | None = None
        if cl is not None or te is not None:
            status = status or check_framing(
                [cl] if cl is not None else [], [te] if te is not None else [], version
            )
            if status is None and cl is not None:
                length = int(cl)
        has_body = te is not None or (length is not None and length > 0)
        if status is None and has_body:
            status = check_content_length(length, 0, self._max_body)
        expect = headers.get("expect")
        if status is None and expect is not None and expect.strip().lower() != "100-continue":
            status = 417  # RFC 9110 §10.1.1: an expectation we cannot meet
        if status is not None:
            self._fail(status, "bad request head")
        return Stream(BODY_BUFFER_BYTES, None, None, len) if has_body else None

    def _rebuild_head(self, method: str, url: bytes, version: str) -> bytes:
        lines = [b"%s %s HTTP/%s\r\n" % (method.encode("latin-1"), url, version.encode("ascii"))]
        # names lower-cased, repeats joined (RFC 9110 §5.3 makes them equivalent)
        lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in self._headers.items())
        lines.append(b"\r\n")
        return b"".join(lines)

    def on_body(self, data: bytes) -> None:
        """A piece of the request body: into the body stream."""
        ex = self._parsing
        if ex is None or ex.receiver is None:
            return
        self._received += len(data)
        if self._max_body is not None and self._received > self._max_body:
            self._fail(413, "request body too large")
        ex.receiver.write(data)

    def on_message_complete(self) -> None:
        """The request (with its body) is complete."""
        ex, self._parsing = self._parsing, None
        if ex is not None:
            ex.body_done = True
            if ex.receiver is not None:
                ex.receiver.finish()
