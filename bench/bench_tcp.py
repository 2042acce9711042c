"""TCP echo throughput: aleph_tx's stream echo against raw Twisted and asyncio, same run.

usage: python bench/bench_tcp.py [--duration 5] [--runs 3] [--window 262144] [--write-size 65536 1024] [--only NAME ...] [--record]

Each server runs pinned to core 0 (``taskset -c 0``, when available); the client runs
in this process pinned to core 1: one thread, non-blocking sockets, writes of
``--write-size`` bytes (64 KiB and 1 KiB; each ``send`` one write, as many as the
window allows per wake-up), at most ``--window`` un-echoed bytes in flight per
connection, counting echoed bytes after a one-second warm-up. Every server is
started once; for each write size and connection count (1 and 50), each round
measures every server in turn (a load that drifts on a shared machine weighs on
all alike). Reported: the median MB/s of ``--runs`` rounds, the server's CPU
seconds per GB echoed (``/proc/PID/stat``: the fairer figure on a busy machine),
the load average, and each server's ratio to the raw Twisted echo. The servers
are embedded below so the benchmark runs from the project alone.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVERS: dict[str, str] = {
    "aleph_tx": """
import sys
from twisted.internet import reactor
from aleph_tx import stream as s, tcp
def echo(conn, info):
    s.connect(conn, conn)
tcp.start_server(echo, port=int(sys.argv[1]), host="127.0.0.1")
reactor.run()
""",
    "aleph_tx_no_eager": """
import sys
from twisted.internet import reactor, tcp as ttcp
from aleph_tx import stream as s, tcp
def echo(conn, info):
    s.connect(conn, conn)
server = tcp.start_server(echo, port=int(sys.argv[1]), host="127.0.0.1")
for p in server.ports:
    p.transport = ttcp.Server  # Twisted's own write path: the eager one's reason
reactor.run()
""",
    "twisted_raw": """
import sys
from twisted.internet import protocol, reactor
class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)
f = protocol.Factory.forProtocol(Echo)
f.noisy = False
reactor.listenTCP(int(sys.argv[1]), f, backlog=1024, interface="127.0.0.1")
reactor.run()
""",
    "asyncio_streams": """
import asyncio, sys
async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
""",
    "asyncio_protocol": """
import asyncio, sys
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
""",
}
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    script = tmp / f"server_{name}.py"  # not "aleph_tx.py": it would shadow the package
    script.write_text(SERVERS[name])
    cmd = [sys.executable, str(script), str(port)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]  # taskset execs: the PID is the server's
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # stderr to a file, not a pipe nobody reads: a server logging a traceback per
    # reset connection (asyncio streams) would block on a full pipe and echo nothing
    log = tmp / f"server_{name}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not listen on {port}")


def measure(
    port: int, pid: int, connections: int, duration: float, window: int, chunk: int
) -> tuple[float, float]:
    """Echoed MB/s over ``duration`` seconds after a one-second warm-up, and the
    server's CPU seconds per GB echoed in that time."""
    sel = selectors.DefaultSelector()
    payload = b"x" * chunk
    socks = []
    inflight: dict[int, int] = {}
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
        inflight[sock.fileno()] = 0
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    counted = 0
    t0 = time.monotonic()
    warm = t0 + 1.0
    end = warm + duration
    cpu0: float | None = None
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if cpu0 is None and now >= warm:
                cpu0 = cpu_seconds(pid)
            for key, events in sel.select(0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                fd = sock.fileno()
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(1 << 20)
                    except BlockingIOError:
                        data = b""
                    inflight[fd] -= len(data)
                    if now >= warm:
                        counted += len(data)
                if events & selectors.EVENT_WRITE:
                    try:
                        while inflight[fd] + chunk <= window:
                            inflight[fd] += sock.send(payload)
                    except BlockingIOError:
                        pass
                want = selectors.EVENT_READ
                if inflight[fd] + chunk <= window:
                    want |= selectors.EVENT_WRITE
                if want != key.events:
                    sel.modify(sock, want)
        cpu = cpu_seconds(pid) - (cpu0 or 0.0)
    finally:
        for sock in socks:
            sel.unregister(sock)
            sock.close()
    return counted / duration / 1e6, (cpu / (counted / 1e9) if counted else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=256 * 1024)
    parser.add_argument("--write-size", type=int, nargs="+", default=[65536, 1024])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--only", nargs="+", choices=sorted(SERVERS), default=list(SERVERS))
    parser.add_argument("--record", action="store_true", help="store the MB/s in bench/results.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    results: dict[tuple[str, int, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for name in args.only:
                port = free_port()
                procs[name] = (start(name, port, Path(tmp)), port)
            for size in args.write_size:
                for conns in args.connections:
                    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in args.only}
                    loads = []
                    for _ in range(args.runs):
                        loads.append(os.getloadavg()[0])
                        for name in args.only:
                            proc, port = procs[name]
                            runs[name].append(
                                measure(port, proc.pid, conns, args.duration, args.window, size)
                            )
                    loads.append(os.getloadavg()[0])
                    print(f"-- {size} B writes, {conns} conn, load " + " ".join(f"{x:.2f}" for x in loads))
                    for name in args.only:
                        mbs = statistics.median(r for r, _ in runs[name])
                        cpu = statistics.median(c for _, c in runs[name])
                        results[name, size, conns] = (mbs, cpu)
                        print(
                            f"{name:18s} {mbs:8.1f} MB/s {cpu:6.2f} CPU s/GB (runs: "
                            + ", ".join(f"{r:.1f}/{c:.2f}" for r, c in runs[name])
                            + ")",
                            flush=True,
                        )
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(10)
    print()
    print("MB/s, and x raw Twisted: rate (CPU per GB: raw Twisted's / this server's)")
    cols = [(size, conns) for size in args.write_size for conns in args.connections]
    print("| server | " + " | ".join(f"{s} B x{c} MB/s | x raw Twisted" for s, c in cols) + " |")
    print("|---|" + "---|---|" * len(cols))
    for name in args.only:
        cells = []
        for size, conns in cols:
            value, cpu = results[name, size, conns]
            base = results.get(("twisted_raw", size, conns))
            ratio = f"{value / base[0]:.2f} ({base[1] / cpu:.2f})" if base and base[0] and cpu else "-"
            cells.append(f"{value:.0f} | {ratio}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.record:
        if "twisted_raw" not in args.only:
            print("not recorded: twisted_raw (the baseline) was not measured")
            return
        from _record import record

        for size, conns in cols:
            kib = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"
            record(
                f"tcp_{conns}" if size == 65536 else f"tcp_{size}_{conns}",
                title=f"TCP echo, {kib} writes, {conns} connection{'s' if conns > 1 else ''}",
                unit="MB/s",
                baseline="twisted_raw",
                values={name: round(results[name, size, conns][0], 1) for name in args.only},
                command="PYTHONPATH=. python bench/bench_tcp.py " + " ".join(sys.argv[1:]),
            )


if __name__ == "__main__":
    main()
