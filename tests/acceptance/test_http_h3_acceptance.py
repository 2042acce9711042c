"""``twist aleph-http --http-versions http/1.1,h2,h3`` on an ``ssl:`` listen
description, asked over HTTP/3 by aioquic's own client and over HTTPS by curl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from _twist import Twist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_http_h3_server import H3Client, in_thread


@pytest.fixture(scope="module")
def h3_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from aleph_tx.tls import self_signed_pem

    cert, key = self_signed_pem("localhost")
    folder = tmp_path_factory.mktemp("h3")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={folder / 'key.pem'}:certKey={folder / 'cert.pem'}"
    t = Twist("--http-versions", "http/1.1,h2,h3", listen=listen)
    yield t
    assert t.stop() in (0, -15)


@pytest_twisted.ensureDeferred
async def test_the_demo_over_http3(h3_app: Twist) -> None:
    async def get(c: H3Client) -> tuple[int, dict[bytes, bytes], bytes]:
        return await c.request("GET", "/")

    status, _headers, body = await in_thread(h3_app.port, get)
    assert status == 200 and body.startswith(b"hello")


def test_https_responses_advertise_http3(h3_app: Twist) -> None:
    out = subprocess.run(
        ["curl", "-sk", "-D", "-", "-o", "/dev/null", f"https://127.0.0.1:{h3_app.port}/"],
        capture_output=True,
        timeout=20,
        check=True,
    ).stdout.decode()
    assert f'alt-svc: h3=":{h3_app.port}"; ma=86400' in out.lower()
