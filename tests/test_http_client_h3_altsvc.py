"""What the pool remembers of ``alt-svc`` (pure: clock readings given), and the
``http_versions`` checks of the client with ``"h3"``."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from aleph_tx import http, tls
from aleph_tx.http._client.altsvc import (
    BROKEN_FOR,
    MAX_BROKEN_FOR,
    MAX_ENTRIES,
    AltService,
    AltSvcCache,
)

ORIGIN = ("https", "example.com", 443)


def test_learn_and_lookup_until_max_age() -> None:
    cache = AltSvcCache()
    assert cache.lookup(ORIGIN, 0.0) is None
    cache.learn(ORIGIN, 'h3=":8443"; ma=60, h3-29=":8443"', 100.0)
    assert cache.lookup(ORIGIN, 159.9) == AltService("", 8443, 60)
    assert cache.lookup(ORIGIN, 160.0) is None  # ma ran out: forgotten
    assert cache.lookup(ORIGIN, 100.0) is None
    cache.learn(ORIGIN, 'h3="alt.example.com:443"', 0.0)
    assert cache.lookup(ORIGIN, 86399.0) == AltService("alt.example.com", 443, 86400)  # default ma
    assert cache.lookup(("https", "other.com", 443), 1.0) is None  # per origin


@pytest.mark.parametrize("value", ["clear", 'h2=":443"', "garbage", 'h3=":0"'])
def test_a_new_field_without_h3_replaces_what_was_known(value: str) -> None:
    cache = AltSvcCache()
    cache.learn(ORIGIN, 'h3=":443"', 0.0)
    cache.learn(ORIGIN, value, 1.0)
    assert cache.lookup(ORIGIN, 2.0) is None


def test_ma_zero_is_never_used() -> None:
    cache = AltSvcCache()
    cache.learn(ORIGIN, 'h3=":443"; ma=0', 5.0)
    assert cache.lookup(ORIGIN, 5.0) is None


def test_broken_for_five_minutes_then_twice_as_long_each_time() -> None:
    cache = AltSvcCache()
    cache.learn(ORIGIN, 'h3=":443"; ma=1000000', 0.0)
    alt = AltService("", 443, 1000000)
    assert cache.failed(ORIGIN, alt, 10.0) == 10.0 + BROKEN_FOR
    assert cache.lookup(ORIGIN, 10.0 + BROKEN_FOR - 1) is None
    assert cache.lookup(ORIGIN, 10.0 + BROKEN_FOR) == alt
    assert cache.failed(ORIGIN, alt, 1000.0) == 1000.0 + 2 * BROKEN_FOR
    assert cache.failed(ORIGIN, alt, 5000.0) == 5000.0 + 4 * BROKEN_FOR
    for _ in range(40):
        until = cache.failed(ORIGIN, alt, 0.0)
    assert until == MAX_BROKEN_FOR
    cache.succeeded(ORIGIN, alt)
    assert cache.broken_until(ORIGIN, alt, 0.0) is None
    assert cache.failed(ORIGIN, alt, 0.0) == BROKEN_FOR  # counted afresh


def test_a_new_alternative_is_not_broken() -> None:
    cache = AltSvcCache()
    cache.learn(ORIGIN, 'h3=":443"', 0.0)
    cache.failed(ORIGIN, AltService("", 443), 0.0)
    cache.learn(ORIGIN, 'h3=":8443"', 1.0)
    assert cache.lookup(ORIGIN, 2.0) == AltService("", 8443)


def test_bounded() -> None:
    cache = AltSvcCache()
    for i in range(MAX_ENTRIES + 10):
        cache.learn(("https", f"h{i}", 443), 'h3=":443"', 0.0)
        cache.failed(("https", f"h{i}", 443), AltService("", 443), 0.0)
    assert cache.lookup(("https", "h0", 443), 1.0) is None  # the oldest went first
    assert cache.broken_until(("https", "h0", 443), AltService("", 443), 1.0) is None
    last = ("https", f"h{MAX_ENTRIES + 9}", 443)
    assert cache.broken_until(last, AltService("", 443), 1.0) is not None
    assert len(cache._alternatives) == len(cache._broken) == MAX_ENTRIES


# -- http_versions with "h3" -------------------------------------------------------------------

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")


@pytest.mark.parametrize("versions", [("h3",), ("h3", "http/1.1"), ("http/1.1", "h2", "h3")])
def test_h3_versions_accepted(versions: tuple[str, ...]) -> None:
    assert http.connection_pool(http_versions=versions).http_versions == versions


@pytest.mark.parametrize("versions", [("h2",), ("h3", "h2")])
def test_h2_without_http11_is_not_implemented(versions: tuple[str, ...]) -> None:
    with pytest.raises(NotImplementedError):
        http.connection_pool(http_versions=versions)


def test_h3_without_aioquic_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aleph_tx.http._quic.flow", None)
    with pytest.raises(ValueError, match=r"pip install 'aleph_tx\[http3\]'"):
        http.get("https://example.com/", http_versions=("h3",))
    with pytest.raises(ValueError, match=r"pip install 'aleph_tx\[http3\]'"):
        http.connection_pool(http_versions=("http/1.1", "h3"))


@pytest.mark.parametrize(
    ("url", "options", "error"),
    [
        ("http://example.com/", {}, ValueError),
        ("https://example.com/", {"proxy": {"host": "p", "port": 1}}, NotImplementedError),
        ("https://example.com/", {"ssl_context": tls.self_signed_context()}, TypeError),
    ],
)
def test_what_h3_only_cannot_do_raises_at_once(url: str, options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        http.get(url, http_versions=("h3",), **options)


def test_h3_beside_tcp_takes_http_urls_and_proxies() -> None:
    from aleph_tx.http._client.options import Options

    versions = {"http_versions": ("h3", "http/1.1")}
    assert Options("GET", "http://example.com/", versions).h3
    assert Options("GET", "https://example.com/", {**versions, "proxy": {"host": "p", "port": 1}}).tcp
