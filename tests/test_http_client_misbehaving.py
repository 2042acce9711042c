"""A server that misbehaves on purpose, on real sockets: garbage heads, early closes,
bodies longer or shorter than their length, a stall at each stage; on a fresh and on
a reused connection. Every request ends within its timeouts with its own error, is
sent at most once, and leaves the pool clean."""

from __future__ import annotations

from typing import Any

import pytest
from test_http_client_servers import RawServer, StallAccept, itest, sleep

from aleph_tx import http
from aleph_tx.errors import (
    ConnectionLostError,
    ConnectionTimeout,
    ProtocolError,
    ReadTimeout,
    RequestTimeout,
)
from aleph_tx.http import ConnectionPool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

#: name -> (what the server does with the request, what the client gets)
BEHAVIOURS: dict[str, tuple[tuple[bytes, bool] | None, Any]] = {
    "garbage head": ((b"\x16\x03\x01 not http at all\r\n\r\n", False), ProtocolError),
    "early close": ((b"", True), ConnectionLostError),
    "close in the head": ((b"HTTP/1.1 200 OK\r\nContent-Le", True), ConnectionLostError),
    "stall before the head": (None, RequestTimeout),
    "stall in the head": ((b"HTTP/1.1 200 OK\r\nContent-Le", False), RequestTimeout),
    "body shorter, then close": (
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", True),
        ConnectionLostError,
    ),
    "body shorter, then stall": ((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", False), ReadTimeout),
    "chunked body stalls": (
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", False),
        ReadTimeout,
    ),
    "body longer than its length": ((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", False), b"ok"),
    "bad chunk size": (
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", False),
        ProtocolError,
    ),
}


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
@itest()
async def test_misbehaving_server(behaviour: str, reused: bool, pool: ConnectionPool) -> None:
    action, expected = BEHAVIOURS[behaviour]

    def answer(n: int) -> tuple[bytes, bool] | None:
        return (OK, False) if reused and n == 0 else action

    raw = RawServer(answer)
    try:
        if reused:
            assert (await http.get(raw.url + "/", pool=pool))["body"] == b"ok"
        d = http.get(raw.url + "/", pool=pool, request_timeout=0.3, read_timeout=0.3)
        # an early close on a reused connection is retried once, on a new one (answered)
        retried = reused and behaviour == "early close"
        if retried:
            expected = b"ok"
        if isinstance(expected, bytes):
            assert (await d)["body"] == expected
        else:
            with pytest.raises(expected):
                await d
        assert len(raw.requests) == (2 if reused else 1) + retried
        for _ in range(100):
            if pool.description()["total"] == 0:
                break
            await sleep(0.01)
        assert pool.description()["total"] == retried  # never pooled again (the retry's is fine)
    finally:
        await raw.close()


@itest()
async def test_stall_at_accept_and_in_the_tls_handshake(pool: ConnectionPool) -> None:
    stall = StallAccept()
    try:
        with pytest.raises(ConnectionTimeout):
            await http.get(f"http://127.0.0.1:{stall.port}/", pool=pool, connection_timeout=0.2)
    finally:
        stall.close()
    silent = RawServer(lambda n: None)
    try:
        with pytest.raises(ConnectionTimeout):
            await http.get(
                silent.url.replace("http:", "https:"), pool=pool, connection_timeout=0.2, insecure=True
            )
        assert silent.requests == []
    finally:
        await silent.close()
    assert pool.description()["total"] == 0
