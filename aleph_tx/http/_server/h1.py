"""The HTTP/1.1 connection: bytes in and out, timers, pipelining, the upgrade hand-off.

:class:`HTTP11Protocol` feeds the :class:`~.h1_reader.RequestReader`, answers its
exchanges one at a time in order (pipelined requests wait, and reading pauses while
they do), and is the :class:`~.exchange.ResponseSink` of each: it frames heads and
bodies (:mod:`~aleph_tx.http._ring.response`; chunked encoding, RFC 9112 §7.1) and
decides keep-alive. Policy (the handler, errors, compression) is the exchange's.

Connection states (:class:`ConnState`):

- ``OPEN``: parsing requests, answering them one at a time in order;
- ``UPGRADING``: an ``Upgrade``/``CONNECT`` request was parsed; reading is paused
  and later bytes are kept for whoever takes the connection over;
- ``BROKEN``: the input broke the protocol or a limit; requests before it are
  answered, then the error, then the connection closes;
- ``CLOSING``: the last response is written, the connection is closing;
- ``HANDED_OFF``: another protocol (a WebSocket) owns the connection: bytes and
  the connection's loss are passed to it;
- ``CLOSED``: ``connectionLost`` ran.

Timers (:class:`~aleph_tx._time.Deadline`): ``header_timeout`` runs while the
connection waits for a request head (from the connection's start, and from the
end of each response); ``idle_timeout`` closes a connection on which no byte moved
either way for that long.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

from twisted.internet.interfaces import IProtocolNegotiationFactory, IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx._time import Deadline
from aleph_tx.http._ring.response import NO_BODY_STATUSES, head_bytes, simple_response, whole_response
from aleph_tx.http._server.exchange import Exchange, Runner
from aleph_tx.http._server.h1_reader import H1Exchange, RequestReader

__all__ = ["ConnState", "HTTP11Protocol", "HTTPFactory", "UpgradeHandle"]

# Reasons to stop reading the socket (merged: reading resumes when none is left).
_PAUSE_BODY = 1  # a body put is waiting for the handler to take
_PAUSE_QUEUE = 2  # pipelined requests are waiting for their turn
_PAUSE_UPGRADE = 4  # an upgrade request waits for its handler's decision
_PAUSE_BROKEN = 8  # nothing more will be parsed

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ConnState(enum.Enum):
    """See the module docstring."""

    OPEN = "open"
    UPGRADING = "upgrading"
    BROKEN = "broken"
    CLOSING = "closing"
    HANDED_OFF = "handed_off"
    CLOSED = "closed"


#: The states as module constants, for the per-message paths (docs/internals.rst,
#: "The HTTP/1.1 request path": an Enum class attribute costs about 70 ns).
_OPEN, _UPGRADING, _BROKEN, _CLOSING, _HANDED_OFF, _CLOSED = ConnState


@implementer(IProtocolNegotiationFactory)
class HTTPFactory(ServerFactory):
    """Builds one :class:`HTTP11Protocol` per connection, sharing the :class:`Runner`.

    Under TLS it advertises ``http/1.1`` by ALPN: Twisted installs an ALPN callback
    on every server context, and with nothing to offer a client that offers ALPN
    (curl, browsers) gets a fatal "internal error" alert instead of a handshake.

    :ivar server: the :class:`aleph_tx._server.Server` tracking connections (set later).
    """

    noisy = False

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.server: Any = None
        self.scheme: str | None = None  # None: from the transport (ISSLTransport → https)

    def buildProtocol(self, addr: Any) -> HTTP11Protocol:  # noqa: N802 - Twisted's name
        """A new protocol for one connection."""
        return HTTP11Protocol(self)

    def acceptableProtocols(self) -> list[bytes]:  # noqa: N802 - Twisted's name
        """The ALPN names this factory speaks."""
        return [b"http/1.1"]


@implementer(IPushProducer)
class _BodyPauses:
    """The request bodies' reason to stop reading: paused while any body put waits."""

    __slots__ = ("_count", "_proto")

    def __init__(self, proto: HTTP11Protocol) -> None:
        self._proto = proto
        self._count = 0

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._count += 1
        if self._count == 1:
            self._proto._pause(_PAUSE_BODY)

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._count -= 1
        if self._count == 0:
            self._proto._resume(_PAUSE_BODY)

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        """Nothing to stop: the connection's own loss ends the bodies."""


