"""The pure parts of WebSockets: option validation, the opening-handshake check,
subprotocol choice, close codes, URLs (tables, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from aleph_tx.errors import WebSocketHandshakeError
from aleph_tx.http._ring.upgrade import (
    Heartbeats,
    WSOptions,
    check_close,
    check_ping_payload,
    check_upgrade,
    choose_subprotocol,
    parse_ws_url,
    ws_options,
)


def test_defaults() -> None:
    opts = ws_options({})
    assert opts == WSOptions(65536, 1048576, None, None, False, None)


def test_values() -> None:
    opts = ws_options(
        {
            "max_frame_payload": 10,
            "max_message_size": None,
            "heartbeats": {"send_after_idle": 1, "timeout": 2.5},
            "subprotocols": ["a", "b.v2"],
            "compression": True,
        }
    )
    assert opts.max_frame_payload == 10 and opts.max_message_size is None
    assert opts.heartbeats == Heartbeats(1.0, 2.5, b"")
    assert opts.subprotocols == ("a", "b.v2") and opts.compression is True
    assert ws_options({"heartbeats": True}).heartbeats == Heartbeats(30.0, 10.0, b"")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_frame": 1}, TypeError),
        ({"heartbeats": {"send_after_idle": 1, "interval": 2}}, TypeError),
        ({"heartbeats": 5}, TypeError),
        ({"subprotocols": "chat"}, TypeError),
        ({"compression": "yes"}, TypeError),
        ({"max_frame_payload": 0}, ValueError),
        ({"max_message_size": -1}, ValueError),
        ({"max_message_size": True}, ValueError),
        ({"heartbeats": {"send_after_idle": 0}}, ValueError),
        ({"heartbeats": {"timeout": -1}}, ValueError),
        ({"heartbeats": {"payload": b"x" * 126}}, ValueError),
        ({"subprotocols": ["has space"]}, ValueError),
        ({"subprotocols": [""]}, ValueError),
        ({"subprotocols": ["a,b"]}, ValueError),
    ],
)
def test_bad_options(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ws_options(options)


GOOD = {
    "request_method": "get",
    "protocol": "HTTP/1.1",
    "headers": {
        "host": "example.com",
        "upgrade": "websocket",
        "connection": "keep-alive, Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    },
}


def _with(**headers: str | None) -> dict[str, Any]:
    h = dict(GOOD["headers"])  # type: ignore[call-overload]
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            h.pop(name, None)
        else:
            h[name] = value
    return {**GOOD, "headers": h}


def test_good_upgrade() -> None:
    check_upgrade(GOOD)
    check_upgrade(_with(upgrade="WebSocket", connection="upgrade"))
    check_upgrade(_with(sec_websocket_protocol="a, b"))


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        ({**GOOD, "request_method": "post"}, "GET"),
        ({**GOOD, "protocol": "HTTP/1.0"}, "HTTP/1.1"),
        (_with(upgrade=None), "Upgrade"),
        (_with(upgrade="h2c"), "Upgrade"),
        (_with(connection="keep-alive"), "Connection"),
        (_with(host=None), "Host"),
        (_with(sec_websocket_version="8"), "Version"),
        (_with(sec_websocket_version=None), "Version"),
        (_with(sec_websocket_key=None), "Key"),
        (_with(sec_websocket_key="short"), "Key"),
        (_with(sec_websocket_key="dGhlIHNhbXBsZSBub25jZQ"), "Key"),  # padding missing
        (_with(sec_websocket_key="dGhlIHNhbXBsZSBub25jZQ=="[:-4] + "AAA="), "Key"),
        (_with(sec_websocket_protocol="a, a"), "Protocol"),
        ({"headers": {}}, "GET"),
    ],
)
def test_bad_upgrade(req: dict[str, Any], fragment: str) -> None:
    with pytest.raises(WebSocketHandshakeError, match=fragment):
        check_upgrade(req)
    assert issubclass(WebSocketHandshakeError, ValueError)


@pytest.mark.parametrize(
    ("offered", "accepted", "chosen"),
    [
        (["a", "b"], ["b", "a"], "a"),  # the client's order
        (["x", "b"], ["b"], "b"),
        (["x"], ["b"], None),
        (["a"], None, None),
        ([], ["a"], None),
    ],
)
def test_choose_subprotocol(offered: list[str], accepted: list[str] | None, chosen: str | None) -> None:
    assert choose_subprotocol(offered, accepted) == chosen


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1008, 1011, 3000, 4999])
def test_close_codes_ok(code: int) -> None:
    assert check_close(code, "fine") == b"fine"


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000, "1000", True, None])
def test_close_codes_refused(code: Any) -> None:
    with pytest.raises(ValueError):
        check_close(code, "")


def test_close_reason() -> None:
    assert check_close(1000, "é" * 61) == "é".encode() * 61  # 122 bytes
    with pytest.raises(ValueError):
        check_close(1000, "x" * 124)
    with pytest.raises(TypeError):
        check_close(1000, b"bytes")


def test_ping_payload() -> None:
    check_ping_payload(b"x" * 125)
    check_ping_payload(bytearray(b"ab"))
    with pytest.raises(ValueError):
        check_ping_payload(b"x" * 126)
    with pytest.raises(TypeError):
        check_ping_payload("text")


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("ws://h/", (False, "h", 80, "/")),
        ("wss://h", (True, "h", 443, "/")),
        ("WS://h:8080/a/b?x=1&y", (False, "h", 8080, "/a/b?x=1&y")),
        ("wss://[::1]:9/p", (True, "::1", 9, "/p")),
    ],
)
def test_parse_ws_url(url: str, parsed: tuple[bool, str, int, str]) -> None:
    assert parse_ws_url(url) == parsed


@pytest.mark.parametrize("url", ["http://h/", "ws:///path", "ws://h/#frag", "ws://h:99999/", "h:80"])
def test_parse_ws_url_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_ws_url(url)
