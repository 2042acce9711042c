"""HTTP/3 with the client: discovered through ``alt-svc``, or spoken from the start.

Run it with ``python docs/examples/client_http3.py`` (needs ``pip install
'aleph_tx[http3]'``): it starts aleph_tx's server with a self-signed certificate
and HTTP/1.1, HTTP/2 and HTTP/3 on a free port of 127.0.0.1. A pool that offers
``"h3"`` beside TCP sends the first request over TCP, learns from the response's
``alt-svc`` that HTTP/3 is there, and sends the next ones over one QUIC connection;
``http_versions=("h3",)`` speaks HTTP/3 from the first request.
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
        http_versions=("http/1.1", "h2", "h3"),
    )
    pool = http.connection_pool(http_versions=("h2", "http/1.1", "h3"))
    url = f"https://127.0.0.1:{server.port}"
    try:
        first = await http.get(f"{url}/first", pool=pool, insecure=True, as_="text")
        assert first["body"] == "HTTP/2 /first"
        assert first["headers"]["alt-svc"] == f'h3=":{server.port}"; ma=86400'
        # the pool remembers the alternative for ma seconds: HTTP/3 from now on
        resps = await defer.gatherResults(
            [http.get(f"{url}/{i}", pool=pool, insecure=True, as_="text") for i in range(20)]
        )
        assert [r["body"] for r in resps] == [f"HTTP/3 /{i}" for i in range(20)]
        assert pool.description()["h3_connections"] == 1

        only = await http.get(f"{url}/only", pool=pool, insecure=True, http_versions=("h3",), as_="text")
        assert only["body"] == "HTTP/3 /only"
    finally:
        await pool.close()
        await server.close()
    print("client_http3: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(dd.timeout(dd.to_deferred(main(reactor)), 30)))
