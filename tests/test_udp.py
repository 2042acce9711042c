"""Loopback tests of aleph_tx.udp (real sockets on 127.0.0.1 / ::1, bounded in time)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred

from aleph_tx import stream as s
from aleph_tx import udp


def bounded(d: Any, seconds: float = 10.0) -> Deferred[Any]:
    if not isinstance(d, Deferred):
        d = ensureDeferred(d)
    return d.addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_round_trip_with_sender_address() -> None:
    a = await udp.socket(host="127.0.0.1")
    b = await udp.socket(host="127.0.0.1")
    try:
        a_port, b_port = a.description()["port"], b.description()["port"]
        assert a_port > 0 and b_port > 0
        assert await a.put({"host": "127.0.0.1", "port": b_port, "message": "héllo"}) is True
        got = await bounded(b.take())
        assert got == {"host": "127.0.0.1", "port": a_port, "message": "héllo".encode()}
        # Echo back with connect: the dict goes back to its sender.
        s.connect(b, b)
        await a.put({"host": "127.0.0.1", "port": b_port, "message": b"ping"})
        assert await bounded(a.take()) == {"host": "127.0.0.1", "port": b_port, "message": b"ping"}
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_host_names_are_resolved() -> None:
    a = await udp.socket(host="127.0.0.1")
    b = await udp.socket(host="127.0.0.1")
    try:
        await bounded(a.put({"host": "localhost", "port": b.description()["port"], "message": b"x"}))
        assert (await bounded(b.take()))["message"] == b"x"
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    a = await udp.socket(host="::1")
    b = await udp.socket(host="::1")
    try:
        await a.put({"host": "::1", "port": b.description()["port"], "message": b"six"})
        got = await bounded(b.take())
        assert got == {"host": "::1", "port": a.description()["port"], "message": b"six"}
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_bad_messages_fail_the_put_only() -> None:
    a = await udp.socket(host="127.0.0.1")
    b = await udp.socket(host="127.0.0.1")
    port = b.description()["port"]
    try:
        with pytest.raises(ValueError, match="65507"):
            await a.put({"host": "127.0.0.1", "port": port, "message": b"x" * 65508})
        with pytest.raises(TypeError):
            await a.put(b"not a dict")
        with pytest.raises(ValueError, match="message"):
            await a.put({"host": "127.0.0.1", "port": port})
        with pytest.raises(TypeError):
            await a.put({"host": "127.0.0.1", "port": port, "message": 3.5})
        with pytest.raises(ValueError):
            a.put(None)
        # The largest datagram still goes, and the socket is still open.
        assert await a.put({"host": "127.0.0.1", "port": port, "message": b"y" * 65507}) is True
        assert len((await bounded(b.take()))["message"]) == 65507
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_unreachable_peer_does_not_close() -> None:
    a = await udp.socket(host="127.0.0.1")
    b = await udp.socket(host="127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    try:
        for _ in range(3):
            assert await a.put({"host": "127.0.0.1", "port": dead_port, "message": b"?"}) is True
            await task.deferLater(reactor, 0.02)  # let any ICMP error come back
        assert not a.closed
        await a.put({"host": "127.0.0.1", "port": b.description()["port"], "message": b"alive"})
        assert (await bounded(b.take()))["message"] == b"alive"
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_stops_reading_while_nobody_takes() -> None:
    a = await udp.socket(host="127.0.0.1")
    b = await udp.socket(host="127.0.0.1")
    try:
        port = b.description()["port"]
        await a.put({"host": "127.0.0.1", "port": port, "message": bytes([0])})
        await task.deferLater(reactor, 0.05)
        desc = b.description()
        assert desc["reading_paused"] is True
        assert desc["input_pending"] == 1
        for i in range(1, 10):
            await a.put({"host": "127.0.0.1", "port": port, "message": bytes([i])})
        await task.deferLater(reactor, 0.05)
        assert b.description()["input_pending"] == 1  # the rest waits in the kernel
        got = [(await bounded(b.take()))["message"] for _ in range(10)]
        assert got == [bytes([i]) for i in range(10)]
        assert b.description()["reading_paused"] is False
    finally:
        a.close()
        b.close()


@pytest_twisted.ensureDeferred
async def test_close() -> None:
    a = await udp.socket()
    assert a.description()["port"] > 0
    closed: list[bool] = []
    a.on_closed(lambda: closed.append(True))
    a.close()
    assert closed == [True]
    assert await a.put({"host": "127.0.0.1", "port": 9, "message": b"x"}) is False
    assert await bounded(a.take("end")) == "end"
    assert a.drained


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="port"):
        udp.socket(port=-1)
    with pytest.raises(ValueError, match="port"):
        udp.socket(port="10001")  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_port_in_use_fails_the_deferred() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(Exception, match=r"Address already in use|Couldn't listen"):
            await udp.socket(port=taken.getsockname()[1], host="127.0.0.1")
