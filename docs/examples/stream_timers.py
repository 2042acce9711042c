"""Timers on streams: try_take, try_put and batch, driven by a test clock.

Every timer takes ``clock=``; ``twisted.internet.task.Clock`` makes time explicit,
so this script needs no reactor. Run it with ``python docs/examples/stream_timers.py``.
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
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


clock = Clock()

# try_take: fires timeout_value if nothing arrives in time; the take is withdrawn.
st = s.stream()
d = st.try_take(1.5, timeout_value="nothing yet", clock=clock)
clock.advance(1.0)
assert not d.called
clock.advance(0.5)
assert now(d) == "nothing yet"
assert not clock.getDelayedCalls()  # no timer left behind

# try_put: fires timeout_value (False by default) if not accepted in time, and the
# message is withdrawn: a later take does not see it.
d = st.try_put("late", 2.0, clock=clock)
clock.advance(2.0)
assert now(d) is False
assert st.description()["pending_puts"] == 0

# A take that is answered in time cancels its timer.
d = st.try_take(5.0, clock=clock)
assert now(st.put("on time")) is True
assert now(d) == "on time"
assert not clock.getDelayedCalls()

# batch: lists of up to max_size messages, flushed at least every max_latency.
source = s.stream(buffer_size=10)
batches = s.batch(3, 1.0, source, clock=clock)
for i in range(4):
    source.put(i)
assert now(batches.take()) == [0, 1, 2]  # full batch: at once
first_of_next = batches.take()
assert not first_of_next.called
clock.advance(1.0)  # max_latency flushes the partial batch
assert now(first_of_next) == [3]

print("stream_timers: ok")
