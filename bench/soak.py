"""Soak test: minutes of mixed traffic with random aborts and cancels against ``twist aleph-http``.

usage: python bench/soak.py [--minutes 10] [--concurrency 16] [--seed 1] [--interval 60]

Not part of pytest (see docs/reliability.rst). It starts ``twist aleph-http
--handler soak_app:handler`` (bench/soak_app.py: the demo plus fault-prone paths)
on 127.0.0.1, then keeps ``--concurrency`` clients busy, each picking at random:
a plain GET, an upload of up to 1 MiB, the demo's chunked ``/stream``, a slow
request cancelled at a random moment, an endless response body abandoned after a
few chunks, the demo's SSE clock read then dropped, a thread-pool request, a
WebSocket echo closed cleanly, and raw connections reset (an RST) at a random
point: mid head, mid body, while the handler waits, mid response, mid WebSocket.

Every ``--interval`` seconds it prints the server process's resident memory (RSS),
open file descriptors, established TCP connections and threads, read from
``/proc`` (Linux), with the traffic counts. At the end it stops the traffic, lets
the server settle, takes a last sample, and sends SIGTERM (timing the exit).

The pass: flat lines. The first half of the samples is the warm-up (the allocator
and caches settle); in the second half RSS stays within 5 % (or 8 MiB) of the first
half's peak and the descriptor count within 16; once settled, no connection is left
open and descriptors are back to what the idle server had; the process exits within
``--shutdown-timeout`` + 2 s of SIGTERM; no request hangs (each is bounded by 30 s).
The exit status is 0 on a pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
BOUND = 30.0  # seconds any one client operation may take

WS_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

#: Raw requests to reset part-way (the reset comes after a random prefix or pause).
RAW: dict[str, bytes] = {
    "raw_head": b"GET / HTTP/1.1\r\nHost: soak\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n",
    "raw_body": b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: 200000\r\n\r\n" + b"u" * 100000,
    "raw_slow": b"GET /slow?s=5 HTTP/1.1\r\nHost: soak\r\n\r\n",
    "raw_endless": b"GET /endless HTTP/1.1\r\nHost: soak\r\n\r\n",
    # the upgrade, then a masked binary frame "hello" (RFC 6455 §5.3: mask key 01 02 03 04)
    "raw_ws": WS_UPGRADE
    + b"\x82\x85\x01\x02\x03\x04"
    + bytes(b ^ (i % 4 + 1) for i, b in enumerate(b"hello")),
}


# -- the server process ------------------------------------------------------------------------


class Server:
    """``twist aleph-http`` in a subprocess; its output goes to a file."""

    def __init__(self, shutdown_timeout: float, log: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "twisted", "--log-format", "text", "aleph-http",
                "--listen", "tcp:0:interface=127.0.0.1", "--handler", "soak_app:handler",
                "--shutdown-timeout", str(shutdown_timeout),
            ],
            stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(rb"aleph-http listening on tcp:127\.0\.0\.1:(\d+)", log.read_bytes())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise SystemExit("twist exited:\n" + log.read_text(errors="replace"))
            time.sleep(0.1)
        self.proc.kill()
        raise SystemExit("twist did not start listening within 30 s")

    def sample(self) -> dict[str, int]:
        """RSS (KiB), open fds, established TCP connections, threads of the server process."""
        pid = self.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        inodes = set()
        fds = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        established = 0
        for table in ("tcp", "tcp6"):
            try:
                lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                    established += 1
        return {"rss_kib": rss, "fds": fds, "connections": established, "threads": threads}

    def stop(self, bound: float) -> tuple[float, int | None]:
        """SIGTERM; seconds until exit (and its status), or ``None`` if killed after ``bound``."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            status: int | None = self.proc.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            status = None
        self._out.close()
        return time.monotonic() - started, status


# -- the traffic ----------------------------------------------------------------------------------


