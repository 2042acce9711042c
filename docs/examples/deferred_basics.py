"""aleph_tx.deferred: helpers over plain Twisted Deferreds.

Run it with ``python docs/examples/deferred_basics.py`` (no reactor: a test clock).
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

import aleph_tx.errors
from aleph_tx import deferred as dd


def now(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (raises its error if it failed)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "this Deferred has not fired yet"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


# success / error / to_deferred
assert now(dd.success(42)) == 42
assert now(dd.to_deferred(7)) == 7


async def answer() -> int:
    return 42


assert now(dd.to_deferred(answer())) == 42

# chain: each function gets the previous result; Deferreds and coroutines are awaited.
assert now(dd.chain(1, lambda x: x + 1, lambda x: dd.success(x * 10))) == 20

# catch: the handler receives the exception instance; finally_: runs either way.
cleaned: list[str] = []
d = dd.catch(dd.error(KeyError("k")), KeyError, lambda exc: f"recovered from {exc!r}")
d = dd.finally_(d, lambda: cleaned.append("done"))
assert now(d) == "recovered from KeyError('k')"
assert cleaned == ["done"]

# zip: every result, in argument order.
a: Deferred[int] = Deferred()
b: Deferred[int] = Deferred()
both = dd.zip(a, b)
b.callback(2)
assert not both.called
a.callback(1)
assert now(both) == [1, 2]

# alt: the first to fire wins; the others are cancelled.
slow: Deferred[str] = Deferred()
fast: Deferred[str] = Deferred()
first = dd.alt(slow, fast)
fast.callback("fast")
assert now(first) == "fast"
assert slow.called  # cancelled

# timeout: on a test clock. It fails with aleph_tx.errors.TimeoutError (also the
# builtin TimeoutError), or fires timeout_value if one is given.
clock = Clock()
never: Deferred[None] = Deferred()
d = dd.timeout(never, 5.0, clock=clock)
clock.advance(5.0)
try:
    now(d)
except TimeoutError as exc:
    assert isinstance(exc, aleph_tx.errors.TimeoutError)
else:
    raise AssertionError("timeout should have failed")

d = dd.timeout(Deferred(), 1.0, timeout_value="default", clock=clock)
clock.advance(1.0)
assert now(d) == "default"
assert not clock.getDelayedCalls()

print("deferred_basics: ok")
