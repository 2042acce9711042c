"""Time, written once: the reactor lookup, one-shot timeouts and restartable timers.

Every timer of aleph_tx goes through here (the contract: every timer takes an optional
``clock``; ``None`` is the global reactor, looked up when the timer is armed; once
the result is in, the timer is cancelled, so no delayed call is left behind).

- :func:`get_reactor` / :func:`get_clock`: the argument, else the global reactor.
- :func:`arm_timeout`: call ``expire()`` after ``seconds`` unless a Deferred fired
  first; the timer is cancelled when it fires.
- :class:`Timer`: a restartable timer (read stalls, heartbeats).
- :class:`Deadline`: a timer restarted on every request or read, cheaply: a restart
  only notes the time; the one delayed call checks it when it fires (idle and
  header timeouts on the per-request hot path).

Float time is inexact (docs/internals.rst, "Time: deadlines on float clocks"):
ten steps of 0.1 add up to 0.9999999999999999, so a timer armed at 0.7 for 0.3
(due at 1.0) would fire a step late under :class:`twisted.internet.task.Clock`, and
a recurring timer re-checking its condition can find it an ulp short and re-arm at
the same instant forever. Every timer is therefore armed :data:`TOLERANCE` early
(:func:`early`, :func:`delay_until`).

This module imports no reactor: it stays usable by the reactor-free stream layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "TOLERANCE",
    "Deadline",
    "Timer",
    "arm_timeout",
    "delay_until",
    "early",
    "get_clock",
    "get_reactor",
]

_T = TypeVar("_T")

#: Two clock readings closer than this (seconds) are the same instant.
TOLERANCE = 1e-9


def early(seconds: float) -> float:
    """The delay to arm for a timer due in ``seconds``: :data:`TOLERANCE` early, so a
    clock whose steps add up an ulp short of the deadline still fires it."""
    return seconds - TOLERANCE if seconds > TOLERANCE else 0.0


def delay_until(clock: IReactorTime, deadline: float) -> float:
    """The delay to arm now for the absolute ``deadline``: :data:`TOLERANCE` early,
    and never the current instant (a timer re-armed at the instant it runs would run
    again within the same ``Clock.advance``, or spin a real reactor)."""
    now = clock.seconds()
    return max(deadline - TOLERANCE - now, math.ulp(now))


def get_reactor(reactor: Any = None) -> Any:
    """``reactor``, else the global reactor (imported now, not at module import)."""
    if reactor is not None:
        return reactor
    from twisted.internet import reactor as global_reactor

    return global_reactor


def get_clock(clock: IReactorTime | None = None) -> IReactorTime:
    """``clock``, else the global reactor, looked up now (when a timer is armed)."""
    if clock is not None:
        return clock
    return get_reactor()  # type: ignore[no-any-return]


def arm_timeout(
    d: Deferred[_T],
    seconds: float | None,
    expire: Callable[[], object],
    clock: IReactorTime | None = None,
) -> Deferred[_T]:
    """Call ``expire()`` after ``seconds`` unless ``d`` fired first; returns ``d``.

    The timer is cancelled as soon as ``d`` fires (either way), so no delayed call
    is left behind. ``expire`` decides what a timeout means (cancel ``d``, fire it
    with a value, fail it with a class of its own). No timer is armed when
    ``seconds`` is ``None`` or ``d`` has already fired.
    """
    if seconds is None or d.called:
        return d
    call = get_clock(clock).callLater(early(seconds), expire)

    def disarm(result: Any) -> Any:
        if call.active():
            call.cancel()
        return result

    d.addBoth(disarm)
    return d


def withdraw_after(
    d: Deferred[Any],
    seconds: float,
    withdraw: Callable[[], bool],
    value: Any,
    clock: IReactorTime | None = None,
) -> Deferred[Any]:
    """Fire ``d`` with ``value`` after ``seconds`` if ``withdraw()`` takes its operation
    back (a pending put or take that nothing accepted in time); returns ``d``."""

    def expire() -> None:
        if not d.called and withdraw():
            d.callback(value)

    return arm_timeout(d, seconds, expire, clock)


class _Scheduled:
    """What :class:`Timer` and :class:`Deadline` share: a delay, a function, a clock."""

    __slots__ = ("_call", "_clock", "_fn", "seconds")

    def __init__(
        self, seconds: float | None, fn: Callable[[], object], clock: IReactorTime | None = None
    ) -> None:
        self.seconds = seconds
        self._fn = fn
        self._clock = clock
        self._call: IDelayedCall | None = None

    def cancel(self) -> None:
        """Disarm and cancel the pending delayed call; idempotent."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()


