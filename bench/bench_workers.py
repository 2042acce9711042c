"""``twist aleph-http --workers 2`` against ``--workers 1`` on this machine, load generator included.

Both servers (the demo's ``/``: ``hello!``) run at once on two ports; ``wrk -t1
-c50`` alternates between them (1, 2, 1, 2, ...) so that any drift in the
machine's load hits both equally. Nothing is pinned: wrk competes with the
servers for the same cores, as a real deployment's other work would.

    PYTHONPATH=. python bench/bench_workers.py --duration 5 --runs 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(workers: int, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "twisted", "--log-format", "text", "aleph-http"]
    cmd += ["--workers", str(workers), "--listen", f"tcp:{port}:interface=127.0.0.1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_ready(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server on port {port} did not answer in {seconds:.0f} s")


def wrk(port: int, duration: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--record", action="store_true", help="store the result in bench/results.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    ports = {1: free_port(), 2: free_port()}
    procs = {n: start(n, port) for n, port in ports.items()}
    try:
        for port in ports.values():
            wait_ready(port)
        time.sleep(2)
        results: dict[int, list[tuple[float, str]]] = {1: [], 2: []}
        for run in range(args.runs):
            for n, port in ports.items():
                load = os.getloadavg()[0]
                rps, p99 = wrk(port, args.duration, args.connections)
                results[n].append((rps, p99))
                print(
                    f"run {run + 1}, {n} worker(s): {rps:,.0f} req/s, p99 {p99}, load {load:.2f}", flush=True
                )
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            proc.wait(30)
    medians = {n: statistics.median(r for r, _ in runs) for n, runs in results.items()}
    ratio = medians[2] / medians[1]
    print(f"\nmedian req/s: 1 worker {medians[1]:,.0f}, 2 workers {medians[2]:,.0f} -> {ratio:.2f}x")
    if args.record:
        from _record import record

        record(
            "workers",
            title="twist aleph-http: 2 workers vs 1 (2 cores, wrk on the same cores)",
            unit="req/s",
            baseline="1 worker",
            values={"1 worker": round(medians[1]), "2 workers": round(medians[2])},
            command="PYTHONPATH=. python bench/bench_workers.py " + " ".join(sys.argv[1:]),
        )


if __name__ == "__main__":
    main()
