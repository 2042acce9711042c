"""HTTP/3 over a bad network: junk datagrams, unknown connection IDs, loss and reordering."""

from __future__ import annotations

import hashlib
import os
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("aioquic", reason="HTTP/3 needs aioquic: pip install aleph_tx[http3]")

from test_http_client_servers import itest, sleep
from test_http_h3_server import H3Server
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher

from aleph_tx import stream as s
from aleph_tx.http._client.h3 import connect_h3


@pytest.fixture
def logged_failures() -> Iterator[list[Any]]:
    """Every failure logged while the test runs."""
    failures: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)


async def read(response: dict[str, Any]) -> bytes:
    chunks = await s.collect(response["body"])
    await response["ended"]
    return b"".join(chunks)


@itest()
async def test_junk_and_unknown_connection_ids_are_ignored(
    h3_serve: Callable[..., H3Server], logged_failures: list[Any]
) -> None:
    server = h3_serve(lambda req: {"body": "still here"})
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        target = ("127.0.0.1", server.number)
        rng = random.Random(7)
        datagrams = [
            b"",
            b"\x00",
            b"\xff" * 5,
            # short header (1-RTT) packets for connection IDs nobody issued
            *(bytes([0x40 | rng.randrange(64)]) + os.urandom(rng.randrange(8, 1400)) for _ in range(50)),
            # long header Initials: truncated, too small (< 1200 bytes), garbage after a valid prefix
            b"\xc0\x00\x00\x00\x01\x08" + os.urandom(8) + b"\x08" + os.urandom(8),
            b"\xc0\x00\x00\x00\x01\x08"
            + os.urandom(8)
            + b"\x08"
            + os.urandom(8)
            + b"\x00\x41\x00"
            + b"\x00" * 300,
            b"\xc0\x00\x00\x00\x01\x08"
            + os.urandom(8)
            + b"\x08"
            + os.urandom(8)
            + b"\x00\x44\xd0"
            + os.urandom(1250),
            # an unknown version: answered with Version Negotiation, nothing kept
            b"\xc0\x0a\x0a\x0a\x0a\x08" + os.urandom(8) + b"\x08" + os.urandom(8) + os.urandom(1200),
            *(os.urandom(rng.randrange(1, 1500)) for _ in range(100)),
        ]
        for data in datagrams:
            junk.sendto(data, target)
        await sleep(0.3)
    finally:
        junk.close()
    assert len(server.port.endpoint.drivers) <= 1  # at most the random "Initial", then dropped
    conn = await connect_h3("127.0.0.1", server.number, "localhost", insecure=True, connection_timeout=5)
    assert await read(await conn.request("GET", "localhost", "/")) == b"still here"
    conn.abort()
    assert logged_failures == []


class LossyRelay(DatagramProtocol):
    """Forwards datagrams between one client and a server: drops ``loss`` of them
    (each direction) and delays ``reorder`` of them by a few milliseconds, so later
    datagrams overtake them."""

    def __init__(self, server: tuple[str, int], loss: float, reorder: float, seed: int = 1) -> None:
        self.server = server
        self.client: tuple[str, int] | None = None
        self.loss = loss
        self.reorder = reorder
        self.rng = random.Random(seed)
        self.dropped = self.delayed = self.forwarded = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        if addr == self.server:
            target = self.client
        else:
            self.client = addr
            target = self.server
        if target is None:
            return
        r = self.rng.random()
        if r < self.loss:
            self.dropped += 1
            return
        self.forwarded += 1
        if r < self.loss + self.reorder:
            self.delayed += 1
            reactor.callLater(self.rng.uniform(0.001, 0.01), self._send, datagram, target)
        else:
            self._send(datagram, target)

    def _send(self, datagram: bytes, target: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.write(datagram, target)


@pytest.mark.timeout(150)
@itest(timeout=120)
async def test_10_mib_both_ways_through_loss_and_reordering(h3_serve: Callable[..., H3Server]) -> None:
    payload = os.urandom(10 << 20)
    digest = hashlib.sha256(payload).hexdigest()

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        if req["body"] is not None:
            data = b"".join(await s.collect(req["body"]))
            return {"body": hashlib.sha256(data).hexdigest() + f" {len(data)}"}
        return {"body": payload}

    server = h3_serve(handler)
    relay = LossyRelay(("127.0.0.1", server.number), loss=0.05, reorder=0.05)
    relay_port = reactor.listenUDP(0, relay, interface="127.0.0.1")
    try:
        conn = await connect_h3(
            "127.0.0.1", relay_port.getHost().port, "localhost", insecure=True, connection_timeout=10
        )
        got = await read(await conn.request("GET", "localhost", "/download"))
        assert len(got) == len(payload)
        assert hashlib.sha256(got).hexdigest() == digest
        resp = await conn.request("POST", "localhost", "/upload", body=payload)
        assert await read(resp) == f"{digest} {len(payload)}".encode()
        conn.abort()
    finally:
        await relay_port.stopListening()
    assert relay.dropped > 100 and relay.delayed > 100, (relay.dropped, relay.delayed)


@itest()
async def test_two_endpoints_share_a_port_with_reuse_port(tls_options: Any) -> None:
    """--workers: each worker binds the same UDP port with SO_REUSEPORT; a client's
    datagrams all reach one of them (the kernel hashes its address)."""
    from test_http_h3_server import runner_for

    from aleph_tx.http._quic.config import server_configuration
    from aleph_tx.http._quic.endpoint import QuicEndpoint, listen_quic
    from aleph_tx.http._server.h3 import H3ServerConnection

    runners = [runner_for(lambda req, n=n: {"body": f"worker {n}"}) for n in (1, 2)]
    ports = []
    port_number = 0
    for runner in runners:
        endpoint = QuicEndpoint(
            server_configuration(tls_options), lambda d, r=runner: H3ServerConnection(d, r, 443)
        )
        ports.append(listen_quic(endpoint, port_number, "127.0.0.1", reuse_port=True))
        port_number = ports[0].getHost().port
    try:
        assert ports[1].getHost().port == port_number
        answers = set()
        for _ in range(6):
            conn = await connect_h3(
                "127.0.0.1", port_number, "localhost", insecure=True, connection_timeout=5
            )
            answers.add(await read(await conn.request("GET", "localhost", "/")))
            conn.abort()
        assert answers <= {b"worker 1", b"worker 2"} and answers
    finally:
        for port in ports:
            await port.stopListening()
