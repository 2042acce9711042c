"""Issue 13's process-level defects, against a real ``twist aleph-http`` process.

- 3: ``--wsgi``: a client that disconnects while the app runs in its thread must
  not keep the process from exiting on SIGTERM (``shutdown_timeout`` holds).
- 11: a bad ``--handler`` or option value exits 64 with at most two lines on
  stderr naming the bad value (no traceback, no usage text); an address already in
  use exits non-zero with one line on stderr naming it.
- 9 (its command-line side): ``--header-timeout`` closes a silent connection.

Every wait is bounded; a process still running at the end is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _twist import HERE, ROOT, Twist


def twist_once(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """``twist aleph-http ARGS`` that is expected to exit by itself."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    return subprocess.run(
        [sys.executable, "-m", "twisted", "aleph-http", *args],
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=str(ROOT),
    )


def kill(t: Twist) -> None:
    """End ``t`` now if it is still running (a failed test must not wait for it)."""
    if t.proc.poll() is None:
        t.proc.kill()
    t.proc.wait(timeout=10)


def wait_for(predicate: object, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- 3: WSGI, a client gone, SIGTERM ----------------------------------------------------------


def test_3_wsgi_client_gone_mid_app_then_sigterm_exits(tmp_path: Path) -> None:
    shutdown_timeout = 2.0
    t = Twist("--wsgi", "faults_app:slow_wsgi", "--shutdown-timeout", str(shutdown_timeout))
    try:
        mark = tmp_path / "started"
        sock = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        sock.sendall(b"GET /?s=3&mark=" + str(mark).encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(mark.exists, "the WSGI view to start")
        sock.close()  # the client goes away while the view sleeps in its thread
        time.sleep(0.3)  # let the server see the close
        started = time.monotonic()
        t.stop_async()
        # close() within shutdown_timeout, then the reactor waits for the view's
        # thread (3 s of sleep at most): the process must be gone well before 10 s
        try:
            t.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("twist is still running 10 s after SIGTERM (a WSGI thread hangs)") from None
        assert time.monotonic() - started < 10
    finally:
        kill(t)


# -- 11: command-line errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--handler", "nosuch:fn"], "nosuch"),
        (["--wsgi", "nosuch_wsgi:app"], "nosuch_wsgi"),
        (["--max-header-size", "abc"], "abc"),
        (["--shutdown-timeout", "-1"], "-1"),
        (["--header-timeout", "soon"], "soon"),
    ],
)
def test_11_bad_value_exits_64_with_two_lines_at_most(args: list[str], named: str) -> None:
    r = twist_once(*args)
    err = r.stderr.decode()
    lines = [line for line in err.splitlines() if line.strip()]
    assert r.returncode == 64, (r.returncode, err[-500:])
    assert "Traceback" not in err and "Traceback" not in r.stdout.decode(), err[-2000:]
    assert "Usage:" not in err and "--max-request-body-size" not in err, (
        f"the usage text was printed ({len(lines)} lines): {err[:300]}"
    )
    assert 1 <= len(lines) <= 2, f"{len(lines)} lines on stderr: {err[:500]}"
    assert named in err, f"{named!r} not named in {err!r}"


def test_11_address_in_use_exits_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = twist_once("--listen", f"tcp:{port}:interface=127.0.0.1")
    err = r.stderr.decode()
    out = r.stdout.decode()
    lines = [line for line in err.splitlines() if line.strip()]
    assert r.returncode != 0, "twist started on an address in use"
    assert "Traceback" not in err and "Traceback" not in out, err[-2000:] + out[-2000:]
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[:500]}"
    assert str(port) in lines[0], f"the port {port} is not named in {lines[0]!r}"


# -- 9: --header-timeout --------------------------------------------------------------------


def test_9_header_timeout_option_closes_a_silent_connection() -> None:
    t = Twist("--header-timeout", "0.5")
    try:
        with socket.create_connection(("127.0.0.1", t.port), timeout=10) as sock:
            started = time.monotonic()
            assert sock.recv(100) == b"", "a silent connection got an answer"
            assert time.monotonic() - started < 5, "a silent connection was held past --header-timeout"
        with socket.create_connection(("127.0.0.1", t.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHo")
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            assert out.startswith(b"HTTP/1.1 408 "), out[:100]
    finally:
        assert t.stop() in (0, -signal.SIGTERM)