class Traffic:
    """The clients: ``concurrency`` loops picking operations at random (on the Twisted reactor)."""

    def __init__(self, port: int, concurrency: int, seed: int) -> None:
        from aleph_tx import http

        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.pool = http.connection_pool(connections_per_host=concurrency * 2)
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.running = True
        self.ops = [
            (self.get, 4), (self.upload, 2), (self.stream, 1), (self.cancel_slow, 2),
            (self.abandon_endless, 2), (self.sse, 1), (self.thread, 1), (self.websocket, 2),
            (self.raw_reset, 4),
        ]  # fmt: skip

    async def run(self) -> None:
        from twisted.internet.defer import DeferredList, ensureDeferred

        loops = [ensureDeferred(self.loop()) for _ in range(self.concurrency)]
        await DeferredList(loops, consumeErrors=True)

    async def loop(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.defer import CancelledError, ensureDeferred

        fns, weights = zip(*self.ops, strict=True)
        while self.running:
            op = self.rng.choices(fns, weights)[0]
            name = op.__name__
            try:
                await ensureDeferred(op()).addTimeout(BOUND, reactor)
                self.counts[name] += 1
            except CancelledError:
                self.errors[f"{name}: hung (over {BOUND:g} s)"] += 1
            except Exception as e:
                self.errors[f"{name}: {type(e).__name__}: {e}"[:160]] += 1

    async def _sleep(self, seconds: float) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        await deferLater(reactor, seconds, lambda: None)

    async def get(self) -> None:
        from aleph_tx import http

        r = await http.get(self.base + "/", pool=self.pool)
        assert r["body"] == b"hello!", r["body"][:40]

    async def upload(self) -> None:
        from aleph_tx import http

        n = self.rng.randrange(1, 1 << 20)
        r = await http.post(self.base + "/upload", body=os.urandom(n), pool=self.pool)
        assert r["body"] == str(n).encode(), (r["body"][:40], n)

    async def stream(self) -> None:
        from aleph_tx import http

        r = await http.get(self.base + "/stream", pool=self.pool)
        assert r["body"].count(b"chunk") == 10

    async def cancel_slow(self) -> None:
        from twisted.internet.defer import CancelledError

        from aleph_tx import http

        d = http.get(self.base + "/slow?s=0.5", pool=self.pool)
        await self._sleep(self.rng.uniform(0, 0.7))
        d.cancel()
        try:
            await d
        except CancelledError:
            self.counts["cancelled"] += 1

    async def abandon_endless(self) -> None:
        from aleph_tx import http

        r = await http.get(self.base + "/endless", as_="stream", pool=self.pool)
        body = r["body"]
        for _ in range(self.rng.randrange(1, 20)):
            await body.take()
        body.close()  # the client leaves mid body

    async def sse(self) -> None:
        from aleph_tx import http

        r = await http.get(self.base + "/events", as_="stream", pool=self.pool)
        chunk = await r["body"].take()
        assert chunk is not None and b"data: " in chunk, chunk
        r["body"].close()

    async def thread(self) -> None:
        from aleph_tx import http

        r = await http.get(self.base + "/thread?s=0.1", pool=self.pool)
        assert r["body"] == b"thread done"

    async def websocket(self) -> None:
        from aleph_tx import http

        conn = await http.websocket_client(f"ws://127.0.0.1:{self.port}/ws")
        for i in range(self.rng.randrange(1, 10)):
            await conn.put(f"message {i}")
            assert await conn.take() == f"message {i}"
        await http.websocket_close(conn)

    async def raw_reset(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        kind = self.rng.choice(list(RAW))
        data = RAW[kind]
        if kind in ("raw_head", "raw_body"):
            data = data[: self.rng.randrange(1, len(data))]
        proto = Protocol()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), proto)
        transport: Any = proto.transport
        transport.pauseProducing()  # read nothing: a response backs up
        transport.write(data)
        await self._sleep(self.rng.uniform(0, 0.3))
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abortConnection()  # an RST
        self.counts["reset"] += 1


# -- the run --------------------------------------------------------------------------------------


