"""Whether the installed autobahn is what :mod:`.frames` relies on (its ``FAST``).

:mod:`.frames` uses autobahn internals (attributes, hooks, signatures, the
compiled masker); :func:`probe` checks them once at import against in-memory
handshakes between autobahn's own protocols, plain and with permessage-deflate.
If anything is missing or different, :data:`FAST` is ``False`` and the glue uses
autobahn's own path for everything (docs/internals.rst, "The WebSocket fast path").
"""

from __future__ import annotations

import inspect
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx.http._websocket.frames import encode_frame

__all__ = ["FAST", "probe"]

_log = Logger()


def _pump(a: Any, ta: Any, b: Any, tb: Any) -> None:
    """Move bytes between two in-memory protocols until both are quiet."""
    for _ in range(10):
        moved = False
        for t, dst in ((ta, b), (tb, a)):
            data = t.value()
            if data:
                t.clear()
                dst.dataReceived(data)
                moved = True
        if not moved:
            return


def _handshake(compress: bool) -> tuple[Any, Any, list[Any]]:
    """An open autobahn server and client in memory (permessage-deflate if ``compress``),
    and the list the server's messages go to."""
    from autobahn.websocket.compress import (
        PerMessageDeflateOffer,
        PerMessageDeflateOfferAccept,
        PerMessageDeflateResponse,
        PerMessageDeflateResponseAccept,
    )
    from twisted.internet.testing import StringTransport

    got: list[Any] = []

    class Server(WebSocketServerProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
            got.append((payload, isBinary))

    server, client = Server(), WebSocketClientProtocol()
    server.factory = WebSocketServerFactory(server=None)  # type: ignore[no-untyped-call]
    client.factory = WebSocketClientFactory("ws://probe/")  # type: ignore[no-untyped-call]
    if compress:
        server.factory.setProtocolOptions(
            perMessageCompressionAccept=lambda offers: PerMessageDeflateOfferAccept(offers[0])  # type: ignore[no-untyped-call]
        )
        client.factory.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer()],  # type: ignore[no-untyped-call]
            perMessageCompressionAccept=lambda r: (
                PerMessageDeflateResponseAccept(r)  # type: ignore[no-untyped-call]
                if isinstance(r, PerMessageDeflateResponse)
                else None
            ),
        )
    ts, tc = StringTransport(), StringTransport()
    server.makeConnection(ts)  # type: ignore[no-untyped-call]
    client.makeConnection(tc)  # type: ignore[no-untyped-call]
    _pump(client, tc, server, ts)
    return server, client, got


def probe() -> bool:
    """Whether autobahn has every internal :class:`~.frames.FastFrames` relies on, as it expects.

    In-memory handshakes between autobahn's own server and client, plain and with
    permessage-deflate; then the attributes and signatures used here are checked,
    and frames built by :func:`encode_frame` (one compressed by the client's
    extension object) must reach the server as messages.
    """
    try:
        server, client, got = _handshake(False)
        stats = server.trafficStats
        checks = [
            server.state == server.STATE_OPEN == client.state,
            all(
                hasattr(server, n)
                for n in (
                    "data",
                    "current_frame",
                    "inside_message",
                    "send_queue",
                    "failedByMe",
                    "_perMessageCompress",
                    "logOctets",
                    "maxMessagePayloadSize",
                    "wasMaxMessagePayloadSizeExceeded",
                )
            ),
            all(
                hasattr(stats, n)
                for n in (
                    "incomingOctetsWebSocketLevel",
                    "incomingOctetsAppLevel",
                    "incomingWebSocketFrames",
                    "incomingWebSocketMessages",
                    "outgoingOctetsWireLevel",
                )
            ),
            all(
                callable(getattr(WebSocketServerProtocol, n, None))
                for n in (
                    "_dataReceived",
                    "processData",
                    "_closeConnection",
                    "onMessageEnd",
                    "_connectionMade",
                    "_invalid_payload",
                    "_max_message_size_exceeded",
                )
            ),
            list(inspect.signature(WebSocketServerProtocol.sendData).parameters)[:4]
            == ["self", "data", "sync", "chopsize"],
            list(inspect.signature(WebSocketServerProtocol._max_message_size_exceeded).parameters)
            == ["self", "msg_size", "max_msg_size", "reason"],
            isinstance(WebSocketServerProtocol.CONFIG_ATTRS, (tuple, list)),
            isinstance(WebSocketClientProtocol.CONFIG_ATTRS, (tuple, list)),
        ]
        server.dataReceived(encode_frame(b"probe", False, True))
        checks.append(got == [(b"probe", False)])
        deflating, deflater, inflated = _handshake(True)
        deflate = deflater._perMessageCompress
        checks.append(deflate is not None and deflating._perMessageCompress is not None)
        checks.append("max_output_len" in inspect.signature(deflate.decompress_message_data).parameters)
        for payload in (b"probe", b"probe" * 100):  # the second one with the window taken over
            deflating.dataReceived(encode_frame(payload, True, True, deflate))
        checks.append(inflated == [(b"probe", True), (b"probe" * 100, True)])
        for proto in (server, client, deflating, deflater):
            proto.connectionLost(Failure(ConnectionDone()))  # nothing is left scheduled
        return all(checks)
    except Exception:
        return False


#: Whether :mod:`.frames` may be used with the installed autobahn.
FAST = probe()
if not FAST:  # pragma: no cover - depends on the installed autobahn
    _log.warn("WebSocket fast path disabled: autobahn's internals are not as expected")
