"""HTTP/3 pieces shared by the server and the client connections.

- :class:`H3`: aioquic's ``H3Connection`` plus what it lacks here: sending GOAWAY
  (RFC 9114 §5.2), noticing a received GOAWAY, forgetting the state of a
  stream we reset, and handing the events of request streams to the connection
  (:class:`H3EventHandler`).
- :class:`CreditProducer`: what a received body's put-and-pause receiver pauses:
  the stream's receive credit (see :mod:`aleph_tx.http._quic.flow`).
- :class:`BodyWriter`: the sending half of one stream's body (a response body on
  the server, a request body on the client) as an ``IConsumer``: its streaming
  producer (a :class:`~aleph_tx._adapter.Pump`) is paused while more than
  :data:`HIGH_WATER` bytes wait in aioquic's send buffer and resumed below
  :data:`LOW_WATER` after datagrams went out, so a peer that does not read (and so
  stops extending our credit) stops the producer.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable
from typing import Any

from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3events
from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, HeadersState, encode_frame
from aioquic.quic.events import QuicEvent
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from aleph_tx.http._quic.endpoint import QuicDriver

__all__ = ["H3", "HIGH_WATER", "LOW_WATER", "BodyWriter", "H3EventHandler", "WriterOwner", "WriterState"]

_log = Logger()

#: Unsent body bytes per stream above which the body's producer is paused.
HIGH_WATER = 1 << 20
#: ... and below which it is resumed (checked after datagrams went out).
LOW_WATER = 256 << 10

#: RFC 9114 §4.2: connection-specific fields are malformed in HTTP/3.
CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class H3EventHandler(typing.Protocol):
    """What :meth:`H3.dispatch` hands a connection's request-stream events to."""

    def headers_received(self, event: h3events.HeadersReceived) -> None:
        """A field section (a head, or trailers) arrived on a stream."""

    def data_received(self, event: h3events.DataReceived) -> None:
        """Body bytes arrived on a stream (or its end: ``event.stream_ended``)."""


class H3(H3Connection):
    """aioquic's ``H3Connection`` plus GOAWAY, stream forgetting and event dispatch."""

    goaway_received = False

    def dispatch(self, event: QuicEvent, handler: H3EventHandler) -> None:
        """Hand a QUIC event to HTTP/3, and what it makes of it to ``handler``."""
        for h3event in self.handle_event(event):
            kind = type(h3event)
            if kind is h3events.DataReceived:
                handler.data_received(h3event)  # type: ignore[arg-type]
            elif kind is h3events.HeadersReceived:
                handler.headers_received(h3event)  # type: ignore[arg-type]

    def send_goaway(self, stream_id: int) -> None:
        """Send GOAWAY with ``stream_id`` (RFC 9114 §7.2.6) on our control stream."""
        control = self._local_control_stream_id
        assert control is not None
        self._quic.send_stream_data(control, encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id)))

    def forget(self, stream_id: int) -> None:
        """Drop the HTTP/3 state of a stream we reset (aioquic would keep it)."""
        self._stream.pop(stream_id, None)

    def partial_requests(self) -> list[int]:
        """Request streams on which data arrived but no complete head yet (server side)."""
        return [
            sid
            for sid, stream in self._stream.items()
            if sid % 4 == 0
            and stream.headers_recv_state is HeadersState.INITIAL
            and not stream.receiving_ended
        ]

    def _check_content_length(self, stream: Any) -> None:
        # RFC 9110 §8.6: a response to HEAD, or a 304, announces the length of a body
        # it does not carry; aioquic would close the connection over it
        if self._is_client and stream.content_length == 0:
            return
        super()._check_content_length(stream)

    def _check_control_frame_type(self, frame_type: int) -> None:
        # aioquic skips a GOAWAY's payload; its type is seen here first
        super()._check_control_frame_type(frame_type)
        if frame_type == FrameType.GOAWAY:
            self.goaway_received = True


@implementer(IPushProducer)
class CreditProducer:
    """The producer a body's :class:`~aleph_tx._receiver.Receiver` pauses: pausing
    holds the stream's receive credit, resuming lets it slide again (and sends the
    ``MAX_STREAM_DATA`` at the end of the turn)."""

    __slots__ = ("_driver", "_stream_id")

    def __init__(self, driver: QuicDriver, stream_id: int) -> None:
        self._driver = driver
        self._stream_id = stream_id

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._driver.quic.hold(self._stream_id)

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._driver.quic.flow(self._stream_id)
        self._driver.transmit_soon()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._driver.quic.hold(self._stream_id)


