"""Quickstart: a stream pipeline, read with ``async for``.

Run it with ``python docs/examples/quickstart_streams.py``. Streams never use the
reactor, so this runs (and finishes) without one.
"""

from twisted.internet.defer import Deferred

from aleph_tx import stream as s


async def main() -> list[str]:
    words = s.stream(buffer_size=8)
    for word in ["streams", "have", "backpressure"]:
        await words.put(word)  # accepted at once: there is room in the buffer
    words.close()

    shouted = s.map(str.upper, words)
    return [word async for word in shouted]


result = Deferred.fromCoroutine(main())
assert result.called, "nothing here waits on the reactor"
out: list[list[str]] = []
result.addCallback(out.append)
assert out == [["STREAMS", "HAVE", "BACKPRESSURE"]], out
print("quickstart_streams: ok")
