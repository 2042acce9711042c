"""The common WebSocket frame, parsed and built here (RFC 6455 §5.2); autobahn does the rest.

Profiled, autobahn's per-frame machinery (a frame header object, a masker object
and five callbacks per frame, a debug line formatted per read and per frame) was
most of an echo's CPU (docs/internals.rst, "The WebSocket fast path";
``bench/bench_ws.py`` keeps it). :class:`FastFrames`, mixed in before autobahn's
protocol classes, handles:

- incoming: FIN, text or binary, masked from a client (unmasked from a server),
  within the limits and at most :data:`FAST_MAX`, whole in the buffer, between
  messages, no RSV bit, or RSV1 on a permessage-deflate connection (RFC 7692);
  a read's messages go to the Receiver as one batch. Anything else, or text that
  is not UTF-8, goes to autobahn's parser, which does the rest (control frames,
  fragments, limits, close codes) as before;
- outgoing: whole messages within the frame limit (masked with a new random key
  from a client; compressed on a permessage-deflate connection);
  :class:`FastPut` frames a server's message in the stream's put itself;
- writes made while a read is processed are corked into one (an echo answers a
  read with one write, not one per frame), at most ``CORK_LIMIT`` bytes held back.

It relies on autobahn internals, so :mod:`.probe` checks them at import against
in-memory autobahn handshakes; if anything is missing or different, ``FAST`` is
``False`` and the glue uses autobahn's own path for everything.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from autobahn.exception import PayloadCorruptError, PayloadExceededError
from autobahn.websocket.xormasker import create_xor_masker  # type: ignore[attr-defined]
from twisted.logger import Logger

__all__ = [
    "CORK_LIMIT",
    "FAST_MAX",
    "WAIT_MAX",
    "FastFrames",
    "FastPut",
    "encode_frame",
    "frame_head",
    "unmask",
]

_log = Logger()

#: bytes of frames held back during one read before they are written anyway
CORK_LIMIT = 65536
#: the largest payload parsed here (larger frames are autobahn's, streamed as they arrive)
FAST_MAX = 1 << 20
#: a common frame at the head of the buffer, not whole yet, is waited for (not
#: handed to autobahn's parser) up to this payload size: the buffer grows by at
#: most this much before the frame is parsed here
WAIT_MAX = 1 << 16
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")
#: unmasked headers of short text and binary frames, by opcode byte then length
_SHORT_HEADS = {op: [bytes((op, n)) for n in range(126)] for op in (0x81, 0x82, 0xC1, 0xC2)}
#: payloads up to this size are unmasked as one big-integer XOR; above, in C
_BIGINT_MAX = 128


def _nvx() -> Any:
    """autobahn's compiled XOR masker (``nvx``), called directly; ``None`` if absent."""
    try:
        from _nvx_xormasker import ffi, lib  # type: ignore[import-not-found]

        buf = bytearray(b"\x01\x02\x03\x04\x05")
        masker = lib.nvx_xormask_new(b"\x01\x01\x01\x01")
        try:
            lib.nvx_xormask_process(masker, ffi.from_buffer(buf), 5)
        finally:
            lib.nvx_xormask_free(masker)
        return (ffi, lib) if buf == b"\x00\x03\x02\x05\x04" else None
    except Exception:
        return None


