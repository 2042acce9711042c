"""TCP echo throughput: aleph_tx's stream echo against raw Twisted and asyncio, same run.

usage: python bench/bench_tcp.py [--duration 5] [--runs 3] [--window 262144] [--only NAME ...] [--record]

Each server runs pinned to core 0 (``taskset -c 0``, when available); the client runs
in this process pinned to core 1: one thread, non-blocking sockets, 64 KiB writes,
at most ``--window`` un-echoed bytes in flight per connection, counting echoed
bytes after a one-second warm-up. Reported: the median MB/s of ``--runs`` runs with
1 and with 50 connections, and each server's ratio to the raw Twisted echo. The
servers are embedded below so the benchmark runs from the project alone.
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
    "aleph_tx_eager": """
import sys
from twisted.internet import reactor
from aleph_tx import stream as s, tcp
from aleph_tx._eager import install_eager
def echo(conn, info):
    s.connect(conn, conn)
server = tcp.start_server(echo, port=int(sys.argv[1]), host="127.0.0.1")
for p in server.ports:
    install_eager(p)
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

CHUNK = 65536


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    script = tmp / f"server_{name}.py"  # not "aleph_tx.py": it would shadow the package
    script.write_text(SERVERS[name])
    cmd = [sys.executable, str(script), str(port)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
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


def measure(port: int, connections: int, duration: float, window: int) -> float:
    """Echoed MB/s over ``duration`` seconds after a one-second warm-up."""
    sel = selectors.DefaultSelector()
    payload = b"x" * CHUNK
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
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
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
                if events & selectors.EVENT_WRITE and inflight[fd] + CHUNK <= window:
                    try:
                        inflight[fd] += sock.send(payload)
                    except BlockingIOError:
                        pass
                want = selectors.EVENT_READ
                if inflight[fd] + CHUNK <= window:
                    want |= selectors.EVENT_WRITE
                if want != key.events:
                    sel.modify(sock, want)
    finally:
        for sock in socks:
            sel.unregister(sock)
            sock.close()
    return counted / duration / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=256 * 1024)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--only", nargs="+", choices=sorted(SERVERS), default=list(SERVERS))
    parser.add_argument("--record", action="store_true", help="store the MB/s in bench/results.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    results: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            port = free_port()
            proc = start(name, port, Path(tmp))
            try:
                for conns in args.connections:
                    runs = [measure(port, conns, args.duration, args.window) for _ in range(args.runs)]
                    results[name, conns] = statistics.median(runs)
                    print(
                        f"{name:18s} {conns:3d} conn: {' '.join(f'{r:8.1f}' for r in runs)} MB/s", flush=True
                    )
            finally:
                proc.terminate()
                proc.wait(10)
    print()
    print("| server | " + " | ".join(f"{c} conn MB/s | x raw Twisted" for c in args.connections) + " |")
    print("|---|" + "---|---|" * len(args.connections))
    for name in args.only:
        cells = []
        for conns in args.connections:
            value = results[name, conns]
            base = results.get(("twisted_raw", conns))
            ratio = f"{value / base:.2f}" if base else "-"
            cells.append(f"{value:.0f} | {ratio}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.record:
        if "twisted_raw" not in args.only:
            print("not recorded: twisted_raw (the baseline) was not measured")
            return
        from _record import record

        for conns in args.connections:
            record(
                f"tcp_{conns}",
                title=f"TCP echo, 64 KiB writes, {conns} connection{'s' if conns > 1 else ''}",
                unit="MB/s",
                baseline="twisted_raw",
                values={name: round(results[name, conns], 1) for name in args.only},
                command="PYTHONPATH=. python bench/bench_tcp.py " + " ".join(sys.argv[1:]),
            )


if __name__ == "__main__":
    main()
