"""``twist aleph-http`` in a subprocess, driven by curl, requests, httpx and raw sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from _twist import HERE, ROOT, Twist


@pytest.fixture(scope="module")
def demo() -> Iterator[Twist]:
    t = Twist()
    yield t
    t.stop()


@pytest.fixture(scope="module")
def app() -> Iterator[Twist]:
    t = Twist(
        "--handler",
        "http_app:handler",
        "--max-request-body-size",
        "2000000",
        "--max-header-size",
        "4096",
        "--max-initial-line-length",
        "1024",
        "--continue-handler",
        "http_app:refuse_continue",
        "--compression",
    )
    yield t
    t.stop()


@pytest.fixture(scope="module")
def tls_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twist]:
    from aleph_tx.tls import self_signed_pem

    cert, key = self_signed_pem("localhost")
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={folder / 'key.pem'}:certKey={folder / 'cert.pem'}"
    t = Twist("--handler", "http_app:handler", "--http-versions", "http/1.1,h2", listen=listen)
    yield t
    t.stop()


def raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, timeout=20)


# -- the demo -----------------------------------------------------------------------


def test_demo_hello_curl(demo: Twist) -> None:
    r = curl("-i", demo.url + "/")
    assert r.returncode == 0
    assert r.stdout.startswith(b"HTTP/1.1 200 OK")
    assert r.stdout.endswith(b"\r\n\r\nhello!")


def test_demo_stream_chunked(demo: Twist) -> None:
    r = curl("-i", demo.url + "/stream")
    assert b"transfer-encoding: chunked" in r.stdout.lower()
    assert r.stdout.split(b"\r\n\r\n", 1)[1] == b"".join(b"chunk %d\n" % i for i in range(10))


def test_demo_events_sse(demo: Twist) -> None:
    r = curl("-N", "--max-time", "2.5", demo.url + "/events")
    assert r.returncode == 28  # curl's timeout: the stream does not end
    assert b"event: tick\ndata: " in r.stdout


def test_demo_ws_without_upgrade_is_400(demo: Twist) -> None:
    r = curl("-i", demo.url + "/ws")
    assert r.stdout.startswith(b"HTTP/1.1 400 ")


def test_demo_health_requests(demo: Twist) -> None:
    import requests

    r = requests.get(demo.url + "/health", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert requests.get(demo.url + "/nope", timeout=5).status_code == 404


# -- a handler with limits ----------------------------------------------------------------


def test_requests_session_keep_alive_and_upload(app: Twist) -> None:
    import requests

    with requests.Session() as session:
        for _ in range(3):
            assert session.get(app.url + "/", timeout=5).text == "hello!"
        payload = os.urandom(1 << 20)
        r = session.post(app.url + "/echo", data=payload, timeout=10)
        assert r.status_code == 200 and r.content == payload
        r = session.post(app.url + "/echo", data=(b"part%d" % i for i in range(100)), timeout=10)
        assert r.content == b"".join(b"part%d" % i for i in range(100))
        r = session.head(app.url + "/", headers={"accept-encoding": "identity"}, timeout=5)
        assert r.headers["content-length"] == "6" and r.content == b""
        gzipped = session.get(app.url + "/", stream=True, timeout=5)
        r = session.head(app.url + "/", timeout=5)  # the length the (gzipped) GET body has
        assert r.headers["content-length"] == gzipped.headers["content-length"]
        gzipped.close()


def test_requests_gzip(app: Twist) -> None:
    import requests

    r = requests.get(app.url + "/big", timeout=10)
    assert r.headers["content-encoding"] == "gzip"
    assert r.content == b"0123456789abcdef" * 65536 * 4


def test_request_dict_over_the_wire(app: Twist) -> None:
    import requests

    r = requests.get(app.url + "/req?a=1&b=%20", headers={"X-Test": "yes"}, timeout=5)
    text = r.text
    assert "('query_string', 'a=1&b=%20')" in text
    assert "('request_method', 'get')" in text
    assert "('uri', '/req')" in text
    assert "'x-test': 'yes'" in text
    assert "('protocol', 'HTTP/1.1')" in text


def test_httpx(app: Twist) -> None:
    import httpx

    with httpx.Client(timeout=10) as client:
        assert client.get(app.url + "/").text == "hello!"
        with client.stream("GET", app.url + "/big", headers={"accept-encoding": "identity"}) as r:
            assert r.headers["transfer-encoding"] == "chunked"
            assert sum(len(c) for c in r.iter_bytes()) == 4 << 20
        r = client.post(app.url + "/echo", content=b"abc")
        assert r.content == b"abc" and r.headers["x-length"] == "3"


def test_curl_expect_continue(app: Twist) -> None:
    data = "x" * 5000
    r = curl("-i", "-H", "Expect: 100-continue", "--data-binary", data, app.url + "/echo")
    assert b"HTTP/1.1 100 Continue" in r.stdout
    assert r.stdout.endswith(data.encode())
    r = curl("-i", "-H", "Expect: 100-continue", "--data-binary", data, app.url + "/refuse")
    assert r.stdout.startswith(b"HTTP/1.1 417 ")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"POST /echo HTTP/1.1\r\nContent-Length: 2000001\r\n\r\n", 413),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"100000\r\n" + b"x" * 0x100000 + b"\r\n" + b"100000\r\n" + b"x" * 0x100000 + b"\r\n",
            413,
        ),
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
    ],
)
def test_raw_limits_and_malformed(app: Twist, data: bytes, status: int) -> None:
    out = raw(app.port, data)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert b"connection: close" in head
    assert b"traceback" not in out.lower()


def test_raw_pipelining_in_order(app: Twist) -> None:
    out = raw(
        app.port,
        b"GET /slow HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET /req HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    first = out.find(b"slow done")
    second = out.find(b"hello!")
    third = out.find(b"('uri', '/req')")
    assert 0 < first < second < third


def test_raw_http10(app: Twist) -> None:
    out = raw(app.port, b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"hello!")


# -- TLS and HTTP/2 ----------------------------------------------------------------------


def test_curl_http2_and_http11_over_tls(tls_app: Twist) -> None:
    url = f"https://127.0.0.1:{tls_app.port}/req"
    r = curl("-k", "--http2", "-i", url)
    assert r.stdout.startswith(b"HTTP/2 200"), r.stdout[:200]
    assert b"('protocol', 'HTTP/2')" in r.stdout and b"('scheme', 'https')" in r.stdout
    r = curl("-k", "--http1.1", "-i", url)
    assert r.stdout.startswith(b"HTTP/1.1 200") and b"('protocol', 'HTTP/1.1')" in r.stdout


def test_httpx_http2_upload(tls_app: Twist) -> None:
    import httpx

    payload = os.urandom(300_000)
    with httpx.Client(http2=True, verify=False, timeout=10) as client:
        r = client.post(f"https://127.0.0.1:{tls_app.port}/echo", content=payload)
        assert r.http_version == "HTTP/2" and r.content == payload
        streamed = [client.get(f"https://127.0.0.1:{tls_app.port}/big") for _ in range(2)]
        assert all(len(x.content) == 4 << 20 for x in streamed)


# -- process behaviour -----------------------------------------------------------------------


def test_sigterm_finishes_in_flight_request() -> None:
    t = Twist("--handler", "http_app:handler", "--shutdown-timeout", "5")
    sock = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    try:
        sock.sendall(b"GET /slow HTTP/1.1\r\n\r\n")
        time.sleep(0.3)
        t.stop_async()
        out = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        assert out.endswith(b"slow done") and b"connection: close" in out
    finally:
        sock.close()
    assert t.stop() in (0, -signal.SIGTERM)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--max-request-body-size", "lots"], "lots"),
        (["--idle-timeout", "-3"], "-3"),
        (["--handler", "no_such_module:fn"], "no_such_module"),
        (["--handler", "http_app:missing"], "missing"),
        (["--executor", "process"], "process"),
        (["--listen", "bogus:1"], "bogus"),
        (["--http-versions", "h3"], "h3"),
        (["--http-versions", "http/1.1,h2"], "h2"),
        (["--access-log", "/nonexistent/dir/x.log"], "x.log"),
        (["--workers", "zz"], "zz"),
    ],
)
def test_bad_options_exit_64(args: list[str], named: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    r = subprocess.run(
        [sys.executable, "-m", "twisted", "aleph-http", *args],
        capture_output=True,
        env=env,
        timeout=30,
        cwd=str(ROOT),
    )
    assert r.returncode == 64
    lines = r.stderr.decode().strip().splitlines()
    # one line naming the bad value: no traceback, no usage text
    assert len(lines) <= 2 and named in lines[0], lines
    assert "Traceback" not in r.stderr.decode() and "Usage:" not in r.stderr.decode()
    assert "Traceback" not in r.stderr.decode()


def test_json_log_default_names_address() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "twisted", "aleph-http", "--listen", "tcp:0:interface=127.0.0.1"],
        stdout=subprocess.PIPE,
        env=env,
        cwd=str(ROOT),
    )
    try:
        assert proc.stdout is not None
        for _ in range(20):
            line = proc.stdout.readline()
            if b"aleph-http listening" in line:
                event = json.loads(line.strip(b"\x1e \n"))
                assert event["address"].startswith("tcp:127.0.0.1:")
                break
        else:
            raise AssertionError("no listening event")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
