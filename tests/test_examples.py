"""Every example in ``examples/`` runs: its self-test, its server mode, and the Flask app under ``twist``.

Each ``examples/NAME.py`` is one command: ``python examples/NAME.py`` serves until
Ctrl-C, ``python examples/NAME.py --selftest`` serves on a free port of 127.0.0.1,
checks itself with aleph_tx's clients, prints ``NAME: ok`` and exits 0. They run
in fresh interpreters with the repository root on ``PYTHONPATH``, as a reader
would run them after ``pip install -e .``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
READY = "(Ctrl-C to stop)"


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_there_are_the_aleph_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"http_hello", "sse", "tcp_echo", "tcp_line_protocol", "udp_metrics", "flask_app"} <= names
    assert {"websocket_echo", "websocket_chat"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_selftest(example: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(example), "--selftest"],
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{example.name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert f"{example.stem}: ok" in proc.stdout.splitlines(), proc.stdout


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_says_how_to_run_it(example: Path) -> None:
    """The docstring gives the one command (and the self-test's)."""
    text = example.read_text(encoding="utf-8")
    assert text.startswith('"""')
    assert f"python examples/{example.name}" in text
    assert f"python examples/{example.name} --selftest" in text


def _serve(example: Path, port: int, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{example.stem}.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(example), "--port", str(port)],
            cwd=ROOT,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{example.name} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc, log


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_serves_until_ctrl_c(example: Path, tmp_path: Path) -> None:
    """``python examples/NAME.py --port P`` binds P, answers, and Ctrl-C ends it cleanly."""
    udp = "udp" in example.stem
    port = free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    proc, log = _serve(example, port, tmp_path)
    try:
        if udp:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"probe:1", ("127.0.0.1", port))
        else:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert str(port) in log.read_text(errors="replace")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, log.read_text(errors="replace")
    assert "Traceback" not in log.read_text(errors="replace")


def test_flask_app_under_twist_aleph_http(tmp_path: Path) -> None:
    """The command in flask_app.py's docstring: ``twist aleph-http --wsgi examples.flask_app:app``."""
    requests = pytest.importorskip("requests")
    port = free_port()
    log = tmp_path / "twist.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "--log-format",
                "text",
                "aleph-http",
                "--wsgi",
                "examples.flask_app:app",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=ROOT,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
        assert resp.status_code == 200
        assert resp.text == "hello from Flask on aleph_tx!"
        resp = requests.post(f"http://127.0.0.1:{port}/echo", json={"x": 1}, timeout=5)
        assert resp.json()["received"] == {"x": 1}
        resp = requests.get(f"http://127.0.0.1:{port}/count/3", timeout=5)
        assert resp.text == "1\n2\n3\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


def test_every_example_is_listed_in_the_docs() -> None:
    page = (ROOT / "docs" / "examples.rst").read_text(encoding="utf-8")
    included = set(re.findall(r"literalinclude::\s*\.\./examples/(\S+)", page))
    assert {p.name for p in EXAMPLES} <= included, sorted({p.name for p in EXAMPLES} - included)
