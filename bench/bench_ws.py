"""WebSocket echo throughput: aleph_tx vs picows, raw autobahn on Twisted and the `websockets` library.

Method (docs/benchmarks.rst): each server in its own process pinned to one core
(``taskset -c 0``), this load generator on another (``sched_setaffinity``), 127.0.0.1
only. The client speaks raw RFC 6455 on asyncio: masked text frames of ``--size``
bytes (32 by default; 4096 and 65536 too), sent in batches, at most ``--window``
un-echoed messages per connection (fewer for large messages: at most
``--window-bytes`` in flight), echoes counted by bytes (each echo frame has a known
size), so it costs little per message. For 1 and 50 connections, every server runs
once per round, the servers interleaved (a load that drifts on a shared machine
weighs on all alike); reported: echoed messages per second, median of ``--runs``
rounds, the server's CPU time per message (``/proc/PID/stat``: the fairer figure
when the machine is busy or the client is the bottleneck), the load average, and
aleph's ratio to each peer.

``--compression``: the client offers permessage-deflate and sends compressed frames
(picows has no compression and is left out); echoes are then counted by parsing
their frame headers.

``python bench/bench_ws.py [--duration 5] [--runs 3] [--size 32,4096,65536] [--servers aleph,picows,autobahn,websockets] [--compression] [--record]``
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
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MASK = b"\x11\x22\x33\x44"
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def frame_head(n: int, masked: bool) -> bytes:
    """A FIN text frame's header for an ``n``-byte payload (RFC 6455 §5.2)."""
    bit = 0x80 if masked else 0
    if n < 126:
        return bytes([0x81, bit | n])
    if n < 65536:
        return bytes([0x81, bit | 126]) + n.to_bytes(2, "big")
    return bytes([0x81, bit | 127]) + n.to_bytes(8, "big")


