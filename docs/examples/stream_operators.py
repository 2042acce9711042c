"""Connecting streams and deriving new ones: connect, map, filter, collect, reduce.

No reactor: each operator moves what it can before the call returns.
Run it with ``python docs/examples/stream_operators.py``.
"""

import operator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from aleph_tx import stream as s


def now(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (raises its error if it failed)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "this Deferred has not fired yet"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


# connect pumps a source into a sink with backpressure; draining the source closes
# the sink (downstream=True, the default).
source = s.from_iterable(range(1, 6))
sink = s.stream()
s.connect(source, sink)
squares = s.map(lambda x: x * x, sink)
even_squares = s.filter(lambda x: x % 2 == 0, squares)
assert now(s.collect(even_squares)) == [4, 16]
assert sink.drained

# map over several sources takes one message from each.
pairs = s.map(lambda a, b: f"{a}{b}", s.from_iterable("abc"), s.from_iterable("123"))
assert now(s.collect(pairs)) == ["a1", "b2", "c3"]

# mapcat emits every item of what f returns.
words = s.mapcat(str.split, s.from_iterable(["to be", "or not"]))
assert now(s.collect(words)) == ["to", "be", "or", "not"]

# reduce and consume.
assert now(s.reduce(operator.add, s.from_iterable([1, 2, 3]))) == 6
assert now(s.reduce(operator.add, s.from_iterable([]), initial=0)) == 0
seen: list[int] = []
assert now(s.consume(seen.append, s.from_iterable([7, 8]))) is True
assert seen == [7, 8]


# async def and `async for`: iterate until the stream is drained.
async def total(source: s.Stream) -> int:
    result = 0
    async for msg in source:
        result += msg
    return result


assert now(Deferred.fromCoroutine(total(s.from_iterable([1, 2, 3])))) == 6


# A function may return a Deferred (or be a coroutine function): results are
# awaited, in order.
async def double(x: int) -> int:
    return 2 * x


doubled = s.map(lambda x: Deferred.fromCoroutine(double(x)), s.from_iterable([1, 2, 3]))
assert now(s.collect(doubled)) == [2, 4, 6]

print("stream_operators: ok")
