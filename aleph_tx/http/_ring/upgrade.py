"""WebSocket options and handshake checks: pure functions, no I/O.

:class:`WSOptions` holds the validated ``**ws_options`` of
:func:`~aleph_tx.http._websocket.websocket_connection` and
:func:`~aleph_tx.http._websocket.websocket_client`; :func:`check_upgrade`
decides whether a request dict is a valid RFC 6455 opening handshake;
:func:`choose_subprotocol` and :func:`check_close` implement the small rules
around them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aleph_tx.errors import WebSocketHandshakeError

__all__ = [
    "DEFAULT_MAX_FRAME_PAYLOAD",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Heartbeats",
    "WSOptions",
    "check_close",
    "check_ping_payload",
    "check_upgrade",
    "choose_subprotocol",
    "parse_ws_url",
    "ws_options",
]

#: Larger frames close the connection with 1009. 64 KiB: what one socket read
#: brings, and what browsers and most servers send as one frame.
DEFAULT_MAX_FRAME_PAYLOAD = 65536
#: Larger messages close the connection with 1009. 1 MiB bounds what one
#: connection can make the server hold while reassembling a message.
DEFAULT_MAX_MESSAGE_SIZE = 1048576

_OPTION_NAMES = (
    "max_frame_payload",
    "max_message_size",
    "heartbeats",
    "subprotocols",
    "compression",
    "clock",
)
_HEARTBEAT_KEYS = ("send_after_idle", "timeout", "payload")


@dataclass(frozen=True)
class Heartbeats:
    """Pings after ``send_after_idle`` seconds without a frame in either direction;
    the connection is dropped (close code 1006) if no pong arrives within ``timeout``.
    """

    send_after_idle: float = 30.0
    timeout: float = 10.0
    payload: bytes = b""


@dataclass(frozen=True)
class WSOptions:
    """Validated WebSocket options (see :doc:`websockets`, the options table).

    ``max_frame_payload``/``max_message_size`` of ``None`` mean no limit; ``clock``
    (an ``IReactorTime``, ``None``: the reactor) runs the heartbeat timers.
    """

    max_frame_payload: int | None = DEFAULT_MAX_FRAME_PAYLOAD
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    heartbeats: Heartbeats | None = None
    subprotocols: tuple[str, ...] | None = None
    compression: bool = False
    clock: Any = None


def _positive_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, not {value!r}")
    return float(value)


def _limit(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 or None, not {value!r}")
    return value


def _heartbeats(value: Any) -> Heartbeats | None:
    if value is None or value is False:
        return None
    if value is True:
        return Heartbeats()
    if isinstance(value, Heartbeats):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"heartbeats must be a dict like {{'send_after_idle': 30, 'timeout': 10}}, not {value!r}"
        )
    unknown = sorted(set(value) - set(_HEARTBEAT_KEYS))
    if unknown:
        raise TypeError(f"unknown heartbeats key(s) {unknown!r} (known: {list(_HEARTBEAT_KEYS)!r})")
    payload = value.get("payload", b"")
    check_ping_payload(payload)
    return Heartbeats(
        _positive_number(value.get("send_after_idle", 30.0), "heartbeats['send_after_idle']"),
        _positive_number(value.get("timeout", 10.0), "heartbeats['timeout']"),
        bytes(payload),
    )


def _subprotocols(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"subprotocols must be a list of str, not {value!r}")
    names = tuple(value)
    for name in names:
        # RFC 6455 §4.1: a subprotocol is a token (RFC 2616 §2.2)
        if (
            not isinstance(name, str)
            or not name
            or any(c in _SEPARATORS or not 32 < ord(c) < 127 for c in name)
        ):
            raise ValueError(f"subprotocol names must be non-empty HTTP tokens, not {name!r}")
    return names


_SEPARATORS = frozenset('()<>@,;:\\"/[]?={} \t')


def ws_options(options: Mapping[str, Any]) -> WSOptions:
    """Validate ``**ws_options``.

    :raises TypeError: for an unknown option name (at once, whatever the state).
    :raises ValueError: for a bad value, naming it.
    """
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown WebSocket option(s) {unknown!r} (known: {list(_OPTION_NAMES)!r})")
    compression = options.get("compression", False)
    if not isinstance(compression, bool):
        raise TypeError(f"compression must be True or False, not {compression!r}")
    return WSOptions(
        max_frame_payload=_limit(
            options.get("max_frame_payload", DEFAULT_MAX_FRAME_PAYLOAD), "max_frame_payload"
        ),
        max_message_size=_limit(
            options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE), "max_message_size"
        ),
        heartbeats=_heartbeats(options.get("heartbeats")),
        subprotocols=_subprotocols(options.get("subprotocols")),
        compression=compression,
        clock=options.get("clock"),
    )


def check_ping_payload(payload: Any) -> None:
    """RFC 6455 §5.5: a control frame carries at most 125 bytes.

    :raises TypeError: for anything but a bytes-like.
    :raises ValueError: for more than 125 bytes.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"a ping payload must be bytes, not {payload!r:.80}")
    if len(payload) > 125:
        raise ValueError(f"a ping payload is at most 125 bytes, not {len(payload)}")


