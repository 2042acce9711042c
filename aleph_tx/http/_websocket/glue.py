"""autobahn's Twisted WebSocket protocols as duplex streams (server and client side).

:class:`WebSocketStream` is an :class:`aleph_tx._adapter.ConnectionStream`: takes
come from a :class:`~aleph_tx._adapter.Receiver` fed by ``onMessage`` (text
frames as ``str``, binary as ``bytes``), puts go through a
:class:`~aleph_tx._adapter.Sender` to ``sendMessage``. Backpressure both ways
(autobahn does none, TWISTED-NOTES §2): the Sender is the transport's streaming
producer, so a put fires once the transport has room; the Receiver pauses the
transport while a received message waits for a take, so frames stop being read.

Close handshake states (:class:`CloseState`, RFC 6455 §7):

- ``CONNECTING``: opening handshake under way;
- ``OPEN``: messages flow both ways;
- ``CLOSING``: a close frame was sent or received (``close_code`` is known);
  no more messages are sent; reading goes on, unpaused, until the peer's answer;
- ``CLOSED``: the TCP connection is gone (``close_code`` 1006 if no close frame
  was exchanged).
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import Any

from autobahn.exception import Disconnected
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.xormasker import create_xor_masker  # type: ignore[attr-defined]
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._adapter import ConnectionStream, Receiver, Sender, SenderState
from aleph_tx.errors import ConnectionLostError, WebSocketHandshakeError
from aleph_tx.http._ring.upgrade import WSOptions, choose_subprotocol

__all__ = [
    "ClientProtocol",
    "CloseState",
    "ServerProtocol",
    "WebSocketStream",
    "client_factory",
    "server_factory",
]

_log = Logger()

#: close codes recorded in ``description()`` (RFC 6455 §7.4.1)
NO_STATUS = 1005
ABNORMAL = 1006
#: bytes of frames held back during one read before they are written anyway
CORK_LIMIT = 65536
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (RFC 6455 §5.3; masking is the same).

    Up to 1 KiB as one big-int XOR (a few times cheaper than autobahn's per-frame
    masker object); above, autobahn's masker (vectorised C when available) is faster.
    """
    n = len(payload)
    if n > 1024:
        return create_xor_masker(mask, n).process(payload)  # type: ignore[no-untyped-call, no-any-return]
    if not n:
        return payload
    key = (mask * ((n + 3) >> 2))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class CloseState(enum.Enum):
    """See the module docstring."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class WebSocketStream(ConnectionStream):
    """A WebSocket connection as a duplex stream (see the module docstring).

    ``take()`` yields ``str`` (text frames) or ``bytes`` (binary frames);
    ``put(str)`` sends a text frame, ``put(bytes-like)`` a binary one; anything
    else fails that put with :class:`TypeError` and the connection stays open.
    ``close()`` flushes what was put, then sends close 1000.
    """

    __slots__ = ("_ws",)

    _ws: _StreamGlue

    def __repr__(self) -> str:
        return f"<WebSocketStream {self._ws.close_state.value}>"


def _measure(msg: tuple[bytes, bool]) -> int:
    return len(msg[0])


class _StreamGlue:
    """What the server and client protocols share: autobahn callbacks → stream.

    Mixed in before autobahn's protocol classes; ``self`` is also an autobahn
    ``WebSocketProtocol`` (``sendMessage``, ``state``, ``transport`` ...).
    """

    # provided by autobahn's classes
    transport: Any
    state: int
    STATE_OPEN: int
    STATE_CLOSING: int
    STATE_CLOSED: int
    websocket_protocol_in_use: str | None
    _perMessageCompress: Any  # noqa: N815
    remoteCloseReason: str | None  # noqa: N815

    side = "server"
    stream: WebSocketStream
    sender: Sender
    receiver: Receiver

    def _glue_init(self, opts: WSOptions) -> None:
        self.opts = opts
        self.opened: Deferred[WebSocketStream] = Deferred()
        self.close_state = CloseState.CONNECTING
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_by_us = False
        self._close_request: tuple[int, str] = (1000, "")
        self._close_waiters: list[Deferred[None]] = []
        self._pings: list[Deferred[bool]] = []
        self._handshake_error: str | None = None
        self._max_out = opts.max_message_size or 0
        self._seen = False
        self._peer_closed = False
        self._hb_call: IDelayedCall | None = None
        self._hb_waiting = False
        self._peer: Any = None
        self._tls = False
        self._plain_frames = False
        self._frame_limit = 0
        self._fast_in = 0  # the largest payload _fast_frames parses (0: none)
        # autobahn options, per connection (autobahn copies factory defaults only
        # for the attributes an instance lacks)
        frame = opts.max_frame_payload or 0
        self.maxFramePayloadSize = frame
        self.maxMessagePayloadSize = self._max_out
        self.autoFragmentSize = frame
        self.failByDrop = False  # else an oversize message drops TCP: 1006, not 1009
        self.echoCloseCodeReason = True  # else a peer's 4001 is answered with 1000
        self.autoPingInterval = 0  # heartbeats are ours (on a clock)
        self.autoPingTimeout = 0
        self.trackTimings = False
        self.logOctets = False
        self.logFrames = False

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

    # The common incoming frame (RFC 6455 §5.2): FIN, no RSV bits, text or binary,
    # masked from a client (unmasked from a server), at most 64 KiB and within the
    # limits, whole in the buffer, between messages, no compression. Parsed here:
    # autobahn's parser builds a frame header object and a masker per frame and
    # goes through five callbacks (most of the CPU of an echo). Anything else,
    # or text that is not UTF-8, goes to autobahn's parser, which does the rest
    # (control frames, fragments, limits, close codes) as before.

    current_frame: Any
    inside_message: bool
    data: bytes
    trafficStats: Any  # noqa: N815

    def processData(self) -> bool:  # noqa: N802 - autobahn's name
        """One step of autobahn's frame loop: our fast path first."""
        if self._fast_in and self.current_frame is None and not self.inside_message:
            more = self._fast_frames()
            if more is not None:
                return more
        return super().processData()  # type: ignore[misc, no-any-return]

    def _fast_frames(self) -> bool | None:
        """Deliver the common frames at the head of the buffer; ``None`` if the first is not one.

        All of them are parsed first and the buffer is cut once: cutting it after
        each frame, as autobahn does, copies the rest of a large read per frame.
        """
        if self.state != self.STATE_OPEN:
            return None
        data = self.data
        n = len(data)
        masked = self.side == "server"
        header = 6 if masked else 2
        limit = self._fast_in
        msgs: list[str | bytes] = []
        octets = pos = 0
        while n - pos >= 2:
            b0 = data[pos]
            if b0 != 0x81 and b0 != 0x82:
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
                break
            end = start + length
            if end > n or length > limit:
                break
            payload = data[start:end]
            if masked:
                payload = unmask(payload, data[start - 4 : start])
            if b0 == 0x81:
                try:
                    msgs.append(payload.decode("utf-8"))
                except UnicodeDecodeError:
                    break  # autobahn closes with 1007
            else:
                msgs.append(payload)
            octets += length
            pos = end
        if not msgs:
            return None
        self.data = rest = data[pos:]
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel += octets
        stats.incomingOctetsAppLevel += octets
        stats.incomingWebSocketFrames += len(msgs)
        stats.incomingWebSocketMessages += len(msgs)
        self._seen = True
        write = self.receiver.write
        for msg in msgs:
            if self._peer_closed or self.state == self.STATE_CLOSED:
                break
            write(msg)
        return len(rest) > 0

    def _uncork(self) -> None:
        corked, self._cork = self._cork, None
        self._corked = 0
        if corked:
            self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

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
            self.transport.write(data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)

    def _uncork_keep(self) -> None:
        """Write what is corked now, staying corked (order with autobahn's own queue)."""
        if self._cork:
            corked, self._cork = self._cork, []
            self._corked = 0
            self.transport.write(b"".join(corked))

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

    # -- autobahn callbacks ------------------------------------------------------

    def onOpen(self) -> None:  # noqa: N802 - autobahn's name
        """Handshake done: build the stream; register backpressure both ways."""
        transport = self.transport
        self.close_state = CloseState.OPEN
        self.sender = Sender(self._write, self._finish, _measure)
        st = WebSocketStream(self.sender, self._convert, self._description)
        st._ws = self
        self.stream = st
        self.receiver = Receiver(st._receive, st._end_input, transport)
        try:
            transport.registerProducer(self.sender, True)
        except RuntimeError:
            _log.failure("cannot register the WebSocket stream as producer")
        self._peer = transport.getPeer()
        from aleph_tx._adapter import _is_tls

        self._tls = _is_tls(transport)
        if self.opts.heartbeats is not None:
            self._arm_heartbeat(self.opts.heartbeats.send_after_idle)
        # frames we may build and parse ourselves: uncompressed ones
        self._plain_frames = self._perMessageCompress is None
        self._frame_limit = self.opts.max_frame_payload or 2**63
        if self._plain_frames:
            self._fast_in = min(65535, self._frame_limit, self._max_out or 65535)
        self.opened.callback(st)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
        """One whole message: put it into the stream (text decoded; autobahn checked UTF-8)."""
        self._seen = True
        if self._peer_closed:
            return  # RFC 6455 §5.5.1: nothing may follow the peer's close frame
        self.receiver.write(payload if isBinary else payload.decode("utf-8"))

    def onPong(self, payload: bytes) -> None:  # noqa: N802
        """A pong answers every ping still waiting (RFC 6455 §5.5.3: the latest counts)."""
        self._seen = True
        if self._hb_waiting:
            self._hb_waiting = False
            self._arm_heartbeat(self.opts.heartbeats.send_after_idle)  # type: ignore[union-attr]
        pings, self._pings = self._pings, []
        for d in pings:
            d.callback(True)

    def onPing(self, payload: bytes) -> None:  # noqa: N802
        """autobahn answers with a pong; we count it as traffic."""
        self._seen = True
        super().onPing(payload)  # type: ignore[misc]

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:  # noqa: N802, N803
        """The peer's close frame: record it if the peer closed first; stop sending."""
        first = self.state == self.STATE_OPEN
        self._peer_closed = True
        stop = super().onCloseFrame(code, reasonRaw)  # type: ignore[misc]
        if first and self.close_code is None:
            self.close_code = NO_STATUS if code is None else code
            self.close_reason = self.remoteCloseReason or ""
        self._closing()
        return stop  # type: ignore[no-any-return]

    def _fail_connection(self, code: int = 1001, reason: str = "going away") -> None:
        """autobahn fails the connection (1009 oversize, 1002, 1007 ...): record our code."""
        if self.close_code is None and self.state == self.STATE_OPEN:
            self.close_code = code
            self.close_reason = reason
            self.closed_by_us = True
        super()._fail_connection(code, reason)  # type: ignore[misc]
        self._closing()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
        """The connection is gone: end the stream; fire what waits."""
        opened = self.close_state is not CloseState.CONNECTING
        self.close_state = CloseState.CLOSED
        if self.close_code is None:
            self.close_code = ABNORMAL
            self.close_reason = reason or "connection lost"
        self._cancel_heartbeat()
        if opened:
            self.sender.lost()
            self.receiver.finish()
        pings, self._pings = self._pings, []
        for d in pings:
            d.callback(False)
        waiters, self._close_waiters = self._close_waiters, []
        for w in waiters:
            w.callback(None)
        if not opened:
            error: Exception
            if self._handshake_error is not None:
                error = WebSocketHandshakeError(self._handshake_error)
            else:
                error = ConnectionLostError(
                    f"connection lost during the WebSocket handshake: {reason}", reason
                )
            self.opened.errback(Failure(error))

    # -- outbound ----------------------------------------------------------------

    def _convert(self, msg: Any) -> tuple[bytes, bool]:
        t = type(msg)
        if t is str:
            payload, binary = msg.encode("utf-8"), False
        elif t is bytes:
            payload, binary = msg, True
        elif isinstance(msg, (bytes, bytearray, memoryview)):
            payload, binary = bytes(msg), True
        elif isinstance(msg, str):
            payload, binary = str.encode(msg, "utf-8"), False
        else:
            raise TypeError(
                f"a WebSocket message must be str or bytes-like, not {type(msg).__name__} {msg!r:.80}"
            )
        if self._max_out and len(payload) > self._max_out:
            raise ValueError(f"a message of {len(payload)} bytes is over max_message_size={self._max_out}")
        return payload, binary

    def _write(self, msg: tuple[bytes, bool]) -> None:
        self._seen = True
        payload = msg[0]
        n = len(payload)
        if self._plain_frames and n <= self._frame_limit and self.state == self.STATE_OPEN:
            # the common case built here (RFC 6455 §5.2: FIN, no RSV; masked from a
            # client with a new random key): autobahn's sendMessage/sendFrame cost
            # more than the rest of the path together
            op = 0x82 if msg[1] else 0x81
            masked = 0 if self.side == "server" else 0x80
            if n < 126:
                head = bytes((op, n | masked))
            elif n < 65536:
                head = _HEAD16.pack(op, 126 | masked, n)
            else:
                head = _HEAD64.pack(op, 127 | masked, n)
            if masked:
                key = os.urandom(4)
                self.sendData(head + key + unmask(payload, key))
            else:
                self.sendData(head + payload)
            return
        try:
            self.sendMessage(payload, msg[1])  # type: ignore[attr-defined]
        except Disconnected:  # closing: the message is lost, as a write after a TCP reset
            pass

    def _finish(self) -> None:
        """The sender closed and flushed: send our close frame (RFC 6455 §5.5.1)."""
        if self.state != self.STATE_OPEN:
            return
        code, reason = self._close_request
        self.close_code = code
        self.close_reason = reason
        self.closed_by_us = True
        self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") or None, isReply=False)  # type: ignore[attr-defined]
        self._closing()

    def _closing(self) -> None:
        """A close frame went one way: no more sends; read on (unpaused) for the answer."""
        if self.close_state is not CloseState.OPEN:
            return
        self.close_state = CloseState.CLOSING
        self._cancel_heartbeat()
        if self.sender.state is not SenderState.CLOSED:
            self.sender.lost()
        receiver = self.receiver
        if receiver.paused:
            # the peer's close answer must be read: messages received from now on
            # wait in the stream (bounded by the close handshake's timeout)
            receiver.unregisterProducer()
            self.transport.resumeProducing()
        else:
            receiver.unregisterProducer()

    # -- control -----------------------------------------------------------------

    def start_close(self, code: int, reason: str) -> Deferred[bool]:
        """``websocket_close``: flush, then send ``code``; fires ``True`` once closed."""
        if self.close_state is not CloseState.OPEN or self.sender.state is not SenderState.OPEN:
            return succeed(False)
        self._close_request = (code, reason)
        d = self.when_closed()
        self.sender.close()
        return d.addCallback(lambda _: True)

    def when_closed(self) -> Deferred[None]:
        """Fires once the connection is gone."""
        if self.close_state is CloseState.CLOSED:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._close_waiters.append(d)
        return d

    def ping(self, payload: bytes) -> Deferred[bool]:
        """Send a ping; fires ``True`` on the next pong, ``False`` if the connection closes first."""
        if self.close_state is not CloseState.OPEN:
            return succeed(False)

        def withdraw(d: Deferred[bool]) -> None:
            if d in self._pings:
                self._pings.remove(d)

        d: Deferred[bool] = Deferred(withdraw)
        self._pings.append(d)
        self.sendPing(bytes(payload) or None)  # type: ignore[attr-defined]
        return d

    def graceful_close(self) -> None:
        """``Server.close``: flush, then close 1001 (going away)."""
        if self.close_state is CloseState.OPEN:
            self.start_close(1001, "server shutting down")
        elif self.close_state is CloseState.CONNECTING and self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Cut the connection now."""
        if self.transport is not None:
            self.transport.abortConnection()

    # -- heartbeats (ours, on opts.clock: autobahn's use the global reactor) -----

    def _clock(self) -> IReactorTime:
        clock = self.opts.clock
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        return clock  # type: ignore[no-any-return]

    def _arm_heartbeat(self, delay: float) -> None:
        self._cancel_heartbeat()
        self._hb_call = self._clock().callLater(delay, self._heartbeat)

    def _cancel_heartbeat(self) -> None:
        call, self._hb_call = self._hb_call, None
        if call is not None and call.active():
            call.cancel()

    def _heartbeat(self) -> None:
        self._hb_call = None
        hb = self.opts.heartbeats
        assert hb is not None
        if self.close_state is not CloseState.OPEN:
            return
        if self._hb_waiting:
            if self.receiver.paused:
                # reading is paused (nobody takes): the pong cannot be read yet
                self._arm_heartbeat(hb.timeout)
                return
            # no pong in time: drop (autobahn's autoPingTimeout does the same)
            self.close_code = ABNORMAL
            self.close_reason = "heartbeat timeout: no pong"
            self.transport.abortConnection()
            return
        if self._seen or self.receiver.paused:
            self._seen = False
            self._arm_heartbeat(hb.send_after_idle)
            return
        self._hb_waiting = True
        self.sendPing(hb.payload or None)  # type: ignore[attr-defined]
        self._arm_heartbeat(hb.timeout)

    # -- description -------------------------------------------------------------

    def _description(self) -> dict[str, Any]:
        peer = self._peer
        return {
            "type": "websocket",
            "side": self.side,
            "close_state": self.close_state.value,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "closed_by": None if self.close_code is None else ("us" if self.closed_by_us else "peer"),
            "subprotocol": self.websocket_protocol_in_use,
            "compression": self._perMessageCompress is not None,
            "remote_addr": getattr(peer, "host", None),
            "remote_port": getattr(peer, "port", None),
            "reading_paused": self.receiver.paused,
            "bytes_received": self.receiver.bytes_received,
            "tls": self._tls,
        }


class ServerProtocol(_StreamGlue, WebSocketServerProtocol):  # type: ignore[misc]
    """The server side, handed the connection by the HTTP/1.1 protocol (TWISTED-NOTES §2)."""

    side = "server"
    _AUTOBAHN_ATTRS = tuple(WebSocketServerProtocol.CONFIG_ATTRS)

    def __init__(self, opts: WSOptions) -> None:
        super().__init__()
        self._glue_init(opts)
        self.openHandshakeTimeout = 0  # the request is already here (replayed)
        accept: Callable[[Any], Any] = _accept_offer if opts.compression else _refuse
        self.perMessageCompressionAccept = accept

    def onConnect(self, request: Any) -> str | None:  # noqa: N802
        """Choose the subprotocol (the client's first that we accept)."""
        return choose_subprotocol(request.protocols, self.opts.subprotocols)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:  # noqa: N802, N803
        """autobahn refused the replayed handshake (it answers the HTTP error itself)."""
        self._handshake_error = reason
        super().failHandshake(reason, code, responseHeaders)


class ClientProtocol(_StreamGlue, WebSocketClientProtocol):  # type: ignore[misc]
    """The client side of :func:`~aleph_tx.http._websocket.websocket_client`."""

    side = "client"
    _AUTOBAHN_ATTRS = tuple(WebSocketClientProtocol.CONFIG_ATTRS)

    def __init__(self, opts: WSOptions) -> None:
        super().__init__()
        self._glue_init(opts)
        accept: Callable[[Any], Any] = _accept_response if opts.compression else _refuse
        self.perMessageCompressionAccept = accept
        offers: list[Any] = [PerMessageDeflateOffer()] if opts.compression else []  # type: ignore[no-untyped-call]
        self.perMessageCompressionOffers = offers

    def failHandshake(self, reason: str) -> None:  # noqa: N802
        """The server's answer is not a valid upgrade (a 400, a bad accept key ...)."""
        self._handshake_error = reason
        super().failHandshake(reason)  # type: ignore[no-untyped-call]


def _refuse(_: Any) -> None:
    return None


def _accept_offer(offers: list[Any]) -> Any:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)  # type: ignore[no-untyped-call]
    return None


def _accept_response(response: Any) -> Any:
    if isinstance(response, PerMessageDeflateResponse):
        return PerMessageDeflateResponseAccept(response)  # type: ignore[no-untyped-call]
    return None


_SERVER_FACTORY: list[WebSocketServerFactory] = []


def server_factory() -> WebSocketServerFactory:
    """The shared autobahn server factory (no ``Server`` header in the 101).

    Per-connection options are set on each protocol instance, so one factory
    serves every connection.
    """
    if not _SERVER_FACTORY:
        _SERVER_FACTORY.append(WebSocketServerFactory(server=None))  # type: ignore[no-untyped-call]
    return _SERVER_FACTORY[0]


def client_factory(
    url: str, headers: dict[str, str] | None, subprotocols: tuple[str, ...] | None, reactor: Any
) -> WebSocketClientFactory:
    """An autobahn client factory for one connection."""
    return WebSocketClientFactory(  # type: ignore[no-untyped-call]
        url,
        protocols=list(subprotocols) if subprotocols else None,
        headers=headers,
        useragent="aleph_tx",
        reactor=reactor,
    )
