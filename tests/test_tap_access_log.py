"""``--access-log`` (aleph_tx/_tap/_access_log.py): Combined Log Format lines, one per request."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from aleph_tx._tap._access_log import access_writer, clf_line, response_size, with_access_log

WHEN = calendar.timegm((2026, 11, 25, 11, 30, 5, 0, 0, 0))


def _req(**extra: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "request_method": "get",
        "uri": "/hello",
        "query_string": None,
        "protocol": "HTTP/1.1",
        "remote_addr": "127.0.0.1",
        "headers": {"user-agent": "curl/8.5", "referer": "http://example.com/"},
    }
    req.update(extra)
    return req


@pytest.mark.parametrize(
    ("req", "status", "size", "line"),
    [
        (
            _req(),
            200,
            12,
            (
                '127.0.0.1 - - [25/Nov/2026:11:30:05 +0000] "GET /hello HTTP/1.1" 200 12 '
                '"http://example.com/" "curl/8.5"'
            ),
        ),
        (
            _req(request_method="post", query_string="a=1&b=2", headers={}),
            201,
            None,
            '127.0.0.1 - - [25/Nov/2026:11:30:05 +0000] "POST /hello?a=1&b=2 HTTP/1.1" 201 - "-" "-"',
        ),
        (
            _req(query_string="", remote_addr=None, headers={"user-agent": 'evil"\n\\agent'}),
            404,
            0,
            '- - - [25/Nov/2026:11:30:05 +0000] "GET /hello? HTTP/1.1" 404 0 "-" "evil\\x22\\x0A\\x5Cagent"',
        ),
    ],
)
def test_clf_line(req: dict[str, Any], status: int, size: int | None, line: str) -> None:
    assert clf_line(req, status, size, WHEN) == line


def test_clf_line_month_names_do_not_follow_the_locale() -> None:
    july = calendar.timegm((2026, 7, 4, 0, 0, 0, 0, 0, 0))
    assert "[04/Jul/2026:00:00:00 +0000]" in clf_line(_req(), 200, 0, july)


@pytest.mark.parametrize(
    ("resp", "size"),
    [
        ({"body": "héllo"}, 6),
        ({"body": b"abc"}, 3),
        ({"body": bytearray(b"ab")}, 2),
        ({"body": memoryview(b"abcd")}, 4),
        ({"body": None}, 0),
        ({}, 0),
        ({"body": iter([b"a"])}, None),
        ({"headers": {"Content-Length": "42"}, "body": iter([b"a"])}, 42),
        ({"body": Path("/nonexistent/file")}, None),
    ],
)
def test_response_size(resp: dict[str, Any], size: int | None) -> None:
    assert response_size(resp) == size


def test_response_size_of_a_path(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    assert response_size({"body": path}) == 1000


def _logged(handler: Any, req: dict[str, Any] | None = None) -> tuple[list[str], Deferred[Any]]:
    lines: list[str] = []
    wrapped = with_access_log(handler, lines.append, clock=lambda: WHEN)
    return lines, wrapped(req or _req())


def test_a_plain_response_is_logged_and_passed_on() -> None:
    resp = {"status": 200, "body": "hello!"}
    lines, d = _logged(lambda req: resp)
    assert d.result is resp
    assert lines == [clf_line(_req(), 200, 6, WHEN)]


def test_a_deferred_response_is_logged_when_it_fires() -> None:
    later: Deferred[Any] = Deferred()
    lines, d = _logged(lambda req: later)
    assert lines == []
    later.callback({"status": 302, "headers": {"location": "/"}})
    assert d.result["status"] == 302
    assert lines == [clf_line(_req(), 302, 0, WHEN)]


def test_a_coroutine_handler() -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"status": 201, "body": b"ok"}

    lines, d = _logged(handler)
    assert d.result == {"status": 201, "body": b"ok"}
    assert lines == [clf_line(_req(), 201, 2, WHEN)]


def test_none_is_204_and_an_upgrade_is_101() -> None:
    lines, _ = _logged(lambda req: succeed(None))
    assert lines == [clf_line(_req(), 204, 0, WHEN)]
    upgrade = _req(headers={"upgrade": "WebSocket", "connection": "Upgrade"})
    lines, _ = _logged(lambda req: None, upgrade)
    assert lines == [clf_line(upgrade, 101, None, WHEN)]


def test_failures_are_logged_as_500_and_passed_on() -> None:
    def raises(req: dict[str, Any]) -> Any:
        raise KeyError("boom")

    lines: list[str] = []
    wrapped = with_access_log(raises, lines.append, clock=lambda: WHEN)
    with pytest.raises(KeyError):
        wrapped(_req())
    assert lines == [clf_line(_req(), 500, None, WHEN)]

    lines, d = _logged(lambda req: fail(ValueError("bad")))
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures[0].check(ValueError)
    assert lines == [clf_line(_req(), 500, None, WHEN)]

    lines, d = _logged(lambda req: 42)  # not a response: the server answers 500
    assert d.result == 42
    assert lines == [clf_line(_req(), 500, None, WHEN)]


def test_file_writer_appends_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("old line\n")
    write = access_writer(str(path))
    write("one")
    write("two")
    assert path.read_text() == "old line\none\ntwo\n"  # flushed at once
    write.close()  # type: ignore[attr-defined]


def test_file_writer_fails_on_a_bad_path(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        access_writer(str(tmp_path / "no" / "such" / "dir" / "log"))


def test_dash_goes_to_the_twisted_log() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        access_writer("-")("a line")
    finally:
        globalLogPublisher.removeObserver(events.append)
    mine = [e for e in events if e.get("log_namespace") == "aleph_tx.access"]
    assert [e["line"] for e in mine] == ["a line"]


# --- wired into twist aleph-http ------------------------------------------------------


def test_aleph_http_refuses_an_access_log_it_cannot_append_to(tmp_path: Path) -> None:
    from twisted.python import usage

    from aleph_tx._tap import http as tap

    bad = str(tmp_path / "no" / "such" / "dir" / "access.log")
    with pytest.raises(usage.UsageError, match="--access-log"):
        tap.Options().parseOptions(["--access-log", bad])


@pytest_twisted.inlineCallbacks
def test_aleph_http_service_writes_one_line_per_request(tmp_path: Path) -> Any:
    from aleph_tx import http
    from aleph_tx._tap import http as tap

    log = tmp_path / "access.log"
    options = tap.Options()
    options.parseOptions(
        [
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--access-log",
            str(log),
            "--handler",
            "tests.acceptance.workers_app:http_pid",
        ]
    )
    service = tap.makeService(options)
    service.startService()
    try:
        url = f"http://127.0.0.1:{service.server.port}"  # type: ignore[attr-defined]
        resp = yield http.get(url + "/x?y=1", headers={"user-agent": "probe/1"}, as_="text")
        size = len(resp["body"].encode())
        yield http.get(url + "/again")
    finally:
        yield service.stopService()
    first, second = log.read_text().splitlines()
    assert first.startswith("127.0.0.1 - - [")
    assert first.endswith(f'"GET /x?y=1 HTTP/1.1" 200 {size} "-" "probe/1"')
    assert '"GET /again HTTP/1.1" 200 ' in second
