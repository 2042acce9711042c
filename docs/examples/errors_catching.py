"""One exception hierarchy: catch aleph_tx errors by their class or their builtin.

Run it with ``python docs/examples/errors_catching.py`` (no reactor: a test clock).
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from aleph_tx import deferred as dd
from aleph_tx import errors
from aleph_tx import stream as s

# Every error derives from AlephError and, where one fits, from a builtin.
assert issubclass(errors.TimeoutError, TimeoutError)
assert issubclass(errors.ReadTimeout, errors.TimeoutError)
assert issubclass(errors.WebSocketHandshakeError, ValueError)
assert all(
    issubclass(cls, errors.AlephError)
    for cls in (errors.BackpressureError, errors.ProtocolError, errors.ConnectionLostError)
)

# A Deferred reports failures through itself: catch them with an errback, or with
# try/except around `await` in an async def.
clock = Clock()


async def fetch_with_deadline() -> str:
    try:
        answer: str = await dd.timeout(Deferred(), 2.0, clock=clock)
        return answer
    except TimeoutError:  # also catches errors.TimeoutError
        return "gave up"


d = Deferred.fromCoroutine(fetch_with_deadline())
clock.advance(2.0)
out: list[str] = []
d.addCallback(out.append)
assert out == ["gave up"]

# More than 16384 pending puts on one stream is a bug in the caller: the extra put
# fails with BackpressureError (through its Deferred: nothing raises).
st = s.stream()
pending = [st.put(i) for i in range(16384)]
extra = st.put("one too many")
failures: list[BaseException | None] = []


def record(failure: Failure) -> None:
    failures.append(failure.value)


extra.addErrback(record)
assert isinstance(failures[0], errors.BackpressureError)
assert not any(d.called for d in pending)

print("errors_catching: ok")