class UpgradeHandle:
    """``req.upgrade`` of an ``Upgrade`` request: give the connection to another protocol.

    :ivar head: the request head as received (rebuilt: request line and headers),
        for a protocol that wants to parse it again (autobahn does).
    """

    __slots__ = ("_ex", "_proto", "head")

    def __init__(self, proto: HTTP11Protocol, ex: H1Exchange) -> None:
        self._proto = proto
        self._ex = ex
        self.head = ex.head_bytes

    @property
    def transport(self) -> Any:
        """The connection's transport."""
        return self._proto.transport

    def hand_off(self, protocol: Protocol, replay_head: bool = True) -> None:
        """Make ``protocol`` the connection's protocol and feed it.

        ``protocol.makeConnection(transport)`` is called, then ``dataReceived`` with
        the request head (if ``replay_head``) plus every byte received after it;
        reading resumes. From then on the bytes and the connection's loss go to
        ``protocol``; ``Server.close`` calls its ``graceful_close()`` if it has one.
        The handler's return value is ignored.

        :raises RuntimeError: if the connection is gone or the response started.
        """
        self._proto.hand_off(self._ex, protocol, self.head if replay_head else b"")


class HTTP11Protocol(Protocol):
    """HTTP/1.1 on httptools; see the module docstring."""

    # a tcp.Server, a TLS ProtocolWrapper or a test transport: ITCPTransport,
    # IConsumer and IPushProducer in one
    transport: Any

    def __init__(self, factory: HTTPFactory) -> None:
        self.factory = factory
        runner = factory.runner
        self.runner = runner
        opts = runner.options
        self.clock = runner.clock
        self.state = _OPEN
        self._queue: deque[H1Exchange] = deque()
        self._current: H1Exchange | None = None
        self._dispatching = False
        self._paused = 0
        self._closing = False  # graceful close asked
        self._chunked = False  # the current response body is chunked
        self._tail = b""
        self._handed_to: Protocol | None = None
        self._reader: RequestReader
        self._idle = Deadline(opts.idle_timeout, self._idle_expired, self.clock)
        self._idle_on = opts.idle_timeout is not None
        self._header_timer = Deadline(opts.header_timeout, self._header_expired, self.clock)

    # -- connection --------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        """Set up the reader, the addresses and the timers; tell the server."""
        t = self.transport
        host = t.getHost()
        peer = t.getPeer()
        scheme = self.factory.scheme or ("https" if ISSLTransport.providedBy(t) else "http")
        self._reader = RequestReader(
            self,
            self,
            self.runner,
            _BodyPauses(self),
            scheme,
            str(getattr(host, "host", "localhost")),
            int(getattr(host, "port", 0) or 0),
            str(getattr(peer, "host", "")),
        )
        set_no_delay = getattr(t, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except Exception:  # a transport without a real socket
                pass
        self._idle.start()
        self._header_timer.start()
        server = self.factory.server
        if server is not None:
            server.track(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        """Abandon every exchange (cancel handlers, close bodies); tell the server."""
        handed_to = self._handed_to if self.state is _HANDED_OFF else None
        self.state = _CLOSED
        self._idle.cancel()
        self._header_timer.cancel()
        exchanges = list(self._queue)
        self._queue.clear()
        if self._current is not None:
            exchanges.insert(0, self._current)
            self._current = None
        for ex in exchanges:
            ex.abandon()
        try:
            if handed_to is not None:
                handed_to.connectionLost(reason)
        finally:
            server = self.factory.server
            if server is not None:
                server.untrack(self)

    def graceful_close(self) -> None:
        """Finish the request in flight, then close (``Server.close``)."""
        self._closing = True
        if self.state is _HANDED_OFF:
            target = getattr(self._handed_to, "graceful_close", None)
            if target is not None:
                target()
            else:
                self.transport.loseConnection()
            return
        if self._current is None:
            self._queue.clear()
            self._close()

    def abort(self) -> None:
        """Cut the connection now."""
        if self.state is not _CLOSED:
            self.transport.abortConnection()

    def _close(self) -> None:
        if self.state in (_CLOSING, _CLOSED):
            return
        self.state = _CLOSING
        self._header_timer.stop()
        self.transport.loseConnection()

    # -- timers --------------------------------------------------------------------

    def _idle_expired(self) -> None:
        """No byte moved either way for ``idle_timeout``: close without a response (no 408)."""
        if self.state is not _CLOSED and self.state is not _HANDED_OFF:
            self.transport.abortConnection()

    def _header_expired(self) -> None:
        """No complete request head in time: 408 if part of one came, else close silently."""
        if self.state is not _OPEN or self._current is not None or self._queue:
            return
        if self._reader.in_head:
            ex = H1Exchange(self.runner, self, {}, None)
            ex.error_status = 408
            self.state = _BROKEN
            self._pause(_PAUSE_BROKEN)
            self._queue.append(ex)
            self._dispatch_next()
        else:
            self._close()

    # -- reading -----------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self._paused and self.state is not _CLOSED and self.state is not _CLOSING:
            self.transport.pauseProducing()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.state is not _CLOSED and self.state is not _CLOSING:
                self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Feed the reader; then answer what is complete."""
        if self._idle_on:
            self._idle.start()
        state = self.state
        if state is not _OPEN:
            if state is _UPGRADING:
                self._tail += data
            elif state is _HANDED_OFF:
                self._handed_to.dataReceived(data)  # type: ignore[union-attr]
            return
        self._reader.feed(data)
        if self._current is None and self._queue:
            self._dispatch_next()

    # ReaderEvents

    def request_ready(self, ex: H1Exchange) -> None:
        """A request head is complete: queue its exchange."""
        self._header_timer.stop()
        if ex.upgrade:
            ex.req.upgrade = UpgradeHandle(self, ex)  # type: ignore[attr-defined]
        self._queue.append(ex)

    def upgrade_requested(self, tail: bytes) -> None:
        """An upgrade request: keep later bytes for the protocol that takes over."""
        self._tail = tail
        self.state = _UPGRADING
        self._pause(_PAUSE_UPGRADE)

    def broken(self, status: int, ex: H1Exchange | None) -> None:
        """The input broke the protocol or a limit: answer ``status`` in turn, then close."""
        self.state = _BROKEN
        self._pause(_PAUSE_BROKEN)
        self._header_timer.stop()
        if ex is None:
            ex = H1Exchange(self.runner, self, {}, None)
            ex.error_status = status
            self._queue.append(ex)
            return
        ex.keep_alive = False
        if ex is self._current:
            ex.interrupt(status)  # its handler runs: cancel it, answer the error
        else:
            ex.error_status = status  # queued: answered in its turn
            ex.refuse_body()

    # -- dispatch ----------------------------------------------------------------

    def _dispatch_next(self) -> None:
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._current is None and self._queue:
                if self.state in (_CLOSING, _CLOSED, _HANDED_OFF):
                    self._queue.clear()
                    break
                ex = self._queue.popleft()
                self._current = ex
                if ex.error_status is not None:
                    ex.error(ex.error_status)
                else:
                    ex.run()
        finally:
            self._dispatching = False
        if self._queue:
            self._pause(_PAUSE_QUEUE)
        else:
            if self._paused:
                self._resume(_PAUSE_QUEUE)
            if self._current is None:
                if self._closing:
                    self._close()
                elif self.state is _OPEN:
                    self._header_timer.start()

    # -- ResponseSink ------------------------------------------------------------

    def _keep(self, ex: H1Exchange) -> bool:
        return (
            ex.keep_alive
            and ex.body_done
            and not self._closing
            and not ex.upgrade
            and (self.state is _OPEN or self.state is _BROKEN)
        )

    def _write(self, data: bytes) -> None:
        if self._idle_on:
            self._idle.start()
        self.transport.write(data)

    def respond_whole(
        self, ex: Any, status: int, lines: list[bytes], seen: dict[str, str], body: bytes
    ) -> None:
        """Write the whole response at once."""
        keep = self._keep(ex)
        self._write(whole_response(status, lines, seen, body, keep, ex.head, ex.version10))
        self._finish(ex, keep)

    def respond_head(
        self, ex: Any, status: int, lines: list[bytes], seen: dict[str, str], length: int | None
    ) -> bool:
        """Write the head; frame the body by its length, chunked, or by closing (HTTP/1.0)."""
        keep = self._keep(ex)
        self._chunked = False
        if status in NO_BODY_STATUSES:
            framing = b""
        elif length is not None:
            framing = b"content-length: %d\r\n" % length
        elif ex.version10:
            framing = b""  # RFC 9112 §6.3: the body ends when the connection closes
            keep = False
        else:
            framing = b"transfer-encoding: chunked\r\n"
            self._chunked = not ex.head
        ex.keep_alive = keep
        self._write(b"".join(head_bytes(status, lines, seen, framing, keep, ex.version10)))
        return not ex.head and status not in NO_BODY_STATUSES

    def respond_error(self, ex: Any, status: int) -> None:
        """A fixed error response, then close."""
        ex.keep_alive = False
        self._write(simple_response(status))
        self._finish(ex, False)

    def send_continue(self, ex: Any) -> None:
        """``100 Continue`` (only while the body has not arrived)."""
        if not ex.body_done:
            self._write(_CONTINUE)

    def write(self, data: bytes) -> None:
        """A piece of the response body (framed when chunked)."""
        if self._chunked:
            # RFC 9112 §7.1: chunk = chunk-size CRLF chunk-data CRLF
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._write(data)

    def body_done(self, ex: Any, complete: bool) -> None:
        """The body is written: the last chunk; keep the connection if all went well."""
        if self._chunked:
            self._chunked = False
            self._write(b"0\r\n\r\n")
        self._finish(ex, ex.keep_alive and complete and self._keep(ex))

    def body_failed(self, ex: Exchange) -> None:
        """The body failed after the head went out: cut the connection."""
        if self.state is not _CLOSED:
            self.transport.abortConnection()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:  # noqa: N802
        """The body writer produces for the transport."""
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:  # noqa: N802
        """The body writer is done."""
        if self.state is not _CLOSED:
            self.transport.unregisterProducer()

    def _finish(self, ex: H1Exchange, keep: bool) -> None:
        if self._current is ex:
            self._current = None
        if not keep:
            self._queue.clear()
            self._close()
            return
        if not self._dispatching:
            self._dispatch_next()

    # -- upgrade hand-off ------------------------------------------------------------

    def hand_off(self, ex: H1Exchange, protocol: Protocol, head: bytes) -> None:
        """Give the connection to ``protocol`` (see :meth:`UpgradeHandle.hand_off`)."""
        if self.state is not _UPGRADING or ex is not self._current or ex.started:
            raise RuntimeError(f"cannot hand off the connection in state {self.state.value}")
        self.state = _HANDED_OFF
        self._handed_to = protocol
        ex.hand_off()
        self._current = None
        self._idle.cancel()
        self._header_timer.cancel()
        protocol.makeConnection(self.transport)
        tail, self._tail = self._tail, b""
        data = head + tail
        if data:
            protocol.dataReceived(data)
        self._paused = 0
        self.transport.resumeProducing()
