"""The stream adapter: any Twisted transport as a duplex :class:`~aleph_tx.stream.Stream`.

Written once, reused by TCP, TLS, HTTP bodies and WebSockets. Three parts:

:class:`~aleph_tx._receiver.Receiver` (``IConsumer``, the inbound half, its own module)
    ``write(data)`` puts ``data`` into a stream, pausing the registered push
    producer (normally the transport) while a put is pending: a connection stops
    reading while nobody takes. ``finish()`` closes the stream's input.

:class:`Sender` (``IPushProducer``, the outbound half)
    ``send(msg)`` writes at once while the consumer (the transport) has room and
    fires ``True``; while the consumer has paused it, messages queue and their
    Deferreds fire ``True`` when written. ``close()`` flushes the queue then calls
    ``finish`` (e.g. ``loseConnection``). ``lost()`` (connection gone) fires the
    queued Deferreds ``False``: those messages were not sent.

:class:`ConnectionStream` (a ``Stream``)
    the user's duplex stream: takes come from the received data (the Stream's own
    buffer, fed by the Receiver), puts are converted (``to_bytes`` for TCP; a
    message it rejects fails that put with :class:`TypeError`, the connection stays
    open) and go to the Sender. ``closed`` is the output side's (after ``close()``
    or connection loss), ``drained`` the input side's.

:class:`StreamProtocol` glues them to an ``IProtocol`` (with half-close and TLS
handshake support); ``tcp`` subclasses it. (:class:`aleph_tx._pump.Pump` is the
outbound half for pulled sources: response and request bodies.)

IConsumer rules kept here: one producer at a time (a second ``registerProducer``
raises :class:`RuntimeError`); ``resumeProducing`` is only called to balance a
``pauseProducing`` this object made.
"""

from __future__ import annotations

import collections
import enum
import functools
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProducer,
    IProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx import _eager, byte_streams
from aleph_tx._chunks import to_chunk
from aleph_tx._receiver import Receiver
from aleph_tx._time import withdraw_after
from aleph_tx.errors import BackpressureError
from aleph_tx.stream._core import (
    MAX_PENDING,
    Stream,
    _check_timeout,
    _fired_true,
)

__all__ = [
    "ConnectionStream",
    "Sender",
    "SenderState",
    "StreamProtocol",
    "to_bytes",
]

_log = Logger()


# -- conversion ---------------------------------------------------------------------


def to_bytes(msg: Any) -> bytes:
    """``msg`` as ``bytes``: a chunk (:func:`~aleph_tx._chunks.to_chunk`), else anything
    :func:`aleph_tx.byte_streams.to_bytes` accepts (files, paths, iterables of chunks).

    :raises TypeError: for anything ``to_bytes`` rejects (the message names it).
    """
    try:
        return to_chunk(msg)
    except TypeError:
        pass
    try:
        return byte_streams.to_bytes(msg)
    except (TypeError, ValueError, AttributeError) as e:
        raise TypeError(f"cannot convert {type(msg).__name__} {msg!r:.80} to bytes: {e}") from e


# -- outbound -----------------------------------------------------------------------


class SenderState(enum.Enum):
    """States of a :class:`Sender`.

    ``OPEN`` (writing) ⇄ ``PAUSED`` (the consumer asked us to wait);
    ``close()``: → ``CLOSING`` (flushing the queue, then ``finish``);
    ``lost()``/``stopProducing()`` from any state, or the queue flushed while
    ``CLOSING``: → ``CLOSED``. ``CLOSED`` is final.
    """

    OPEN = "open"
    PAUSED = "paused"
    CLOSING = "closing"
    CLOSED = "closed"


#: The states as module constants, for the per-message paths (docs/internals.rst,
#: "The HTTP/1.1 request path": an Enum class attribute costs about 70 ns).
_OPEN, _PAUSED, _CLOSING, _CLOSED = SenderState


