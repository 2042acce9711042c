"""Acceptance for docs/deploying.rst: systemd socket activation through the ``systemd:`` endpoint.

systemd is simulated as it behaves: the listening socket is opened by the parent
and inherited as descriptor 3, with ``LISTEN_PID`` (the server's own pid, set by a
trampoline that then execs it), ``LISTEN_FDS=1`` and ``LISTEN_FDNAMES``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux")


def activated(listener: socket.socket, *args: str) -> subprocess.Popen[bytes]:
    """``twist ARGS`` started the way systemd starts a socket-activated service."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        LISTEN_FDS="1",
        LISTEN_FDNAMES="http",
    )
    fd = listener.fileno()
    argv = [sys.executable, "-m", "twisted", "--log-format", "text", *args]
    # A trampoline moves the socket to descriptor 3, sets LISTEN_PID to its own pid
    # and execs twist (same pid), as systemd does.
    trampoline = (
        "import os, sys\n"
        f"os.dup2({fd}, 3)\n"  # inheritable, as systemd passes it
        f"os.close({fd})\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        f"os.execv(sys.executable, {argv!r})\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", trampoline],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=(fd,),
    )


def echo_once(port: int, proc: subprocess.Popen[bytes]) -> bytes:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            # The kernel accepts into the inherited socket's backlog before twist runs:
            # an answer proves twist adopted it.
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)
            try:
                data = sock.recv(100)
            except TimeoutError:
                data = b""
        if data:
            return data
        assert time.monotonic() < deadline, "no answer on the inherited socket"


@pytest.mark.parametrize("endpoint", ["systemd:domain=INET:index=0", "systemd:domain=INET:name=http"])
def test_aleph_tcp_serves_on_a_socket_from_systemd(endpoint: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    proc = activated(listener, "aleph-tcp", "--listen", endpoint, "--shutdown-timeout", "2")
    listener.close()  # only the server holds it now, as under systemd
    try:
        assert echo_once(port, proc) == b"ping"
        assert f"aleph-tcp listening on tcp:127.0.0.1:{port}".encode() in _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), out
    return out


def test_aleph_http_serves_on_a_socket_from_systemd() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    proc = activated(
        listener, "aleph-http", "--listen", "systemd:domain=INET:name=http", "--shutdown-timeout", "2"
    )
    listener.close()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert answer.endswith(b"hello!"), answer
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- behind nginx: the configuration of docs/deploying.rst, as written ---------------------

NGINX_BLOCK = re.compile(r"^\.\. code-block:: nginx\n\n((?:(?:    .*)?\n)+)", re.MULTILINE)


def nginx_config(tmp_path: Path, listen_port: int, upstream_port: int) -> str:
    """The docs' nginx block, on 127.0.0.1 without TLS, inside a minimal nginx.conf."""
    page = (ROOT / "docs" / "deploying.rst").read_text(encoding="utf-8")
    (block,) = NGINX_BLOCK.findall(page)
    snippet = "\n".join(line[4:] for line in block.splitlines())
    assert "server 127.0.0.1:8080;" in snippet and "listen 443 ssl http2;" in snippet
    snippet = snippet.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")
    snippet = snippet.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{listen_port};")
    temp = {kind: tmp_path / kind for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    temps = "\n".join(f"    {kind}_temp_path {path};" for kind, path in temp.items())
    return (
        "daemon off;\nmaster_process off;\n"  # one process, in the foreground, as this user
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'} info;\n"
        "events {}\n"
        f"http {{\n    access_log {tmp_path / 'access.log'};\n{temps}\n{snippet}\n}}\n"
    )


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, f"{what} exited: {proc.communicate()[0].decode(errors='replace')}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} is not listening"
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_behind_nginx_with_the_documented_configuration(tmp_path: Path) -> None:
    """The demo through nginx: plain GET, server-sent events unbuffered, a WebSocket echo."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    requests = pytest.importorskip("requests")
    ws_client = pytest.importorskip("websockets.sync.client")
    app_port, proxy_port = free_port(), free_port()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    app = subprocess.Popen(
        [sys.executable, "-m", "twisted", "--log-format", "text", "aleph-http", "--listen",
         f"tcp:{app_port}:interface=127.0.0.1", "--shutdown-timeout", "1"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, proxy_port, app_port))
    proxy = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(app_port, app, "twist")
        wait_port(proxy_port, proxy, "nginx")
        base = f"http://127.0.0.1:{proxy_port}"
        resp = requests.get(base + "/", timeout=10)
        assert (resp.status_code, resp.text) == (200, "hello!")

        # The demo's clock ticks once a second; buffered by nginx, the first event
        # would wait for a full buffer (minutes). Unbuffered, it comes at once.
        started = time.monotonic()
        with requests.get(base + "/events", stream=True, timeout=10) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            first = next(line for line in events.iter_lines() if line.startswith(b"data:"))
        assert first.startswith(b"data: ")
        assert time.monotonic() - started < 5

        with ws_client.connect(f"ws://127.0.0.1:{proxy_port}/ws", open_timeout=10) as ws:
            ws.send("through nginx")
            assert ws.recv(timeout=10) == "through nginx"
    finally:
        for proc in (proxy, app):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
