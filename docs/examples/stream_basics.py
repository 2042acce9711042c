"""Streams without a reactor: put, take, buffers, close and drain.

A put or take that can complete fires its Deferred before the call returns, so this
script needs no reactor. Run it with ``python docs/examples/stream_basics.py``.
"""

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


# Unbuffered (the default): a put waits until a take receives the message.
st = s.stream()
put = st.put("hello")
assert not put.called
assert now(st.take()) == "hello"
assert now(put) is True

# Buffered: up to buffer_size messages are accepted at once; then puts wait.
st = s.stream(buffer_size=2)
assert now(st.put(1)) is True
assert now(st.put(2)) is True
third = st.put(3)
assert not third.called  # backpressure: the buffer is full
assert now(st.take()) == 1
assert now(third) is True  # the take made room

# Close: no more puts, but what was accepted can still be taken, in order.
drained: list[str] = []
st.on_drained(lambda: drained.append("drained"))
st.close()
assert now(st.put(4)) is False
assert st.closed
assert not st.drained
assert now(st.take()) == 2
assert now(st.take()) == 3
assert now(st.take("the end")) == "the end"  # drained: take fires its default
assert st.drained
assert drained == ["drained"]

# description() is a snapshot of plain values.
info = s.stream(buffer_size=4).description()
assert info["buffer_size"] == 4
assert info["buffer_count"] == 0
assert info["closed"] is False

# None is not a message: a put of None is wrong whatever the state, so it raises.
try:
    s.stream().put(None)
except ValueError:
    pass
else:
    raise AssertionError("put(None) should raise ValueError")

print("stream_basics: ok")
