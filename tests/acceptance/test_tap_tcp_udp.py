"""Acceptance: `twist aleph-tcp` / `twist aleph-udp` as a new user runs them, driven by
nc, socat (apt packages netcat-openbsd, socat) and Python's socket module."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def twist(*args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "twisted", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_tcp(port: int, proc: subprocess.Popen[bytes], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"twist exited early: {proc.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen[bytes]) -> bool:
    """SIGTERM; ``True`` if twist shut down by itself (it re-raises the signal: -15)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20) in (0, -signal.SIGTERM)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (apt-get install socat netcat-openbsd)")
    return path


@pytest.fixture
def tcp_server() -> Iterator[int]:
    port = free_port()
    proc = twist("aleph-tcp", "--listen", f"tcp:{port}:interface=127.0.0.1", "--shutdown-timeout", "2")
    try:
        wait_tcp(port, proc)
        yield port
    finally:
        if proc.poll() is None:
            assert stop(proc)


def test_tcp_echo_with_nc(tcp_server: int) -> None:
    nc = need("nc")
    out = subprocess.run(
        [nc, "-q", "1", "127.0.0.1", str(tcp_server)], input=b"hello nc\n", capture_output=True, timeout=15
    )
    assert out.stdout == b"hello nc\n"


def test_tcp_echo_with_socat(tcp_server: int) -> None:
    socat = need("socat")
    data = os.urandom(1 << 20)
    out = subprocess.run(
        [socat, "-t", "5", "-", f"TCP:127.0.0.1:{tcp_server}"], input=data, capture_output=True, timeout=20
    )
    assert out.stdout == data


def test_tcp_echo_with_python_socket(tcp_server: int) -> None:
    with socket.create_connection(("127.0.0.1", tcp_server), timeout=10) as sock:
        sock.sendall(b"abc")
        sock.shutdown(socket.SHUT_WR)  # the echo closes after the half-close
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert got == b"abc"


def test_udp_echo_with_socat_and_socket() -> None:
    port = free_port(socket.SOCK_DGRAM)
    proc = twist("aleph-udp", "--port", str(port), "--host", "127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            deadline = time.monotonic() + 15
            while True:  # the socket is up once a datagram comes back
                assert proc.poll() is None, proc.communicate()
                sock.sendto(b"ping", ("127.0.0.1", port))
                try:
                    data, addr = sock.recvfrom(65536)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "no UDP echo"
            assert (data, addr) == (b"ping", ("127.0.0.1", port))
        socat = need("socat")
        out = subprocess.run(
            [socat, "-t", "1", "-", f"UDP:127.0.0.1:{port}"],
            input=b"via socat",
            capture_output=True,
            timeout=15,
        )
        assert out.stdout == b"via socat"
    finally:
        if proc.poll() is None:
            assert stop(proc)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["aleph-tcp", "--handler", "no_such_module:fn"], "no_such_module"),
        (["aleph-tcp", "--handler", "nocolon"], "nocolon"),
        (["aleph-tcp", "--listen", "bogus:1"], "bogus"),
        (["aleph-tcp", "--shutdown-timeout", "-3"], "-3"),
        (["aleph-udp", "--port", "seventy"], "seventy"),
        (["aleph-udp", "--handler", "os:no_such_fn"], "no_such_fn"),
    ],
)
def test_bad_options_exit_64_without_traceback(args: list[str], named: str) -> None:
    proc = twist(*args)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 64
    text = err.decode()
    lines = text.strip().splitlines()
    # one line naming the bad value: no traceback, no usage text
    assert len(lines) <= 2 and named in lines[0], lines
    assert "Traceback" not in text and "Usage:" not in text


def test_sigterm_closes_open_connections_gracefully() -> None:
    port = free_port()
    proc = twist("aleph-tcp", "--listen", f"tcp:{port}:interface=127.0.0.1", "--shutdown-timeout", "5")
    try:
        wait_tcp(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"in flight")
            assert sock.recv(100) == b"in flight"
            started = time.monotonic()
            assert stop(proc)
            assert sock.recv(100) == b""  # closed by Server.close(), not reset
            assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
