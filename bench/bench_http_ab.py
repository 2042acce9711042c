"""The same HTTP/1.1 hello server from two checkouts of aleph_tx, side by side.

    git worktree add /tmp/base <commit>
    PYTHONPATH=. python bench/bench_http_ab.py /tmp/base --rounds 5

Each tree's server is pinned to core 0 (``taskset``), ``wrk -t1 -c50`` to core 1;
the trees alternate within each round, so drift in the machine's speed hits both.
Prints req/s and the server's CPU per request (``/proc/<pid>/stat``) for each, and
the ratio of this checkout to the other. Used to check that a refactor kept the
per-request cost (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench_http import free_port

APP = """
import sys
from twisted.internet import reactor
from aleph_tx import http
def hello(req):
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello!"}
http.start_server(hello, port=int(sys.argv[1]), host="127.0.0.1")
reactor.run()
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("other", help="the other checkout's root (holding aleph_tx/)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    trees = {"other": os.path.abspath(args.other), "this": str(Path(__file__).resolve().parent.parent)}
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    for name, tree in trees.items():
        port = free_port()
        env = dict(os.environ, PYTHONPATH=tree)
        cmd = ["taskset", "-c", "0", sys.executable, "-c", APP, str(port)]
        servers[name] = (subprocess.Popen(cmd, env=env, cwd="/"), port)
    rates: dict[str, list[float]] = {name: [] for name in servers}
    costs: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _, port in servers.values():
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
        for r in range(args.rounds):
            for name, (proc, port) in servers.items():
                before = cpu_seconds(proc.pid)
                out = subprocess.run(
                    [
                        "taskset",
                        "-c",
                        "1",
                        "wrk",
                        "-t1",
                        "-c50",
                        f"-d{args.duration}s",
                        f"http://127.0.0.1:{port}/",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=args.duration + 30,
                ).stdout
                rates[name].append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
                n = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
                costs[name].append((cpu_seconds(proc.pid) - before) / n * 1e6)
            print(
                f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f} req/s" for n, v in rates.items()),
                flush=True,
            )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
    for name, tree in trees.items():
        print(
            f"{name} ({tree}): {statistics.median(rates[name]):,.0f} req/s, "
            f"{statistics.median(costs[name]):.1f} µs server CPU per request"
        )
    ratio = statistics.median(rates["this"]) / statistics.median(rates["other"])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"this / other = {ratio:.3f}; load average {load}")


if __name__ == "__main__":
    main()
