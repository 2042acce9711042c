"""The client under faults, in memory: cancel at every stage, retries, 1,000 mixed failures.

Everything runs on a ``MemoryReactorClock``: the client's connects land in its
``tcpClients``, :class:`Net` connects them to a scripted server with
``twisted.test.iosim`` and pumps the bytes; time moves only with ``advance``. The
server counts the request heads it receives, so "never sent again" is checked on
the wire.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim

from aleph_tx import http
from aleph_tx import stream as s
from aleph_tx.errors import (
    ConnectionLostError,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RequestTimeout,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

#: What the server does with a request: ``(bytes to write, then)`` where ``then`` is
#: ``"keep"`` (wait for the next request), ``"close"``, ``"reset"`` or ``"stall"``.
Action = tuple[bytes, str]
Plan = Callable[[int, int], Action]  # (request number overall, number on its connection)


class _Server(Protocol):
    def __init__(self, net: Net) -> None:
        self.net = net
        self.buf = b""
        self.answered = 0
        self.stalled = False

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.stalled:
            return
        self.buf += data
        while b"\r\n\r\n" in self.buf and not self.stalled:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            if not head.split(b" ", 1)[0].isalpha():
                continue  # (a TLS ClientHello, a chunk of a body)
            self.buf = b""  # request bodies are not looked at
            n = len(self.net.requests)
            self.net.requests.append(head)
            out, then = self.net.plan(n, self.answered)
            self.answered += 1
            transport: Any = self.transport
            if out:
                transport.write(out)
            if then == "close":
                transport.loseConnection()
            elif then == "reset":
                transport.abortConnection()
            elif then == "stall":
                self.stalled = True


class Net:
    """A memory reactor, a client pool on it and one scripted server."""

    def __init__(self, plan: Plan, **pool_options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.plan = plan
        self.requests: list[bytes] = []
        self.pumps: list[iosim.IOPump] = []
        self.refuse = False
        self.pool = http.connection_pool(clock=self.reactor, **pool_options)

    def request(self, method: str = "GET", path: str = "/", **options: Any) -> Deferred[dict[str, Any]]:
        return http.request(
            method,
            f"http://127.0.0.1:8080{path}",
            pool=self.pool,
            reactor=self.reactor,
            clock=self.reactor,
            **options,
        )

    def connect(self) -> bool:
        """Complete the pending connects (those not cancelled); whether any was."""
        moved = False
        while self.reactor.tcpClients:
            _, _, factory, _, _ = self.reactor.tcpClients.pop(0)
            connector = self.reactor.connectors.pop(0)
            if connector.stoppedConnecting:
                continue
            if self.refuse:
                factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
                continue
            client = factory.buildProtocol(None)
            server = _Server(self)
            self.pumps.append(
                iosim.connect(
                    server,
                    iosim.makeFakeServer(server),
                    client,
                    iosim.makeFakeClient(client),
                    greet=False,
                    clock=self.reactor,
                )
            )
            moved = True
        return moved

    def run(self) -> None:
        """Connect and move bytes until nothing moves."""
        for _ in range(1000):
            moved = self.connect()
            for pump in self.pumps:
                moved = pump.flush() or moved
            self.pumps = [p for p in self.pumps if not p.clientIO.disconnected]
            if not moved:
                return
        raise AssertionError("the network never settled")

    def check_clean(self) -> None:
        """No connection in use, no waiter, no timer but the idle ones."""
        desc = self.pool.description()
        assert (desc["active"], desc["waiters"]) == (0, 0), desc
        assert len(self.reactor.getDelayedCalls()) == desc["idle"], self.reactor.getDelayedCalls()


def answer_first_then_stall(n: int, on_conn: int) -> Action:
    return (OK, "keep") if on_conn == 0 else (b"", "stall")


def _cancelled_at_once(d: Deferred[Any]) -> None:
    d.cancel()
    assert d.called, "cancel must fire the Deferred at once"
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(CancelledError), failures


# -- cancel at each stage ----------------------------------------------------------------


@pytest.mark.parametrize("reused", [False, True])
@pytest.mark.parametrize("stage", ["sending", "awaiting head", "reading body", "reading a stream"])
def test_cancel_at_each_stage_is_never_sent_again(stage: str, reused: bool) -> None:
    def plan(n: int, on_conn: int) -> Action:
        if reused and on_conn == 0:
            return OK, "keep"
        if stage == "reading body" or stage == "reading a stream":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", "stall"
        return b"", "stall"

    net = Net(plan)
    if reused:
        first = net.request()
        net.run()
        assert first.called
    body: Any = None
    if stage == "sending":
        body = s.stream()
    d = net.request(
        "POST" if body is not None else "GET", body=body, as_="stream" if "stream" in stage else "bytes"
    )
    net.run()
    if body is not None:
        assert body.put(b"first chunk").called  # taken: the request is being sent
        net.run()
    sent = len(net.requests)
    assert sent == (2 if reused else 1)
    if stage == "reading a stream":
        response = d.result  # the head came: the Deferred fired with the stream
        response["body"].close()  # a reader that stops: the response is aborted
    else:
        _cancelled_at_once(d)
    net.run()
    net.reactor.advance(3600)
    net.run()
    assert len(net.requests) == sent  # never sent again
    assert net.reactor.tcpClients == []  # no new connect
    assert net.pool.description()["total"] == 0  # the connection was cut, not pooled
    net.check_clean()
    if body is not None:
        assert body.closed  # the request body's producer sees the end


def test_cancel_while_waiting_for_the_pool_and_while_connecting() -> None:
    net = Net(answer_first_then_stall, connections_per_host=1)
    connecting = net.request()
    waiting = net.request()
    assert net.pool.description()["waiters"] == 1
    _cancelled_at_once(waiting)
    assert net.pool.description()["waiters"] == 0
    _cancelled_at_once(connecting)
    assert net.reactor.connectors[0].stoppedConnecting
    net.run()
    assert net.requests == []
    assert net.pool.description()["total"] == 0
    net.check_clean()
    # the pool is usable afterwards
    d = net.request()
    net.run()
    assert d.result["status"] == 200


def test_cancel_during_the_tls_handshake() -> None:
    net = Net(answer_first_then_stall)
    d = http.get(
        "https://127.0.0.1:8080/", pool=net.pool, reactor=net.reactor, clock=net.reactor, insecure=True
    )
    net.run()  # the ClientHello reached a server that never answers it
    assert not d.called
    _cancelled_at_once(d)
    net.run()
    assert net.requests == []
    assert net.pool.description()["total"] == 0
    net.check_clean()


def test_pool_timeout_and_connection_timeout_in_memory() -> None:
    net = Net(answer_first_then_stall, connections_per_host=1)
    stuck = net.request(connection_timeout=5)
    waiting = net.request(pool_timeout=2)
    net.reactor.advance(2)
    assert isinstance(waiting.result.value, PoolTimeout)  # type: ignore[attr-defined]
    waiting.addErrback(lambda _: None)
    net.reactor.advance(3)
    failures: list[Failure] = []
    stuck.addErrback(failures.append)
    assert failures[0].check(http.ConnectionTimeout)
    net.check_clean()
    assert net.pool.description()["total"] == 0


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "retried"),
    [
        ("GET", True),
        ("HEAD", True),
        ("OPTIONS", True),
        ("PUT", True),
        ("DELETE", True),
        ("POST", False),
        ("PATCH", False),
    ],
)
def test_retry_only_idempotent_methods_on_a_reused_connection(method: str, retried: bool) -> None:
    def plan(n: int, on_conn: int) -> Action:
        if n == 1:
            return b"", "close"  # the kept-alive connection closes as the request arrives
        return OK if n == 0 or method != "HEAD" else OK[: OK.index(b"ok")], "keep"

    net = Net(plan)
    first = net.request()
    net.run()
    assert first.result["status"] == 200
    d = net.request(method, body=b"x" if method in ("PUT", "POST", "PATCH") else None)
    net.run()
    if retried:
        assert d.result["status"] == 200
        assert len(net.requests) == 3
    else:
        failures: list[Failure] = []
        d.addErrback(failures.append)
        assert failures[0].check(ConnectionLostError)
        assert len(net.requests) == 2
    net.check_clean()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Len",  # part of a head
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # part of a body
    ],
)
def test_no_retry_once_a_response_byte_arrived(answer: bytes) -> None:
    net = Net(lambda n, c: (OK, "keep") if n == 0 else (answer, "close"))
    net.request()
    net.run()
    d = net.request()
    net.run()
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures[0].check(ConnectionLostError)
    assert len(net.requests) == 2
    net.check_clean()


def test_a_fresh_connection_closed_before_any_byte_is_not_retried() -> None:
    net = Net(lambda n, c: (b"", "close"))
    d = net.request()
    net.run()
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures[0].check(ConnectionLostError)
    assert len(net.requests) == 1


# -- 1,000 mixed failures -----------------------------------------------------------------------

_FAULTS: dict[str, Action] = {
    "ok": (OK, "keep"),
    "reset before the response": (b"", "reset"),
    "close before the response": (b"", "close"),
    "malformed head": (b"HTTP/1.1 2x0 OK\r\n\r\n", "keep"),
    "oversize head": (b"HTTP/1.1 200 OK\r\nX: " + b"v" * 2000 + b"\r\n\r\n", "keep"),
    "cut in the body": (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", "reset"),
    "stall before the head": (b"", "stall"),
    "stall in the body": (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", "stall"),
    "close delimits the body": (b"HTTP/1.1 200 OK\r\n\r\nuntil close", "close"),
}
_EXPECTED: dict[str, Any] = {
    "ok": 200,
    "malformed head": ProtocolError,
    "oversize head": ProtocolError,
    "cut in the body": ConnectionLostError,
    "stall before the head": RequestTimeout,
    "stall in the body": ReadTimeout,
    "close delimits the body": 200,
}


def test_a_thousand_mixed_failures_leave_nothing_behind() -> None:
    rng = random.Random(1234)
    names = sorted(_FAULTS)
    chosen: list[str] = []

    def plan(n: int, on_conn: int) -> Action:
        # the fault of the request's own number (its path): a retry meets it again
        i = int(net.requests[n].split(b" ")[1].strip(b"/"))
        return _FAULTS[chosen[i]]

    net = Net(plan, connections_per_host=4)
    outcomes: dict[str, int] = {}
    for i in range(1000):
        fault = rng.choice([*names, "cancel"])
        cancel_after = rng.choice([0, 1, 2]) if fault == "cancel" else None
        if fault == "cancel":
            chosen.append("stall before the head" if cancel_after else "ok")
        else:
            chosen.append(fault)
        d = net.request(path=f"/{i}", request_timeout=5, read_timeout=5, max_response_header_size=1024)
        if cancel_after == 0:
            d.cancel()  # at once: waiting for a connection or connecting
        else:
            net.run()
            if cancel_after:
                d.cancel()
        net.run()
        net.reactor.advance(5)  # past every timeout
        net.run()
        assert d.called, (i, fault)  # every Deferred fired within the bound
        result: list[Any] = []
        d.addBoth(result.append)
        outcome = result[0]
        if isinstance(outcome, Failure):
            expected = _EXPECTED.get(fault, ConnectionLostError)
            if fault == "cancel":
                expected = CancelledError
            assert isinstance(outcome.value, expected), (i, fault, outcome)
        else:
            assert fault in ("ok", "close delimits the body"), (i, fault, outcome)
        sent = sum(1 for head in net.requests if head.split(b" ")[1] == b"/%d" % i)
        assert sent <= (1 if fault == "cancel" else 2), (i, fault, sent)  # a cancel is never sent again
        outcomes[fault] = outcomes.get(fault, 0) + 1
    assert set(outcomes) == {*names, "cancel"}
    net.check_clean()
    closed = net.pool.close()
    net.run()
    assert closed.called
    assert net.pool.description()["total"] == 0
    assert net.reactor.getDelayedCalls() == []


# -- memory --------------------------------------------------------------------------------------


def test_a_finished_response_leaves_no_reference_cycle() -> None:
    """A body is freed as soon as its response is done, not at the next garbage
    collection: 50 concurrent 1 MiB downloads used to keep ~1.5 GiB alive."""
    import gc

    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"b" * 100_000
    net = Net(lambda n, c: (big if n % 2 else OK, "keep"))
    warm = net.request()
    net.run()
    assert warm.called
    gc.collect()
    gc.disable()
    try:
        for i in range(20):
            d = net.request()
            net.run()
            assert len(d.result["body"]) == (100_000 if i % 2 == 0 else 2)
        del d
        assert gc.collect() == 0
    finally:
        gc.enable()
