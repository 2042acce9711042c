"""Streaming with the HTTP client: a download read as a stream, an upload from a stream.

Run it with ``python docs/examples/client_streaming.py``. With ``as_="stream"`` the
body is a Stream of ``bytes`` chunks: the client stops reading the socket while
nobody takes, so a slow reader never makes memory grow. A Stream (or any iterable,
or a file) as the request ``body`` is sent chunked, taken only as fast as the
connection accepts it.
"""

from typing import Any

from twisted.internet import task

from aleph_tx import byte_streams as bs
from aleph_tx import deferred as dd
from aleph_tx import http
from aleph_tx import stream as s

SIZE = 4 * 1024 * 1024


async def handler(req: dict[str, Any]) -> dict[str, Any]:
    if req["uri"] == "/download":
        # 4 MiB in 64 KiB chunks, produced only as fast as the client reads
        chunks = (b"x" * 65536 for _ in range(SIZE // 65536))
        return {"status": 200, "body": chunks}
    n = 0
    async for chunk in req["body"]:
        n += len(chunk)
    return {"status": 200, "body": str(n)}


async def main(reactor: Any) -> None:
    server = http.start_server(handler, port=0, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    try:
        # Download: iterate the body stream.
        resp = await http.get(url + "/download", as_="stream")
        total = 0
        async for chunk in resp["body"]:
            total += len(chunk)
        assert total == SIZE

        # Upload: put chunks into a stream while the request sends them.
        body = s.stream()

        async def produce() -> None:
            for i in range(100):
                await body.put(b"%d," % i)  # waits until the request takes it
            body.close()

        producing = dd.to_deferred(produce())
        resp = await http.post(url + "/upload", body=body, as_="text")
        await producing
        assert resp["body"] == str(len(b"".join(b"%d," % i for i in range(100))))

        # A stream body can be read with byte_streams too.
        resp = await http.get(url + "/download", as_="stream")
        data = await bs.collect_bytes(resp["body"])
        assert len(data) == SIZE
    finally:
        await server.close()
    print("client_streaming: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(dd.timeout(dd.to_deferred(main(reactor)), 30)))
