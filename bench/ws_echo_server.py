"""WebSocket echo servers for the benchmark and the conformance run.

``python bench/ws_echo_server.py KIND [PORT] [--compression] [--big]`` serves an
echo on 127.0.0.1 and prints ``PORT <n>`` once listening. KIND:

- ``aleph``: ``http.start_server`` + ``websocket_connection`` + ``s.connect(conn, conn)``
- ``autobahn``: autobahn's own Twisted ``WebSocketServerProtocol`` echoing in ``onMessage``
- ``websockets``: the `websockets` library (asyncio)
- ``picows``: picows (Cython) on uvloop, echoing each frame in ``on_ws_frame``
  (no permessage-deflate: ``--compression`` is refused)

``--big`` raises the frame and message limits to 64 MiB (Autobahn|Testsuite's
9.x cases send up to 16 MiB); ``--compression`` accepts permessage-deflate.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BIG = 64 * 1024 * 1024


def _announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def aleph(port: int, compression: bool, big: bool) -> None:
    from twisted.internet import reactor

    from aleph_tx import stream as s
    from aleph_tx.http._server.serve import start_server
    from aleph_tx.http._websocket.api import websocket_connection

    options: dict[str, Any] = {"compression": compression}
    if big:
        options.update(max_frame_payload=BIG, max_message_size=BIG)

    def handler(req: dict[str, Any]) -> Any:
        d = websocket_connection(req, **options)
        d.addCallback(lambda conn: s.connect(conn, conn))
        return d

    srv = start_server(handler, port=port, host="127.0.0.1")
    _announce(srv.port)
    reactor.run()  # type: ignore[attr-defined]


def autobahn(port: int, compression: bool, big: bool) -> None:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
    from twisted.internet import reactor

    class Echo(WebSocketServerProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
            self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = Echo
    if big:
        factory.setProtocolOptions(maxFramePayloadSize=BIG, maxMessagePayloadSize=BIG)
    if compression:

        def accept(offers: list[Any]) -> Any:
            for offer in offers:
                if isinstance(offer, PerMessageDeflateOffer):
                    return PerMessageDeflateOfferAccept(offer)
            return None

        factory.setProtocolOptions(perMessageCompressionAccept=accept)
    listening = reactor.listenTCP(port, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    _announce(listening.getHost().port)
    reactor.run()  # type: ignore[attr-defined]


def websockets_lib(port: int, compression: bool, big: bool) -> None:
    import asyncio

    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for msg in ws:
            await ws.send(msg)

    async def main() -> None:
        async with serve(
            echo,
            "127.0.0.1",
            port,
            compression="deflate" if compression else None,
            max_size=BIG if big else 2**20,
        ) as server:
            _announce(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def picows_server(port: int, compression: bool, big: bool) -> None:
    if compression:
        raise SystemExit("picows does not implement permessage-deflate")
    import uvloop
    from picows import WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type == WSMsgType.PING:
                transport.send_pong(frame.get_payload_as_bytes())
            else:
                transport.send(frame.msg_type, frame.get_payload_as_memoryview())

    async def main() -> None:
        server = await ws_create_server(
            lambda request: Echo(), "127.0.0.1", port, max_frame_size=BIG if big else 10 * 2**20
        )
        _announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    uvloop.run(main())


def main(argv: list[str]) -> None:
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    kind = args[0] if args else "aleph"
    port = int(args[1]) if len(args) > 1 else 0
    run = {"aleph": aleph, "autobahn": autobahn, "websockets": websockets_lib, "picows": picows_server}[kind]
    run(port, "--compression" in flags, "--big" in flags)


if __name__ == "__main__":
    main(sys.argv[1:])
