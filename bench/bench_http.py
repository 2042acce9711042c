"""HTTP/1.1 hello-world benchmark: aleph_tx against its peers, same run.

usage: python bench/bench_http.py [--duration 10] [--runs 3] [--connections 50] [--only NAME ...] [--record]

Every server is started at once, each pinned to core 0 (``taskset -c 0``); the
rounds are interleaved (round 1 of every server, then round 2, ...), ``wrk`` on
core 1 (``wrk -t1 -cN -dDs --latency``), 127.0.0.1 only. Reported: the median req/s
of ``--runs`` rounds, its p99 latency, the server's CPU per request (its whole
process tree: granian runs its worker in a child), its RSS idle (after a warm-up)
and at the end of the load, and ratios to uvicorn, granian and raw twisted.web.
Peers missing from the environment (aiohttp, uvicorn, granian) are skipped. The
servers are embedded below so the benchmark runs from the project alone;
``aleph_tx_demo`` is ``twist aleph-http`` itself (the demo handler).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU: dict[str, float] = {}

SERVERS: dict[str, str] = {
    "aleph_tx": """
import sys
from twisted.internet import reactor
from aleph_tx import http
def hello(req):
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello!"}
http.start_server(hello, port=int(sys.argv[1]), host="127.0.0.1")
reactor.run()
""",
    "aleph_tx_no_eager": """
import sys
from twisted.internet import reactor, tcp
from aleph_tx import http
def hello(req):
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello!"}
server = http.start_server(hello, port=int(sys.argv[1]), host="127.0.0.1")
for p in server.ports:
    p.transport = tcp.Server
reactor.run()
""",
    "twisted_httptools": """
import sys, time
from email.utils import formatdate
import httptools
from twisted.internet import protocol, reactor
class P(protocol.Protocol):
    def connectionMade(self):
        self.parser = httptools.HttpRequestParser(self)
    def on_message_complete(self):
        keep = self.parser.should_keep_alive()
        self.transport.write(b"".join([b"HTTP/1.1 200 OK\\r\\nDate: ", formatdate(time.time(), usegmt=True).encode(),
            b"\\r\\nContent-Type: text/plain\\r\\nContent-Length: 6\\r\\n",
            b"" if keep else b"Connection: close\\r\\n", b"\\r\\nhello!"]))
        if not keep:
            self.transport.loseConnection()
    def dataReceived(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.loseConnection()
f = protocol.Factory(); f.protocol = P
reactor.listenTCP(int(sys.argv[1]), f, backlog=1024, interface="127.0.0.1")
reactor.run()
""",
    "twisted_web": """
import sys
from twisted.internet import reactor
from twisted.web import resource, server
class Hello(resource.Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"hello!"
reactor.listenTCP(int(sys.argv[1]), server.Site(Hello()), backlog=1024, interface="127.0.0.1")
reactor.run()
""",
    "aiohttp": """
import sys
from aiohttp import web
async def hello(request):
    return web.Response(text="hello!", content_type="text/plain")
app = web.Application(); app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), backlog=1024, print=None, access_log=None)
""",
    "uvicorn": """
import importlib.util, sys, uvicorn
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"6")]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"hello!"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", lifespan="off",
            access_log=False, log_level="warning", backlog=1024,
            loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
""",
    "granian": """
import os, sys
async def app(scope, proto):
    proto.response_str(200, [("content-type", "text/plain")], "hello!")
if __name__ == "__main__":  # granian's CLI imports this file as a module: exec it here
    folder, name = os.path.split(os.path.abspath(__file__))
    exe = os.path.join(os.path.dirname(sys.executable), "granian")
    os.chdir(folder)
    os.execv(exe, [exe, "--interface", "rsgi", "--host", "127.0.0.1", "--port", sys.argv[1],
                   "--workers", "1", "--runtime-threads", "1", "--no-ws", "--log-level", "warning",
                   name[:-3] + ":app"])
""",
    "aleph_tx_demo": """
import os, sys
os.execv(sys.executable, [sys.executable, "-m", "twisted", "--log-format", "text", "aleph-http",
                          "--listen", f"tcp:{sys.argv[1]}:interface=127.0.0.1"])
""",
}

NEEDS = {"aiohttp": "aiohttp", "uvicorn": "uvicorn", "aiohttp_stream": "aiohttp", "granian": "granian"}

# Throughput: GET /big streams 1 MiB in 16 chunks of 64 KiB (chunked); POST /upload
# reads the body as it arrives and answers its length.
STREAM_SERVERS: dict[str, str] = {
    "aleph_tx_stream": """
import sys
from twisted.internet import reactor
from aleph_tx import http
CHUNK = b"x" * 65536
async def handler(req):
    if req["uri"] == "/upload":
        n = 0
        async for chunk in req["body"]:
            n += len(chunk)
        return {"body": str(n)}
    return {"body": (CHUNK for _ in range(16))}
http.start_server(handler, port=int(sys.argv[1]), host="127.0.0.1")
reactor.run()
""",
    "aiohttp_stream": """
import sys
from aiohttp import web
CHUNK = b"x" * 65536
async def big(request):
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(16):
        await resp.write(CHUNK)
    await resp.write_eof()
    return resp
async def upload(request):
    n = 0
    async for chunk in request.content.iter_any():
        n += len(chunk)
    return web.Response(text=str(n))
