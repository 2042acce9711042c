"""HTTP/3 benchmark: aleph_tx's server against hypercorn's, aleph_tx's client against niquests'.

Servers (each in its own process, pinned to CPU 0 with ``taskset`` when available):
aleph_tx's HTTP/3 server (``listen_h3`` with the server's handler runner) and
hypercorn's (``--quic-bind``, a raw ASGI app), both answering ``/`` with
``Hello, World!`` and ``/10m`` with 10 MiB. Clients run on CPU 1, one process per
measurement, peers interleaved in every round:

- servers: the same clients against each server: requests per second with 16
  requests in flight on one connection (aleph_tx's client: niquests has no
  concurrent requests without threads) and 10 MiB downloads (niquests, the faster
  downloader, so the server is what is measured); the server process's CPU time
  per request and per downloaded MB is printed too (steadier than req/s and MB/s
  on a shared machine, and it does not depend on the client keeping up);
- clients: aleph_tx's client and niquests (HTTP/3 over its own QUIC stack, qh3)
  against aleph_tx's server: sequential requests per second and 10 MiB downloads.

Usage: ``PYTHONPATH=. python bench/bench_h3.py [--seconds 3] [--runs 3] [--record]``
Prints Markdown tables of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)

ALEPH_SERVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from twisted.internet import reactor
from aleph_tx import tls
from aleph_tx.http._quic.config import server_configuration
from aleph_tx.http._ring.limits import make_options
from aleph_tx.http._server.exchange import Runner
from aleph_tx.http._server.h3 import listen_h3
HELLO = {"status": 200, "headers": {"content-type": "text/plain"}, "body": b"Hello, World!"}
BIG = {"status": 200, "headers": {"content-type": "text/plain"}, "body": b"x" * (10 << 20)}
def handler(req):
    return BIG if req["uri"] == "/10m" else HELLO
runner = Runner(handler, make_options({}))
port = listen_h3(runner, server_configuration(tls.self_signed_context()), int(sys.argv[2]), "127.0.0.1")
print("ready", flush=True)
reactor.run()
"""

HYPERCORN_APP = r"""
HELLO = b"Hello, World!"
BIG = b"x" * (10 << 20)
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = BIG if scope["path"] == "/10m" else HELLO
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""

# Each client prints one JSON line: {"seq": req/s, "conc": req/s, "mbps": MB/s}
CLIENTS: dict[str, str] = {
    "aleph_tx": r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from twisted.internet import defer, task
from aleph_tx import stream as s
from aleph_tx.http._client.h3 import connect_h3
port, seconds, modes = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(",")
async def get(conn, path):
    resp = await conn.request("GET", "localhost", path)
    n = 0
    while (chunk := await resp["body"].take()) is not None:
        n += len(chunk)
    await resp["ended"]
    return n
async def main(reactor):
    conn = await connect_h3("127.0.0.1", port, "localhost", insecure=True, connection_timeout=10)
    out = {}
    if "seq" in modes:
        n = 0; end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            await get(conn, "/"); n += 1
        out["seq"] = n / seconds
    if "conc" in modes:
        count = [0]; end = time.perf_counter() + seconds
        async def worker():
            while time.perf_counter() < end:
                await get(conn, "/"); count[0] += 1
        t0 = time.perf_counter()
        await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(16)])
        out["conc"] = count[0] / (time.perf_counter() - t0)
    if "mbps" in modes:
        total = 0; t0 = time.perf_counter(); end = t0 + seconds
        while time.perf_counter() < end:
            total += await get(conn, "/10m")
        out["mbps"] = total / (time.perf_counter() - t0) / 1e6
    print(json.dumps(out), flush=True)
    conn.abort()
task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
""",
    "niquests": r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import niquests
port, seconds, modes = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(",")
url = f"https://127.0.0.1:{port}"
out = {}
with niquests.Session(disable_http2=True, retries=0) as session:
    session.quic_cache_layer.add_domain("127.0.0.1", port)
    r = session.get(url + "/", verify=False)
    assert r.http_version == 30, r.http_version
    if "seq" in modes:
        n = 0; end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            session.get(url + "/", verify=False).content; n += 1
        out["seq"] = n / seconds
    if "mbps" in modes:
        total = 0; t0 = time.perf_counter(); end = t0 + seconds
        while time.perf_counter() < end:
            total += len(session.get(url + "/10m", verify=False).content)
        out["mbps"] = total / (time.perf_counter() - t0) / 1e6
