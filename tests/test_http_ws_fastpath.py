"""The WebSocket fast path (docs/internals.rst, "The WebSocket fast path"): each part is
taken when it applies, and autobahn's path (as when the probe fails) gives the same
messages, order and close codes: a read's frames as one batch, the put that frames
and writes a message itself, permessage-deflate, the unmasking."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from _ws_helpers import RawClient, WSServer, bounded, frame, until
from hypothesis import given
from hypothesis import strategies as st

from aleph_tx._adapter import Sender
from aleph_tx.http._websocket import frames, glue, probe

DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate\r\n"


@pytest.fixture(params=[True, False], ids=["fast-path", "autobahn-path"])
def fast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run with the fast path, and with autobahn's path as when the probe fails."""
    monkeypatch.setattr(glue, "FAST", request.param)
    return bool(request.param)


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the fast path parsed frames."""
    calls: list[int] = []
    original = frames.FastFrames._fast_frames

    def counting(self: Any) -> Any:
        more = original(self)
        if more is not None:
            calls.append(1)
        return more

    monkeypatch.setattr(frames.FastFrames, "_fast_frames", counting)
    return calls


def server_frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(first byte, payload) of each whole unmasked frame in ``data``."""
    while len(data) >= 2:
        n, i = data[1] & 0x7F, 2
        if n == 126:
            n, i = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, i = int.from_bytes(data[2:10], "big"), 10
        if len(data) < i + n:
            return
        yield data[0], data[i : i + n]
        data = data[i + n :]


class Deflating:
    """The client's end of permessage-deflate (RFC 7692), context taken over both ways."""

    def __init__(self) -> None:
        self.deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self.inflater = zlib.decompressobj(-15)

    def frame(self, opcode: int, payload: bytes) -> bytes:
        data = self.deflater.compress(payload) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        f = frame(opcode, data[:-4])
        return bytes([f[0] | 0x40]) + f[1:]

    def messages(self, data: bytes) -> list[tuple[int, bytes]]:
        out = []
        for b0, payload in server_frames(data):
            if b0 & 0x40:
                payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
            out.append((b0 & 0x0F, payload))
        return out


async def close_from_server(conn: Any, raw: RawClient) -> None:
    """The server closes; the raw client answers the close frame (RFC 6455 §5.5.1)."""
    conn.close()
    await until(lambda: any(b0 == 0x88 for b0, _ in server_frames(raw.data)))
    raw.write(frame(8, (1000).to_bytes(2, "big")))
    await bounded(raw.lost)


@pytest_twisted.ensureDeferred
async def test_a_burst_of_frames_in_one_read_is_delivered_whole_and_in_order(
    fast: bool, parsed: list[int]
) -> None:
    """More frames than a stream's pending limit (16,384) in one read: none dropped,
    reading paused while nobody takes, every message in order."""
    srv = WSServer(on_conn=lambda conn: None)
    try:
        raw = RawClient()
        n = 20_000
        await raw.connect(srv.server.port, extra=b"".join(frame(2, b"%d" % i) for i in range(n)))
        await until(lambda: srv.conns and srv.conns[0].description()["bytes_received"] > 0)
        conn = srv.conns[0]
        await until(lambda: conn.description()["reading_paused"])
        got = [await bounded(conn.take()) for _ in range(n)]
        assert got == [b"%d" % i for i in range(n)]
        assert bool(parsed) is fast
        await close_from_server(conn, raw)
    finally:
        await srv.close()