@implementer(IPushProducer)
class Sender:
    """Writes messages while the consumer has room; queues them while it is paused.

    :param write: writes one message (``transport.write`` for TCP).
    :param finish: called once after :meth:`close` when the queue is flushed
        (unregister and ``loseConnection`` for TCP).
    :param measure: ``msg -> bytes`` counted in :attr:`bytes_sent` (default ``len``).
    """

    def __init__(
        self,
        write: Callable[[Any], object],
        finish: Callable[[], object],
        measure: Callable[[Any], int] = len,
    ) -> None:
        self._measure = measure
        self._write = write
        self._finish = finish
        self._queue: collections.deque[tuple[Any, Deferred[Any]]] = collections.deque()
        self._state = _OPEN
        self._paused = False
        self._flushing = False
        self._on_closed: list[Callable[[], object]] = []
        self.bytes_sent = 0
        #: ``True`` while a message sent now is written at once (open, not paused,
        #: nothing queued): a caller that sees it may write directly, counting
        #: :attr:`bytes_sent` itself (the streams' fast paths; docs/internals.rst).
        self.ready = True

    def _update(self) -> None:
        self.ready = self._state is _OPEN and not self._paused and not self._queue

    @property
    def state(self) -> SenderState:
        """The current :class:`SenderState`."""
        if self._state is _OPEN and self._paused:
            return _PAUSED
        return self._state

    @property
    def closed(self) -> bool:
        """``True`` once no more messages are accepted."""
        return self._state is not _OPEN

    @property
    def pending(self) -> int:
        """Messages queued (their puts not fired yet)."""
        return len(self._queue)

    def on_closed(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once when no more messages are accepted (at once if so)."""
        if self._state is _OPEN:
            self._on_closed.append(fn)
        else:
            _call_safely(fn)

    def send(self, msg: Any) -> Deferred[bool]:
        """Write ``msg`` now if there is room, else queue it.

        :returns: fires ``True`` once written, ``False`` if closed or if the
            connection is lost before it was written; fails with
            :class:`~aleph_tx.errors.BackpressureError` past 16384 queued messages.
        """
        if self.ready:
            self._do_write(msg)
            return _fired_true()  # the hot path: a fired Deferred with no state of its own
        if self._state is not _OPEN:
            return succeed(False)
        if len(self._queue) >= MAX_PENDING:
            return fail(BackpressureError(f"more than {MAX_PENDING} pending puts on {self!r}"))
        d: Deferred[bool] = Deferred(self._withdraw)
        self._queue.append((msg, d))
        self.ready = False
        return d

    def try_send(
        self,
        msg: Any,
        timeout: float,
        timeout_value: Any = False,
        clock: IReactorTime | None = None,
    ) -> Deferred[Any]:
        """Like :meth:`send`; fires ``timeout_value`` (the message withdrawn) if not written in time."""
        _check_timeout(timeout)
        d = self.send(msg)
        return withdraw_after(d, timeout, lambda: self._remove(d), timeout_value, clock)

    def _remove(self, d: Deferred[Any]) -> bool:
        for i, (_, qd) in enumerate(self._queue):
            if qd is d:
                del self._queue[i]
                self._update()
                return True
        return False

    def _withdraw(self, d: Deferred[Any]) -> None:
        self._remove(d)

    def _do_write(self, msg: Any) -> None:
        self.bytes_sent += self._measure(msg)
        self._write(msg)

    def _flush(self) -> None:
        if self._flushing:
            return
        self._flushing = True
        try:
            queue = self._queue
            while queue and not self._paused and self._state is not _CLOSED:
                msg, d = queue.popleft()
                self._do_write(msg)
                d.callback(True)
            if self._state is _CLOSING and not queue:
                self._state = _CLOSED
                self._finish()
        finally:
            self._flushing = False
            self._update()

    def close(self) -> None:
        """Accept no more; write what is queued, then call ``finish``. Idempotent."""
        if self._state is not _OPEN:
            return
        self._state = _CLOSING
        self.ready = False
        self._fire_closed()
        self._flush()

    def lost(self) -> None:
        """The consumer is gone: queued messages fire ``False``. Idempotent."""
        if self._state is _CLOSED and not self._queue:
            return
        self._state = _CLOSED
        self.ready = False
        queue, self._queue = self._queue, collections.deque()
        for _, d in queue:
            d.callback(False)
        self._fire_closed()

    def _fire_closed(self) -> None:
        callbacks, self._on_closed = self._on_closed, []
        for fn in callbacks:
            _call_safely(fn)

    # IPushProducer: called by the consumer (the transport).

    def pauseProducing(self) -> None:  # noqa: N802
        """The consumer is full: queue further messages."""
        self._paused = True
        self.ready = False

    def resumeProducing(self) -> None:  # noqa: N802
        """The consumer has room again: write the queue."""
        self._paused = False
        if self._queue or self._state is _CLOSING:
            self._flush()
        else:
            self._update()

    def stopProducing(self) -> None:  # noqa: N802
        """The consumer is going away: same as :meth:`lost`."""
        self.lost()

    def __repr__(self) -> str:
        return f"<Sender {self.state.value} queued={len(self._queue)}>"


def _call_safely(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        _log.failure("error in an on_closed callback {fn!r}", fn=fn)


# -- the user's stream --------------------------------------------------------------


class ConnectionStream(Stream):
    """A duplex stream over a connection: takes are received data, puts are sent.

    :param sender: the outbound half.
    :param convert: ``msg -> wire message``; a :class:`TypeError` or
        :class:`ValueError` it raises fails that put (default :func:`to_bytes`).
    :param description: extra ``description()`` keys (a dict or a callable).
    :param buffer_size: messages received and held before the connection pauses.
    """

    __slots__ = ("_convert", "_plain_bytes", "_sender")

    def __init__(
        self,
        sender: Sender,
        convert: Callable[[Any], Any] = to_bytes,
        description: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        buffer_size: int = 0,
    ) -> None:
        super().__init__(buffer_size, None, description)
        self._sender = sender
        self._convert = convert
        # bytes go to the transport as they are (TCP): put writes them itself
        self._plain_bytes = convert is to_bytes and sender._measure is len

    # output side

    def put(self, msg: Any) -> Deferred[bool]:
        """Send ``msg``; fires ``True`` once the transport took it, ``False`` if closed or lost.

        :raises ValueError: at once, for ``None``.
        """
        r = self.put_now(msg)
        if r is True:
            return _fired_true()
        if r is False:
            return succeed(False)
        return r  # type: ignore[no-any-return]

    def put_now(self, msg: Any, cb: object = None) -> Any:
        """The put of the stream graph (``connect``): ``True`` when written at once,
        ``False`` if closed, else the put's Deferred (no Deferred on the hot path).

        :raises ValueError: at once, for ``None``.
        """
        sender = self._sender
        if sender.ready and type(msg) is bytes and self._plain_bytes:
            # the hot path (TCP): what Sender.send would do, without its calls
            sender.bytes_sent += len(msg)
            sender._write(msg)
            return True
        if msg is None:
            raise ValueError("None is not a valid message")
        if sender._state is not _OPEN:
            return False
        try:
            data = self._convert(msg)
        except (TypeError, ValueError) as e:
            return fail(e)
        return sender.send(data)

    def try_put(
        self,
        msg: Any,
        timeout: float,
        timeout_value: Any = False,
        clock: IReactorTime | None = None,
    ) -> Deferred[Any]:
        """Like :meth:`put`; fires ``timeout_value`` if the transport had no room in time."""
        if msg is None:
            raise ValueError("None is not a valid message")
        _check_timeout(timeout)
        if self._sender.closed:
            return succeed(False)
        try:
            data = self._convert(msg)
        except (TypeError, ValueError) as e:
            return fail(e)
        return self._sender.try_send(data, timeout, timeout_value, clock)

    def close(self) -> None:
        """Stop sending: flush what was put, then close the connection. Idempotent."""
        self._sender.close()

    @property
    def closed(self) -> bool:
        """``True`` once closed by :meth:`close` or by the connection's loss."""
        return self._sender.closed

    def on_closed(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once the output side closes."""
        self._sender.on_closed(fn)

    # input side (used by the adapter)

    #: the input side's put (the stream's own buffer), for a Receiver
    _receive = Stream.put
    #: the same, without a Deferred per message (a Receiver's ``put_cb``)
    _receive_cb = Stream._put_cb
    #: closes the input side (the Receiver's ``close``)
    _end_input = Stream.close

    def description(self) -> dict[str, Any]:
        """The input side's counts, the output side's state, plus the connection's keys."""
        desc = Stream.description(self)
        if desc["type"] == "stream":
            desc["type"] = "connection"
        desc["closed"] = self.closed
        desc["input_pending"] = desc["pending_puts"]
        desc["pending_puts"] = self._sender.pending
        desc.setdefault("input_closed", self._closed)
        desc.setdefault("output_state", self._sender.state.value)
        desc.setdefault("bytes_sent", self._sender.bytes_sent)
        return desc

    def __repr__(self) -> str:
        state = "drained" if self.drained else "closed" if self.closed else "open"
        return f"<{type(self).__name__} {state}>"


# -- the protocol -------------------------------------------------------------------


def _is_tls(transport: Any) -> bool:
    try:
        from twisted.protocols.tls import TLSMemoryBIOProtocol
    except ImportError:  # pragma: no cover - pyOpenSSL is a dependency
        return False
    return isinstance(transport, TLSMemoryBIOProtocol)


@implementer(IProtocol, IPushProducer, IConsumer, IHalfCloseableProtocol, IHandshakeListener)
class StreamProtocol(Protocol):
    """A connection as a :class:`ConnectionStream` (``self.stream`` after ``connectionMade``).

    Subclasses override :meth:`connection_ready` (called once the connection can
    be used: at once, or after the TLS handshake) and :meth:`connection_failed`
    (lost before being ready). The protocol registers itself as the transport's
    streaming producer and delegates ``pauseProducing``/``resumeProducing`` to the
    :class:`Sender`; its ``IConsumer`` side is the :class:`Receiver`.

    ``graceful_close()`` and ``abort()`` make it a :class:`aleph_tx._server.Server`
    connection.
    """

    stream: ConnectionStream
    sender: Sender
    receiver: Receiver
    stream_type = "tcp"

    def __init__(self) -> None:
        self.ready = False
        self.lost_reason: Failure | None = None
        self.tls = False
        self.peer: Any = None
        self.host: Any = None

    # IProtocol

    def connectionMade(self) -> None:  # noqa: N802
        transport: Any = self.transport
        assert transport is not None
        if type(transport) is tcp.Client:  # plain TCP client: sent at once, 256 KiB reads
            _eager.tune(transport)
            write: Callable[[Any], object] = functools.partial(_eager.write, transport)
        else:  # a server's transport is eager itself (install_eager), or TLS, or other
            write = transport.write
        # every write leaves at once (eager): Nagle's algorithm would hold a short
        # segment back until the peer's delayed ACK (docs/internals.rst, "The TCP path")
        no_delay = getattr(transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)
            except OSError:  # pragma: no cover - not a TCP socket after all
                pass
        self.sender = Sender(write, self._finish)
        self.stream = ConnectionStream(self.sender, to_bytes, self._description)
        st = self.stream
        self.receiver = Receiver(st._receive, st._end_input, transport, st._receive_cb)
        transport.registerProducer(self, True)
        self.tls = _is_tls(transport)
        self.peer = transport.getPeer()
        self.host = transport.getHost()
        if not self.tls:
            self._make_ready()

    def handshakeCompleted(self) -> None:  # noqa: N802
        """TLS handshake done: the connection is ready."""
        self._make_ready()

    def _make_ready(self) -> None:
        if self.ready or self.lost_reason is not None:
            return
        self.ready = True
        self.connection_ready()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.receiver.write(data)

    def readConnectionLost(self) -> None:  # noqa: N802
        """The peer half-closed: end the input only; the output stays open."""
        self.receiver.finish()

    def writeConnectionLost(self) -> None:  # noqa: N802
        """Our output side was shut down: nothing more can be sent."""
        self.sender.lost()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: N802, B008
        self.lost_reason = reason
        if not reason.check(ConnectionDone):
            self.stream._error = reason.value
        try:
            self.sender.lost()
            self.receiver.finish()
            if not self.ready:
                self.connection_failed(reason)
        finally:
            self.connection_closed(reason)

    # hooks

    def connection_ready(self) -> None:
        """The connection (and its TLS handshake) is up; ``self.stream`` is usable."""

    def connection_failed(self, reason: Failure) -> None:
        """The connection was lost before it became ready (e.g. a failed handshake)."""

    def connection_closed(self, reason: Failure) -> None:
        """The connection is gone (always called once, after the streams are closed)."""

    # IPushProducer (the transport pauses our output)

    def pauseProducing(self) -> None:  # noqa: N802
        self.sender.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self.sender.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        self.sender.stopProducing()

    # IConsumer (our input: whoever feeds data in, normally the transport)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:  # noqa: N802
        self.receiver.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:  # noqa: N802
        self.receiver.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.receiver.write(data)

    # Server connection

    def graceful_close(self) -> None:
        """Flush what was put, then close the connection."""
        self.stream.close()

    def abort(self) -> None:
        """Cut the connection now."""
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # internals

    def _finish(self) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()

    def _description(self) -> dict[str, Any]:
        desc: dict[str, Any] = {"type": self.stream_type, "bytes_received": self.receiver.bytes_received}
        desc["remote_addr"] = getattr(self.peer, "host", None)
        desc["remote_port"] = getattr(self.peer, "port", None)
        desc["local_port"] = getattr(self.host, "port", None)
        desc["reading_paused"] = self.receiver.paused
        desc["tls"] = self.tls
        return desc
