"""autobahn's Twisted WebSocket protocols as duplex streams (server and client side).

:class:`WebSocketStream` is an :class:`aleph_tx._adapter.ConnectionStream`: takes
come from a :class:`~aleph_tx._receiver.Receiver` fed by ``onMessage`` (text
frames as ``str``, binary as ``bytes``), puts go through a
:class:`~aleph_tx._adapter.Sender`, framed by :mod:`.frames` (or autobahn). Backpressure both ways
(autobahn does none; docs/internals.rst, "The WebSocket hand-off"): the Sender is the transport's streaming
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
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._adapter import ConnectionStream, Sender, SenderState
from aleph_tx._receiver import Receiver
from aleph_tx._time import Timer
from aleph_tx.errors import ConnectionLostError, WebSocketHandshakeError
from aleph_tx.http._ring.upgrade import WSOptions, choose_subprotocol
from aleph_tx.http._websocket.frames import FAST_MAX, FastFrames, FastPut
from aleph_tx.http._websocket.probe import FAST

__all__ = [
    "ClientProtocol",
    "CloseState",
    "ServerProtocol",
    "WebSocketStream",
    "client_factory",
    "server_factory",
]

_log = Logger()

#: seconds the peer has to answer our close frame (RFC 6455 §7.1.1) before the TCP
#: connection is cut (close code 1006)
CLOSE_HANDSHAKE_TIMEOUT = 10

#: close codes recorded in ``description()`` (RFC 6455 §7.4.1)
NO_STATUS = 1005
ABNORMAL = 1006


class CloseState(enum.Enum):
    """See the module docstring."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


#: the fast path's put, or nothing when the probe found autobahn changed
_FAST_PUT: tuple[type, ...] = (FastPut,) if FAST else ()


class WebSocketStream(*_FAST_PUT, ConnectionStream):  # type: ignore[misc]
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
        self._hb = Timer(None, self._heartbeat, opts.clock)  # heartbeats are ours, on a clock
        self._hb_waiting = False
        self._peer: Any = None
        self._tls = False
        self._plain_frames = False
        self._frame_limit = 0
        self._out_max = 0  # the largest message sent as one frame built here
        self._fast_in = 0  # the largest payload _fast_frames parses (0: none)
        self._direct = False  # FastPut frames and writes messages itself
        self._direct_max = 0  # ... up to this payload size
        # autobahn options, per connection (autobahn copies factory defaults only
        # for the attributes an instance lacks)
        frame = opts.max_frame_payload or 0
        self.maxFramePayloadSize = frame
        self.maxMessagePayloadSize = self._max_out
        self.autoFragmentSize = frame
        self.failByDrop = False  # else an oversize message drops TCP: 1006, not 1009
        self.echoCloseCodeReason = True  # else a peer's 4001 is answered with 1000
        # After our close frame, how long the peer has to answer before the TCP
        # connection is cut. autobahn's 1 s is shorter than a slow (or busy) reader
        # needs to read what was sent before the close frame: cutting then (an RST)
        # loses it. The peer's answer comes once it has read everything before it.
        self.closeHandshakeTimeout = CLOSE_HANDSHAKE_TIMEOUT
        self.autoPingInterval = 0  # heartbeats are ours (on a clock)
        self.autoPingTimeout = 0
        self.trackTimings = False
        self.logOctets = False
        self.logFrames = False

    # -- autobahn callbacks ------------------------------------------------------

    def onOpen(self) -> None:  # noqa: N802 - autobahn's name
        """Handshake done: build the stream; register backpressure both ways."""
        transport = self.transport
        self.close_state = CloseState.OPEN
        self.sender = Sender(self._write, self._finish, _measure)
        st = WebSocketStream(self.sender, self._convert, self._description)
        st._ws = self
        self.stream = st
        self.receiver = Receiver(st._receive, st._end_input, transport, st._receive_cb)
        try:
            transport.registerProducer(self.sender, True)
        except RuntimeError:
            _log.failure("cannot register the WebSocket stream as producer")
        self._peer = transport.getPeer()
        from aleph_tx._adapter import _is_tls

        self._tls = _is_tls(transport)
        if self.opts.heartbeats is not None:
            self._arm_heartbeat(self.opts.heartbeats.send_after_idle)
        # frames we build and parse ourselves (frames.FastFrames), compressed ones too
        self._plain_frames = FAST
        self._frame_limit = frame = self.opts.max_frame_payload or 2**63
        if self._plain_frames:
            self._deflate = self._perMessageCompress
            if self._deflate is not None:
                # deflate may grow a message a little (RFC 1951 §3.2.4: 5 octets
                # per stored block): keep a compressed message within one frame
                frame -= (frame >> 11) + 16
            self._out_max = frame
            self._fast_in = min(FAST_MAX, self._frame_limit, self._max_out or FAST_MAX)
            self._direct = self.side == "server"  # a client masks: the Sender's path
            self._direct_max = min(frame, self._max_out or frame)
        self.opened.callback(st)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
        """One whole message: put it into the stream (text decoded; autobahn checked UTF-8)."""
        self._seen = True
        if self._peer_closed:
            return  # RFC 6455 §5.5.1: nothing may follow the peer's close frame
        # counted in payload octets, as the fast path counts them
        self.receiver.write_many([payload if isBinary else payload.decode("utf-8")], len(payload))

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
        if self._plain_frames and len(payload) <= self._out_max and self.state == self.STATE_OPEN:
            self.send_frame(payload, msg[1])  # frames.FastFrames: built here, not by autobahn
            return
        try:
            self.sendMessage(payload, msg[1])  # type: ignore[attr-defined]
        except Disconnected:  # closing: the message is lost, as a write after a TCP reset
            pass

    def send_frame(self, payload: bytes, binary: bool) -> None:
        """Send one whole message (replaced by :class:`~.frames.FastFrames`)."""
        self.sendMessage(payload, binary)  # type: ignore[attr-defined]

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

    def _arm_heartbeat(self, delay: float) -> None:
        self._hb.start(delay)

    def _cancel_heartbeat(self) -> None:
        self._hb.stop()

    def _heartbeat(self) -> None:
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


#: The fast path's mixin, or nothing when the probe found autobahn changed.
_FAST_BASES: tuple[type, ...] = (FastFrames,) if FAST else ()


class ServerProtocol(*_FAST_BASES, _StreamGlue, WebSocketServerProtocol):  # type: ignore[misc]
    """The server side, handed the connection by an HTTP/1.1 front (docs/internals.rst)."""

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


class ClientProtocol(*_FAST_BASES, _StreamGlue, WebSocketClientProtocol):  # type: ignore[misc]
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
