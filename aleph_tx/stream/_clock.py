"""Deadlines on a clock whose readings are floats (docs/internals.rst, "Time: deadlines
on float clocks").

Float time is inexact: ten steps of 0.1 add up to 0.9999999999999999, so a timer
armed at 0.7 for 0.3 (due at 1.0) would fire a step late under
:class:`twisted.internet.task.Clock`, and a recurring timer that re-checks its
condition can find it an ulp short and re-arm at the same instant forever. Every
timer of the stream package is armed through :func:`early` or :func:`delay_until`.
"""

from __future__ import annotations

import math

from twisted.internet.interfaces import IReactorTime

__all__ = ["TOLERANCE", "delay_until", "early"]

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
