"""aleph_tx.http: Ring handlers on an HTTP/1.1 (and HTTP/2, HTTP/3) server, a clj-http
style client, and WebSockets as duplex streams (public surface: re-exports only)."""

import importlib
from typing import TYPE_CHECKING, Any

from aleph_tx.errors import (
    ClientResponseError,
    ConnectionLostError,
    ConnectionTimeout,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RedirectError,
    RequestTimeout,
    WebSocketHandshakeError,
)

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and readers
    from aleph_tx._server import Server
    from aleph_tx.http._client.api import delete, get, head, options, patch, post, put, request
    from aleph_tx.http._client.pool import ConnectionPool, connection_pool
    from aleph_tx.http._server.serve import start_server
    from aleph_tx.http._server.sse import sse
    from aleph_tx.http._server.web import make_site, to_resource
    from aleph_tx.http._server.wsgi import wrap_wsgi
    from aleph_tx.http._websocket.api import (
        websocket_client,
        websocket_close,
        websocket_connection,
        websocket_ping,
    )

#: Where each name lives: imported on first use, so a server loads neither the
#: client nor WebSockets nor twisted.web until it needs them (a smaller process).
_LAZY = {
    **dict.fromkeys(
        ("delete", "get", "head", "options", "patch", "post", "put", "request"), "aleph_tx.http._client.api"
    ),
    **dict.fromkeys(("ConnectionPool", "connection_pool"), "aleph_tx.http._client.pool"),
    "Server": "aleph_tx._server",
    "start_server": "aleph_tx.http._server.serve",
    "sse": "aleph_tx.http._server.sse",
    **dict.fromkeys(("make_site", "to_resource"), "aleph_tx.http._server.web"),
    "wrap_wsgi": "aleph_tx.http._server.wsgi",
    **dict.fromkeys(
        ("websocket_client", "websocket_close", "websocket_connection", "websocket_ping"),
        "aleph_tx.http._websocket.api",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ClientResponseError",
    "ConnectionLostError",
    "ConnectionPool",
    "ConnectionTimeout",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RedirectError",
    "RequestTimeout",
    "Server",
    "WebSocketHandshakeError",
    "connection_pool",
    "delete",
    "get",
    "head",
    "make_site",
    "options",
    "patch",
    "post",
    "put",
    "request",
    "sse",
    "start_server",
    "to_resource",
    "websocket_client",
    "websocket_close",
    "websocket_connection",
    "websocket_ping",
    "wrap_wsgi",
]
