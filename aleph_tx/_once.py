"""Something that happens once, with any number of waiters (a close, a drain, an idle).

``wait()`` gives a new Deferred each time (already fired once it happened), so one
waiter's callbacks never affect another's; ``fire(value)`` fires them all, once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

__all__ = ["Once"]


class Once:
    """An event that happens once; :meth:`wait` for it, :meth:`fire` it."""

    __slots__ = ("_value", "_waiters", "done")

    def __init__(self) -> None:
        self.done = False
        self._value: Any = None
        self._waiters: list[Deferred[Any]] = []

    def wait(self) -> Deferred[Any]:
        """A new Deferred firing with the value once it happened (at once if it has)."""
        if self.done:
            return succeed(self._value)
        d: Deferred[Any] = Deferred()
        self._waiters.append(d)
        return d

    def fire(self, value: Any = None) -> None:
        """It happened: fire every waiter with ``value``. Later calls do nothing."""
        if self.done:
            return
        self.done = True
        self._value = value
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(value)
