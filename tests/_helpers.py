"""Helpers shared by the unit tests: results of Deferreds that fire synchronously."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must already have fired successfully (left in place)."""
    out: list[Any] = []
    d.addBoth(lambda r: (out.append(r), r)[1])
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        d.addErrback(lambda _: None)
        out[0].raiseException()
    return out[0]


def failure_of(d: Deferred[Any]) -> Failure:
    """The failure of a Deferred that must already have failed (consumed)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    assert isinstance(out[0], Failure), f"fired {out[0]!r}, not a failure"
    return out[0]
