"""aleph_tx.http._testing.request (re-exported as aleph_tx.testing.request): the real protocol in memory."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from aleph_tx import stream as s
from aleph_tx.errors import ConnectionLostError
from aleph_tx.testing import request


def echo(req: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "headers": {"x-method": req["request_method"]}, "body": req["body"]}


class RequestTests(SynchronousTestCase):
    def test_method_any_case_stored_lower(self) -> None:
        resp = self.successResultOf(request(echo, "pOsT", "/", body=b"x"))
        assert resp["headers"]["x-method"] == "post"
        assert resp["body"] == b"x"

    def test_headers_and_query(self) -> None:
        seen: list[dict[str, Any]] = []
        self.successResultOf(request(lambda req: seen.append(req), "GET", "/p?q=1", {"X-Test": "v"}))
        (req,) = seen
        assert req["uri"] == "/p" and req["query_string"] == "q=1"
        assert req["headers"]["x-test"] == "v" and req["headers"]["host"] == "localhost"

    def test_body_kinds(self) -> None:
        for body, expected in (("é", "é".encode()), (bytearray(b"ab"), b"ab"), ([b"a", "b"], b"ab")):
            resp = self.successResultOf(request(echo, "PUT", "/", body=body))
            assert resp["body"] == expected

    def test_stream_request_body_sent_chunked(self) -> None:
        src = s.stream()
        d = request(echo, "POST", "/", body=src)
        src.put(b"one")
        src.put(b"two")
        self.assertNoResult(d)
        src.close()
        assert self.successResultOf(d)["body"] == b"onetwo"

    def test_deferred_response(self) -> None:
        later: Deferred[Any] = Deferred()
        d = request(lambda req: later, "GET", "/")
        self.assertNoResult(d)
        later.callback({"body": "done"})
        assert self.successResultOf(d)["body"] == b"done"

    def test_head(self) -> None:
        resp = self.successResultOf(request(lambda req: {"body": "12345"}, "HEAD", "/"))
        assert resp["headers"]["content-length"] == "5" and resp["body"] == b""

    def test_failure_mid_body_is_connection_lost(self) -> None:
        def bad(req: dict[str, Any]) -> dict[str, Any]:
            return {"body": iter([b"ok", 42])}

        failure = self.failureResultOf(request(bad, "GET", "/"), ConnectionLostError)
        assert "complete response" in str(failure.value)
        self.flushLoggedErrors(TypeError)

    def test_options_and_limits(self) -> None:
        resp = self.successResultOf(request(echo, "POST", "/", body=b"x" * 11, max_request_body_size=10))
        assert resp["status"] == 413
        with pytest.raises(TypeError, match="bogus"):
            request(echo, "GET", "/", bogus=True)
