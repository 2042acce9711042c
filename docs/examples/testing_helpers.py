"""aleph_tx.testing: test a handler and a stream of your own, with no sockets.

Run it with ``python docs/examples/testing_helpers.py``. Everything here fires
synchronously, so no reactor runs: the same calls work in a
``twisted.trial.unittest.SynchronousTestCase`` or a plain pytest test.
"""

from typing import Any

from twisted.internet.defer import Deferred

from aleph_tx import byte_streams as bs
from aleph_tx import stream as s
from aleph_tx import testing


def result(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "this Deferred has not fired yet"
    return box[0]


# A Ring handler, run through the real HTTP/1.1 protocol over a memory transport.
def greet(req: dict[str, Any]) -> dict[str, Any]:
    name = req["query_string"] or "world"
    return {"status": 200, "headers": {"content-type": "text/plain"}, "body": f"hello {name}"}


resp = result(testing.request(greet, "GET", "/greet?ada"))
assert resp["status"] == 200
assert resp["body"] == b"hello ada"
assert resp["headers"]["content-length"] == "9"

# stream_pair(): what is put into one end is taken from the other, both ways.
a, b = testing.stream_pair()
a.put(b"ping")
assert result(b.take()) == b"ping"
b.put(b"pong")
assert result(a.take()) == b"pong"
a.close()  # closes b's input: b drains
assert result(b.take("end")) == "end"


# check_stream(): the stream contract as a suite. A stream of your own (here, one
# that counts the bytes it carries) passes it when every rule holds...
class CountingStream(s.Stream):
    def __init__(self) -> None:
        super().__init__(buffer_size=8)
        self.bytes_seen = 0

    def put(self, msg: Any) -> Deferred[bool]:
        if msg is not None:
            self.bytes_seen += len(msg)
        return super().put(msg)


def counting_pair() -> tuple[s.Stream, s.Stream]:
    st = CountingStream()
    return st, st


assert result(testing.check_stream(counting_pair)) is None


# ...and a broken one fails with an AssertionError naming the first rule broken.
def echoing_pair() -> tuple[s.Stream, s.Stream]:
    st = s.Stream(buffer_size=100, xform=lambda chunk: [chunk, chunk])  # says it twice
    return st, st


failure = result(testing.check_stream(echoing_pair))
assert failure.check(AssertionError)
assert "exactly once" in str(failure.value), failure.value

assert result(bs.collect_bytes(s.from_iterable([b"a", b"b"]))) == b"ab"
print("testing_helpers: ok")
