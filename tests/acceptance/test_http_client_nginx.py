"""The HTTP client against nginx: static files over HTTP/1.1 keep-alive, gzip, HEAD,
uploads, and HTTP/2 over TLS (ALPN)."""

from __future__ import annotations

import gzip
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_http_client_servers import itest, make_tls
from twisted.internet import defer

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import ClientResponseError
from aleph_tx.http import ConnectionPool

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx not installed (apt-get install nginx-light)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx:
    """nginx serving ``www/`` on a plain port and on a TLS port with HTTP/2."""

    def __init__(self, tmp: Path) -> None:
        www = tmp / "www"
        www.mkdir()
        (www / "empty").write_bytes(b"")
        (www / "64k.bin").write_bytes(bytes(range(256)) * 256)
        (www / "1m.bin").write_bytes(b"m" * 2**20)
        (www / "text.txt").write_text("compressible text\n" * 5000)
        material = make_tls()
        (tmp / "cert.pem").write_bytes(material["cert"])
        (tmp / "key.pem").write_bytes(material["key"])
        self.port, self.tls_port = _free_port(), _free_port()
        temps = ""
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / kind).mkdir()
            temps += f"    {kind}_temp_path {tmp / kind};\n"
        conf = tmp / "nginx.conf"
        conf.write_text(
            "daemon off;\nmaster_process off;\n"
            f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} info;\n"
            "events {}\n"
            "http {\n    access_log off;\n" + temps + "    gzip on;\n    gzip_types text/plain;\n"
            "    gzip_min_length 0;\n    keepalive_requests 1000;\n"
            "    default_type application/octet-stream;\n    types { text/plain txt; }\n"
            f"    server {{\n        listen 127.0.0.1:{self.port};\n        root {www};\n"
            '        location = /post { client_max_body_size 100m; return 200 "posted\\n"; }\n    }\n'
            f"    server {{\n        listen 127.0.0.1:{self.tls_port} ssl http2;\n        root {www};\n"
            f"        ssl_certificate {tmp / 'cert.pem'};\n        ssl_certificate_key {tmp / 'key.pem'};\n    }}\n"
            "}\n"
        )
        assert NGINX is not None
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(tmp), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        for port in (self.port, self.tls_port):
            while True:
                assert self.proc.poll() is None, self.proc.communicate()[0].decode(errors="replace")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "nginx is not listening"
                    time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls_url = f"https://127.0.0.1:{self.tls_port}"

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    n = Nginx(tmp_path_factory.mktemp("nginx"))
    yield n
    n.close()


@itest(timeout=30)
async def test_static_files_keep_alive_gzip_and_head(nginx: Nginx, pool: ConnectionPool) -> None:
    for name, size in (("empty", 0), ("64k.bin", 65536), ("1m.bin", 2**20)):
        r = await http.get(nginx.url + "/" + name, pool=pool)
        assert len(r["body"]) == size
    r = await http.get(nginx.url + "/text.txt", pool=pool, as_="text")
    assert r["headers"]["content-encoding"] == "gzip"
    assert r["body"] == "compressible text\n" * 5000
    r = await http.get(
        nginx.url + "/text.txt", pool=pool, decompress_body=False, headers={"accept-encoding": "gzip"}
    )
    assert gzip.decompress(r["body"]) == b"compressible text\n" * 5000
    r = await http.head(nginx.url + "/1m.bin", pool=pool)
    assert (r["body"], r["headers"].get("content-length")) == (b"", str(2**20)), r
    with pytest.raises(ClientResponseError) as info:
        await http.get(nginx.url + "/missing", pool=pool)
    assert info.value.response["status"] == 404
    r = await http.get(nginx.url + "/1m.bin", pool=pool, as_="stream")
    assert sum(map(len, await s.collect(r["body"]))) == 2**20
    assert pool.description()["connections_opened"] == 1  # every request on one connection


@itest(timeout=30)
async def test_uploads(nginx: Nginx, pool: ConnectionPool, tmp_path: Path) -> None:
    r = await http.post(nginx.url + "/post", body=b"x" * 100_000, pool=pool, as_="text")
    assert r["body"] == "posted\n"
    r = await http.post(nginx.url + "/post", body=iter([b"chunk"] * 1000), pool=pool, as_="text")
    assert r["body"] == "posted\n"
    path = tmp_path / "f"
    path.write_bytes(b"f" * 3_000_000)
    r = await http.post(
        nginx.url + "/post", multipart=[{"name": "f", "content": path}], pool=pool, as_="text"
    )
    assert r["body"] == "posted\n"


@itest(timeout=30)
async def test_http2(nginx: Nginx, pool: ConnectionPool) -> None:
    options: dict[str, Any] = {"pool": pool, "insecure": True, "http_versions": ("h2", "http/1.1")}
    rs = await defer.gatherResults([http.get(nginx.tls_url + "/64k.bin", **options) for _ in range(20)])
    assert {len(r["body"]) for r in rs} == {65536}
    r = await http.get(nginx.tls_url + "/1m.bin", **options)
    assert len(r["body"]) == 2**20
    r = await http.get(nginx.tls_url + "/text.txt", as_="text", **options)
    assert r["body"] == "compressible text\n" * 5000
    assert pool.description()["h2_connections"] == 1
    await pool.close()
