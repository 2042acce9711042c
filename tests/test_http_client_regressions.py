"""Regression tests of client defects (each failed before its fix).

- cancelling a slow request on a reused keep-alive connection sent it again on a
  new connection instead of failing with ``CancelledError``;
- a CONNECT proxy that never answers: ``connection_timeout`` failed the request,
  then the tunnel logged a critical ``AlreadyCalledError`` when the connection closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_http_client_servers import RawServer, itest, sleep
from twisted.internet.defer import CancelledError
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import provider

from aleph_tx import http
from aleph_tx.errors import ConnectionTimeout
from aleph_tx.http import ConnectionPool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    waited = 0.0
    while not pred():
        await sleep(0.01)
        waited += 0.01
        assert waited < timeout, f"never true: {pred}"


@pytest.fixture
def logged_failures() -> Iterator[list[Any]]:
    """Failures logged through twisted.logger while the test runs."""
    failures: list[Any] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)


@itest()
async def test_cancel_on_a_reused_connection_fails_at_once_and_is_never_sent_again(
    pool: ConnectionPool,
) -> None:
    # each connection: the first request is answered, the next ones stall
    raw = RawServer(lambda n: (OK, False) if n == 0 else None)
    try:
        assert (await http.get(raw.url + "/", pool=pool))["body"] == b"ok"
        d = http.get(raw.url + "/slow", pool=pool)
        await _until(lambda: len(raw.requests) == 2)
        d.cancel()
        assert d.called, "cancel must fail the request at once"
        with pytest.raises(CancelledError):
            await d
        await _until(lambda: raw.lost == 1)
        await sleep(0.2)  # a request sent again would have arrived by now
        assert len(raw.requests) == 2, raw.requests
        assert len(raw.connections) == 1
        assert pool.description()["total"] == 0
    finally:
        await raw.close()


@itest()
async def test_connect_proxy_that_never_answers_times_out_without_logging_errors(
    pool: ConnectionPool, logged_failures: list[Any]
) -> None:
    silent = RawServer(lambda n: None)
    try:
        with pytest.raises(ConnectionTimeout):
            await http.get(
                "https://localhost:1/",
                proxy={"host": "127.0.0.1", "port": silent.port.getHost().port},
                connection_timeout=0.2,
                insecure=True,
                pool=pool,
            )
        await _until(lambda: silent.lost == 1)
        await sleep(0.05)
        assert logged_failures == []
        assert pool.description()["total"] == 0
    finally:
        await silent.close()
