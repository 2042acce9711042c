"""aleph_tx.http: Ring handlers on an HTTP/1.1 server (public surface: re-exports only)."""

from aleph_tx.errors import ClientResponseError, ProtocolError, RedirectError, WebSocketHandshakeError
from aleph_tx.http._resource import to_resource
from aleph_tx.http._serve import start_server
from aleph_tx.http._sse import sse
from aleph_tx.http._wsgi import wrap_wsgi

__all__ = [
    "ClientResponseError",
    "ProtocolError",
    "RedirectError",
    "WebSocketHandshakeError",
    "sse",
    "start_server",
    "to_resource",
    "wrap_wsgi",
]
