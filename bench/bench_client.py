"""HTTP client benchmark: requests per second against one local server.

Compares aleph_tx's client with treq, aiohttp's client and httpx in the same run:
sequential requests (one at a time, keep-alive) and 50 concurrent ones (50 pooled
connections). The server is a tiny asyncio keep-alive responder in its own process
(pinned to CPU 0 with ``taskset`` when available, clients on CPU 1), so the clients
are what is measured. Cases:

- ``--body 0,65536,1048576``: GETs whose responses carry that many bytes (default
  ``0``: a 13-byte "Hello, World!");
- ``--upload 1048576``: also POSTs carrying that many bytes (answered with 13 bytes).

Usage: ``python bench/bench_client.py [--seconds 3] [--runs 3] [--body 0,65536,1048576]
[--upload 1048576] [--clients aleph_tx,treq,aiohttp,httpx] [--record]``
Prints a Markdown table per case (median of ``--runs`` runs): requests per second,
and the client process's CPU time per request (steadier than req/s on a loaded
machine). ``--record`` stores the 13-byte GET case in ``bench/results.json``.
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

SERVER = r"""
import asyncio, re
CL = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
RESPONSES = {}
def response(path):
    r = RESPONSES.get(path)
    if r is None:
        n = int(path.strip(b"/") or b"0")
        body = b"x" * n if n else b"Hello, World!"
        r = RESPONSES[path] = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (len(body), body)
    return r
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.buf = bytearray(); self.skip = 0; self.after = b""
    def data_received(self, data):
        buf = self.buf
        buf += data
        out = []
        while True:
            if self.skip:  # a request body: read and dropped
                n = min(self.skip, len(buf))
                del buf[:n]
                self.skip -= n
                if self.skip:
                    break
                out.append(self.after)
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                break
            head = bytes(buf[:i + 2])
            del buf[:i + 4]
            r = response(head.split(b" ", 2)[1])
            m = CL.search(head)
            if m and int(m.group(1)):
                self.skip, self.after = int(m.group(1)), r
            else:
                out.append(r)
        if out:
            self.t.write(b"".join(out))
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(P, "127.0.0.1", 0, backlog=1024)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

