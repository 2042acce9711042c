"""Operators with a clock (throttle, batch, periodically, try_put, try_take) under
``task.Clock`` with float steps: exact to the step, and never a runaway timer.

Every test runs on a :class:`GuardedClock`: a timer armed at the current instant over
and over would make ``Clock.advance`` loop forever; the guard stops it after
``limit`` delayed calls in one advance and the test fails instead of hanging.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from _helpers import result_of
from twisted.internet.task import Clock

from aleph_tx import stream as s


class Runaway(Exception):
    """Too many delayed calls armed in one ``advance``."""


class GuardedClock(Clock):
    """A Clock that records every delayed call and refuses a runaway.

    :ivar count: every ``callLater``.
    :ivar armed: ``(now, delay)`` of every ``callLater`` made by a delayed call (a re-arm).
    :ivar runaway: set (and raised from ``callLater``) past ``limit`` calls in one advance.
    """

    def __init__(self, limit: int = 50) -> None:
        super().__init__()
        self.limit = limit
        self.armed: list[tuple[float, float]] = []
        self.advancing = False
        self.in_advance = 0
        self.count = 0
        self.runaway: str | None = None

    def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> Any:  # noqa: N802, A002
        self.count += 1
        if self.advancing:
            self.armed.append((self.seconds(), delay))
        self.in_advance += 1
        if self.in_advance > self.limit:
            self.runaway = f"{self.in_advance} delayed calls armed in one advance at t={self.seconds()!r}"
            raise Runaway(self.runaway)
        return super().callLater(delay, callable, *args, **kw)

    def advance(self, amount: float) -> None:
        self.in_advance = 0
        self.advancing = True
        try:
            super().advance(amount)
        finally:
            self.advancing = False
        assert self.runaway is None, self.runaway


def test_throttle_float_steps_never_spin() -> None:
    # issue 13, defect 1: at t~0.6 the bucket held 0.999... tokens and re-armed a
    # timer at the current instant forever
    clock = GuardedClock()
    out = s.throttle(10, s.from_iterable(range(30)), clock=clock)
    got: list[tuple[int, int]] = []
    step = 0
    s.consume(lambda m: got.append((step, m)), out)
    for step in range(1, 41):  # noqa: B007 (read by the consumer)
        clock.advance(0.1)
    assert [m for _, m in got] == list(range(30))
    # a burst of 10 at t=0, then one message per step of 0.1 s
    assert [st for st, _ in got] == [0] * 10 + list(range(1, 21))
    assert out.drained
    assert not clock.getDelayedCalls()


def steps(clock: Clock, n: int) -> None:
    for _ in range(n):
        clock.advance(0.1)


def never_rearmed_at_the_current_instant(clock: GuardedClock) -> None:
    assert clock.armed, "no timer was re-armed"
    for now, delay in clock.armed:
        assert now + delay > now, f"a timer re-armed at t={now!r} for the current instant"


# -- throttle -------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1e-3, 0.5, 1, 3, 7, 10, 30, 1000])
def test_throttle_is_exact_under_float_steps(rate: float) -> None:
    clock = GuardedClock(limit=2)  # at most one timer per step, whatever the rate
    out = s.throttle(rate, s.from_iterable(itertools.count()), clock=clock)
    got: list[int] = []
    s.consume(got.append, out)
    burst = max(1, int(rate))
    assert len(got) == burst
    n = 10_000 if rate == 1e-3 else 200
    for i in range(1, n + 1):
        clock.advance(0.1)
        t = clock.seconds()
        # the bucket's tokens at t, to the step: 0.1 * 8 = 0.7999... must not cost one
        assert len(got) == burst + math.floor(rate * (t + 1e-9)), (i, t)
        assert len(clock.getDelayedCalls()) == 1
    never_rearmed_at_the_current_instant(clock)
    out.close()
    assert not clock.getDelayedCalls()


def test_throttle_tiny_rate_sends_one_message_per_period() -> None:
    clock = GuardedClock()
    out = s.throttle(1e-3, s.from_iterable(range(3)), clock=clock)
    got: list[int] = []
    s.consume(got.append, out)
    assert got == [0]  # the bucket holds one token, even below one message a second
    steps(clock, 9_999)
    assert got == [0]
    steps(clock, 1)  # t = 1000 s (in float: 1000.0000000001588)
    assert got == [0, 1]


def test_throttle_huge_rate_arms_no_timer() -> None:
    clock = GuardedClock()
    out = s.throttle(1e9, s.from_iterable(range(100_000)), clock=clock)
    assert len(result_of(s.collect(out))) == 100_000
    assert clock.count == 0


def test_throttle_at_epoch_times() -> None:
    # a real reactor's clock reads ~1.7e9 s, where a float's ulp is 2.4e-7 s
    clock = GuardedClock(limit=2)
    clock.advance(1.7e9)
    t0 = clock.seconds()
    out = s.throttle(10, s.from_iterable(itertools.count()), clock=clock)
    got: list[int] = []
    s.consume(got.append, out)
    for _ in range(1_000):
        clock.advance(0.1)
        assert abs(len(got) - (10 + 10 * (clock.seconds() - t0))) <= 1
    never_rearmed_at_the_current_instant(clock)


def test_throttle_rate_1e9_at_epoch_times_is_bounded() -> None:
    # one ulp of the clock is worth 240 tokens here: no timer may spin
    clock = GuardedClock(limit=2)
    clock.advance(1.7e9)
    src = s.stream()
    out = s.throttle(1e9, src, clock=clock)
    got: list[int] = []
    s.consume(got.append, out)
    for i in range(100):
        src.put(i)
        clock.advance(0.1)
    assert got == list(range(100))


# -- periodically ---------------------------------------------------------------


def test_periodically_calls_once_per_step() -> None:
    clock = GuardedClock(limit=1)
    calls: list[float] = []
    out = s.periodically(0.1, lambda: calls.append(clock.seconds()) or len(calls), clock=clock)
    for n in range(1, 10_001):
        clock.advance(0.1)
        assert len(calls) == n, clock.seconds()
        assert len(clock.getDelayedCalls()) == 1
    never_rearmed_at_the_current_instant(clock)
    out.close()
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize(("initial_delay", "first"), [(0, 1), (0.3, 3)])
def test_periodically_every_third_step(initial_delay: float, first: int) -> None:
    clock = GuardedClock(limit=1)
    calls: list[int] = []
    step = 0
    s.periodically(0.3, lambda: calls.append(step), initial_delay=initial_delay, clock=clock)
    for step in range(1, 3_001):  # noqa: B007 (read by f)
        clock.advance(0.1)
    # the first call at the first step at or after initial_delay, then every 0.3 s
    assert calls == [first, *range(first - first % 3 + 3, 3_001, 3)]


def test_periodically_skips_the_calls_a_blocked_clock_missed() -> None:
    clock = GuardedClock(limit=1)
    calls: list[float] = []
    s.periodically(0.1, lambda: calls.append(clock.seconds()), clock=clock)
    clock.advance(1.0)  # ten periods at once: one call, as LoopingCall
    assert calls == [1.0]
    clock.advance(0.05)
    assert calls == [1.0]
    clock.advance(0.05)
    assert calls == [1.0, 1.1]


def test_periodically_tiny_period_at_epoch_times_is_bounded() -> None:
    clock = GuardedClock(limit=1)
    clock.advance(1.7e9)
    calls: list[float] = []
    s.periodically(1e-12, lambda: calls.append(clock.seconds()), clock=clock)
    steps(clock, 100)
    assert len(calls) == 100
    never_rearmed_at_the_current_instant(clock)


def test_periodically_bad_arguments() -> None:
    with pytest.raises(ValueError, match="period"):
        s.periodically(0, lambda: 1, clock=Clock())
    with pytest.raises(ValueError, match="initial_delay"):
        s.periodically(1, lambda: 1, initial_delay=-1, clock=Clock())


# -- batch, try_take, try_put: one-shot timers armed at any step -------------------


def test_batch_flushes_at_the_third_step_whenever_its_first_message_came() -> None:
    clock = GuardedClock(limit=1)
    src = s.stream()
    out = s.batch(1_000, 0.3, src, clock=clock)
    flushed: list[int] = []
    step = 0
    s.consume(lambda b: flushed.append(step), out)
    started: list[int] = []
    for step in range(300):
        if len(started) == len(flushed):
            started.append(step)
            src.put(step)
        clock.advance(0.1)
    assert len(flushed) >= 99
    assert [f - b for b, f in zip(started, flushed, strict=False)] == [3 - 1] * len(flushed)


def _times_out_at_the_third_step(arm: Any) -> None:
    """Arm a 0.3 s timeout after each of 0..99 steps: it fires at the third step after."""
    clock = GuardedClock(limit=1)
    for k in range(100):
        d = arm(clock)
        clock.advance(0.1)
        clock.advance(0.1)
        assert not d.called, f"fired a step early after {k} steps"
        clock.advance(0.1)
        assert result_of(d) == "timeout", f"not fired at the third step after {k} steps"
        assert not clock.getDelayedCalls()


@pytest.mark.parametrize("buffer_size", [0, 4])
def test_try_take_times_out_at_the_third_step(buffer_size: int) -> None:
    st = s.stream(buffer_size)
    _times_out_at_the_third_step(lambda clock: st.try_take(0.3, timeout_value="timeout", clock=clock))
    assert st.description()["pending_takes"] == 0


@pytest.mark.parametrize("buffer_size", [0, 4])
def test_try_put_times_out_at_the_third_step(buffer_size: int) -> None:
    st = s.stream(buffer_size)
    for i in range(buffer_size):
        st.put(i)
    _times_out_at_the_third_step(lambda clock: st.try_put("x", 0.3, "timeout", clock=clock))
    assert st.description()["pending_puts"] == 0
    assert [result_of(st.take()) for _ in range(buffer_size)] == list(range(buffer_size))


def test_a_long_pipeline_keeps_its_timers_bounded() -> None:
    clock = GuardedClock(limit=3)
    n = itertools.count()
    out = s.batch(
        4, 0.3, s.throttle(7, s.periodically(0.1, lambda: next(n), clock=clock), clock=clock), clock=clock
    )
    got: list[list[int]] = []
    s.consume(got.append, out)
    for _ in range(10_000):
        clock.advance(0.1)
        assert len(clock.getDelayedCalls()) <= 3
    # 10 values a second, 7 go through (a burst of 7 at first): the rest are dropped
    assert abs(sum(len(b) for b in got) - (7 + 7 * 1_000)) <= 1
    flat = [m for b in got for m in b]
    assert flat == sorted(flat)
    out.close()
    assert not clock.getDelayedCalls()
