"""WebSocket echo throughput: aleph_tx vs raw autobahn on Twisted vs the `websockets` library.

Method (docs/benchmarks.rst): each server in its own process pinned to one core
(``taskset -c 0``), this load generator on another (``sched_setaffinity``), 127.0.0.1
only. The client speaks raw RFC 6455 on asyncio: 32-byte masked text frames sent
in batches, at most ``--window`` un-echoed messages per connection, echoes counted
by bytes (each echo frame is exactly 34 bytes), so it costs little per message.
Reports echoed messages per second, median of ``--runs``, for 1 and 50 connections.

``python bench/bench_ws.py [--duration 5] [--runs 3] [--window 1000] [--servers aleph,autobahn,websockets] [--record]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PAYLOAD = b"0123456789abcdef0123456789abcdef"  # 32 bytes of text
MASK = b"\x11\x22\x33\x44"
FRAME = bytes([0x81, 0x80 | len(PAYLOAD)]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))
ECHO_SIZE = 2 + len(PAYLOAD)  # unmasked server frame
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class LoadClient(asyncio.Protocol):
    """One connection: keeps up to ``window`` messages in flight, counts echoes."""

    def __init__(self, window: int, opened: asyncio.Future[None]) -> None:
        self.window = window
        self.batch = max(1, window // 2)
        self.opened = opened
        self.head = b""
        self.upgraded = False
        self.sent = 0
        self.received_bytes = 0
        self.transport: asyncio.Transport | None = None
        self.running = True

    @property
    def received(self) -> int:
        return self.received_bytes // ECHO_SIZE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(HANDSHAKE)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            self.upgraded = True
            data = self.head[end + 4 :]
            self.opened.set_result(None)  # measure() starts every connection at once
        self.received_bytes += len(data)
        if self.running and self.sent and self.sent - self.received <= self.window - self.batch:
            self.fill()

    def fill(self) -> None:
        n = self.window - (self.sent - self.received)
        if n > 0 and self.transport is not None:
            self.transport.write(FRAME * n)
            self.sent += n


async def measure(port: int, conns: int, duration: float, window: int) -> float:
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(conns):
        opened: asyncio.Future[None] = loop.create_future()
        _, proto = await loop.create_connection(lambda o=opened: LoadClient(window, o), "127.0.0.1", port)
        clients.append(proto)
        await asyncio.wait_for(opened, 10)
    for c in clients:
        c.fill()
    await asyncio.sleep(min(1.0, duration / 5))  # warm up
    start_count = sum(c.received for c in clients)
    start = time.perf_counter()
    await asyncio.sleep(duration)
    count = sum(c.received for c in clients) - start_count
    elapsed = time.perf_counter() - start
    for c in clients:
        c.running = False
        if c.transport is not None:
            c.transport.abort()
    return count / elapsed


def start_server(kind: str, server_core: str | None) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [sys.executable, os.path.join(HERE, "ws_echo_server.py"), kind, "0"]
    if server_core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", server_core, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("PORT "):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--conns", default="1,50")
    parser.add_argument("--servers", default="aleph,autobahn,websockets")
    parser.add_argument("--record", action="store_true", help="store the msg/s in bench/results.json")
    args = parser.parse_args()
    ncpu = os.cpu_count() or 1
    server_core = "0" if ncpu > 1 else None
    if ncpu > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    kinds = args.servers.split(",")
    results: dict[tuple[str, int], float] = {}
    for conns in (int(c) for c in args.conns.split(",")):
        # servers interleaved run by run: a load that drifts (a shared machine)
        # weighs on every server alike
        runs: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.runs):
            for kind in kinds:
                proc, port = start_server(kind, server_core)
                try:
                    runs[kind].append(asyncio.run(measure(port, conns, args.duration, args.window)))
                finally:
                    proc.kill()
                    proc.wait()
        for kind in kinds:
            results[(kind, conns)] = statistics.median(runs[kind])
            print(
                f"{kind:>10} {conns:>3} conns: {results[(kind, conns)]:>9.0f} msg/s (runs: "
                + ", ".join(f"{r:.0f}" for r in runs[kind])
                + ")",
                flush=True,
            )
    print()
    print("| connections | " + " | ".join(kinds) + " | aleph/autobahn | aleph/websockets |")
    print("|---|" + "---|" * (len(kinds) + 2))
    for conns in (int(c) for c in args.conns.split(",")):
        row = [f"{results[(k, conns)]:.0f}" for k in kinds]
        a = results.get(("aleph", conns))
        ab = results.get(("autobahn", conns))
        wsl = results.get(("websockets", conns))
        r1 = f"{a / ab:.2f}x" if a and ab else "-"
        r2 = f"{a / wsl:.2f}x" if a and wsl else "-"
        print(f"| {conns} | " + " | ".join(row) + f" | {r1} | {r2} |")
    if args.record:
        if "autobahn" not in kinds:
            print("not recorded: autobahn (the baseline) was not measured")
            return
        from _record import record

        for conns in (int(c) for c in args.conns.split(",")):
            record(
                f"ws_{conns}",
                title=f"WebSocket echo, 32-byte text, {conns} connection{'s' if conns > 1 else ''}",
                unit="msg/s",
                baseline="autobahn",
                values={kind: round(results[(kind, conns)]) for kind in kinds},
                command="PYTHONPATH=. python bench/bench_ws.py " + " ".join(sys.argv[1:]),
            )


if __name__ == "__main__":
    main()