# Each client runs in its own process: argv = url, seconds, repository root, upload size;
# GETs url (or POSTs that many bytes); prints {"seq": rps, "seq_cpu_us": ..., "conc": ..., "conc_cpu_us": ...}.
CLIENTS: dict[str, str] = {
    "aleph_tx": r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
from twisted.internet import reactor, defer
from aleph_tx import http
url, seconds, upload = sys.argv[1], float(sys.argv[2]), int(sys.argv[4])
payload = b"u" * upload
async def main():
    pool = http.connection_pool(connections_per_host=50)
    one = (lambda: http.post(url, body=payload, pool=pool)) if upload else (lambda: http.get(url, pool=pool))
    out = {}
    end = time.perf_counter() + seconds; n = 0; c0 = time.process_time()
    while time.perf_counter() < end:
        await one(); n += 1
    out["seq"] = n / seconds; out["seq_cpu_us"] = (time.process_time() - c0) / max(n, 1) * 1e6
    end = time.perf_counter() + seconds; count = [0]; c0 = time.process_time()
    async def worker():
        while time.perf_counter() < end:
            await one(); count[0] += 1
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
url, seconds, upload = sys.argv[1], float(sys.argv[2]), int(sys.argv[4])
payload = b"u" * upload
async def main():
    pool = HTTPConnectionPool(reactor); pool.maxPersistentPerHost = 50
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    one = (lambda: client.post(url, data=payload)) if upload else (lambda: client.get(url))
    out = {}
    end = time.perf_counter() + seconds; n = 0; c0 = time.process_time()
    while time.perf_counter() < end:
        r = await one(); await r.content(); n += 1
    out["seq"] = n / seconds; out["seq_cpu_us"] = (time.process_time() - c0) / max(n, 1) * 1e6
    end = time.perf_counter() + seconds; count = [0]; c0 = time.process_time()
    async def worker():
        while time.perf_counter() < end:
            r = await one(); await r.content(); count[0] += 1
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
url, seconds, upload = sys.argv[1], float(sys.argv[2]), int(sys.argv[4])
payload = b"u" * upload
async def main():
    out = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:
        async def one():
            request = session.post(url, data=payload) if upload else session.get(url)
            async with request as r:
                await r.read()
        end = time.perf_counter() + seconds; n = 0; c0 = time.process_time()
        while time.perf_counter() < end:
            await one(); n += 1
        out["seq"] = n / seconds; out["seq_cpu_us"] = (time.process_time() - c0) / max(n, 1) * 1e6
        end = time.perf_counter() + seconds; count = [0]; c0 = time.process_time()
        async def worker():
            while time.perf_counter() < end:
                await one(); count[0] += 1
        await asyncio.gather(*[worker() for _ in range(50)])
        out["conc"] = count[0] / seconds; out["conc_cpu_us"] = (time.process_time() - c0) / max(count[0], 1) * 1e6
    print(json.dumps(out))
asyncio.run(main())
""",
    "httpx": r"""
import asyncio, json, sys, time
import httpx
url, seconds, upload = sys.argv[1], float(sys.argv[2]), int(sys.argv[4])
payload = b"u" * upload
async def main():
    out = {}
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with httpx.AsyncClient(limits=limits) as client:
        one = (lambda: client.post(url, content=payload)) if upload else (lambda: client.get(url))
        end = time.perf_counter() + seconds; n = 0; c0 = time.process_time()
        while time.perf_counter() < end:
            r = await one(); r.read(); n += 1
        out["seq"] = n / seconds; out["seq_cpu_us"] = (time.process_time() - c0) / max(n, 1) * 1e6
        end = time.perf_counter() + seconds; count = [0]; c0 = time.process_time()
        async def worker():
            while time.perf_counter() < end:
                r = await one(); r.read(); count[0] += 1
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


def run_client(name: str, url: str, seconds: float, upload: int = 0) -> dict[str, float]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [*_pin(1), sys.executable, "-c", CLIENTS[name], url, str(seconds), root, str(upload)],
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 60,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed: {out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def _table(title: str, med: dict[str, dict[str, float]]) -> None:
    base = med.get("aiohttp")
    print(f"\n### {title}\n")
    print(
        "| client | sequential req/s | vs aiohttp | client CPU µs/req | "
        "50 concurrent req/s | vs aiohttp | client CPU µs/req |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, m in med.items():
        rs = f"{m['seq'] / base['seq']:.2f}x" if base else "-"
        rc = f"{m['conc'] / base['conc']:.2f}x" if base else "-"
        print(
            f"| {name} | {m['seq']:.0f} | {rs} | {m['seq_cpu_us']:.0f} "
            f"| {m['conc']:.0f} | {rc} | {m['conc_cpu_us']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--body", default="0", help="response body sizes to GET, comma-separated")
    parser.add_argument("--upload", type=int, default=0, help="also POST bodies of this many bytes")
    parser.add_argument(
        "--record", action="store_true", help="store the 13-byte GET case in bench/results.json"
    )
    args = parser.parse_args()
    cases = [(f"GET, {n}-byte responses" if n else "GET, 13-byte responses", f"/{n}", 0) for n in
             map(int, args.body.split(","))]  # fmt: skip
    if args.upload:
        cases.append((f"POST of {args.upload} bytes, 13-byte responses", "/0", args.upload))
    proc, port = start_server()
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    try:
        for _ in range(args.runs):
            for title, path, upload in cases:
                for name in args.clients.split(","):
                    r = run_client(name, f"http://127.0.0.1:{port}{path}", args.seconds, upload)
                    for mode, value in r.items():
                        results.setdefault(title, {}).setdefault(name, {}).setdefault(mode, []).append(value)
    finally:
        proc.kill()
        proc.wait()
    print(f"load average at the end: {os.getloadavg()}")
    meds: dict[str, dict[str, dict[str, float]]] = {}
    for title, by_client in results.items():
        meds[title] = {
            name: {mode: statistics.median(v) for mode, v in modes.items()}
            for name, modes in by_client.items()
        }
        _table(title, meds[title])
    print("\nraw:", json.dumps(results))
    if args.record:
        med = meds.get("GET, 13-byte responses")
        if not med or "treq" not in med:
            print("not recorded: the 13-byte GET case with treq (the baseline) was not measured")
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
