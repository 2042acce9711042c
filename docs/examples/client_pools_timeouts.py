"""Connection pools, timeouts and cancellation with the HTTP client.

Run it with ``python docs/examples/client_pools_timeouts.py``. Requests share the
default pool unless given ``pool=``; each of the four timeouts fails with its own
class (all are ``aleph_tx.errors.TimeoutError`` and the builtin ``TimeoutError``).
"""

from typing import Any

from twisted.internet import defer, task

from aleph_tx import deferred as dd
from aleph_tx import http
from aleph_tx.errors import PoolTimeout, RequestTimeout, TimeoutError


async def main(reactor: Any) -> None:
    def handler(req: dict[str, Any]) -> Any:
        if req["uri"] == "/slow":  # answers after 2 seconds
            return task.deferLater(reactor, 2, lambda: {"body": "late"})
        return {"body": "fast"}

    server = http.start_server(handler, port=0, host="127.0.0.1", shutdown_timeout=0.5)
    url = f"http://127.0.0.1:{server.port}"
    # At most 2 connections to one host; idle ones are closed after 30 s.
    pool = http.connection_pool(connections_per_host=2, idle_timeout=30)
    try:
        # Many requests, 2 connections: the others wait for a free one.
        resps = await defer.gatherResults([http.get(url + "/", pool=pool) for _ in range(10)])
        assert all(r["body"] == b"fast" for r in resps)

        # No response headers within request_timeout: RequestTimeout.
        try:
            await http.get(url + "/slow", pool=pool, request_timeout=0.2)
            raise AssertionError("expected RequestTimeout")
        except RequestTimeout:
            pass

        # Both connections busy, and the pool_timeout passes: PoolTimeout.
        busy = [http.get(url + "/slow", pool=pool) for _ in range(2)]
        try:
            await http.get(url + "/", pool=pool, pool_timeout=0.2)
            raise AssertionError("expected PoolTimeout")
        except TimeoutError as e:  # the common base class
            assert isinstance(e, PoolTimeout)

        # Cancelling a request aborts its connection and frees its slot at once.
        for d in busy:
            d.cancel()
        await defer.DeferredList(busy, consumeErrors=True)
        assert pool.description()["active"] == 0
        resp = await http.get(url + "/", pool=pool, pool_timeout=1)
        assert resp["body"] == b"fast"
    finally:
        await pool.close()
        await server.close()
    print("client_pools_timeouts: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(dd.timeout(dd.to_deferred(main(reactor)), 30)))