def client_frame(size: int, compress: bool = False) -> bytes:
    """One masked text frame of ``size`` ASCII bytes; compressed (RFC 7692, RSV1) if
    ``compress``: deflated on its own, so it inflates the same after any other."""
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    if compress:
        deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        payload = (deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    n = len(payload)
    key = (MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    head = frame_head(n, True)
    if compress:
        head = bytes([head[0] | 0x40]) + head[1:]
    return head + MASK + masked


def count_frames(data: bytes) -> tuple[int, bytes]:
    """Whole server frames at the head of ``data``, and the bytes of an incomplete last one."""
    count = pos = 0
    n = len(data)
    while n - pos >= 2:
        length = data[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            start += 2
        elif length == 127:
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            start += 8
        if start + length > n:
            break
        count += 1
        pos = start + length
    return count, data[pos:]


class LoadClient(asyncio.Protocol):
    """One connection: keeps up to ``window`` messages in flight, counts echoes."""

    def __init__(
        self, frame: bytes, echo_size: int | None, window: int, opened: asyncio.Future[None]
    ) -> None:
        self.frame = frame
        self.echo_size = echo_size  # None: echoes have no fixed size (compressed): parse them
        self.frames = 0
        self.rest = b""
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
        return self.frames if self.echo_size is None else self.received_bytes // self.echo_size

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(HANDSHAKE if self.echo_size is not None else HANDSHAKE[:-2] + DEFLATE)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            if self.echo_size is None and b"permessage-deflate" not in self.head[:end]:
                self.opened.set_exception(RuntimeError("permessage-deflate was not accepted"))
                return
            self.upgraded = True
            data = self.head[end + 4 :]
            self.opened.set_result(None)  # measure() starts every connection at once
        self.received_bytes += len(data)
        if self.echo_size is None:
            n, self.rest = count_frames(self.rest + data)
            self.frames += n
        if self.running and self.sent and self.sent - self.received <= self.window - self.batch:
            self.fill()

    def fill(self) -> None:
        n = self.window - (self.sent - self.received)
        if n > 0 and self.transport is not None:
            self.transport.write(self.frame * n)
            self.sent += n


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


async def measure(
    port: int, pid: int, conns: int, duration: float, size: int, window: int, compress: bool = False
) -> tuple[float, float]:
    """Echoed messages per second, and the server's CPU µs per message."""
    loop = asyncio.get_running_loop()
    frame = client_frame(size, compress)
    echo_size = None if compress else len(frame_head(size, False)) + size
    clients = []
    for _ in range(conns):
        opened: asyncio.Future[None] = loop.create_future()
        _, proto = await loop.create_connection(
            lambda o=opened: LoadClient(frame, echo_size, window, o), "127.0.0.1", port
        )
        clients.append(proto)
        await asyncio.wait_for(opened, 10)
    for c in clients:
        c.fill()
    await asyncio.sleep(min(1.0, duration / 5))  # warm up
    start_count = sum(c.received for c in clients)
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    await asyncio.sleep(duration)
    count = sum(c.received for c in clients) - start_count
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0
    for c in clients:
        c.running = False
        if c.transport is not None:
            c.transport.abort()
    return count / elapsed, (cpu / count * 1e6 if count else float("nan"))


def start_server(
    kind: str, server_core: str | None, compress: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [sys.executable, os.path.join(HERE, "ws_echo_server.py"), kind, "0"]
    if compress:
        cmd.append("--compression")
    if server_core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", server_core, *cmd]  # taskset execs: the PID is the server's
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
    parser.add_argument("--window", type=int, default=1000, help="messages in flight per connection, at most")
    parser.add_argument("--window-bytes", type=int, default=1 << 20, help="payload bytes in flight, at most")
    parser.add_argument("--size", default="32", help="message sizes in bytes, comma-separated")
    parser.add_argument("--conns", default="1,50")
    parser.add_argument("--servers", default="aleph,picows,autobahn,websockets")
    parser.add_argument(
        "--compression", action="store_true", help="permessage-deflate (picows has none: not measured)"
    )
    parser.add_argument("--record", action="store_true", help="store the msg/s in bench/results.json")
    args = parser.parse_args()
    ncpu = os.cpu_count() or 1
    server_core = "0" if ncpu > 1 else None
    if ncpu > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    kinds = args.servers.split(",")
    if args.compression:
        kinds = [k for k in kinds if k != "picows"]
    sizes = [int(x) for x in args.size.split(",")]
    conn_counts = [int(c) for c in args.conns.split(",")]
    results: dict[tuple[str, int, int], tuple[float, float]] = {}
    for size in sizes:
        window = max(2, min(args.window, args.window_bytes // size))
        for conns in conn_counts:
            runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
            loads = []
            for _ in range(args.runs):
                loads.append(os.getloadavg()[0])
                for kind in kinds:
                    proc, port = start_server(kind, server_core, args.compression)
                    try:
                        runs[kind].append(
                            asyncio.run(
                                measure(port, proc.pid, conns, args.duration, size, window, args.compression)
                            )
                        )
                    finally:
                        proc.kill()
                        proc.wait()
            print(
                f"-- {size} B{' compressed' if args.compression else ''}, {conns} conns, window {window}, load "
                + " ".join(f"{x:.2f}" for x in [*loads, os.getloadavg()[0]])
            )
            for kind in kinds:
                rate = statistics.median(r for r, _ in runs[kind])
                cpu = statistics.median(c for _, c in runs[kind])
                results[(kind, size, conns)] = (rate, cpu)
                print(
                    f"{kind:>10}: {rate:>9.0f} msg/s, {cpu:6.2f} µs CPU/msg (runs: "
                    + ", ".join(f"{r:.0f}/{c:.2f}" for r, c in runs[kind])
                    + ")",
                    flush=True,
                )
    peers = [k for k in kinds if k != "aleph"]
    print()
    print("aleph's ratio to each peer: msg/s (CPU per message, peer / aleph)")
    print(
        "| size | connections | " + " | ".join(kinds) + " | " + " | ".join(f"aleph/{p}" for p in peers) + " |"
    )
    print("|---|---|" + "---|" * (len(kinds) + len(peers)))
    for size in sizes:
        for conns in conn_counts:
            row = [f"{results[(k, size, conns)][0]:.0f}" for k in kinds]
            ratios = []
            a = results.get(("aleph", size, conns))
            for p in peers:
                b = results[(p, size, conns)]
                ratios.append(f"{a[0] / b[0]:.2f}x ({b[1] / a[1]:.2f}x)" if a and b[0] and a[1] else "-")
            print(f"| {size} | {conns} | " + " | ".join(row) + " | " + " | ".join(ratios) + " |")
    if args.record:
        baseline = next((b for b in ("picows", "autobahn") if b in kinds), None)
        if args.compression:
            print("not recorded: the recorded entries are without compression")
            return
        if baseline is None:
            print("not recorded: neither picows nor autobahn (the baselines) was measured")
            return
        from _record import record

        for size in sizes:
            for conns in conn_counts:
                record(
                    f"ws_{conns}" if size == 32 else f"ws_{size}_{conns}",
                    title=f"WebSocket echo, {size}-byte text, {conns} connection{'s' if conns > 1 else ''}",
                    unit="msg/s",
                    baseline=baseline,
                    values={kind: round(results[(kind, size, conns)][0]) for kind in kinds},
                    command="PYTHONPATH=. python bench/bench_ws.py " + " ".join(sys.argv[1:]),
                )


if __name__ == "__main__":
    main()
