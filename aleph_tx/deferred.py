"""Helpers over Twisted Deferreds (Manifold's ``manifold.deferred``).

There is no wrapper type: the model *is* :class:`twisted.internet.defer.Deferred`,
and ``async def`` plus ``await`` replaces ``let-flow`` and ``loop``. Every helper
accepts, wherever it takes a Deferred, anything :func:`to_deferred` accepts
(a plain value, a Deferred, a coroutine, an awaitable or an asyncio future).

The module never uses the reactor, with one exception: :func:`timeout` arms its
timer on the global reactor when it is given no ``clock``. A helper whose inputs
have already fired fires its own Deferred before it returns.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from aleph_tx._time import arm_timeout
from aleph_tx.errors import TimeoutError

__all__ = [
    "NOTHING",
    "alt",
    "catch",
    "chain",
    "error",
    "finally_",
    "success",
    "timeout",
    "to_deferred",
    "zip",
]

_T = TypeVar("_T")


class _Nothing(enum.Enum):
    """The type of :data:`NOTHING` (an enum member, so that type checkers can narrow it)."""

    NOTHING = "NOTHING"

    def __repr__(self) -> str:
        return "NOTHING"


#: "No value given": the default of :func:`timeout`'s ``timeout_value`` (and of
#: :func:`aleph_tx.stream.reduce`'s ``initial``), distinct from ``None``.
NOTHING: Final = _Nothing.NOTHING

_ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


def success(value: _T) -> Deferred[_T]:
    """A Deferred that has already fired with ``value``.

    :param value: the result.
    :returns: a fired Deferred.
    """
    return succeed(value)


def error(exc: BaseException | Failure) -> Deferred[Any]:
    """A Deferred that has already failed with ``exc``.

    :param exc: an exception instance (or a :class:`~twisted.python.failure.Failure`).
    :returns: a failed Deferred.
    :raises TypeError: at once, if ``exc`` is neither (an exception class is refused
        too: pass an instance).
    """
    if not isinstance(exc, BaseException | Failure):
        raise TypeError(f"error() needs an exception instance or a Failure, not {exc!r}")
    return fail(exc)


async def _await(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


def to_deferred(x: Any) -> Deferred[Any]:
    """``x`` as a Deferred.

    - a :class:`~twisted.internet.defer.Deferred` is returned as it is;
    - a :class:`~twisted.python.failure.Failure` becomes a failed Deferred;
    - a coroutine is started with :meth:`Deferred.fromCoroutine`;
    - an asyncio future (or task) goes through :meth:`Deferred.fromFuture` (it fires
      when the asyncio loop runs the future's callbacks, so it needs that loop, as
      under ``AsyncioSelectorReactor``);
    - any other awaitable (an object with ``__await__`` whose awaiting yields
      Deferreds) is awaited in a coroutine;
    - anything else is a plain value: an already-fired Deferred of it.

    :param x: the value, Deferred, coroutine, awaitable or asyncio future.
    :returns: a Deferred of its result.
    """
    if isinstance(x, Deferred):
        return x
    if isinstance(x, Failure):
        return fail(x)
    if inspect.iscoroutine(x):
        return Deferred.fromCoroutine(x)
    if asyncio.isfuture(x):
        return Deferred.fromFuture(x)
    if inspect.isawaitable(x):
        return Deferred.fromCoroutine(_await(x))
    return succeed(x)


def _then_value(result: Any) -> Any:
    """A callback's result as Twisted can chain it: coroutines and awaitables as Deferreds."""
    if isinstance(result, Deferred | Failure):
        return result
    if inspect.iscoroutine(result) or inspect.isawaitable(result):
        return to_deferred(result)
    return result