print(json.dumps(out), flush=True)
""",
}


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def _free_udp_port() -> int:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def start_server(name: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_udp_port()
    log = workdir / f"{name}.log"
    if name == "aleph_tx":
        cmd = [sys.executable, "-c", ALEPH_SERVER, ROOT, str(port)]
        ready = b"ready"
    else:
        from aleph_tx import tls

        cert, key = tls.self_signed_pem()
        (workdir / "cert.pem").write_bytes(cert)
        (workdir / "key.pem").write_bytes(key)
        (workdir / "h3app.py").write_text(HYPERCORN_APP)
        cmd = [
            sys.executable, "-m", "hypercorn", "--bind", "127.0.0.1:0", "--quic-bind", f"127.0.0.1:{port}",
            "--certfile", str(workdir / "cert.pem"), "--keyfile", str(workdir / "key.pem"), "h3app:app",
        ]  # fmt: skip
        ready = b"Running on"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _pin(0) + cmd,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": f"{workdir}:{ROOT}"},
            start_new_session=True,  # hypercorn serves from a child: stop the whole group
        )
    deadline = time.monotonic() + 20
    while ready not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.3)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children (hypercorn serves from a child)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_client(name: str, port: int, seconds: float, modes: str) -> dict[str, float]:
    out = subprocess.run(
        [*_pin(1), sys.executable, "-c", CLIENTS[name], ROOT, str(port), str(seconds), modes],
        capture_output=True,
        text=True,
        timeout=seconds * 6 + 60,
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
    parser.add_argument("--record", action="store_true", help="store the results in bench/results.json")
    args = parser.parse_args()
    servers: dict[str, list[dict[str, float]]] = {"aleph_tx": [], "hypercorn": []}
    clients: dict[str, list[dict[str, float]]] = {"aleph_tx": [], "niquests": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        procs = {name: start_server(name, workdir) for name in servers}
        try:
            for _ in range(args.runs):
                for name, (proc, port) in procs.items():
                    c0 = cpu_seconds(proc.pid)
                    r = run_client("aleph_tx", port, args.seconds, "conc")
                    r["cpu_us"] = (cpu_seconds(proc.pid) - c0) / max(1.0, r["conc"] * args.seconds) * 1e6
                    # the faster client (qh3's Rust parts) for downloads: ours would be the limit
                    c0 = cpu_seconds(proc.pid)
                    r.update(run_client("niquests", port, args.seconds, "mbps"))
                    mb = max(1e-9, r["mbps"] * args.seconds)
                    r["cpu_ms_per_mb"] = (cpu_seconds(proc.pid) - c0) / mb * 1e3
                    servers[name].append(r)
                port = procs["aleph_tx"][1]
                for name in clients:
                    clients[name].append(run_client(name, port, args.seconds, "seq,mbps"))
        finally:
            for proc, _ in procs.values():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.2f}\n")
    print(
        "| server | req/s (16 in flight) | vs hypercorn | server CPU µs/req "
        "| 10 MiB MB/s | vs hypercorn | server CPU ms/MB |"
    )
    print("|---|---|---|---|---|---|---|")
    base = servers["hypercorn"]
    for name, runs in servers.items():
        print(
            f"| {name} | {med(runs, 'conc'):.0f} | {med(runs, 'conc') / med(base, 'conc'):.2f}x "
            f"| {med(runs, 'cpu_us'):.0f} | {med(runs, 'mbps'):.1f} | {med(runs, 'mbps') / med(base, 'mbps'):.2f}x "
            f"| {med(runs, 'cpu_ms_per_mb'):.1f} |"
        )
    print(
        "\n| client (against aleph_tx's server) | sequential req/s | vs niquests | 10 MiB MB/s | vs niquests |"
    )
    print("|---|---|---|---|---|")
    cbase = clients["niquests"]
    for name, runs in clients.items():
        print(
            f"| {name} | {med(runs, 'seq'):.0f} | {med(runs, 'seq') / med(cbase, 'seq'):.2f}x "
            f"| {med(runs, 'mbps'):.1f} | {med(runs, 'mbps') / med(cbase, 'mbps'):.2f}x |"
        )
    print("\nraw:", json.dumps({"servers": servers, "clients": clients}))
    if args.record:
        from _record import record

        command = "PYTHONPATH=. python bench/bench_h3.py " + " ".join(sys.argv[1:])
        record(
            "h3_server_rps",
            title="HTTP/3 server: hello world, 16 requests in flight (aleph_tx's client)",
            unit="req/s",
            baseline="hypercorn",
            values={name: round(med(runs, "conc")) for name, runs in servers.items()},
            command=command,
        )
        record(
            "h3_server_download",
            title="HTTP/3 server: 10 MiB downloads (niquests)",
            unit="MB/s",
            baseline="hypercorn",
            values={name: round(med(runs, "mbps"), 1) for name, runs in servers.items()},
            command=command,
        )
        record(
            "h3_client",
            title="HTTP/3 client: sequential GETs against aleph_tx's server",
            unit="req/s",
            baseline="niquests",
            values={name: round(med(runs, "seq")) for name, runs in clients.items()},
            command=command,
        )


if __name__ == "__main__":
    main()