_NVX = _nvx()


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (RFC 6455 §5.3; masking is the same).

    Up to 128 bytes as one big-int XOR; above, autobahn's compiled masker called
    directly (about 1 µs for 4 KiB, where its masker object costs 8: the object and
    its buffers are made per call), else autobahn's masker object.
    """
    n = len(payload)
    if n <= _BIGINT_MAX:
        if not n:
            return payload
        key = (mask * ((n + 3) >> 2))[:n]
        return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    if _NVX is not None:
        return bytes(_unmask_nvx(payload, mask))
    return create_xor_masker(mask, n).process(payload)  # type: ignore[no-untyped-call, no-any-return]


def _unmask_nvx(payload: Any, mask: bytes) -> bytearray:
    """:func:`unmask` with the compiled masker, into a new bytearray (``payload``:
    any buffer, e.g. a memoryview of the read: copied once)."""
    ffi, lib = _NVX
    buf = bytearray(payload)
    masker = lib.nvx_xormask_new(mask)
    lib.nvx_xormask_process(masker, ffi.from_buffer(buf), len(buf))
    lib.nvx_xormask_free(masker)
    return buf


#: zero bytes, by count: the key over the headers between two payloads
_ZEROS = [bytes(i) for i in range(16)]


def _unmask_run(
    data: bytes,
    spans: list[tuple[int, int, int]],
    first: int,
    last: int,
    origin: int,
    end: int,
    key: list[bytes],
    out: list[Any],
) -> None:
    """Unmask ``spans[first:last]``, a run of small payloads, into ``out``.

    One big-integer XOR of the bytes they span (``data[origin:end]``) against
    ``key``: their masks repeated over each payload, zeros over the headers between
    them. An int conversion costs about 2 ns a byte at that size, and its fixed
    cost is paid once per run rather than once per frame (docs/internals.rst).
    """
    n = end - origin
    clear = (int.from_bytes(data[origin:end], "big") ^ int.from_bytes(b"".join(key), "big")).to_bytes(
        n, "big"
    )
    for _, start, stop in spans[first:last]:
        out.append(clear[start - origin : stop - origin])


def frame_head(op: int, n: int, masked: bool) -> bytes:
    """The header of a FIN frame (opcode byte ``op``) with an ``n``-byte payload (RFC 6455 §5.2)."""
    bit = 0x80 if masked else 0
    if n < 126:
        return bytes((op, n | bit))
    if n < 65536:
        return _HEAD16.pack(op, 126 | bit, n)
    return _HEAD64.pack(op, 127 | bit, n)


def deflate_message(deflate: Any, payload: bytes) -> bytes:
    """``payload`` compressed as one message by autobahn's permessage-deflate object (RFC 7692 §7.2.1)."""
    deflate.start_compress_message()
    return deflate.compress_message_data(payload) + deflate.end_compress_message()  # type: ignore[no-any-return]


def encode_frame(payload: bytes, binary: bool, masked: bool, deflate: Any = None) -> bytes:
    """One whole message as one frame (RFC 6455 §5.2: FIN), masked from a client;
    compressed (RSV1) when ``deflate`` (autobahn's permessage-deflate object) is given."""
    op = 0x82 if binary else 0x81
    if deflate is not None:
        payload = deflate_message(deflate, payload)
        op |= 0x40
    head = frame_head(op, len(payload), masked)
    if masked:
        key = os.urandom(4)
        return head + key + unmask(payload, key)
    return head + payload