def chain(x: Any, *fns: Callable[[Any], Any]) -> Deferred[Any]:
    """Thread a value through functions: ``fns[-1](...fns[1](fns[0](x)))``.

    Each function gets the previous result; a Deferred, coroutine or awaitable
    result (and ``x`` itself) is awaited before the next function is called. The
    first exception stops the chain and fails the returned Deferred.

    :param x: the initial value (anything :func:`to_deferred` accepts).
    :param fns: one-argument functions, plain or ``async def``.
    :returns: a Deferred of the last result.
    """
    d = to_deferred(x)
    for fn in fns:
        d = d.addCallback(_apply, fn)
    return d


def _apply(value: Any, fn: Callable[[Any], Any]) -> Any:
    return _then_value(fn(value))


def _is_exception_types(x: Any) -> bool:
    if isinstance(x, type):
        return issubclass(x, BaseException)
    return isinstance(x, tuple) and bool(x) and all(_is_exception_types(t) for t in x)


def catch(
    d: Any,
    exc_type: _ExceptionTypes | Callable[[BaseException], Any],
    handler: Callable[[BaseException], Any] | None = None,
) -> Deferred[Any]:
    """Recover from failures of type ``exc_type`` with ``handler(exception)``.

    The handler receives the exception instance; its result (awaited if it is a
    Deferred, coroutine or awaitable) becomes the result. Failures of other types
    pass on unchanged, and so does a success. ``catch(d, handler)`` (no type)
    catches every :class:`Exception`, as Manifold's two-argument ``catch``.

    :param d: a Deferred (or anything :func:`to_deferred` accepts).
    :param exc_type: an exception class or a tuple of them.
    :param handler: ``exception -> result``.
    :returns: ``d`` with the handler attached.
    :raises TypeError: at once, if ``exc_type`` is not an exception class (or tuple
        of them) or ``handler`` is not callable.
    """
    if handler is None and not _is_exception_types(exc_type) and callable(exc_type):
        exc_type, handler = Exception, exc_type
    if not _is_exception_types(exc_type):
        raise TypeError(f"catch() needs an exception class or a tuple of them, not {exc_type!r}")
    if not callable(handler):
        raise TypeError(f"catch() needs a callable handler, not {handler!r}")
    types: _ExceptionTypes = exc_type  # type: ignore[assignment]
    fn: Callable[[BaseException], Any] = handler

    def recover(f: Failure) -> Any:
        if isinstance(f.value, types):
            return _then_value(fn(f.value))
        return f

    return to_deferred(d).addErrback(recover)


def finally_(d: Any, fn: Callable[[], Any]) -> Deferred[Any]:
    """Call ``fn()`` once ``d`` fires, either way; the result or failure passes on unchanged.

    If ``fn`` returns a Deferred, coroutine or awaitable, it is awaited before the
    result passes on. If ``fn`` raises (or its Deferred fails), that error replaces
    the result, as an exception raised in a ``finally:`` block does.

    :param d: a Deferred (or anything :func:`to_deferred` accepts).
    :param fn: a function of no arguments.
    :returns: ``d`` with ``fn`` attached.
    """

    def run(result: Any) -> Any:
        after = _then_value(fn())
        if isinstance(after, Deferred):
            return after.addCallback(lambda _: result)
        return result

    return to_deferred(d).addBoth(run)


def _cancel_quietly(d: Deferred[Any]) -> None:
    """Cancel ``d`` if it has not fired; the failure it then fires with is consumed."""
    if not d.called:
        d.addErrback(lambda f: None)
        d.cancel()