def _line(minute: str, sample: dict[str, int], counts: dict[str, int], errors: int) -> str:
    done = sum(v for k, v in counts.items() if k not in ("cancelled", "reset"))
    return (
        f"{minute:>8} {sample['rss_kib'] / 1024:8.1f} {sample['fds']:6d} {sample['connections']:6d} "
        f"{sample['threads']:4d} {done:9d} {counts.get('cancelled', 0):8d} {counts.get('reset', 0):7d} {errors:6d}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("soak.py reads /proc: Linux only")

    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    tmp = Path(tempfile.mkdtemp(prefix="aleph_soak."))
    server = Server(args.shutdown_timeout, tmp / "twist.log")
    idle = server.sample()
    traffic = Traffic(server.port, args.concurrency, args.seed)
    samples: list[dict[str, int]] = []
    print(f"twist aleph-http pid {server.proc.pid} on port {server.port}; log {server.log}")
    print(f"idle: rss {idle['rss_kib'] / 1024:.1f} MiB, {idle['fds']} fds, {idle['connections']} connections")
    print(
        f"{'minute':>8} {'rss_mib':>8} {'fds':>6} {'conns':>6} {'thr':>4} {'requests':>9} {'cancel':>8} {'reset':>7} {'errors':>6}"
    )
    started = time.monotonic()
    total = args.minutes * 60

    def tick() -> None:
        elapsed = time.monotonic() - started
        sample = server.sample()
        samples.append(sample)
        print(_line(f"{elapsed / 60:.1f}", sample, traffic.counts, sum(traffic.errors.values())), flush=True)
        if elapsed + 1e-6 < total:
            reactor.callLater(min(args.interval, total - elapsed), tick)
        else:
            traffic.running = False

    reactor.callLater(min(args.interval, total), tick)
    result: dict[str, Any] = {}

    async def run() -> None:
        from twisted.internet.task import deferLater

        await traffic.run()
        traffic.pool.close()  # its idle keep-alive connections close too
        await deferLater(reactor, 3.0, lambda: None)  # in-flight server work finishes
        result["settled"] = server.sample()

    def done(outcome: Any) -> None:
        result["outcome"] = outcome
        reactor.stop()

    ensureDeferred(run()).addBoth(done)
    watchdog = threading.Timer(total + 120, lambda: os.kill(os.getpid(), signal.SIGINT))
    watchdog.daemon = True
    watchdog.start()
    reactor.run()
    watchdog.cancel()

    settled = result.get("settled") or server.sample()
    print(_line("settled", settled, traffic.counts, sum(traffic.errors.values())))
    exit_seconds, status = server.stop(args.shutdown_timeout + 10)
    print(f"SIGTERM: exited in {exit_seconds:.2f} s (status {status})")
    log = server.log.read_text(errors="replace")
    tracebacks = log.count("Traceback")
    print(f"server log: {tracebacks} tracebacks ({server.log})")
    for what, n in traffic.errors.most_common(10):
        print(f"  client error x{n}: {what}")

    failures = []
    if len(samples) >= 2:  # the first half warms up (allocator, caches); the second must not grow
        half = len(samples) // 2
        early, late = samples[:half], samples[half:]
        peak = max(x["rss_kib"] for x in early)
        top = max(x["rss_kib"] for x in late)
        if top > max(peak * 1.05, peak + 8192):
            failures.append(f"RSS grew: first half's peak {peak} KiB, second half's {top} KiB")
        fd_peak, fd_top = max(x["fds"] for x in early), max(x["fds"] for x in late)
        if fd_top > fd_peak + 16:
            failures.append(f"descriptors grew: first half's peak {fd_peak}, second half's {fd_top}")
    if settled["connections"]:
        failures.append(f"{settled['connections']} connection(s) open once the traffic stopped")
    if settled["fds"] > idle["fds"] + 2:
        failures.append(f"descriptors once settled: {settled['fds']}, idle server had {idle['fds']}")
    if status is None or exit_seconds > args.shutdown_timeout + 2:
        failures.append(f"SIGTERM took {exit_seconds:.1f} s (status {status})")
    hung = sum(n for what, n in traffic.errors.items() if "hung" in what)
    if hung:
        failures.append(f"{hung} client operation(s) hung past {BOUND:g} s")
    print("PASS: flat" if not failures else "FAIL: " + "; ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