app = web.Application(client_max_size=1 << 30)
app.router.add_get("/big", big); app.router.add_post("/upload", upload)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), backlog=1024, print=None, access_log=None)
""",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (Linux ``/proc``)."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def wrk(port: int, duration: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out)
    total = re.search(r"(\d+) requests in", out)
    wrk.last_requests = int(total.group(1)) if total else 0  # type: ignore[attr-defined]
    return rps, p99.group(1) if p99 else "?"


def upload_mbps(port: int, size: int = 10 << 20, count: int = 10) -> float:
    """POST ``count`` bodies of ``size`` bytes (one connection each); MB/s of body."""
    payload = b"u" * size
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size
    start = time.perf_counter()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head + payload)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            if not answer.endswith(str(size).encode()):
                raise RuntimeError(f"bad upload answer {answer[-100:]!r}")
    return size * count / (time.perf_counter() - start) / 1e6


def download_mbps(port: int, duration: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c10", f"-d{duration}s", f"http://127.0.0.1:{port}/big"],
        capture_output=True,
        text=True,
        timeout=duration + 30,
    ).stdout
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    if m is None:
        raise RuntimeError(out)
    scale = {"B": 1e-6, "KB": 1.024e-3, "MB": 1.048576, "GB": 1073.741824}[m.group(2)]
    return float(m.group(1)) * scale


def bench_stream(name: str, code: str, args: argparse.Namespace) -> tuple[float, float] | None:
    module = NEEDS.get(name)
    if module and importlib.util.find_spec(module) is None:
        print(f"{name}: skipped ({module} not installed)", flush=True)
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, f.name, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        down = statistics.median(download_mbps(port, args.duration) for _ in range(args.runs))
        up = statistics.median(upload_mbps(port) for _ in range(args.runs))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.unlink(f.name)
    print(f"{name}: 1 MiB streamed responses {down:.0f} MB/s, 10 MiB uploads {up:.0f} MB/s", flush=True)
    return down, up


class Running:
    """One server process for the whole run."""

    def __init__(self, name: str, code: str, connections: int) -> None:
        self.name = name
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, prefix="bench_http_") as f:
            f.write(code)
        self.file = f.name
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, self.file, str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        wrk(self.port, 1, connections)  # warm-up
        self.rss_idle = rss_mib(self.proc.pid)
        self.rss_load = 0.0
        self.runs: list[tuple[float, str]] = []
        self.cpu: list[float] = []

    def round(self, duration: int, connections: int) -> None:
        before = cpu_seconds(self.proc.pid)
        self.runs.append(wrk(self.port, duration, connections))
        spent = cpu_seconds(self.proc.pid) - before
        self.cpu.append(spent / max(1, wrk.last_requests) * 1e6)  # type: ignore[attr-defined]
        self.rss_load = max(self.rss_load, rss_mib(self.proc.pid))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.unlink(self.file)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument(
        "--throughput", action="store_true", help="also 1 MiB streamed responses and 10 MiB uploads"
    )
    parser.add_argument("--record", action="store_true", help="store the req/s in bench/results.json")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install wrk util-linux)")
    running: list[Running] = []
    try:
        for name, code in SERVERS.items():
            if args.only and name not in args.only:
                continue
            module = NEEDS.get(name)
            if module and importlib.util.find_spec(module) is None:
                print(f"{name}: skipped ({module} not installed)", flush=True)
                continue
            try:
                running.append(Running(name, code, args.connections))
            except RuntimeError as e:
                print(f"{name}: skipped ({e})", flush=True)
        for i in range(args.runs):  # interleaved: every server once per round
            for r in running:
                r.round(args.duration, args.connections)
            print(
                f"round {i + 1}: " + ", ".join(f"{r.name} {r.runs[-1][0]:.0f}" for r in running), flush=True
            )
    finally:
        for r in running:
            r.stop()
    results: dict[str, tuple[float, str]] = {}
    for r in running:
        median = sorted(r.runs)[len(r.runs) // 2]
        results[r.name] = median
        CPU[r.name] = statistics.median(r.cpu)
    load = os.getloadavg()
    print(f"\nload average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        "| server | req/s | p99 | vs uvicorn | vs granian | vs twisted.web | server CPU/request"
        " | RSS idle | RSS under load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rss = {r.name: (r.rss_idle, r.rss_load) for r in running}
    for name, (rps, p99) in results.items():
        ratios = []
        for peer in ("uvicorn", "granian", "twisted_web"):
            other = results.get(peer)
            ratios.append(f"{rps / other[0]:.2f}x" if other else "-")
        idle, loaded = rss[name]
        print(
            f"| {name} | {rps:.0f} | {p99} | {' | '.join(ratios)} | {CPU[name]:.1f} us"
            f" | {idle:.0f} MiB | {loaded:.0f} MiB |"
        )
    if args.throughput:
        print()
        print("| server | 1 MiB streamed responses (wrk -c10) | 10 MiB uploads (1 client) |")
        print("|---|---|---|")
        for name, code in STREAM_SERVERS.items():
            r2 = bench_stream(name, code, args)
            if r2 is not None:
                print(f"| {name} | {r2[0]:.0f} MB/s | {r2[1]:.0f} MB/s |")
    if args.record:
        if "uvicorn" not in results:
            print("not recorded: uvicorn (the baseline) was not measured")
            return
        from _record import record

        record(
            "http",
            title=f"HTTP/1.1 hello world, wrk -t1 -c{args.connections}",
            unit="req/s",
            baseline="uvicorn",
            values={name: round(rps) for name, (rps, _) in results.items()},
            command="PYTHONPATH=. python bench/bench_http.py " + " ".join(sys.argv[1:]),
        )


if __name__ == "__main__":
    main()
