"""The socket-level slice of the fault matrix: a real ``twist aleph-http`` process, raw sockets.

The in-memory matrix (tests/test_faults_http.py, tests/test_faults_streams.py) covers
every entry point and stage; here the same faults go through the kernel: a client
that resets the connection (``SO_LINGER`` 0: an RST, as a crashed client) before
its head is complete, mid request body, while the handler waits, mid response body
(reading nothing). Then the server still answers, its ``/stats`` (tests/acceptance/
faults_app.py) shows no handler, producer or file descriptor left behind, and
SIGTERM with a connection in each stage ends the process within
``--shutdown-timeout`` plus a few seconds.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest
from _twist import Twist

SHUTDOWN_TIMEOUT = 2.0

#: How each fault's request starts: the bytes the client sends before it resets.
STAGES: dict[str, bytes] = {
    "before_head": b"GET / HTTP/1.1\r\nHost: x\r\nX-Part",
    "mid_request_body": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"u" * 50000,
    "handler_async": b"GET /slow?s=30 HTTP/1.1\r\nHost: x\r\n\r\n",
    "mid_response_body": b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.fixture(scope="module")
def app() -> Iterator[Twist]:
    t = Twist("--handler", "faults_app:handler", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT))
    yield t
    t.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing: fills up fast
    return sock


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER on, 0 s): the peer sees the connection reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def stats(port: int) -> dict[str, int]:
    out = get(port, "/stats")
    result: dict[str, int] = json.loads(out.split(b"\r\n\r\n", 1)[1])
    return result


def eventually(check: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("stage", list(STAGES))
def test_client_reset_leaves_nothing_behind(app: Twist, stage: str) -> None:
    before = stats(app.port)
    sock = connect(app.port)
    sock.sendall(STAGES[stage])
    time.sleep(0.3)  # the server reads it and reaches the stage (a response backs up)
    reset(sock)
    assert get(app.port, "/").endswith(b"hello!"), "the server stopped answering after a reset"
    eventually(
        lambda: (s := stats(app.port))["handlers"] == 1 and s["producers"] == 0,
        "the reset request's handler and producer to end",
    )
    eventually(lambda: stats(app.port)["fds"] <= before["fds"], "the reset connection's descriptor to close")


def test_sigterm_with_a_connection_in_every_stage_exits_in_time() -> None:
    t = Twist("--handler", "faults_app:handler", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT))
    socks = []
    try:
        for data in STAGES.values():
            sock = connect(t.port)
            sock.sendall(data)
            socks.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        t.stop_async()
        try:
            status = t.proc.wait(timeout=SHUTDOWN_TIMEOUT + 5)
        except Exception:
            raise AssertionError(f"twist still running {SHUTDOWN_TIMEOUT + 5:g} s after SIGTERM") from None
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT + 5
        assert status in (0, -signal.SIGTERM)
    finally:
        for sock in socks:
            sock.close()
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait(timeout=10)


def test_sigterm_with_a_thread_handler_running_exits_in_time() -> None:
    t = Twist(
        "--handler",
        "faults_app:blocking_handler",
        "--executor",
        "thread",
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT),
    )
    try:
        with socket.create_connection(("127.0.0.1", t.port), timeout=10) as sock:
            sock.sendall(b"GET /sleep?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)
            reset(sock)  # the client is gone; the thread sleeps on
        time.sleep(0.2)
        started = time.monotonic()
        t.stop_async()
        try:
            t.proc.wait(timeout=10)  # close() at once, then the reactor waits for the thread (3 s)
        except Exception:
            raise AssertionError("twist still running 10 s after SIGTERM (a thread handler hangs)") from None
        assert time.monotonic() - started < 10
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait(timeout=10)
