"""Drive aleph_tx's WebSocket client against an Autobahn fuzzing server (``kosoku -m fuzzingserver``).

``python bench/ws_fuzz_client.py HOST:PORT [--compression]``: asks ``/getCaseCount``,
runs every case as an echo client (``s.connect(conn, conn)``), then
``/updateReports``. Each case is bounded in time.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BIG = 64 * 1024 * 1024
AGENT = "aleph_tx"


async def run(address: str, compression: bool) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from aleph_tx import stream as s
    from aleph_tx.http._websocket.api import websocket_client

    base = f"ws://{address}"
    options: dict[str, Any] = {"max_frame_payload": BIG, "max_message_size": BIG, "compression": compression}
    conn = await websocket_client(base + "/getCaseCount")
    count = int(await conn.take())
    conn.close()
    print(f"{count} cases", flush=True)
    for case in range(1, count + 1):
        try:
            d = websocket_client(f"{base}/runCase?case={case}&agent={AGENT}", **options)
            d.addTimeout(10, reactor)
            conn = await d
        except Exception as e:  # the case may refuse the handshake on purpose
            print(f"case {case}: {e!r}", flush=True)
            continue
        s.connect(conn, conn)
        done: Deferred[None] = conn._ws.when_closed()  # the TCP connection is gone
        done.addTimeout(60, reactor)
        try:
            await done
        except Exception as e:
            print(f"case {case}: not closed in time {e!r}", flush=True)
            conn.close()
    conn = await websocket_client(f"{base}/updateReports?agent={AGENT}")
    await conn.take()
    print("reports updated", flush=True)


def main() -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    address = sys.argv[1]
    compression = "--compression" in sys.argv[2:]
    d = ensureDeferred(run(address, compression))
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