@pytest_twisted.ensureDeferred
async def test_the_direct_put_is_taken_while_the_sender_is_ready(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends: list[Any] = []
    original = Sender.send

    def counting(self: Sender, msg: Any) -> Any:
        sends.append(msg)
        return original(self, msg)

    monkeypatch.setattr(Sender, "send", counting)
    srv = WSServer(on_conn=lambda conn: None)
    try:
        raw = RawClient()
        await raw.connect(srv.server.port)
        await until(lambda: srv.conns)
        conn = srv.conns[0]
        assert await conn.put("text") is True
        assert await conn.put(b"binary") is True
        assert sends == ([] if fast else [(b"text", False), (b"binary", True)])
        # paused by the transport: both paths queue, in order, and fire once written
        conn._ws.sender.pauseProducing()
        queued = [conn.put("q1"), conn.put(bytearray(b"q2"))]
        assert not any(d.called for d in queued)
        conn._ws.sender.resumeProducing()
        assert [await bounded(d) for d in queued] == [True, True]
        assert await conn.put("x" * 70_000) is True  # over one frame (64 KiB): autobahn fragments it
        await until(lambda: sum(1 for _ in server_frames(raw.data)) >= 6)
        got = list(server_frames(raw.data))
        assert [(b0, p) for b0, p in got[:4]] == [
            (0x81, b"text"),
            (0x82, b"binary"),
            (0x81, b"q1"),
            (0x82, b"q2"),
        ]
        assert got[4][0] == 0x01 and got[-1][0] & 0x80  # fragments: first text, last FIN
        assert b"".join(p for _, p in got[4:]) == b"x" * 70_000
        assert conn.description()["bytes_sent"] == 4 + 6 + 2 + 2 + 70_000
        with pytest.raises(ValueError):
            await conn.put("y" * (2**20 + 1))  # over max_message_size: that put fails
        await close_from_server(conn, raw)
    finally:
        await srv.close()


SIZES = [0, 1, 125, 126, 5000, 65536, 70000]


@pytest.mark.parametrize("step", [0, 7, 4096], ids=["one-write", "7-bytes", "4-KiB"])
@pytest_twisted.ensureDeferred
async def test_compressed_echo_of_every_size(fast: bool, parsed: list[int], step: int) -> None:
    srv = WSServer(compression=True, max_frame_payload=2**20)
    try:
        raw = RawClient()
        client = Deflating()
        head = await raw.connect(srv.server.port, headers=DEFLATE)
        assert b"permessage-deflate" in head
        sent = []
        for n in SIZES:
            text = ("é" * n)[: n // 2]
            sent.append((1, text.encode()))
            sent.append((2, bytes(i % 251 for i in range(n))))
        data = b"".join(client.frame(op, p) for op, p in sent) + frame(2, b"plain")  # RSV1 clear
        sent.append((2, b"plain"))
        for i in range(0, len(data), step or len(data)):
            raw.write(data[i : i + (step or len(data))])
        await until(lambda: len(client.messages(raw.data)) >= len(sent), seconds=10)
        assert client.messages(raw.data) == sent
        assert bool(parsed) is fast
        desc = srv.conns[0].description()
        assert desc["compression"] is True
        assert desc["bytes_received"] == sum(len(p) for _, p in sent)  # counted inflated
        raw.write(frame(8, (1000).to_bytes(2, "big")))
        await bounded(raw.lost)
    finally:
        await srv.close()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ("corrupt", 1007),
        ("inflates-past-the-limit", 1009),
        ("bad-utf8", 1007),
    ],
)
@pytest_twisted.ensureDeferred
async def test_compressed_messages_that_fail_close_with_autobahns_code(
    fast: bool, bad: str, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed: list[str] = []
    original = frames.FastFrames._fail_inflated

    def counting(self: Any, kind: str, octets: int, reason: str) -> None:
        failed.append(kind)
        original(self, kind, octets, reason)

    monkeypatch.setattr(frames.FastFrames, "_fail_inflated", counting)
    srv = WSServer(compression=True, max_message_size=1000)
    try:
        raw = RawClient()
        client = Deflating()
        await raw.connect(srv.server.port, headers=DEFLATE)
        first = client.frame(1, b"fine")
        if bad == "corrupt":
            bad_frame = frame(2, b"\xff\xff\xff\xff not deflate")
            bad_frame = bytes([bad_frame[0] | 0x40]) + bad_frame[1:]
        elif bad == "inflates-past-the-limit":
            bad_frame = client.frame(2, b"z" * 5000)  # 5000 bytes from a few dozen
        else:
            bad_frame = client.frame(1, b"ok\xc3")
        raw.write(first + bad_frame + client.frame(1, b"never delivered"))
        await until(lambda: b"\x88" in raw.data)
        got = list(server_frames(raw.data))
        assert client.inflater.decompress(got[0][1] + b"\x00\x00\xff\xff") == b"fine"
        assert got[1][0] == 0x88 and int.from_bytes(got[1][1][:2], "big") == code
        assert srv.conns[0].description()["close_code"] == code
        # (after an inflater failure autobahn reads no close answer: both paths wait
        # for the close handshake's timeout; the client leaves instead)
        raw.protocol.transport.abortConnection()
        await bounded(raw.lost)
        assert failed == ([("size" if code == 1009 else "invalid")] if fast else [])
    finally:
        await srv.close()


@given(payload=st.binary(min_size=100, max_size=5000), mask=st.binary(min_size=4, max_size=4))
def test_unmask_without_the_compiled_masker_is_the_same(payload: bytes, mask: bytes) -> None:
    fast = frames.unmask(payload, mask)
    saved = frames._NVX
    frames._NVX = None
    try:
        assert frames.unmask(payload, mask) == fast == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    finally:
        frames._NVX = saved


def test_the_compiled_masker_is_used_when_present() -> None:
    assert frames._NVX is not None  # autobahn's wheels ship it; the tests above use it


def test_the_probe_refuses_an_autobahn_whose_compression_internals_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autobahn.websocket.compress_deflate import PerMessageDeflate
    from autobahn.websocket.protocol import WebSocketProtocol

    assert probe.probe() is True
    monkeypatch.setattr(PerMessageDeflate, "decompress_message_data", lambda self, data: data)  # no limit
    assert probe.probe() is False
    monkeypatch.undo()
    monkeypatch.delattr(WebSocketProtocol, "_max_message_size_exceeded")
    assert probe.probe() is False


@pytest_twisted.ensureDeferred
async def test_a_bad_frame_before_an_incomplete_one_closes_at_once(fast: bool) -> None:
    """Text that is not UTF-8, followed by the start of a frame the fast path would
    wait for: autobahn gets the bad frame now (1007), not once the next one is whole."""
    srv = WSServer()
    try:
        raw = RawClient()
        await raw.connect(srv.server.port)
        raw.write(frame(1, b"ok\xc3") + frame(2, b"x" * 1000)[:50])
        await until(lambda: any(b0 == 0x88 for b0, _ in server_frames(raw.data)))
        (close,) = [p for b0, p in server_frames(raw.data) if b0 == 0x88]
        assert int.from_bytes(close[:2], "big") == 1007
        raw.protocol.transport.abortConnection()
        await bounded(raw.lost)
    finally:
        await srv.close()
