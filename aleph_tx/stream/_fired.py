"""Deferreds made without ``Deferred.__init__``, for the stream's hot paths
(docs/internals.rst, "Streams: what a message costs").

A put into a stream with room, or a take of a buffered message, returns a Deferred
that has already fired. :func:`~twisted.internet.defer.succeed` costs a call to
``Deferred.__init__`` and four attribute stores; :class:`_Fired` skips both. A take
that waits returns a :class:`_Waiting` Deferred: ``Deferred(canceller)`` without the
Python-level ``__init__`` call. Both are checked against Twisted's own at import
(:func:`_check_fired`): if a Twisted release changes what a Deferred needs, the
module falls back to ``succeed`` and ``Deferred()`` (``FAST`` is then ``False``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed

__all__ = ["FAST", "fired", "fired_true", "is_deferred_type"]

#: ``is_deferred_type(type(x))`` is ``isinstance(x, Deferred)`` made cheap: Deferred
#: is an ``Awaitable``, so a plain ``isinstance`` runs ``ABCMeta.__instancecheck__``
#: (Python code) for every message that is not a Deferred.
is_deferred_type: Callable[[type], bool] = functools.cache(lambda t: issubclass(t, Deferred))


class _LazyCallbacks:
    """``Deferred._callbacks`` made on first use: most fired puts never get a callback."""

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        callbacks: list[Any] = []
        obj.__dict__["_callbacks"] = callbacks  # shadows this (non-data) descriptor
        return callbacks


class _Fired(Deferred[Any]):
    """A Deferred born fired: the stream's hot path (``Deferred.__init__`` is skipped).

    Everything :func:`~twisted.internet.defer.succeed` would set per instance is a
    class attribute here (``called``, ``_canceller``, ``_callbacks`` on first use,
    and ``result`` for :class:`_FiredTrue`); whatever Twisted later assigns goes to
    the instance as usual, so each instance behaves as its own Deferred.
    :func:`_check_fired` tests that at import and falls back to ``succeed``.
    """

    __init__ = object.__init__  # instantiation stays in C
    called = True
    _canceller = None
    _callbacks = _LazyCallbacks()


class _FiredTrue(_Fired):
    result = True


def _cancel_waiting(d: Any) -> None:
    d.owner._withdraw_take(d)


class _Waiting(Deferred[Any]):
    """A Deferred not fired yet, made without calling ``Deferred.__init__`` (a waiting
    ``take()``). The maker sets ``_callbacks = []`` and ``owner``: cancelling it calls
    ``owner._withdraw_take(d)`` (a class-level canceller, so no bound method is made
    per instance). Checked by :func:`_check_fired`, like :class:`_Fired`."""

    __init__ = object.__init__
    _canceller = staticmethod(_cancel_waiting)


if Deferred.callback.__code__.co_names == ("_startRunCallbacks",):
    # ``Deferred.callback`` only calls ``self._startRunCallbacks(result)``: call that
    # directly, one Python frame less for every message handed to a waiting take.
    _Waiting.callback = Deferred._startRunCallbacks


def _fast_waiting(owner: Any) -> Deferred[Any]:
    """``Deferred(canceller)`` whose canceller calls ``owner._withdraw_take``, made as
    :meth:`Stream.take` makes it."""
    d: Any = _Waiting()
    d._callbacks = []
    d.owner = owner
    return d  # type: ignore[no-any-return]


def _fast_fired(result: Any, _cls: Any = _Fired) -> Deferred[Any]:
    """``succeed(result)``, about three times cheaper."""
    d = _cls()
    d.result = result
    return d  # type: ignore[no-any-return]


def _check_fired() -> bool:
    """Whether :class:`_Fired` instances behave as ``succeed`` ones, and :class:`_Waiting`
    ones as ``Deferred(canceller)`` ones (chaining, await, cancel)."""
    try:
        probe: list[Any] = []
        a, b = _fast_fired(1), _fast_fired(1)
        a.addCallback(lambda v: v + 1)
        a.addCallback(probe.append)
        inner: Deferred[Any] = Deferred()
        _FiredTrue().addCallback(lambda _: inner).addCallback(probe.append)
        inner.callback(3)
        _FiredTrue().cancel()
        Deferred.fromCoroutine(_await(_fast_fired(4))).addCallback(probe.append)
        separate = a._callbacks is not b._callbacks and b.result == 1 and _FiredTrue.result is True
        # waiting ones: fired later, chained, awaited, cancelled through their owner
        cancelled: list[Any] = []
        owner = _ProbeOwner(cancelled.append)
        w1, w2 = _fast_waiting(owner), _fast_waiting(owner)
        w1.addCallback(lambda v: v * 2).addCallback(probe.append)
        Deferred.fromCoroutine(_await(w2)).addCallback(probe.append)
        w1.callback(5)
        w2.callback(6)
        w3 = _fast_waiting(owner)
        w3.addErrback(lambda f: probe.append(f.type.__name__))  # type: ignore[call-overload]
        w3.cancel()
        w4 = _fast_waiting(_ProbeOwner(lambda d: d.callback(7)))
        w4.addCallback(probe.append)
        w4.cancel()
        w1.cancel()  # fired: the canceller is not called
        waiting_ok = cancelled == [w3] and not w1.paused and w1._callbacks == []
        return separate and waiting_ok and probe == [2, 3, 4, 10, 6, "CancelledError", 7]
    except Exception:
        return False


class _ProbeOwner:
    def __init__(self, withdraw: Callable[[Any], object]) -> None:
        self._withdraw_take = withdraw


async def _await(d: Deferred[Any]) -> Any:
    return await d


FAST = _check_fired()
#: A Deferred already fired with its argument (the fastest equivalent of ``succeed``).
fired: Callable[[Any], Deferred[Any]] = _fast_fired if FAST else succeed
#: ``fired(True)`` for the hot paths (``_Fired()`` is a fired Deferred whose result to set).
fired_true: Callable[[], Deferred[bool]] = _FiredTrue if FAST else functools.partial(succeed, True)