def zip(*ds: Any) -> Deferred[list[Any]]:  # noqa: A001
    """The results of every Deferred, in argument order, once all have fired.

    Fails fast: the first failure (in time; in argument order among Deferreds
    that have already failed) fails the result at once, and every input that has
    not fired yet is **cancelled** (its result is no longer wanted; Twisted's
    cancellation lets the producer stop its work). The inputs' failures are
    consumed (never logged as unhandled); their successful results stay theirs.
    Cancelling the returned Deferred cancels every input that has not fired.
    ``zip()`` fires ``[]``.

    :param ds: Deferreds (or anything :func:`to_deferred` accepts).
    :returns: a Deferred of the list of results.
    """
    inputs = [to_deferred(x) for x in ds]
    results: list[Any] = [None] * len(inputs)
    remaining = len(inputs)
    finished = False

    def cancel_all(_: Deferred[Any]) -> None:
        for d in inputs:
            _cancel_quietly(d)

    out: Deferred[list[Any]] = Deferred(cancel_all)

    def got(value: Any, i: int) -> Any:
        nonlocal remaining, finished
        results[i] = value
        remaining -= 1
        if remaining == 0 and not finished:
            finished = True
            out.callback(results)
        return value

    def failed(f: Failure) -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        out.errback(f)
        for d in inputs:
            _cancel_quietly(d)

    for i, d in enumerate(inputs):
        d.addCallbacks(got, failed, callbackArgs=(i,))
    if not inputs:
        out.callback(results)
    return out


def alt(*ds: Any) -> Deferred[Any]:
    """The result of whichever Deferred fires first; the others are cancelled.

    Firing counts either way: if the first to fire fails, the result fails.
    Among inputs that have already fired (plain values included), the first in
    argument order wins. The inputs' failures are consumed (never logged as
    unhandled); their successful results stay theirs.
    Cancelling the returned Deferred cancels every input.

    :param ds: Deferreds (or anything :func:`to_deferred` accepts).
    :returns: a Deferred of the winner's result.
    :raises TypeError: at once, when called with no argument (it could never fire).
    """
    if not ds:
        raise TypeError("alt() needs at least one Deferred")
    inputs = [to_deferred(x) for x in ds]
    finished = False

    def cancel_all(_: Deferred[Any]) -> None:
        for d in inputs:
            _cancel_quietly(d)

    out: Deferred[Any] = Deferred(cancel_all)

    def won(result: Any) -> Any:
        nonlocal finished
        if not finished:
            finished = True
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
            for d in inputs:
                _cancel_quietly(d)
        return None if isinstance(result, Failure) else result

    for d in inputs:
        d.addBoth(won)
    return out


def timeout(
    d: Any,
    seconds: float,
    timeout_value: Any = NOTHING,
    clock: IReactorTime | None = None,
) -> Deferred[Any]:
    """``d``'s result if it fires within ``seconds``, else a timeout.

    On timeout the returned Deferred fires ``timeout_value`` if one was given, else
    fails with :class:`aleph_tx.errors.TimeoutError` (a subclass of the builtin
    :class:`TimeoutError`); in both cases ``d`` is cancelled (and whatever it then
    fires with is consumed). If ``d`` has already fired, it is returned as it is
    and no timer is armed. Once the result is in, the timer is cancelled: no
    delayed call is left behind. Cancelling the returned Deferred cancels ``d``
    and the timer.

    :param d: a Deferred (or anything :func:`to_deferred` accepts).
    :param seconds: the time allowed, >= 0.
    :param timeout_value: the result on timeout (default: fail instead).
    :param clock: an :class:`~twisted.internet.interfaces.IReactorTime`; ``None`` is
        the global reactor, looked up when the timer is armed.
    :returns: a Deferred of ``d``'s result or of the timeout.
    :raises ValueError: at once, if ``seconds`` is negative or not a number.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ValueError(f"timeout seconds must be a number >= 0, not {seconds!r}")
    src = to_deferred(d)
    if src.called and not src.paused:
        return src
    timed_out = False
    out: Deferred[Any] = Deferred(lambda _: src.cancel())

    def forward(result: Any) -> None:
        if timed_out or out.called:
            return
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(result)

    def expire() -> None:
        nonlocal timed_out
        timed_out = True
        src.cancel()
        if out.called:
            return
        if timeout_value is NOTHING:
            out.errback(TimeoutError(f"timed out after {seconds!r} seconds"))
        else:
            out.callback(timeout_value)

    src.addBoth(forward)
    return arm_timeout(out, seconds, expire, clock)  # disarmed when out fires, either way