class WriterState(enum.Enum):
    """States of a :class:`BodyWriter`.

    ``OPEN`` (nothing sent: the server's head is still to come) → ``STARTED`` (the
    head went out; body bytes may follow) → ``FINISHED`` (end of stream sent);
    ``OPEN``/``STARTED`` → ``ABORTED`` (reset by us with :meth:`BodyWriter.abort`,
    by the peer, or the connection is gone). ``FINISHED`` and ``ABORTED`` are
    final: later writes are dropped.
    """

    OPEN = "open"
    STARTED = "started"
    FINISHED = "finished"
    ABORTED = "aborted"


class WriterOwner(typing.Protocol):
    """The connection a :class:`BodyWriter` writes through."""

    h3: H3
    driver: QuicDriver

    def writer_paused(self, writer: BodyWriter) -> None:
        """``writer`` paused its producer: call its ``check_room`` after each send."""

    def writer_done(self, writer: BodyWriter) -> None:
        """``writer``'s stream ended (finished or reset)."""


@implementer(IConsumer)
class BodyWriter:
    """The sending half of one HTTP/3 stream's body.

    :param owner: the connection.
    :param stream_id: the QUIC stream.
    :param state: ``OPEN`` (a head is still to be sent) or ``STARTED``.
    """

    __slots__ = ("_lost", "_owner", "_paused", "producer", "state", "stream_id")

    def __init__(self, owner: WriterOwner, stream_id: int, state: WriterState = WriterState.OPEN) -> None:
        self._owner = owner
        self.stream_id = stream_id
        self.state = state
        self.producer: IPushProducer | None = None
        self._paused = False
        self._lost: list[Callable[[], object]] = []

    def write(self, data: bytes) -> None:
        """Send ``data`` as body bytes (dropped unless ``STARTED``)."""
        if self.state is not WriterState.STARTED or not data:
            return
        owner = self._owner
        owner.h3.send_data(self.stream_id, data, False)
        driver = owner.driver
        driver.transmit_soon()
        if self.producer is not None and not self._paused and driver.quic.unsent(self.stream_id) > HIGH_WATER:
            self._paused = True
            owner.writer_paused(self)
            self.producer.pauseProducing()

    def finish(self) -> None:
        """End the stream after what was written (no-op unless ``STARTED``)."""
        if self.state is not WriterState.STARTED:
            return
        self.state = WriterState.FINISHED
        owner = self._owner
        owner.h3.send_data(self.stream_id, b"", True)
        owner.driver.transmit_soon()
        owner.writer_done(self)

    def abort(self, error_code: int = ErrorCode.H3_INTERNAL_ERROR) -> None:
        """Reset the stream: the peer sees it cut. Idempotent."""
        if self.state is WriterState.FINISHED or self.state is WriterState.ABORTED:
            return
        self.state = WriterState.ABORTED
        owner = self._owner
        owner.driver.quic.reset_stream(self.stream_id, error_code)
        owner.h3.forget(self.stream_id)
        owner.driver.transmit_soon()
        owner.writer_done(self)

    def on_lost(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once if the stream is lost (peer reset, connection gone) before its end."""
        self._lost.append(fn)

    @property
    def started(self) -> bool:
        """Whether the head was sent (or the writer is over)."""
        return self.state is not WriterState.OPEN

    # -- IConsumer -------------------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool = True) -> None:  # noqa: N802
        """Take ``producer`` (a push producer) as the body's source.

        :raises RuntimeError: if a producer is already registered.
        :raises ValueError: for a pull producer.
        """
        if self.producer is not None:
            raise RuntimeError(f"producer {self.producer!r} already registered")
        if not streaming:
            raise ValueError("only streaming (push) producers are supported")
        self.producer = producer  # type: ignore[assignment]
        self._paused = False
        if self.state is WriterState.ABORTED:
            producer.stopProducing()

    def unregisterProducer(self) -> None:  # noqa: N802
        """Forget the producer."""
        self.producer = None
        self._paused = False

    # -- the connection's side -----------------------------------------------------------

    def check_room(self) -> bool:
        """Resume a paused producer if the stream has room; ``True`` while still paused."""
        if not self._paused:
            return False
        if self._owner.driver.quic.unsent(self.stream_id) > LOW_WATER:
            return True
        self._paused = False
        if self.producer is not None:
            self.producer.resumeProducing()
        return self._paused  # resuming may have filled the buffer again

    def lost(self) -> None:
        """The peer reset the stream or the connection went away: stop the producer."""
        if self.state is WriterState.FINISHED or self.state is WriterState.ABORTED:
            return
        self.abandon()

    def abandon(self) -> None:
        """Mark the writer ``ABORTED`` without touching the stream; tell the producer and ``on_lost``."""
        self.state = WriterState.ABORTED
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        callbacks, self._lost = self._lost, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                _log.failure("an on_lost callback failed")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} stream={self.stream_id} {self.state.value}>"