class Timer(_Scheduled):
    """A restartable one-shot timer: ``fn()`` runs ``seconds`` after the last :meth:`start`.

    :param seconds: the delay (``None``: the timer never runs; every call is a no-op).
    :param fn: called once per expiry, with no arguments.
    :param clock: an ``IReactorTime`` (``None``: the global reactor, looked up when armed).
    """

    __slots__ = ()

    @property
    def active(self) -> bool:
        """Whether the timer is armed."""
        return self._call is not None and self._call.active()

    def start(self, seconds: float | None = None) -> None:
        """Arm (or re-arm) the timer for ``seconds`` from now (default: the constructor's)."""
        delay = self.seconds if seconds is None else seconds
        if delay is not None:
            self._arm(early(delay))

    def start_at(self, deadline: float) -> None:
        """Arm (or re-arm) the timer for the clock reading ``deadline`` (never the current instant)."""
        self._arm(delay_until(get_clock(self._clock), deadline))

    def _arm(self, delay: float) -> None:
        call = self._call
        if call is not None and call.active():
            call.reset(delay)
        else:
            self._call = get_clock(self._clock).callLater(delay, self._expire)

    def stop(self) -> None:
        """Disarm; idempotent."""
        self.cancel()

    def _expire(self) -> None:
        self._call = None
        self._fn()


class Deadline(_Scheduled):
    """``fn()`` runs once ``seconds`` have passed since the last :meth:`start`, unless stopped.

    Unlike :class:`Timer`, a restart does not reschedule a delayed call: it notes
    the time, and the one pending call, when it fires, either runs ``fn`` or waits
    for the rest (so a restart per request costs a clock read, not a heap push).

    :param seconds: the delay (``None``: never runs; every call is a no-op).
    :param fn: called once per expiry, with no arguments.
    :param clock: an ``IReactorTime`` (``None``: the global reactor, looked up when armed).
    """

    __slots__ = ("_since",)

    def __init__(
        self, seconds: float | None, fn: Callable[[], object], clock: IReactorTime | None = None
    ) -> None:
        super().__init__(seconds, fn, clock)
        self._since: float | None = None

    @property
    def running(self) -> bool:
        """Whether the deadline is counting."""
        return self._since is not None

    def start(self) -> None:
        """Count ``seconds`` from now."""
        if self.seconds is None:
            return
        clock = self._clock
        if clock is None:
            clock = self._clock = get_clock()
        self._since = clock.seconds()
        if self._call is None:
            self._call = clock.callLater(early(self.seconds), self._check)

    def stop(self) -> None:
        """Stop counting (the pending call, if any, finds nothing to do)."""
        self._since = None

    def cancel(self) -> None:
        """Stop counting and cancel the pending call (the connection is gone)."""
        self._since = None
        super().cancel()

    def _check(self) -> None:
        self._call = None
        since, seconds = self._since, self.seconds
        if since is None or seconds is None:
            return
        clock = get_clock(self._clock)
        if since + seconds - clock.seconds() > TOLERANCE:
            self._call = clock.callLater(delay_until(clock, since + seconds), self._check)
            return
        self._since = None
        self._fn()
