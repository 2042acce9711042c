"""Table tests of the Ring core (aleph_tx.http._ring, pure)."""

from __future__ import annotations

from typing import Any

import pytest

from aleph_tx.http._ring import response as response_module
from aleph_tx.http._ring.request import build_request, headers_dict, split_target
from aleph_tx.http._ring.response import (
    encode_headers,
    http_date,
    response_parts,
    status_line,
    whole_response,
)


def test_headers_lower_case_and_joined() -> None:
    pairs = [(b"Host", b"example.com"), (b"X-A", b"1"), (b"x-a", b"2"), (b"Accept", b"*/*")]
    assert headers_dict(pairs) == {"host": "example.com", "x-a": "1, 2", "accept": "*/*"}


def test_header_values_latin1() -> None:
    assert headers_dict([(b"X", b"caf\xe9")]) == {"x": "café"}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/", ("/", None)),
        (b"/a/b", ("/a/b", None)),
        (b"/a?", ("/a", "")),
        (b"/a?x=1&y=%20", ("/a", "x=1&y=%20")),
        (b"/a?x=1?y", ("/a", "x=1?y")),
        (b"/a%20b", ("/a%20b", None)),
        (b"http://h:8/p?q", ("/p", "q")),
        (b"http://h", ("/", None)),
        (b"http://h?q=1", ("/", "q=1")),
        (b"*", ("*", None)),
        (b"/a#frag", ("/a", None)),
    ],
)
def test_split_target(target: bytes, expected: tuple[str, str | None]) -> None:
    assert split_target(target) == expected


def test_build_request_has_every_key() -> None:
    req = build_request(
        "GET",
        b"/x?y=1",
        {"host": "example.com:8080"},
        None,
        scheme="https",
        server_name="10.0.0.1",
        server_port=8443,
        remote_addr="10.0.0.2",
        protocol="HTTP/1.0",
        keep_alive=False,
    )
    assert req == {
        "request_method": "get",
        "uri": "/x",
        "query_string": "y=1",
        "headers": {"host": "example.com:8080"},
        "body": None,
        "scheme": "https",
        "server_name": "example.com",
        "server_port": 8443,
        "remote_addr": "10.0.0.2",
        "protocol": "HTTP/1.0",
        "keep_alive": False,
    }


@pytest.mark.parametrize(
    ("host", "name"), [("a.b", "a.b"), ("a.b:80", "a.b"), ("[::1]:80", "[::1]"), ("[::1]", "[::1]")]
)
def test_server_name_from_host(host: str, name: str) -> None:
    assert build_request("GET", b"/", {"host": host}, None)["server_name"] == name


def test_server_name_without_host() -> None:
    assert build_request("GET", b"/", {}, None, server_name="1.2.3.4")["server_name"] == "1.2.3.4"


@pytest.mark.parametrize(
    ("status", "line"),
    [(200, b"HTTP/1.1 200 OK\r\n"), (404, b"HTTP/1.1 404 Not Found\r\n"), (599, b"HTTP/1.1 599 Unknown\r\n")],
)
def test_status_line(status: int, line: bytes) -> None:
    assert status_line(status) == line


@pytest.mark.parametrize("status", [99, 1000, "200", None, True, 200.0])
def test_status_line_refuses(status: Any) -> None:
    with pytest.raises(ValueError, match="status"):
        status_line(status)


def test_response_parts() -> None:
    assert response_parts(None) == (204, None, None)
    assert response_parts({}) == (200, None, None)
    assert response_parts({"status": 404, "headers": {"a": "b"}, "body": "x"}) == (404, {"a": "b"}, "x")


@pytest.mark.parametrize(
    ("response", "exc"),
    [
        ({"status": 99}, ValueError),
        ({"status": 1000}, ValueError),
        ({"status": "200"}, ValueError),
        ("hello", TypeError),
        ([], TypeError),
    ],
)
def test_response_parts_refuses(response: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        response_parts(response)


def test_encode_headers_lists_and_framing() -> None:
    lines, seen = encode_headers(
        {
            "Content-Type": "text/plain",
            "set-cookie": ["a=1", "b=2"],
            "content-length": "99",
            "transfer-encoding": "chunked",
            "X-N": 5,
        }
    )
    assert lines == [
        b"Content-Type: text/plain\r\n",
        b"set-cookie: a=1\r\n",
        b"set-cookie: b=2\r\n",
        b"X-N: 5\r\n",
    ]
    assert seen["content-length"] == "99"
    assert seen["transfer-encoding"] == "chunked"
    assert "content-type" not in seen


@pytest.mark.parametrize(
    "headers",
    [
        {"x": "a\r\nSet-Cookie: evil=1"},
        {"x": "a\nb"},
        {"x": "a\rb"},
        {"x": "a\x00b"},
        {"x\r\ny": "a"},
        {"x:y": "a"},
        {"": "a"},
        {"x y": "a"},
        {"x": ["ok", "bad\n"]},
        {"x": "snow ☃"},
    ],
)
def test_encode_headers_refuses_splitting(headers: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_headers(headers)


@pytest.mark.parametrize("headers", [{"x": None}, {"x": b"bytes"}, {"x": 1.5}, {3: "a"}])
def test_encode_headers_type_errors(headers: dict[Any, Any]) -> None:
    with pytest.raises(TypeError):
        encode_headers(headers)


def test_http_date_format() -> None:
    d = http_date()
    assert d.endswith(b" GMT") and len(d) == 29


def test_server_name_cache_gives_what_host_name_gives() -> None:
    """The second request with a Host takes the cached name: the same as the first."""
    for host, name in (("a.example:8080", "a.example"), ("[::1]:9", "[::1]"), ("b.example", "b.example")):
        first = build_request("GET", b"/", {"host": host}, None)["server_name"]
        again = build_request("GET", b"/", {"host": host}, None)["server_name"]
        assert first == again == name


@pytest.mark.parametrize("status", [200, 201, 204, 304, 404, 101, 599])
@pytest.mark.parametrize("body", [b"", b"hello"])
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("head", [True, False])
@pytest.mark.parametrize("version10", [True, False])
@pytest.mark.parametrize("seen", [{}, {"date": "Thu, 01 Jan 1970 00:00:00 GMT"}])
def test_whole_response_fast_path_is_exact(
    status: int, body: bytes, keep: bool, head: bool, version10: bool, seen: dict[str, str]
) -> None:
    """The one-join common case of ``whole_response`` (taken when the status line is
    cached) gives the bytes of the general path (taken when it is not)."""
    lines = [b"content-type: text/plain\r\n", b"x-a: 1\r\n"]
    if "date" in seen:
        lines.append(b"date: " + seen["date"].encode() + b"\r\n")
    status_line(status)  # cached: the fast path where it applies
    fast = whole_response(status, lines, seen, body, keep, head, version10)
    response_module._status_lines.pop(status)  # not cached: the general path
    general = whole_response(status, lines, seen, body, keep, head, version10)
    if fast != general:  # the Date header may have ticked over between the two
        fast = whole_response(status, lines, seen, body, keep, head, version10)
    assert fast == general
    assert status in response_module._status_lines  # the general path cached it again
