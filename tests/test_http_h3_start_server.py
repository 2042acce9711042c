"""``start_server(..., http_versions=(..., "h3"))``: HTTP/3 beside the TLS port, the
same handler, advertised by ``alt-svc``; refused without TLS."""

from __future__ import annotations

from typing import Any

import pytest
from test_http_client_servers import itest
from test_http_h3_server import H3Client, in_thread

from aleph_tx import http, tls


def handler(req: dict[str, Any]) -> dict[str, Any]:
    return {"headers": {"content-type": "text/plain"}, "body": f"{req['protocol']} {req['uri']}"}


@itest()
async def test_one_handler_on_http11_h2_and_h3() -> None:
    server = http.start_server(
        handler,
        port=0,
        host="127.0.0.1",
        ssl_context=tls.self_signed_context(),
        http_versions=("http/1.1", "h2", "h3"),
    )
    try:
        port = server.port
        assert len(server.ports) == 2  # TCP (TLS) and UDP (QUIC) on the same number
        assert server.ports[1].getHost().port == port

        async def over_h3(c: H3Client) -> tuple[int, dict[bytes, bytes], bytes]:
            return await c.request("GET", "/x")

        status, headers, body = await in_thread(port, over_h3)
        assert (status, body) == (200, b"HTTP/3 /x")
        resp = await http.get(f"https://127.0.0.1:{port}/y", insecure=True, as_="text")
        assert resp["body"] == "HTTP/1.1 /y"
        assert resp["headers"]["alt-svc"] == f'h3=":{port}"; ma=86400'
        assert headers[b"alt-svc"] == f'h3=":{port}"; ma=86400'.encode()
    finally:
        await server.close()
    assert server.closed


def test_h3_needs_tls() -> None:
    with pytest.raises(ValueError, match="h3"):
        http.start_server(handler, port=0, host="127.0.0.1", http_versions=("http/1.1", "h3"))


def test_alt_svc_absent_without_h3() -> None:
    from aleph_tx.testing import request

    got: list[Any] = []
    request(handler, "GET", "/").addCallback(got.append)
    assert got and "alt-svc" not in got[0]["headers"]
