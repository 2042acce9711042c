"""Calls from a worker thread into the reactor that never wait past its shutdown.

``blockingCallFromThread`` waits forever once the reactor has stopped running its
calls; a worker thread waiting there (a WSGI app writing a body, a blocking read of
``wsgi.input``) then keeps the thread pool, and the process, from stopping.
:func:`call_on_reactor` gives up with :class:`~aleph_tx.errors.ConnectionLostError`
as soon as the reactor begins to shut down (:func:`watch_shutdown`, registered on
the reactor thread, notes it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure

from aleph_tx.errors import ConnectionLostError

__all__ = ["call_on_reactor", "watch_shutdown"]

#: id(reactor) -> set once that reactor begins to shut down
_STOPPING: dict[int, threading.Event] = {}

#: How often a waiting worker looks whether the reactor is stopping (seconds).
_POLL = 0.1


def watch_shutdown(reactor: Any) -> None:
    """Note when ``reactor`` begins to shut down (call on the reactor thread; idempotent)."""
    key = id(reactor)
    if key not in _STOPPING:
        event = threading.Event()
        _STOPPING[key] = event
        reactor.addSystemEventTrigger("before", "shutdown", event.set)


def call_on_reactor(reactor: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on the reactor thread, waiting for its (Deferred's) result.

    :raises ConnectionLostError: if the reactor is shutting down (then ``fn`` may
        not have run).
    """
    stopping = _STOPPING.get(id(reactor))
    if stopping is None:
        return blockingCallFromThread(reactor, fn, *args)
    if stopping.is_set():
        raise ConnectionLostError("the server is shutting down")
    box: queue.Queue[Any] = queue.Queue()
    reactor.callFromThread(lambda: maybeDeferred(fn, *args).addBoth(box.put))
    while True:
        try:
            result = box.get(timeout=_POLL)
        except queue.Empty:
            if stopping.is_set():
                raise ConnectionLostError("the server is shutting down") from None
            continue
        if isinstance(result, Failure):
            result.raiseException()
        return result
