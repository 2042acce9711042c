"""THE handler runner: one request and its response, the same on every server front.

HTTP/1.1 (:mod:`.h1`), the twisted.web front (:mod:`.web`: HTTP/2 and
``to_resource``) and HTTP/3 each parse requests their own way, then hand every
request to an :class:`Exchange`, which applies the server's policy (written here
once):

- the handler call: plain, ``Deferred`` or coroutine results; ``executor="thread"``
  runs a synchronous handler in the reactor's thread pool;
- ``Expect: 100-continue`` and ``continue_handler`` (where the front asks);
- result normalisation: a dict (or ``None`` → 204), validated status and headers,
  the body coerced (:func:`~aleph_tx.http._ring.body.coerce_body`) and awaited;
- ``error_handler`` (default 500; a traceback is logged, never sent), and 400 for a
  :class:`~aleph_tx.errors.WebSocketHandshakeError` that escapes the handler;
- compression (gzip when ``compression`` is on and the client accepts it) and the
  body's length (known → ``content-length``; unknown → the front frames it);
- streamed bodies through :class:`~aleph_tx.http._server.writer.BodyWriter`;
- the end of the response: an unread request body is dropped (its producer's puts
  fire ``False``, so reading goes on and the rest is discarded);
- abandonment (the client went away): the pending handler is cancelled, the request
  body closed, a response body dropped (a stream's producers see their puts fire
  ``False``) — also when the response arrives after the client left;
- the upgrade hand-off: once a handler gave the connection away
  (:meth:`Exchange.hand_off`), its return value is ignored.

The front gives each exchange a :class:`ResponseSink`: where the head and the body
go, with public method names, so this module knows no front.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._chunks import ChunkSource, SourceKind
from aleph_tx._time import get_reactor
from aleph_tx.deferred import to_deferred
from aleph_tx.errors import ConnectionLostError, WebSocketHandshakeError
from aleph_tx.http._ring.body import coerce_body
from aleph_tx.http._ring.coding import Gzipper, accepts_gzip
from aleph_tx.http._ring.limits import ServerOptions
from aleph_tx.http._ring.response import NO_BODY_STATUSES, encode_headers, response_parts
from aleph_tx.http._server.writer import BodySink, BodyWriter
from aleph_tx.stream import Stream

__all__ = ["Exchange", "ResponseSink", "Runner", "UpgradeRequest"]

_log = Logger()

_GZIP_LINES = [b"content-encoding: gzip\r\n", b"vary: accept-encoding\r\n"]


class ResponseSink(BodySink, typing.Protocol):
    """What a front gives an :class:`Exchange`: where its response goes.

    ``lines`` are validated ``name: value\\r\\n`` header lines without framing
    headers; ``seen`` holds the values a front may need (``content-length``,
    ``date``, ``content-encoding``, ...), see
    :func:`~aleph_tx.http._ring.response.encode_headers`.
    """

    def respond_whole(
        self, ex: Exchange, status: int, lines: list[bytes], seen: dict[str, str], body: bytes
    ) -> None:
        """Send a whole response (for ``HEAD`` without its body), then end it."""

    def respond_head(
        self, ex: Exchange, status: int, lines: list[bytes], seen: dict[str, str], length: int | None
    ) -> bool:
        """Send the head of a streamed body (``length`` ``None``: unknown).

        :returns: ``False`` when no body goes out (``HEAD``, 204, 304): the exchange
            then ends it at once with :meth:`body_done`.
        """

    def respond_error(self, ex: Exchange, status: int) -> None:
        """A fixed plain-text error (nothing of the handler's), then close."""

    def send_continue(self, ex: Exchange) -> None:
        """``100 Continue``: the client may send the body (RFC 9110 §10.1.1)."""


class Runner:
    """The server's handler and options, shared by the exchanges of every front.

    :param handler: the Ring handler.
    :param options: validated options.
    :param reactor: for the thread pool (``executor="thread"``) and as the clock.
    """

    __slots__ = (
        "alt_svc",
        "clock",
        "compression",
        "error_handler",
        "handler",
        "options",
        "reactor",
        "threaded",
    )

    def __init__(self, handler: Callable[[dict[str, Any]], Any], options: ServerOptions, reactor: Any = None):
        self.handler = handler
        self.options = options
        self.reactor = get_reactor(reactor)
        self.clock = options.clock if options.clock is not None else self.reactor
        self.compression = options.compression
        self.error_handler = options.error_handler
        self.threaded = options.executor == "thread" and not inspect.iscoroutinefunction(handler)
        #: an ``alt-svc`` header line every response carries (HTTP/3 advertised), or None
        self.alt_svc: bytes | None = None

    def call(self, req: dict[str, Any]) -> Any:
        """Call the handler (in the thread pool with ``executor="thread"``)."""
        if self.threaded:
            reactor = self.reactor
            return deferToThreadPool(reactor, reactor.getThreadPool(), self.handler, req)
        return self.handler(req)


class UpgradeRequest(dict):  # type: ignore[type-arg]
    """The request dict of an ``Upgrade`` (or ``CONNECT``) request.

    A plain ``dict`` to the handler; :attr:`upgrade` is the front's hand-off handle
    for WebSockets: ``req.upgrade.hand_off(protocol)``.
    """

    __slots__ = ("upgrade",)

    upgrade: Any


class Exchange:
    """One request and its response (see the module docstring).

    The front builds it with its :class:`ResponseSink`, then calls :meth:`run`; it
    calls :meth:`abandon` if the client goes away. Class-level defaults keep the
    per-request stores few.

    :ivar started: the response (or a hand-off) has begun: nothing else is sent.
    """

    abandoned = False
    head = False  # a HEAD request: the response goes without its body (the front sets it)
    started = False
    in_error = False
    expect = False
    pending: Deferred[Any] | None = None
    writer: BodyWriter | None = None

    def __init__(self, runner: Runner, sink: ResponseSink, req: dict[str, Any], body: Stream | None) -> None:
        self.runner = runner
        self.sink = sink
        self.req = req
        self.body = body

    # -- the handler -------------------------------------------------------------

    def run(self) -> None:
        """Call the handler (after ``continue_handler`` when the client expects 100);
        answer with what it returns."""
        if self.expect:
            self._ask_continue()
            return
        runner = self.runner
        try:
            result = runner.call(self.req) if runner.threaded else runner.handler(self.req)
        except Exception:
            self.failed(Failure())
            return
        if type(result) is dict:
            self.respond(result)
        else:
            self.on_result(result)

    def _ask_continue(self) -> None:
        check = self.runner.options.continue_handler
        if check is None:
            self._continue_decided(True)
            return
        try:
            decision = check(self.req)
        except Exception:
            self.failed(Failure())
            return
        if isinstance(decision, Deferred) or inspect.isawaitable(decision):
            self._wait(decision, self._continue_decided)
        else:
            self._continue_decided(decision)

    def _continue_decided(self, decision: Any) -> None:
        if self.abandoned:
            return
        if isinstance(decision, dict):
            self.refuse_body()
            self.respond(decision)
        elif decision:
            self.sink.send_continue(self)
            self.expect = False
            self.run()
        else:
            self.refuse_body()
            self.error(417)

    def on_result(self, result: Any) -> None:
        """The handler's (or error handler's) result: wait for it, then respond."""
        if isinstance(result, Deferred) or inspect.isawaitable(result):
            self._wait(result, self.on_result)
        else:
            self.respond(result)

    def _wait(self, result: Any, then: Callable[[Any], None]) -> None:
        d = to_deferred(result)
        self.pending = d
        d.addCallbacks(self._fired, self._errored, callbackArgs=(then,))

    def _fired(self, value: Any, then: Callable[[Any], None]) -> None:
        self.pending = None
        if self.abandoned or self.started:
            _discard_response(value)
            return
        then(value)

    def _errored(self, failure: Failure) -> None:
        self.pending = None
        if self.abandoned or self.started:
            if not failure.check(CancelledError):
                _log.failure(
                    "handler failed on {uri} after its client went away or the upgrade",
                    failure,
                    uri=self.req.get("uri"),
                )
            return
        self.failed(failure)

    def failed(self, failure: Failure) -> None:
        """The handler (or the response it gave) failed: ``error_handler``, else 500."""
        if failure.check(WebSocketHandshakeError) and not self.in_error and not self.started:
            self.refuse_body()
            self.error(400)
            return
        _log.failure(
            "handler failed on {method} {uri}",
            failure,
            method=self.req.get("request_method"),
            uri=self.req.get("uri"),
        )
        if self.started:
            if not self.abandoned:
                self.sink.body_failed(self)
            return
        error_handler = self.runner.error_handler
        if self.in_error or error_handler is None:
            self.error(500)
            return
        self.in_error = True
        try:
            result = error_handler(self.req, failure)
        except Exception:
            self.failed(Failure())
            return
        self.on_result(result)

    # -- the response ------------------------------------------------------------

    def respond(self, response: Any) -> None:
        """Validate ``response`` and send it."""
        if self.started or self.abandoned:
            _discard_response(response)
            return
        try:
            status, headers, body = response_parts(response)
            lines, seen = encode_headers(headers)
            coerced: Any = body.encode("utf-8") if type(body) is str else coerce_body(body)
        except Exception:
            self.failed(Failure())
            return
        if self.runner.alt_svc is not None and "alt-svc" not in seen:
            lines.append(self.runner.alt_svc)
        if type(coerced) is bytes and not self.runner.compression and self.body is None:
            self.started = True  # the common case: the whole answer at once
            self.sink.respond_whole(self, status, lines, seen, coerced)
        else:
            self._send(status, lines, seen, coerced)

    def _send(self, status: int, lines: list[bytes], seen: dict[str, str], body: Any) -> None:
        if type(body) is bytes:
            if body and self.runner.compression and self._gzip(status, seen):
                body = Gzipper.whole(body)
                lines = [*lines, *_GZIP_LINES]
            self.started = True
            self.drop_body()
            self.sink.respond_whole(self, status, lines, seen, body)
        elif isinstance(body, ChunkSource):
            self._stream(status, lines, seen, body)
        else:

            def arrived(value: Any) -> None:
                try:
                    coerced = coerce_body(value)
                except Exception:
                    self.failed(Failure())
                    return
                self._send(status, lines, seen, coerced)

            self._wait(body, arrived)

    def _stream(self, status: int, lines: list[bytes], seen: dict[str, str], source: ChunkSource) -> None:
        length = source.length
        declared = seen.get("content-length")
        if length is None and declared is not None and declared.isdigit():
            length = int(declared)
        gz: Gzipper | None = None
        if self._gzip(status, seen):
            gz = Gzipper()
            length = None
            lines = [*lines, *_GZIP_LINES]
        self.started = True
        if not self.sink.respond_head(self, status, lines, seen, length):
            source.close()
            self.drop_body()
            self.sink.body_done(self, True)
            return
        writer = BodyWriter(self, self.sink, source, length, gz, self.runner.clock)
        self.writer = writer
        self.sink.registerProducer(writer, True)
        writer.start()

    def _gzip(self, status: int, seen: dict[str, str]) -> bool:
        return (
            self.runner.compression
            and status not in NO_BODY_STATUSES
            and "content-encoding" not in seen
            and accepts_gzip(self.req["headers"].get("accept-encoding"))
        )

    def error(self, status: int) -> None:
        """Answer a fixed error (no handler output): the connection closes after it."""
        self.started = True
        self.drop_body()
        self.sink.respond_error(self, status)

    # -- endings -------------------------------------------------------------------

    def body_written(self, complete: bool) -> None:
        """The writer sent the whole body (``complete``: as long as it said)."""
        self.drop_body()
        self.sink.body_done(self, complete)

    def refuse_body(self) -> None:
        """The body will not be read (a refused ``Expect``, a handshake error)."""
        if self.body is not None:
            self.body.close()

    def drop_body(self) -> None:
        """Drop what the handler did not read of the request body: its puts fire ``False``."""
        body = self.body
        if body is not None and not body.drained:
            body._drop()

    def interrupt(self, status: int) -> None:
        """The request itself broke (a limit, bad framing) while the handler ran.

        The handler is cancelled before its body closes (a truncated body must not
        look complete to it) and ``status`` answered; if the response had started,
        the connection is cut instead.
        """
        if self.started:
            self.abandon()
            self.sink.body_failed(self)
            return
        self.abandon()
        self.error(status)

    def hand_off(self) -> None:
        """The handler gave the connection away: its return value is ignored."""
        self.started = True

    def abandon(self) -> None:
        """The client went away: cancel the handler, end the request body, drop the response body.

        The handler is cancelled first, so a truncated body never looks complete to
        it; a body that had not ended keeps a
        :class:`~aleph_tx.errors.ConnectionLostError` in ``description()["error"]``
        (``collect_bytes`` and ``wsgi.input`` raise it).
        """
        if self.abandoned:
            return
        self.abandoned = True
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()
        body = self.body
        if body is not None and not body.closed:
            body._break(ConnectionLostError("the client went away before the request body ended"))
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.abandon()


def _discard_response(value: Any) -> None:
    """Release the body of a response (or a body) nobody will send: a stream's puts fire ``False``."""
    body = value.get("body") if isinstance(value, dict) else value
    if body is None or isinstance(body, (bytes, str)):
        return
    try:
        coerced = coerce_body(body)
    except Exception:
        return
    if isinstance(coerced, ChunkSource):
        coerced.close()
        if coerced.kind is SourceKind.STREAM:
            drop = getattr(coerced.source, "_drop", None)
            if drop is not None:
                drop()
    elif inspect.iscoroutine(coerced):
        coerced.close()
