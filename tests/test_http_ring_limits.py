"""Table tests of aleph_tx.http._ring.limits (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from aleph_tx.http._ring.limits import (
    DEFAULTS,
    check_content_length,
    check_framing,
    check_header_size,
    check_request_line,
    check_version,
    make_options,
)


def test_defaults_match_api() -> None:
    opts = make_options({})
    assert opts.max_request_body_size is None
    assert opts.max_initial_line_length == 8192
    assert opts.max_header_size == 8192
    assert opts.idle_timeout is None
    assert opts.shutdown_timeout == 15
    assert opts.continue_handler is None
    assert opts.error_handler is None
    assert opts.compression is False
    assert opts.executor is None
    assert opts.http_versions == ("http/1.1",)
    assert set(DEFAULTS) >= {"max_request_body_size", "idle_timeout", "compression", "executor"}


def test_unknown_option_named() -> None:
    with pytest.raises(TypeError, match="max_body_size"):
        make_options({"max_body_size": 3})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_request_body_size", -1),
        ("max_request_body_size", "10"),
        ("max_request_body_size", True),
        ("max_initial_line_length", 0),
        ("max_header_size", 1.5),
        ("idle_timeout", 0),
        ("idle_timeout", "5"),
        ("shutdown_timeout", -1),
        ("continue_handler", 3),
        ("error_handler", "x"),
        ("compression", "yes"),
        ("executor", "process"),
        ("http_versions", "h2"),
        ("http_versions", ("h3",)),
        ("http_versions", ("h2",)),
    ],
)
def test_bad_values_named(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name.split("_")[0]):
        make_options({name: value})


def test_good_values() -> None:
    opts = make_options(
        {
            "max_request_body_size": 0,
            "idle_timeout": 0.5,
            "shutdown_timeout": 0,
            "compression": True,
            "executor": "thread",
            "http_versions": ["http/1.1", "h2"],
            "continue_handler": lambda req: True,
        }
    )
    assert opts.max_request_body_size == 0
    assert opts.http_versions == ("http/1.1", "h2")


@pytest.mark.parametrize(
    ("method_len", "url_len", "limit", "expected"),
    [(3, 1, 8192, None), (3, 8179, 8192, None), (3, 8180, 8192, 414), (0, 20, 10, 414)],
)
def test_request_line(method_len: int, url_len: int, limit: int, expected: int | None) -> None:
    assert check_request_line(method_len, url_len, limit) == expected


@pytest.mark.parametrize(("size", "expected"), [(0, None), (8192, None), (8193, 431)])
def test_header_size(size: int, expected: int | None) -> None:
    assert check_header_size(size, 8192) == expected


@pytest.mark.parametrize(
    ("length", "received", "limit", "expected"),
    [
        (None, 10**9, None, None),
        (10, 0, 10, None),
        (11, 0, 10, 413),
        (None, 10, 10, None),
        (None, 11, 10, 413),
        (0, 0, 0, None),
    ],
)
def test_content_length(length: int | None, received: int, limit: int | None, expected: int | None) -> None:
    assert check_content_length(length, received, limit) == expected


@pytest.mark.parametrize(("version", "expected"), [("1.1", None), ("1.0", None), ("0.9", 505), ("2.0", 505)])
def test_version(version: str, expected: int | None) -> None:
    assert check_version(version) == expected


@pytest.mark.parametrize(
    ("cls", "tes", "expected"),
    [
        ([], [], None),
        (["5"], [], None),
        (["5", "5"], [], None),
        (["5, 5"], [], None),
        (["5", "6"], [], 400),
        (["5, 6"], [], 400),
        (["-1"], [], 400),
        (["+1"], [], 400),
        (["0x10"], [], 400),
        (["٣"], [], 400),
        (["5"], ["chunked"], 400),
        ([], ["chunked"], None),
        ([], ["Chunked"], None),
        ([], ["gzip"], 400),
        ([], ["chunked, gzip"], 400),
        ([], ["chunked", "chunked"], 400),
        ([], ["gzip, chunked"], 501),
        ([], [""], 400),
    ],
)
def test_framing(cls: list[str], tes: list[str], expected: int | None) -> None:
    assert check_framing(cls, tes) == expected
