"""Incoming frames, byte for byte: the fast path for common frames and autobahn's
parser for the rest must deliver the same messages and close codes, however the
bytes are split across reads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from _ws_helpers import AsyncioThread, RawClient, WebsocketsEchoServer, WSServer, bounded, frame, until
from hypothesis import given
from hypothesis import strategies as st

from aleph_tx.http._websocket import frames, glue, probe
from aleph_tx.http._websocket.api import websocket_client
from aleph_tx.http._websocket.frames import unmask


@given(payload=st.binary(max_size=3000), mask=st.binary(min_size=4, max_size=4))
def test_unmask_is_rfc6455_xor(payload: bytes, mask: bytes) -> None:
    assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.fixture
def server() -> Iterator[WSServer]:
    srv = WSServer(max_frame_payload=2**20)  # no 1009 for the 70000-byte frame
    yield srv
    pytest_twisted.blockon(srv.close())


def parse_server_frames(data: bytes) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """Unmasked frames (opcode, fin, payload) and the bytes of an incomplete last one."""
    out = []
    while len(data) >= 2:
        b0, b1 = data[0], data[1]
        n, i = b1 & 0x7F, 2
        if n == 126:
            n, i = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, i = int.from_bytes(data[2:10], "big"), 10
        if len(data) < i + n:
            break
        out.append((b0 & 0x0F, bool(b0 & 0x80), data[i : i + n]))
        data = data[i + n :]
    return out, data


SIZES = [0, 1, 125, 126, 1000, 65535, 65536, 70000]


def _script(sizes: list[int]) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Frames to send and the (opcode, payload) messages the echo must answer, in order."""
    sent, expected = [], []
    for n in sizes:
        text = ("é" * n)[: n // 2] if n else ""
        sent.append(frame(1, text.encode()))
        expected.append((1, text.encode()))
        binary = bytes(i % 251 for i in range(n))
        sent.append(frame(2, binary, mask=bytes([n % 256, 7, 0, 255])))
        expected.append((2, binary))
    # a fragmented message with a ping between its fragments (autobahn's path)
    sent.append(frame(1, b"frag", fin=False) + frame(9, b"ping!") + frame(0, b"mented"))
    expected.append((10, b"ping!"))  # the pong comes first
    expected.append((1, b"fragmented"))
    sent.append(frame(2, b"after"))
    expected.append((2, b"after"))
    return b"".join(sent), expected


def test_probe_accepts_the_installed_autobahn() -> None:
    assert probe.probe() is True and probe.FAST is True


def test_probe_refuses_an_autobahn_whose_internals_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    from autobahn.twisted.websocket import WebSocketServerProtocol

    def send_data(self: Any, data: bytes, flush: bool = False) -> None:  # a changed signature
        raise AssertionError("not called by the probe")

    monkeypatch.setattr(WebSocketServerProtocol, "sendData", send_data)
    assert probe.probe() is False
    monkeypatch.undo()
    monkeypatch.setattr(WebSocketServerProtocol, "_closeConnection", None)  # gone
    assert probe.probe() is False


@pytest.fixture(params=[True, False], ids=["fast-path", "autobahn-path"])
def fast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run with the fast path, and with autobahn's path as when the probe fails."""
    monkeypatch.setattr(glue, "FAST", request.param)
    return bool(request.param)


@pytest.mark.parametrize(
    ("step", "sizes"),
    [(0, SIZES), (1, SIZES[:5]), (7, SIZES), (4096, SIZES)],
    ids=["one-write", "byte-by-byte", "7-bytes", "4-KiB"],
)
@pytest_twisted.ensureDeferred
async def test_echo_of_every_size_however_the_bytes_arrive(
    server: WSServer, step: int, sizes: list[int], fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    original = frames.FastFrames._fast_frames

    def counting(self: Any) -> Any:
        more = original(self)
        if more is not None:
            parsed.append(1)
        return more

    monkeypatch.setattr(frames.FastFrames, "_fast_frames", counting)
    data, expected = _script(sizes)
    raw = RawClient()
    if step == 0:
        await raw.connect(server.server.port, extra=data)
    else:
        await raw.connect(server.server.port)
        for i in range(0, len(data), step):
            raw.write(data[i : i + step])

    def echoed() -> list[tuple[int, bytes]]:
        frames, _ = parse_server_frames(raw.data)
        return [(op, payload) for op, _fin, payload in frames]

    await until(lambda: len(echoed()) >= len(expected), seconds=10)
    assert echoed() == expected
    # the fast path took the common frames, or was not used at all
    assert server.conns[0]._ws._fast_in == (min(frames.FAST_MAX, 2**20) if fast else 0)
    assert bool(parsed) is fast
    raw.write(frame(8, (1000).to_bytes(2, "big")))
    await bounded(raw.lost)
    assert server.conns[0].description()["close_code"] == 1000


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        # a 5-byte payload with a 16-bit length: not the minimal encoding
        (bytes([0x81, 0x80 | 126, 0, 5]) + b"\0\0\0\0" + b"hello", 1002),
        (bytes([0x81, 5]) + b"hello", 1002),  # unmasked from a client
        (bytes([0xC1]) + frame(1, b"hello")[1:], 1002),  # RSV1 without an extension
        (frame(2, b"x" * 101), 1009),  # over max_frame_payload=100
        (frame(1, b"ok\xc3"), 1007),  # text ending inside a character
    ],
    ids=["non-minimal-length", "unmasked", "rsv1", "frame-too-big", "bad-utf8"],
)
@pytest_twisted.ensureDeferred
async def test_frames_the_fast_path_leaves_to_autobahn_close_with_their_code(bad: bytes, code: int) -> None:
    srv = WSServer(max_frame_payload=100)
    try:
        raw = RawClient()
        await raw.connect(srv.server.port)
        raw.write(frame(1, b"fine") + bad + frame(1, b"never delivered"))
        await until(lambda: b"\x88" in raw.data)
        frames, _ = parse_server_frames(raw.data)
        assert frames[0] == (1, True, b"fine")
        assert frames[1][0] == 8 and int.from_bytes(frames[1][2][:2], "big") == code
        raw.write(frame(8, code.to_bytes(2, "big")))
        await bounded(raw.lost)
        desc: dict[str, Any] = srv.conns[0].description()
        assert desc["close_code"] == code
    finally:
        await srv.close()


@pytest_twisted.ensureDeferred
async def test_our_client_masks_every_size_as_the_websockets_library_expects() -> None:
    aio = AsyncioThread()
    server = WebsocketsEchoServer(aio, max_size=2**20)
    try:
        conn = await bounded(websocket_client(f"ws://127.0.0.1:{server.port}/", max_frame_payload=2**20))
        for n in SIZES:
            for msg in (("ü" * n)[: n // 2], bytes(i % 253 for i in range(n))):
                await conn.put(msg)
                assert await bounded(conn.take()) == msg
        conn.close()
        await until(lambda: server.closes == [(1000, "")])
    finally:
        server.close()
        aio.stop()