def check_close(code: Any, reason: Any) -> bytes:
    """Validate a close code and reason; return the reason as UTF-8.

    :raises ValueError: for a code outside 1000–4999 (or one RFC 6455 §7.4.1
        forbids on the wire: 1004–1006, 1015), or a reason over 123 bytes.
    :raises TypeError: for a reason that is not ``str``.
    """
    if isinstance(code, bool) or not isinstance(code, int) or not 1000 <= code <= 4999:
        raise ValueError(f"a close code must be an int in 1000-4999, not {code!r}")
    if code in (1004, 1005, 1006, 1015) or 1016 <= code <= 2999:
        raise ValueError(f"close code {code} is reserved and cannot be sent (RFC 6455 §7.4)")
    if not isinstance(reason, str):
        raise TypeError(f"a close reason must be str, not {reason!r:.80}")
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        raise ValueError(f"a close reason is at most 123 bytes of UTF-8, not {len(raw)}")
    return raw


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",")]


def check_upgrade(req: Mapping[str, Any]) -> None:
    """Is ``req`` (a Ring request dict) a valid WebSocket opening handshake?

    RFC 6455 §4.2.1: a GET over HTTP/1.1 with ``Upgrade: websocket``,
    ``Connection: upgrade``, ``Sec-WebSocket-Version: 13`` and a
    ``Sec-WebSocket-Key`` that is 16 bytes in base64.

    :raises WebSocketHandshakeError: naming what is wrong.
    """
    headers = req.get("headers") or {}
    method = req.get("request_method")
    if method != "get":
        raise WebSocketHandshakeError(f"a WebSocket upgrade must be a GET, not {method!r}")
    if req.get("protocol") != "HTTP/1.1":
        raise WebSocketHandshakeError(f"a WebSocket upgrade needs HTTP/1.1, not {req.get('protocol')!r}")
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise WebSocketHandshakeError(f"no 'Upgrade: websocket' header (upgrade: {headers.get('upgrade')!r})")
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise WebSocketHandshakeError(
            f"no 'Connection: upgrade' header (connection: {headers.get('connection')!r})"
        )
    if "host" not in headers:
        raise WebSocketHandshakeError("no Host header")
    version = headers.get("sec-websocket-version")
    if version is None or version.strip() != "13":
        raise WebSocketHandshakeError(f"Sec-WebSocket-Version must be 13, not {version!r}")
    key = headers.get("sec-websocket-key")
    try:
        ok = key is not None and len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise WebSocketHandshakeError(f"bad Sec-WebSocket-Key {key!r} (must be 16 bytes in base64)")
    offered = headers.get("sec-websocket-protocol")
    if offered is not None:
        names = [p.strip() for p in offered.split(",")]
        if len(set(names)) != len(names) or "" in names:
            raise WebSocketHandshakeError(f"bad Sec-WebSocket-Protocol {offered!r}")


def choose_subprotocol(offered: Iterable[str], accepted: Iterable[str] | None) -> str | None:
    """The first of the client's ``offered`` subprotocols the server ``accepted``
    (the client's order of preference, as Netty does), or ``None``."""
    if not accepted:
        return None
    ours = set(accepted)
    for name in offered:
        if name in ours:
            return name
    return None


def parse_ws_url(url: str) -> tuple[bool, str, int, str]:
    """``(secure, host, port, resource)`` of a ``ws://`` or ``wss://`` URL.

    :raises ValueError: for another scheme, no host, a fragment or a bad port.
    """
    if not isinstance(url, str):
        raise TypeError(f"a WebSocket URL must be str, not {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"a WebSocket URL must start with ws:// or wss://, not {url!r}")
    if parts.fragment:
        raise ValueError(f"a WebSocket URL cannot have a fragment: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in WebSocket URL {url!r}")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad port in WebSocket URL {url!r}") from e
    secure = scheme == "wss"
    if port is None:
        port = 443 if secure else 80
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return secure, host, port, resource
