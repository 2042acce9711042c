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
import statistics
import subprocess
import sys
from pathlib import Path

from bench_http import SERVERS, cpu_seconds, free_port, wait_port, wrk

APP = SERVERS["aleph_tx"]  # the hello server of bench_http.py


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
            wait_port(port)
        for r in range(args.rounds):
            for name, (proc, port) in servers.items():
                before = cpu_seconds(proc.pid)
                rate, _ = wrk(port, args.duration, 50)
                rates[name].append(rate)
                n = wrk.last_requests  # type: ignore[attr-defined]
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
