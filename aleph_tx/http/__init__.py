"""aleph_tx.http: Ring handlers on an HTTP/1.1 (and HTTP/2) server, a clj-http style
client, and WebSockets as duplex streams (public surface: re-exports only)."""

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
