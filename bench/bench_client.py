"""HTTP client benchmark: requests per second of GETs to one local server.

Compares aleph_tx's client with treq, aiohttp's client and httpx in the same run:
sequential GETs (one at a time, keep-alive) and 50 concurrent GETs (50 pooled
connections). The server is a tiny asyncio keep-alive responder in its own
process (pinned to CPU 0 with ``taskset`` when available, clients on CPU 1), so
the clients are what is measured.

Usage: ``python bench/bench_client.py [--seconds 3] [--clients aleph_tx,treq,aiohttp,httpx] [--record]``
Prints a Markdown table (median of ``--runs`` runs): requests per second, and the
client process's CPU time per request (steadier than req/s on a loaded machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!"

SERVER = r"""
import asyncio, sys
RESPONSE = __RESPONSE__
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.buf = b""
    def data_received(self, data):
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.t.write(RESPONSE * n)
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(P, "127.0.0.1", 0, backlog=1024)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
""".replace("__RESPONSE__", repr(RESPONSE))

# Each client runs in its own process: prints {"seq": rps, "conc": rps}.
CLIENTS: dict[str, str] = {
    "aleph_tx": r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
from twisted.internet import reactor, defer
from aleph_tx import http
url, seconds = sys.argv[1], float(sys.argv[2])
async def main():
    pool = http.connection_pool(connections_per_host=50)
    out = {}
    end = time.perf_counter() + seconds; n = 0; c0 = time.process_time()
    while time.perf_counter() < end:
        await http.get(url, pool=pool); n += 1
    out["seq"] = n / seconds; out["seq_cpu_us"] = (time.process_time() - c0) / max(n, 1) * 1e6
    end = time.perf_counter() + seconds; count = [0]; c0 = time.process_time()
    async def worker():
        while time.perf_counter() < end:
            await http.get(url, pool=pool); count[0] += 1
    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(50)])
    out["conc"] = count[0] / seconds; out["conc_cpu_us"] = (time.process_time() - c0) / max(count[0], 1) * 1e6
    print(json.dumps(out))
def run():
    d = defer.Deferred.fromCoroutine(main())
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(run)
reactor.run()
""",
    "treq": r"""
import json, sys, time
import treq
from twisted.internet import reactor, defer
from twisted.web.client import Agent, HTTPConnectionPool
url, seconds = sys.argv[1], float(sys.argv[2])
async def main():
    pool = HTTPConnectionPool(reactor); pool.maxPersistentPerHost = 50
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    out = {}
    end = time.perf_counter() + seconds; n = 0; c0 = time.process_time()
    while time.perf_counter() < end:
        r = await client.get(url); await r.content(); n += 1
    out["seq"] = n / seconds; out["seq_cpu_us"] = (time.process_time() - c0) / max(n, 1) * 1e6
    end = time.perf_counter() + seconds; count = [0]; c0 = time.process_time()
    async def worker():
        while time.perf_counter() < end:
            r = await client.get(url); await r.content(); count[0] += 1
    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(50)])
    out["conc"] = count[0] / seconds; out["conc_cpu_us"] = (time.process_time() - c0) / max(count[0], 1) * 1e6
    print(json.dumps(out))
def run():
    d = defer.Deferred.fromCoroutine(main())
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(run)
reactor.run()
""",
    "aiohttp": r"""
import asyncio, json, sys, time
import aiohttp
url, seconds = sys.argv[1], float(sys.argv[2])
async def main():
    out = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:
        end = time.perf_counter() + seconds; n = 0; c0 = time.process_time()
        while time.perf_counter() < end:
            async with session.get(url) as r:
                await r.read()
            n += 1
        out["seq"] = n / seconds; out["seq_cpu_us"] = (time.process_time() - c0) / max(n, 1) * 1e6
        end = time.perf_counter() + seconds; count = [0]; c0 = time.process_time()
        async def worker():
            while time.perf_counter() < end:
                async with session.get(url) as r:
                    await r.read()
                count[0] += 1
        await asyncio.gather(*[worker() for _ in range(50)])
        out["conc"] = count[0] / seconds; out["conc_cpu_us"] = (time.process_time() - c0) / max(count[0], 1) * 1e6
    print(json.dumps(out))
asyncio.run(main())
""",
    "httpx": r"""
import asyncio, json, sys, time
import httpx
url, seconds = sys.argv[1], float(sys.argv[2])
async def main():
    out = {}
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with httpx.AsyncClient(limits=limits) as client:
        end = time.perf_counter() + seconds; n = 0; c0 = time.process_time()
        while time.perf_counter() < end:
            r = await client.get(url); r.read(); n += 1
        out["seq"] = n / seconds; out["seq_cpu_us"] = (time.process_time() - c0) / max(n, 1) * 1e6
        end = time.perf_counter() + seconds; count = [0]; c0 = time.process_time()
        async def worker():
            while time.perf_counter() < end:
                r = await client.get(url); r.read(); count[0] += 1
        await asyncio.gather(*[worker() for _ in range(50)])
        out["conc"] = count[0] / seconds; out["conc_cpu_us"] = (time.process_time() - c0) / max(count[0], 1) * 1e6
    print(json.dumps(out))
asyncio.run(main())
""",
}


def _pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu)]
    return []


def start_server() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*_pin(0), sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    # wait until it accepts
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port


def run_client(name: str, url: str, seconds: float) -> dict[str, float]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [*_pin(1), sys.executable, "-c", CLIENTS[name], url, str(seconds), root],
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 30,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed: {out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--record", action="store_true", help="store the req/s in bench/results.json")
    args = parser.parse_args()
    proc, port = start_server()
    url = f"http://127.0.0.1:{port}/"
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(args.runs):
            for name in args.clients.split(","):
                r = run_client(name, url, args.seconds)
                for mode, value in r.items():
                    results.setdefault(name, {}).setdefault(mode, []).append(value)
    finally:
        proc.kill()
        proc.wait()
    med: dict[str, dict[str, float]] = {
        name: {mode: statistics.median(v) for mode, v in modes.items()} for name, modes in results.items()
    }
    base = med.get("treq")
    print(
        "| client | sequential req/s | vs treq | client CPU µs/req | "
        "50 concurrent req/s | vs treq | client CPU µs/req |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, m in med.items():
        rs = f"{m['seq'] / base['seq']:.2f}x" if base else "-"
        rc = f"{m['conc'] / base['conc']:.2f}x" if base else "-"
        print(
            f"| {name} | {m['seq']:.0f} | {rs} | {m['seq_cpu_us']:.0f} "
            f"| {m['conc']:.0f} | {rc} | {m['conc_cpu_us']:.0f} |"
        )
    print("\nraw:", json.dumps(results))
    if args.record:
        if base is None:
            print("not recorded: treq (the baseline) was not measured")
            return
        from _record import record

        for key, mode, title in (
            ("client", "seq", "HTTP client: sequential GETs, one keep-alive connection"),
            ("client_concurrent", "conc", "HTTP client: 50 concurrent GETs, 50 pooled connections"),
        ):
            record(
                key,
                title=title,
                unit="req/s",
                baseline="treq",
                values={name: round(m[mode]) for name, m in med.items()},
                command="PYTHONPATH=. python bench/bench_client.py " + " ".join(sys.argv[1:]),
            )


if __name__ == "__main__":
    main()
