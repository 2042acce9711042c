"""Unit tests of the plugin option helpers and of the aleph-tcp / aleph-udp services."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.python.usage import UsageError

from aleph_tx import tcp
from aleph_tx._tap import _common
from aleph_tx._tap import tcp as tap_tcp
from aleph_tx._tap import udp as tap_udp


def test_load_callable() -> None:
    assert _common.load_callable("os.path:join") is __import__("os").path.join
    assert _common.load_callable("aleph_tx.tcp:start_server") is tcp.start_server


@pytest.mark.parametrize(
    ("ref", "named"),
    [
        ("nocolon", "nocolon"),
        ("a:b:c", "a:b:c"),
        (":fn", ":fn"),
        ("os:", "os:"),
        ("no_such_mod_xyz:fn", "no_such_mod_xyz"),
        ("os:no_such_attr", "no_such_attr"),
        ("os:sep", "not callable"),
    ],
)
def test_load_callable_errors_name_the_value(ref: str, named: str) -> None:
    with pytest.raises(UsageError, match=named) as err:
        _common.load_callable(ref)
    assert "\n" not in str(err.value)


def test_numbers() -> None:
    assert _common.non_negative_float("1.5", "--x") == 1.5
    assert _common.port_number("0") == 0
    assert _common.positive_int("3", "--w") == 3
    for fn, bad in (
        (_common.non_negative_float, "-1"),
        (_common.non_negative_float, "nan"),
        (_common.non_negative_float, "x"),
        (_common.non_negative_int, "-2"),
        (_common.positive_int, "0"),
    ):
        with pytest.raises(UsageError, match=bad):
            fn(bad, "--opt")
    with pytest.raises(UsageError, match="70000"):
        _common.port_number("70000")


def test_tcp_options_defaults_and_repeats() -> None:
    opts = tap_tcp.Options()
    opts.parseOptions([])
    assert opts["listen"] == ["tcp:10001"]
    assert opts["handler"] is tap_tcp.echo
    assert opts["shutdown-timeout"] == 15.0
    opts = tap_tcp.Options()
    opts.parseOptions(["--listen", "tcp:1", "--listen", "tcp6:2", "--handler", "aleph_tx._tap.tcp:echo"])
    assert opts["listen"] == ["tcp:1", "tcp6:2"]


def test_udp_options() -> None:
    opts = tap_udp.Options()
    opts.parseOptions(["--port", "0", "--host", "127.0.0.1"])
    assert (opts["port"], opts["host"], opts["handler"]) == (0, "127.0.0.1", tap_udp.echo)


@pytest_twisted.ensureDeferred
async def test_tcp_service_start_and_graceful_stop() -> None:
    opts = tap_tcp.Options()
    opts.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--shutdown-timeout", "1"])
    service: Any = tap_tcp.makeService(opts)
    service.startService()
    server = service.server
    conn = await tcp.client("127.0.0.1", server.port)
    await conn.put(b"x")
    assert await conn.take() == b"x"
    await service.stopService()
    assert server.closed
    assert await conn.take("end") == "end"


@pytest_twisted.ensureDeferred
async def test_udp_service_start_and_stop() -> None:
    opts = tap_udp.Options()
    opts.parseOptions(["--port", "0", "--host", "127.0.0.1"])
    service: Any = tap_udp.makeService(opts)
    service.startService()
    sock = service.server.sock
    assert sock is not None and not sock.closed
    await service.stopService()
    assert sock.closed


def test_startup_line_names_tls_ports_ssl() -> None:
    from aleph_tx import http, tls
    from aleph_tx._tap.http import _address

    plain = http.start_server(lambda req: None, port=0, host="127.0.0.1")
    secure = http.start_server(
        lambda req: None, port=0, host="127.0.0.1", ssl_context=tls.self_signed_context()
    )
    try:
        assert _address(plain.ports[0]) == f"tcp:127.0.0.1:{plain.port}"
        assert _address(secure.ports[0]) == f"ssl:127.0.0.1:{secure.port}"
    finally:
        for server in (plain, secure):
            for port in server.ports:
                port.stopListening()
