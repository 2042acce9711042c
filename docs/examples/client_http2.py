"""HTTP/2 with the client: many requests multiplexed on one TLS connection.

Run it with ``python docs/examples/client_http2.py``: it starts aleph_tx's server
with a self-signed certificate and HTTP/2 on a free port of 127.0.0.1, sends 20
requests at once, and checks that they all went over one HTTP/2 connection.
"""

from typing import Any

from twisted.internet import defer, task

from aleph_tx import deferred as dd
from aleph_tx import http, tls


def handler(req: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "body": f"{req['protocol']} {req['uri']}"}


async def main(reactor: Any) -> None:
    server = http.start_server(
        handler,
        port=0,
        host="127.0.0.1",
        ssl_context=tls.self_signed_context(),
        http_versions=("h2", "http/1.1"),
    )
    pool = http.connection_pool()
    url = f"https://127.0.0.1:{server.port}"
    try:
        options = {"pool": pool, "insecure": True, "http_versions": ("h2", "http/1.1"), "as_": "text"}
        resps = await defer.gatherResults([http.get(f"{url}/{i}", **options) for i in range(20)])
        assert [r["body"] for r in resps] == [f"HTTP/2 /{i}" for i in range(20)]
        assert pool.description()["connections_opened"] == 1
    finally:
        await pool.close()
        await server.close()
    print("client_http2: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(dd.timeout(dd.to_deferred(main(reactor)), 30)))
