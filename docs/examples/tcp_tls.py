"""TLS: the echo server over TLS with a self-signed certificate, and a client that trusts it.

Run it with ``python docs/examples/tcp_tls.py``.
"""

from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from aleph_tx import stream as s
from aleph_tx import tcp, tls


async def main(reactor: Any) -> None:
    server_ctx = tls.self_signed_context("localhost")  # a fresh key and certificate
    sessions = []

    def echo(conn: Any, info: dict[str, Any]) -> None:
        sessions.append(info["ssl_session"])  # called after the handshake
        s.connect(conn, conn)

    server = tcp.start_server(echo, host="127.0.0.1", ssl_context=server_ctx)

    # Trust exactly that certificate; the host name is checked against it.
    client_ctx = tls.client_context(trust_roots=server_ctx.certificate_pem)
    conn = await tcp.client("localhost", server.port, ssl_context=client_ctx)
    await conn.put(b"secret")
    assert await conn.take() == b"secret"
    assert sessions[0] is not None

    conn.close()
    await server.close()
    print("tcp_tls: ok")


task.react(lambda reactor: ensureDeferred(main(reactor)).addTimeout(20, reactor))