class FastFrames:
    """The fast path, mixed in before the stream glue and autobahn's protocol class.

    It needs, from the glue: ``receiver``, ``side``, ``_fast_in`` (the largest
    payload parsed here; 0: none), ``_peer_closed``, ``_seen``.
    """

    # provided by the glue and by autobahn
    side: str
    receiver: Any
    _fast_in: int
    _peer_closed: bool
    _seen: bool
    state: int
    STATE_OPEN: int
    STATE_CLOSED: int
    transport: Any

    # autobahn's _connectionMade copies the factory's defaults for every option
    # an instance lacks, then pformat()s them all for a debug line that is usually
    # off: a third of a handshake's CPU. We copy them ourselves (same rule) and
    # give autobahn an empty list.
    CONFIG_ATTRS: tuple[str, ...] = ()
    _AUTOBAHN_ATTRS: tuple[str, ...] = ()

    def _connectionMade(self) -> None:  # noqa: N802 - autobahn's name
        factory = self.factory  # type: ignore[attr-defined]
        for name in self._AUTOBAHN_ATTRS:
            if not hasattr(self, name):
                setattr(self, name, getattr(factory, name))
        super()._connectionMade()  # type: ignore[misc]

    # autobahn formats a debug line (with click styling) on every read and every
    # frame sent, even with debug logging off: ~30 µs each. The hot paths below
    # do what autobahn's do without it.

    #
    # Frames sent while a read is being processed (an echo answering each message
    # of the read) are corked and written once at its end: one write per read
    # instead of one per frame (each write may be a send(2) on an eager transport).
    # At most CORK_LIMIT bytes are held back.

    _cork: list[bytes] | None = None
    _corked = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Bytes from the transport: to autobahn's frame parser; then write what it answered."""
        if self._cork is not None:  # re-entered: the outer call flushes
            self._dataReceived(data)  # type: ignore[attr-defined]
            return
        self._cork = []
        try:
            self._dataReceived(data)  # type: ignore[attr-defined]
        finally:
            self._uncork()

    # The common incoming frame (RFC 6455 §5.2): FIN, text or binary, masked from
    # a client (unmasked from a server), within the limits, whole in the buffer,
    # between messages, no RSV bit but RSV1 with permessage-deflate (RFC 7692
    # §6: a compressed message). Parsed here: autobahn's parser builds a frame
    # header object and a masker per frame and goes through five callbacks (most
    # of the CPU of an echo). Anything else, or text that is not UTF-8, goes to
    # autobahn's parser, which does the rest (control frames, fragments, limits,
    # close codes) as before.

    current_frame: Any
    inside_message: bool
    data: bytes
    trafficStats: Any  # noqa: N815
    #: the connection's permessage-deflate (autobahn's extension object), if any
    _deflate: Any = None

    def processData(self) -> bool:  # noqa: N802 - autobahn's name
        """One step of autobahn's frame loop: our fast path first."""
        if self._fast_in and self.current_frame is None and not self.inside_message:
            more = self._fast_frames()
            if more is not None:
                return more
        return super().processData()  # type: ignore[misc, no-any-return]

    def _fast_frames(self) -> bool | None:
        """Deliver the common frames at the head of the buffer; ``None`` if the first is not one.

        Their headers are parsed first, then their payloads unmasked (runs of small
        frames as one big-integer XOR), then the messages made, the buffer cut once
        (cutting it after each frame, as autobahn does, copies the rest of a large
        read per frame) and the messages given to the Receiver as one batch.
        ``False`` (wait for more bytes) when the first is a common frame of at most
        :data:`WAIT_MAX` bytes not whole yet.
        """
        if self.state != self.STATE_OPEN:
            return None
        data = self.data
        n = len(data)
        masked = self.side == "server"
        header = 6 if masked else 2
        limit = self._fast_in
        deflate = self._deflate
        spans: list[tuple[int, int, int]] = []  # (first byte, payload start, end)
        payloads: list[Any] = []  # unmasked, in order (masked frames only)
        key: list[bytes] = []  # of the current run of small masked payloads
        first = -1  # index in spans of the run's first frame (-1: no run)
        origin = prev = 0  # where the run's bytes start; where its last payload ends
        pos = 0
        wait = False
        while n - pos >= 2:
            b0 = data[pos]
            if b0 != 0x81 and b0 != 0x82 and (deflate is None or (b0 != 0xC1 and b0 != 0xC2)):
                break
            b1 = data[pos + 1]
            if (b1 >= 0x80) is not masked:
                break
            length = b1 & 0x7F
            start = pos + header
            if length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                if length < 126:
                    break  # not minimal: autobahn fails the connection
                start += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length < 65536:
                    break  # not minimal (or the top bit set): autobahn's
                start += 8
            if length > limit:
                break
            end = start + length
            if end > n:
                wait = length <= WAIT_MAX
                break
            if masked:
                if length <= _BIGINT_MAX:  # joins the run: unmasked with it
                    if first < 0:
                        first, origin = len(spans), start
                    else:
                        key.append(_ZEROS[start - prev])
                    if length:
                        k = data[start - 4 : start] * ((length + 3) >> 2)
                        key.append(k if not length & 3 else k[:length])
                    prev = end
                else:
                    if first >= 0:
                        _unmask_run(data, spans, first, len(spans), origin, prev, key, payloads)
                        first, key = -1, []
                    mask = data[start - 4 : start]
                    payloads.append(
                        _unmask_nvx(memoryview(data)[start:end], mask)
                        if _NVX
                        else unmask(data[start:end], mask)
                    )
            spans.append((b0, start, end))
            pos = end
        if not spans:
            return False if wait else None
        if not masked:
            payloads = [data[s:e] for _, s, e in spans]
        elif first >= 0:
            _unmask_run(data, spans, first, len(spans), origin, prev, key, payloads)
        msgs: list[str | bytes] = []
        octets = grown = pos = 0  # payload octets on the wire; and added by inflating
        failed: tuple[str, int, str] | None = None  # (kind, octets, reason)
        for (b0, start, end), payload in zip(spans, payloads, strict=True):
            if b0 & 0x40:
                # the inflater's state moves on: from here this frame is ours,
                # its failures too (the close codes autobahn's path gives)
                payload, failed = self._inflate(payload)
                if failed is not None:
                    pos = end
                    break
                grown += len(payload) - (end - start)
                if b0 == 0xC1:
                    try:
                        msgs.append(payload.decode("utf-8"))
                    except UnicodeDecodeError as e:
                        failed = ("invalid", 0, f"invalid UTF-8 in a text message at octet {e.start}")
                        pos = end
                        break
                else:
                    msgs.append(payload)
            elif b0 == 0x81:
                try:
                    msgs.append(payload.decode("utf-8"))
                except UnicodeDecodeError:
                    break  # autobahn closes with 1007
            else:
                msgs.append(payload if type(payload) is bytes else bytes(payload))
            octets += end - start
            pos = end
        if failed is not None:
            self.data = data[pos:]
            self._deliver(msgs, octets, grown)
            self._fail_inflated(*failed)
            return False
        if not msgs:
            return None  # the first frame is not UTF-8: autobahn closes with 1007
        self.data = rest = data[pos:]
        self._deliver(msgs, octets, grown)
        return len(rest) > 0

    def _deliver(self, msgs: list[str | bytes], octets: int, grown: int) -> None:
        """The messages parsed from one read: into the stream, as one batch."""
        if not msgs:
            return
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel += octets
        octets += grown
        stats.incomingOctetsAppLevel += octets
        stats.incomingWebSocketFrames += len(msgs)
        stats.incomingWebSocketMessages += len(msgs)
        self._seen = True
        if not self._peer_closed:  # RFC 6455 §5.5.1: nothing may follow the peer's close
            self.receiver.write_many(msgs, octets)

    def _inflate(self, payload: bytes | bytearray) -> tuple[bytes, tuple[str, int, str] | None]:
        """One compressed message (RFC 7692 §7.2.2), with autobahn's extension object and
        limits; a failure is ``(kind, octets, reason)`` for :meth:`_fail_inflated`."""
        deflate = self._deflate
        limit = self.maxMessagePayloadSize  # type: ignore[attr-defined]
        try:
            deflate.start_decompress_message()
            out = deflate.decompress_message_data(payload, max_output_len=limit if limit > 0 else None)
            deflate.end_decompress_message()
        except PayloadExceededError:
            return b"", ("size", limit, f"a message over the limit of {limit} octets after decompression")
        except PayloadCorruptError as e:
            return b"", ("invalid", 0, f"a message that cannot be decompressed: {e}")
        if 0 < limit < len(out):
            return b"", ("size", len(out), f"a message of {len(out)} octets, over the limit of {limit}")
        return out, None

    def _fail_inflated(self, kind: str, octets: int, reason: str) -> None:
        """Fail the connection as autobahn's parser does for the same message: 1009
        for a message over the limit once inflated, else 1007."""
        if self.failedByMe:  # type: ignore[attr-defined]
            return
        if kind == "size":
            self.wasMaxMessagePayloadSizeExceeded = True
            self._max_message_size_exceeded(octets, self.maxMessagePayloadSize, reason)  # type: ignore[attr-defined]
        else:
            self._invalid_payload(reason)  # type: ignore[attr-defined]

    def _uncork(self) -> None:
        corked, self._cork = self._cork, None
        self._corked = 0
        if corked:
            self._write_wire(corked[0] if len(corked) == 1 else b"".join(corked))

    def _write_wire(self, data: bytes) -> None:
        """Write ``data`` to the transport, counted as autobahn counts it (while open)."""
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        self.transport.write(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:  # noqa: N802
        """Write ``data`` (corked during a read; autobahn's own path for ``sync``/``chopsize``)."""
        if sync or chopsize or self.send_queue or self.logOctets:  # type: ignore[attr-defined]
            self._uncork_keep()
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
            return
        cork = self._cork
        if cork is not None:
            cork.append(data)
            self._corked += len(data)
            if self._corked >= CORK_LIMIT:
                # user code may run (and put) inside a read: past the limit, write,
                # so the transport sees the bytes and can pause the producer
                self._uncork_keep()
        else:
            self._write_wire(data)

    def _uncork_keep(self) -> None:
        """Write what is corked now, staying corked (order with autobahn's own queue)."""
        if self._cork:
            corked, self._cork = self._cork, []
            self._corked = 0
            self._write_wire(b"".join(corked))

    def _closeConnection(self, abort: bool = False) -> None:  # noqa: N802 - autobahn's name
        """Write what is corked (a close frame) before closing the transport."""
        self._uncork_keep()
        super()._closeConnection(abort)  # type: ignore[misc]

    def onMessageEnd(self) -> None:  # noqa: N802 - autobahn's name
        """A message is complete: ``onMessage`` (without autobahn's per-message
        observer future: nothing here listens to its ``"message"`` event)."""
        if not self.failedByMe:  # type: ignore[attr-defined]
            parts: list[bytes] = self.message_data  # type: ignore[has-type]
            single = len(parts) == 1 and type(parts[0]) is bytes
            self.onMessage(parts[0] if single else b"".join(parts), self.message_is_binary)  # type: ignore[attr-defined]
        self.message_data = None

    def send_frame(self, payload: bytes, binary: bool) -> None:
        """Send one whole message, built (and compressed) here, corked during a read."""
        self.sendData(encode_frame(payload, binary, self.side == "client", self._deflate))


class FastPut:
    """A :class:`~aleph_tx.http._websocket.glue.WebSocketStream`'s ``put`` for the common message.

    A ``str`` or ``bytes`` message within the limits, put while the Sender is
    ready (open, not paused, nothing queued) on an open server connection, is
    framed (and compressed) and written (corked during a read) here, in one call:
    what ``Sender.send`` → the glue's ``_write`` → :meth:`FastFrames.send_frame`
    does, without their seven calls. Anything else goes to the stream's own
    ``put``. Mixed in before the stream class; ``self._ws`` is its protocol.
    """

    __slots__ = ()

    _ws: Any

    def put_now(self, msg: Any, cb: object = None) -> Any:
        """Send ``msg`` (see the class docstring): ``True`` once written at once, else
        what the stream's own ``put_now`` gives."""
        ws = self._ws
        sender = ws.sender
        # (autobahn's send_queue, which a frame must not overtake, only fills with
        # sync or chopped sends: the glue makes none)
        if ws._direct and sender.ready and ws.state == ws.STATE_OPEN:
            t = type(msg)
            if t is str:
                payload = msg.encode("utf-8")
                op = 0x81
            elif t is bytes:
                payload = msg
                op = 0x82
            else:
                return super().put_now(msg, cb)  # type: ignore[misc]
            n = len(payload)
            if n <= ws._direct_max:
                sender.bytes_sent += n
                if ws._deflate is not None:
                    payload = deflate_message(ws._deflate, payload)
                    op |= 0x40
                    n = len(payload)
                head = _SHORT_HEADS[op][n] if n < 126 else frame_head(op, n, False)
                ws._seen = True
                cork = ws._cork
                if cork is None:
                    ws._write_wire(head + payload)
                else:
                    cork.append(head)
                    cork.append(payload)
                    ws._corked += n
                    if ws._corked >= CORK_LIMIT:
                        ws._uncork_keep()
                return True
        return super().put_now(msg, cb)  # type: ignore[misc]
