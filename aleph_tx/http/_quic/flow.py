"""A ``QuicConnection`` whose receive credit follows the application (backpressure).

aioquic extends a stream's flow-control credit (``MAX_STREAM_DATA``, RFC 9000
§4.2) on its own: once the peer has sent past half the window, the window
doubles, whether or not anyone read the data. A handler that does not take its
request body would then let a client push without bound. Here the credit of a
bidirectional stream moves only while the application lets it flow:

- a new bidirectional stream gets the initial window
  (``QuicConfiguration.max_stream_data``) and nothing more, so a request head
  can never take more than that;
- :meth:`FlowControlledConnection.flow` (the body is being taken) slides the
  window: the credit becomes "bytes delivered + window" whenever half a window
  was delivered, as TCP's receive window does;
- :meth:`FlowControlledConnection.hold` (a put is pending: nobody takes) stops
  sliding it: the peer stops once the credit it has is used, and the data in
  memory stays below one window.

Unidirectional streams (the HTTP/3 control and QPACK streams) keep aioquic's own
policy. The connection-level credit (``MAX_DATA``) keeps aioquic's policy too: the
streams bound it.

This relies on aioquic internals (``_write_stream_limits``, the stream's
``max_stream_data_local*`` fields and the sender's buffer offsets), checked when
this module is imported (:func:`check_aioquic`) so that an incompatible aioquic
fails at once with a clear message, not with silent unbounded buffering.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic import connection as _qc
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.quic.stream import QuicStream

__all__ = ["FlowControlledConnection", "ReactorPacer", "check_aioquic"]

_MAX_STREAM_DATA_CAPACITY: int = getattr(_qc, "MAX_STREAM_DATA_FRAME_CAPACITY", 17)


def check_aioquic() -> None:
    """Check that aioquic has the internals this module relies on.

    :raises ImportError: naming what is missing (an aioquic this code does not know).
    """
    missing = [
        f"QuicConnection.{name}"
        for name in ("_write_stream_limits", "_on_max_stream_data_delivery")
        if not hasattr(QuicConnection, name)
    ]
    probe = QuicConnection(configuration=QuicConfiguration(is_client=True))
    if not hasattr(probe, "_streams"):
        missing.append("QuicConnection._streams")
    if not isinstance(getattr(getattr(probe, "_loss", None), "_pacer", None), QuicPacketPacer):
        missing.append("QuicPacketRecovery._pacer")
    stream = QuicStream(stream_id=0, max_stream_data_local=1, max_stream_data_remote=1)
    for obj, attr in (
        (stream, "max_stream_data_local"),
        (stream, "max_stream_data_local_sent"),
        (stream.receiver, "highest_offset"),
        (stream.sender, "highest_offset"),
        (stream.sender, "_buffer_stop"),
        (stream.sender, "_buffer_start"),
    ):
        if not hasattr(obj, attr):
            missing.append(f"{type(obj).__name__}.{attr}")
    if not hasattr(stream.receiver, "starting_offset"):
        missing.append("QuicStreamReceiver.starting_offset")
    if missing:
        raise ImportError(
            "this aioquic version lacks what aleph_tx's HTTP/3 flow control relies on: " + ", ".join(missing)
        )


check_aioquic()


#: The reactor sleeps at least a millisecond (epoll's resolution), so a pacing
#: wait of a few microseconds lasts a millisecond: the pacer's bucket must hold that
#: long a burst, or the sending rate is capped at one bucket (16 datagrams, aioquic's
#: cap) per millisecond, about 19 MB/s whatever the path allows.
TIMER_RESOLUTION = 0.002


class ReactorPacer(QuicPacketPacer):
    """aioquic's pacer (RFC 9002 §7.7) with a bucket of at least :data:`TIMER_RESOLUTION`."""

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window=congestion_window, smoothed_rtt=smoothed_rtt)
        if self.bucket_max < TIMER_RESOLUTION:
            self.bucket_max = TIMER_RESOLUTION


class FlowControlledConnection(QuicConnection):
    """A ``QuicConnection`` with per-stream receive credit under application control.

    See the module docstring. ``flow``/``hold`` take effect at the next
    ``datagrams_to_send`` (the caller transmits after calling them).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._loss._pacer = ReactorPacer(max_datagram_size=self._max_datagram_size)
        self.receive_window: int = self._configuration.max_stream_data
        self._flowing: set[int] = set()

    def flow(self, stream_id: int) -> None:
        """Let the stream's credit slide with what is delivered (the data is being taken)."""
        self._flowing.add(stream_id)

    def hold(self, stream_id: int) -> None:
        """Stop extending the stream's credit (nobody takes its data now)."""
        self._flowing.discard(stream_id)

    def unsent(self, stream_id: int) -> int:
        """Bytes written to the stream and not sent yet (0 for an unknown stream)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return max(0, sender._buffer_stop - sender.highest_offset)

    def sends_done(self) -> bool:
        """Whether everything sent was acknowledged: every request stream's sending part
        is over (FIN or reset acknowledged) and our unidirectional streams (the HTTP/3
        control stream with its GOAWAY, QPACK) have nothing unacknowledged."""
        for sid, stream in self._streams.items():
            sender = stream.sender
            if not sid & 2:
                if not sender.is_finished:
                    return False
            elif sender._buffer_start != sender._buffer_stop:
                return False
        return True

    def _write_stream_limits(self, builder: Any, space: Any, stream: QuicStream) -> None:
        sid = stream.stream_id
        assert sid is not None
        if sid & 2:
            # unidirectional (RFC 9000 §2.1): aioquic's own policy
            super()._write_stream_limits(builder, space, stream)
            return
        if sid in self._flowing:
            window = self.receive_window
            target = stream.receiver.starting_offset() + window
            if target - stream.max_stream_data_local >= window >> 1:
                stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            # the MAX_STREAM_DATA frame, as aioquic writes it (RFC 9000 §19.10)
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(sid)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
