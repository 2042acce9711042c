"""WebSockets: any handler's request as a duplex stream, and a client.

Public names (re-exported by :mod:`aleph_tx.http`): :func:`websocket_connection`,
:func:`websocket_client`, :func:`websocket_ping`, :func:`websocket_close`.

The frames are autobahn's (its Twisted ``WebSocketServerProtocol`` and
``WebSocketClientProtocol``); :mod:`.glue` turns them into a
:class:`~aleph_tx.http._websocket.glue.WebSocketStream` with backpressure both
ways; :mod:`.options` validates options and the opening handshake.

Server hand-off (docs/internals.rst, "The WebSocket hand-off"): the HTTP/1.1 protocol gives an ``Upgrade``
request a dict with an ``upgrade`` attribute (``_server.h1.UpgradeHandle``; under
``to_resource``, ``_server.web.WebUpgradeHandle``);
:func:`websocket_connection` checks the handshake, then calls
``req.upgrade.hand_off(protocol)``, which swaps the protocol in, replays the
request head and every byte read after it, and resumes reading.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.python.failure import Failure

from aleph_tx.errors import ConnectionLostError
from aleph_tx.http._ring.upgrade import (
    check_close,
    check_ping_payload,
    check_upgrade,
    parse_ws_url,
    ws_options,
)
from aleph_tx.http._websocket.glue import (
    ClientProtocol,
    ServerProtocol,
    WebSocketStream,
    client_factory,
    server_factory,
)
from aleph_tx.stream import Stream

__all__ = [
    "WebSocketStream",
    "websocket_client",
    "websocket_close",
    "websocket_connection",
    "websocket_ping",
]


def websocket_connection(req: dict[str, Any], **options: Any) -> Deferred[Stream]:
    """Upgrade the connection of ``req`` to a WebSocket; callable from any handler.

    :param req: the request dict the handler got.
    :param options: ``max_frame_payload`` (65536), ``max_message_size`` (1 MiB),
        ``heartbeats`` (``None`` or ``{"send_after_idle": 30, "timeout": 10}``),
        ``subprotocols`` (names accepted; the client's first accepted one is
        chosen), ``compression`` (``False``; permessage-deflate), ``clock``
        (heartbeat timers; ``None``: the reactor).
    :returns: fires with the connection's duplex stream once the 101 is sent; fails
        with :class:`~aleph_tx.errors.WebSocketHandshakeError` if ``req`` is not a
        valid upgrade (a handler that lets it escape answers 400), with
        :class:`~aleph_tx.errors.ConnectionLostError` if the client went away, with
        :class:`NotImplementedError` if the request came through a front that cannot
        hand its connection over (HTTP/2, ``testing.request``).
        After the upgrade the handler's return value is ignored.
    :raises TypeError: at once, for an unknown option name.
    :raises ValueError: at once, for a bad option value.
    """
    opts = ws_options(options)
    try:
        check_upgrade(req)
    except Exception as e:
        return fail(e)
    handle = getattr(req, "upgrade", None)
    if handle is None:
        return fail(
            NotImplementedError(
                "this request's connection cannot be handed over: WebSocket upgrades work on HTTP/1.1 "
                "(http.start_server or to_resource), not on HTTP/2 or through testing.request"
            )
        )
    proto = ServerProtocol(opts)
    proto.factory = server_factory()
    try:
        handle.hand_off(proto)
    except NotImplementedError as e:
        return fail(e)
    except RuntimeError as e:
        return fail(ConnectionLostError(f"cannot upgrade: {e}", e))
    # hand_off resumes reading once the replayed bytes are in; messages already
    # received may be waiting for a take: then keep the transport paused.
    receiver = getattr(proto, "receiver", None)
    if receiver is not None and receiver.paused and proto.transport is not None:
        proto.transport.pauseProducing()
    return proto.opened  # type: ignore[return-value]


def websocket_client(
    url: str,
    headers: dict[str, str] | None = None,
    subprotocols: list[str] | tuple[str, ...] | None = None,
    ssl_context: Any = None,
    insecure: bool = False,
    reactor: Any = None,
    **options: Any,
) -> Deferred[Stream]:
    """Connect to a WebSocket server.

    :param url: ``ws://host[:port]/path?query`` or ``wss://...``.
    :param headers: extra request headers (``Origin``, ``Authorization``, ...).
    :param subprotocols: names offered, in order of preference; the chosen one is
        ``description()["subprotocol"]``.
    :param ssl_context: a :func:`aleph_tx.tls.client_context` for ``wss://``
        (``None``: the platform's trust roots); ``insecure``: no verification.
    :param reactor: the reactor to connect with (``None``: the global one).
    :param options: the ws options of :func:`websocket_connection` (``subprotocols``
        is the argument above).
    :returns: fires with the connection's duplex stream after the handshake; fails
        with :class:`~aleph_tx.errors.WebSocketHandshakeError` if the server refused
        the upgrade, or with the connection error. Cancelling it aborts the attempt.
    :raises TypeError: at once, for an unknown option name.
    :raises ValueError: at once, for a bad URL or option value.
    """
    if headers is not None and not isinstance(headers, dict):
        raise TypeError(f"headers must be a dict, not {headers!r}")
    opts = ws_options({**options, "subprotocols": subprotocols})
    secure, host, port, _resource = parse_ws_url(url)
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    endpoint: Any = HostnameEndpoint(reactor, host, port)
    if secure:
        from aleph_tx.tls import client_creator

        endpoint = wrapClientTLS(client_creator(host, ssl_context, insecure), endpoint)
    elif ssl_context is not None or insecure:
        raise ValueError(f"ssl_context and insecure are for wss:// URLs, not {url!r}")
    factory = client_factory(url, headers, opts.subprotocols, reactor)
    proto = ClientProtocol(opts)
    proto.factory = factory

    connecting: Deferred[Any] | None = None

    def cancel(_: Deferred[Stream]) -> None:
        if connecting is not None and not connecting.called:
            connecting.cancel()
        elif proto.transport is not None:
            proto.transport.abortConnection()

    result: Deferred[Stream] = Deferred(cancel)

    def connected(_: Any) -> Deferred[Any]:
        return proto.opened

    def done(value: Any) -> None:
        if not result.called:
            result.callback(value)
        elif isinstance(value, Stream):
            value.close()  # cancelled in the meantime

    def failed(f: Failure) -> None:
        if not result.called:
            result.errback(f)

    connecting = connectProtocol(endpoint, proto)
    connecting.addCallback(connected).addCallbacks(done, failed)
    return result


def _glue(conn: Any, what: str) -> Any:
    ws = getattr(conn, "_ws", None) if isinstance(conn, WebSocketStream) else None
    if ws is None:
        raise TypeError(f"{what} needs a WebSocket connection stream, not {conn!r}")
    return ws


def websocket_ping(conn: Stream, payload: bytes = b"") -> Deferred[bool]:
    """Send a ping on ``conn``.

    :returns: fires ``True`` when a pong arrives, ``False`` if the connection
        closes first (or was already closing).
    :raises TypeError: at once, if ``conn`` is not a WebSocket stream or
        ``payload`` is not bytes-like.
    :raises ValueError: at once, for a payload over 125 bytes (RFC 6455 §5.5).
    """
    ws = _glue(conn, "websocket_ping")
    check_ping_payload(payload)
    return ws.ping(bytes(payload))  # type: ignore[no-any-return]


def websocket_close(conn: Stream, code: int = 1000, reason: str = "") -> Deferred[bool]:
    """Close ``conn`` with ``code`` and ``reason`` after what was put is sent.

    :returns: fires ``True`` once the connection is closed, for the call that
        started the close; ``False`` at once if it was already closing or closed.
        The stream is closed (later puts fire ``False``); ``description()`` holds
        ``close_code`` and ``close_reason``.
    :raises ValueError: at once, for a code outside 1000–4999 (or one reserved by
        RFC 6455 §7.4), or a reason over 123 bytes of UTF-8.
    :raises TypeError: at once, if ``conn`` is not a WebSocket stream.
    """
    ws = _glue(conn, "websocket_close")
    check_close(code, reason)
    if conn.closed:
        return succeed(False)
    return ws.start_close(code, reason)  # type: ignore[no-any-return]
