"""The client over TLS (system trust, custom roots, insecure) and through proxies."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from OpenSSL import SSL
from test_http_client_servers import (
    ThreadProxy,
    WebServer,
    itest,
    make_tls,
    server_tls_options,
)
from twisted.internet import ssl

from aleph_tx import http
from aleph_tx.errors import ProtocolError
from aleph_tx.http import ConnectionPool

_MATERIAL: dict[str, bytes] = {}


def material() -> dict[str, bytes]:
    if not _MATERIAL:
        _MATERIAL.update(make_tls())
    return _MATERIAL


@pytest.fixture
def tls_web() -> Iterator[WebServer]:
    w = WebServer(ssl_options=server_tls_options(material()))
    yield w
    pytest_twisted.blockon(w.close())


@pytest.fixture
def web() -> Iterator[WebServer]:
    w = WebServer()
    yield w
    pytest_twisted.blockon(w.close())


def _localhost(w: WebServer) -> str:
    return w.url.replace("127.0.0.1", "localhost")


def _ca() -> ssl.Certificate:
    return ssl.Certificate.loadPEM(material()["ca"])


@itest()
async def test_system_trust_rejects_unknown_ca(tls_web: WebServer, pool: ConnectionPool) -> None:
    with pytest.raises(SSL.Error):
        await http.get(_localhost(tls_web) + "/echo", pool=pool)


@itest()
async def test_insecure(tls_web: WebServer, pool: ConnectionPool) -> None:
    r = await http.get(tls_web.url + "/echo", pool=pool, insecure=True, as_="json")
    assert r["body"]["path"] == "/echo"
    r = await http.get(tls_web.url + "/echo", pool=pool, insecure=True)
    assert pool.description()["connections_opened"] == 1  # reused over TLS


@pytest.mark.parametrize("kind", ["policy", "creator", "context_factory", "ssl_context"])
@itest()
async def test_custom_trust_roots(kind: str, tls_web: WebServer, pool: ConnectionPool) -> None:
    from twisted.web.client import BrowserLikePolicyForHTTPS

    ctx: Any
    if kind == "policy":
        ctx = BrowserLikePolicyForHTTPS(trustRoot=_ca())
    elif kind == "creator":
        ctx = ssl.optionsForClientTLS("localhost", trustRoot=_ca())
    elif kind == "context_factory":
        ctx = ssl.CertificateOptions(trustRoot=_ca())
    else:
        ctx = ssl.CertificateOptions(trustRoot=_ca()).getContext()
    r = await http.get(_localhost(tls_web) + "/echo", pool=pool, ssl_context=ctx, as_="json")
    assert r["status"] == 200


@itest()
async def test_context_checks_the_host_name(tls_web: WebServer, pool: ConnectionPool) -> None:
    from service_identity import VerificationError

    # the certificate names localhost and 127.0.0.1, not 127.0.0.2
    ctx = ssl.CertificateOptions(trustRoot=_ca())
    r = await http.get(tls_web.url + "/echo", pool=pool, ssl_context=ctx)
    assert r["status"] == 200
    with pytest.raises((VerificationError, SSL.Error)):
        await http.get(
            tls_web.url.replace("127.0.0.1", "localhost"),
            pool=pool,
            ssl_context=ssl.optionsForClientTLS("example.com", trustRoot=_ca()),
        )


def test_bad_ssl_context_raises_at_once() -> None:
    with pytest.raises(TypeError):
        http.get("https://localhost:1/", ssl_context=object())
    with pytest.raises(ValueError):
        http.get("https://localhost:1/", ssl_context=ssl.CertificateOptions(), insecure=True)


# -- proxies ----------------------------------------------------------------------------------


@itest()
async def test_http_proxy_absolute_uri(web: WebServer, pool: ConnectionPool) -> None:
    proxy = ThreadProxy()
    try:
        r = await http.get(
            web.url + "/echo?x=1",
            proxy={"host": "127.0.0.1", "port": proxy.port},
            pool=pool,
            as_="json",
        )
        assert r["body"]["uri"] == "/echo?x=1"
        assert proxy.seen[0]["method"] == "GET"
        assert proxy.seen[0]["target"] == web.url + "/echo?x=1"
    finally:
        proxy.close()


@itest()
async def test_http_proxy_auth(web: WebServer, pool: ConnectionPool) -> None:
    token = "Basic " + base64.b64encode(b"me:secret").decode()
    proxy = ThreadProxy(require_auth=token)
    try:
        r = await http.get(
            web.url + "/echo",
            proxy={"host": "127.0.0.1", "port": proxy.port, "user": "me", "password": "secret"},
            pool=pool,
            as_="json",
        )
        assert r["status"] == 200
        assert "proxy-authorization" not in r["body"]["headers"]  # the proxy ate it
        r = await http.get(
            web.url + "/echo",
            proxy={"host": "127.0.0.1", "port": proxy.port},
            pool=pool,
            throw_exceptions=False,
        )
        assert r["status"] == 407
    finally:
        proxy.close()


@itest()
async def test_https_through_connect_tunnel(tls_web: WebServer, pool: ConnectionPool) -> None:
    token = "Basic " + base64.b64encode(b"me:pw").decode()
    proxy = ThreadProxy(require_auth=token)
    try:
        opts = {"host": "127.0.0.1", "port": proxy.port, "user": "me", "password": "pw"}
        ctx = ssl.optionsForClientTLS("localhost", trustRoot=_ca())
        r = await http.get(_localhost(tls_web) + "/echo", proxy=opts, pool=pool, ssl_context=ctx, as_="json")
        assert r["body"]["path"] == "/echo"
        assert proxy.seen[0]["method"] == "CONNECT"
        assert proxy.seen[0]["target"] == "localhost:" + str(tls_web.number)
        # the tunnel is kept alive and reused
        await http.get(_localhost(tls_web) + "/echo", proxy=opts, pool=pool, ssl_context=ctx)
        assert len(proxy.seen) == 1
        assert pool.description()["connections_opened"] == 1
        # a refused CONNECT
        with pytest.raises(ProtocolError, match="407"):
            await http.get(
                _localhost(tls_web) + "/echo",
                proxy={"host": "127.0.0.1", "port": proxy.port},
                pool=pool,
                insecure=True,
            )
    finally:
        proxy.close()


@itest()
async def test_aleph_tls_client_context(tls_web: WebServer, pool: ConnectionPool) -> None:
    from aleph_tx import tls

    ctx = tls.client_context(trust_roots=material()["ca"])
    r = await http.get(_localhost(tls_web) + "/echo", pool=pool, ssl_context=ctx)
    assert r["status"] == 200
    r = await http.get(tls_web.url + "/echo", pool=pool, ssl_context=tls.client_context(insecure=True))
    assert r["status"] == 200


@itest(30)
async def test_https_proxy_is_verified_with_the_system_trust(
    web: WebServer, tls_web: WebServer, pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """``proxy={"protocol": "https"}``: TLS to the proxy, checked against the system's
    trust roots (OpenSSL's SSL_CERT_FILE here), then plain HTTP or a CONNECT tunnel."""
    proxy = ThreadProxy(tls=material())
    opts = {"host": "127.0.0.1", "port": proxy.port, "protocol": "https"}
    try:
        # not trusted yet: the handshake with the proxy fails
        with pytest.raises(SSL.Error):
            await http.get(web.url + "/echo", proxy=opts, pool=pool)
        assert proxy.seen == []
        ca = tmp_path / "ca.pem"
        ca.write_bytes(material()["ca"])
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        r = await http.get(web.url + "/echo?via=tls-proxy", proxy=opts, pool=pool, as_="json")
        assert r["body"]["path"] == "/echo"
        assert proxy.seen[-1] == {
            "method": "GET",
            "target": web.url + "/echo?via=tls-proxy",
            "headers": proxy.seen[-1]["headers"],
        }
        # https through the https proxy: TLS inside the CONNECT tunnel inside TLS
        ctx = ssl.optionsForClientTLS("localhost", trustRoot=_ca())
        r = await http.get(_localhost(tls_web) + "/echo", proxy=opts, pool=pool, ssl_context=ctx, as_="json")
        assert r["body"]["path"] == "/echo"
        assert proxy.seen[-1]["method"] == "CONNECT"
    finally:
        proxy.close()


@itest(30)
async def test_https_proxy_with_insecure(tls_web: WebServer, pool: ConnectionPool) -> None:
    proxy = ThreadProxy(tls=material())
    try:
        opts = {"host": "127.0.0.1", "port": proxy.port, "protocol": "https"}
        r = await http.get(tls_web.url + "/echo", proxy=opts, pool=pool, insecure=True, as_="json")
        assert r["body"]["path"] == "/echo"
        assert proxy.seen[0]["method"] == "CONNECT"
    finally:
        proxy.close()
