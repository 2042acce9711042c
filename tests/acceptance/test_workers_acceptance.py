"""Acceptance: ``twist aleph-tcp --workers 2`` (and ``aleph-http``) as real processes.

Two worker processes answer on one port (each reports its pid, see workers_app.py);
a ``kill -9``'d worker is replaced; SIGTERM to ``twist`` stops them all; a
``kill -9``'d supervisor takes its workers with it. Linux only (SO_REUSEPORT).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from aleph_tx._reuseport import reuseport_supported

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "tests.acceptance.workers_app:tcp_pid"

pytestmark = pytest.mark.skipif(not reuseport_supported(), reason="--workers needs Linux (SO_REUSEPORT)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Twist:
    """A ``twist`` process whose log goes to a file (a pipe nobody reads could fill up)."""

    def __init__(self, log: Path, *args: str) -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        self.log = log
        self._out: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "twisted", "--log-format", "text", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
def twist(tmp_path: Path) -> Iterator[Callable[..., Twist]]:
    started: list[Twist] = []

    def start(*args: str) -> Twist:
        t = Twist(tmp_path / f"twist-{len(started)}.log", *args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()


def ask_pid(port: int) -> tuple[int, str] | None:
    """Connect once; the worker's ``(pid, ALEPH_TX_WORKER)``, or None if nobody answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            data = b""
            while chunk := sock.recv(100):
                data += chunk
    except OSError:
        return None
    if not data.endswith(b"\n"):
        return None
    pid, worker = data.decode().split()
    return int(pid), worker


def answering(port: int, t: Twist, want: Callable[[set[int]], bool], seconds: float = 30) -> set[int]:
    """Ask until the set of pids seen in the last 40 answers satisfies ``want``."""
    deadline = time.monotonic() + seconds
    recent: list[int] = []
    while time.monotonic() < deadline:
        assert t.proc.poll() is None, f"twist exited ({t.proc.returncode}):\n{t.output()}"
        answer = ask_pid(port)
        if answer is None:
            time.sleep(0.05)
            continue
        recent = [*recent[-39:], answer[0]]
        if want(set(recent)):
            return set(recent)
    raise AssertionError(f"pids seen {sorted(set(recent))}; log:\n{t.output()}")


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def gone(pid: int, seconds: float = 15) -> bool:
    """Whether ``pid`` has exited (or is a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_two_workers_answer_a_killed_one_is_replaced_and_sigterm_stops_all(
    twist: Callable[..., Twist],
) -> None:
    port = free_port()
    t = twist(
        "aleph-tcp",
        "--workers",
        "2",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--handler",
        HANDLER,
        "--shutdown-timeout",
        "2",
    )
    pids = answering(port, t, lambda seen: len(seen) == 2)
    assert all(parent_of(pid) == t.proc.pid for pid in pids)  # the supervisor's children
    assert f"aleph-tcp listening on tcp:127.0.0.1:{port} with 2 workers" in t.output()

    victim, survivor = sorted(pids)
    os.kill(victim, signal.SIGKILL)
    assert gone(victim)
    # The supervisor starts a new worker: two live pids answer again, the victim never.
    after = answering(port, t, lambda seen: len(seen) == 2 and victim not in seen)
    (replacement,) = after - {survivor}
    assert replacement != victim
    assert parent_of(replacement) == t.proc.pid

    t.proc.send_signal(signal.SIGTERM)
    assert t.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert gone(survivor, 5)
    assert gone(replacement, 5)
    assert "all workers stopped" in t.output()
    assert ask_pid(port) is None  # nothing listens any more


def test_killing_the_supervisor_stops_its_workers(twist: Callable[..., Twist]) -> None:
    port = free_port()
    t = twist("aleph-tcp", "--workers=2", f"--listen=tcp:{port}:interface=127.0.0.1", "--handler", HANDLER)
    pids = answering(port, t, lambda seen: len(seen) == 2)
    t.proc.kill()
    t.proc.wait()
    for pid in pids:  # PR_SET_PDEATHSIG: each worker got SIGTERM and closed its servers
        assert gone(pid), f"worker {pid} outlived its supervisor"
    deadline = time.monotonic() + 10
    while ask_pid(port) is not None:
        assert time.monotonic() < deadline, "the port still answers"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--workers", "0"], "'0'"),
        (["--workers", "2", "--listen", "ssl:8443:privateKey=k.pem"], "ssl:8443"),
    ],
)
def test_bad_workers_exit_64_without_traceback(
    twist: Callable[..., Twist], args: list[str], named: str
) -> None:
    t = twist("aleph-tcp", *args)
    assert t.proc.wait(timeout=30) == 64
    out = t.output()
    assert named in out
    assert "Traceback" not in out


def test_aleph_http_workers_share_the_port_and_one_access_log(
    twist: Callable[..., Twist], tmp_path: Path
) -> None:
    """``twist aleph-http --workers 2 --access-log FILE``: two pids answer; both append to FILE."""
    requests = pytest.importorskip("requests")
    port = free_port()
    access = tmp_path / "access.log"
    t = twist(
        "aleph-http",
        "--workers",
        "2",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--handler",
        "tests.acceptance.workers_app:http_pid",
        "--access-log",
        str(access),
        "--shutdown-timeout",
        "2",
    )
    seen: set[str] = set()
    asked = 0
    deadline = time.monotonic() + 30
    while len(seen) < 2:
        assert time.monotonic() < deadline, f"pids seen {seen}; log:\n{t.output()}"
        assert t.proc.poll() is None, t.output()
        try:
            # A new connection each time: the kernel picks a worker per connection.
            resp = requests.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}, timeout=5)
        except requests.ConnectionError:
            time.sleep(0.05)
            continue
        assert resp.status_code == 200
        seen.add(resp.text.split()[0])
        asked += 1
    t.proc.send_signal(signal.SIGTERM)
    assert t.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    lines = access.read_text().splitlines()
    assert len(lines) == asked
    assert all('"GET / HTTP/1.1" 200 ' in line and line.startswith("127.0.0.1 - - [") for line in lines)
