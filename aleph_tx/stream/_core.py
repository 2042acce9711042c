"""The Stream: Manifold's default stream, on Twisted Deferreds.

A put goes, in this order, to a waiting take, else into the buffer if it has
room, else it waits (pending) until a take makes room. A take mirrors it: the
buffer first (moving the oldest pending put into the freed room), else the
oldest pending put, else it waits. Every Deferred that can fire at once fires
before the call returns: the module never touches the reactor except to arm a
``try_put``/``try_take`` timer.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx.errors import BackpressureError

__all__ = ["MAX_PENDING", "Stream", "stream"]

#: Pending puts (or takes) allowed on one stream before further ones fail with
#: :class:`~aleph_tx.errors.BackpressureError`; Manifold's limit.
MAX_PENDING = 16384

_log = Logger()


def _reactor_clock(clock: IReactorTime | None) -> IReactorTime:
    """The clock to arm a timer on: ``clock``, else the global reactor (looked up now)."""
    if clock is not None:
        return clock
    from twisted.internet import reactor

    return reactor


def _discard(_: object) -> None:
    """Drop a result (a Deferred's canceller must return None)."""


def _check_timeout(timeout: float) -> None:
    if timeout is None or timeout < 0:
        raise ValueError(f"timeout must be a number >= 0, not {timeout!r}")


class _PendingPut:
    """A put waiting for room; ``live`` goes False when it is withdrawn (lazy deletion)."""

    __slots__ = ("d", "live", "msg")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.d: Deferred[Any] | None = None
        self.live = True


class _PendingTake:
    """A take waiting for a message; ``live`` goes False when it is withdrawn."""

    __slots__ = ("d", "default", "live")

    def __init__(self, default: Any) -> None:
        self.default = default
        self.live = True
        self.d: Deferred[Any] = None  # type: ignore[assignment]


class Stream:
    """A duplex stream of messages with backpressure (Manifold's ``stream``).

    :param buffer_size: messages accepted before puts wait (0: a put waits for a take).
    :param xform: ``msg -> iterable of msgs`` applied to every put.
    :param description: a dict (or a callable returning one) merged into :meth:`description`.
    :param metric: ``msg -> weight``; the buffer accepts while its total weight is below
        ``buffer_size`` (a message heavier than the room left is still accepted when the
        buffer is under its limit, so no message can be stuck forever).

    Withdrawn (cancelled or timed out) puts and takes are only marked dead and skipped
    later, so withdrawing any number of them costs O(1) each.
    """

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_buffer_size",
        "_closed",
        "_description",
        "_downstream",
        "_drained",
        "_error",
        "_metric",
        "_n_puts",
        "_n_takes",
        "_on_closed",
        "_on_drained",
        "_puts",
        "_takes",
        "_weight",
        "_xform",
    )

    def __init__(
        self,
        buffer_size: int = 0,
        xform: Callable[[Any], Iterable[Any]] | None = None,
        description: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        metric: Callable[[Any], float] | None = None,
    ) -> None:
        if not isinstance(buffer_size, int) or buffer_size < 0:
            raise ValueError(f"buffer_size must be an int >= 0, not {buffer_size!r}")
        self._buffer_size = buffer_size
        self._buffer: collections.deque[Any] = collections.deque()
        self._weight: float = 0
        self._metric = metric
        self._puts: collections.deque[_PendingPut] = collections.deque()
        self._takes: collections.deque[_PendingTake] = collections.deque()
        self._n_puts = 0  # live entries in _puts
        self._n_takes = 0  # live entries in _takes
        self._closed = False
        self._drained = False
        self._xform = xform
        self._description = description
        self._error: BaseException | None = None
        self._on_closed: list[Callable[[], object]] | None = None
        self._on_drained: list[Callable[[], object]] | None = None
        self._downstream: Any = None  # the connect graph's node (aleph_tx.stream._graph)

    # -- pending queues (lazy deletion) ------------------------------------------

    def _pop_take(self) -> _PendingTake | None:
        takes = self._takes
        while self._n_takes:
            t = takes.popleft()
            if t.live:
                t.live = False
                self._n_takes -= 1
                return t
        return None

    def _pop_put(self) -> _PendingPut | None:
        puts = self._puts
        while self._n_puts:
            p = puts.popleft()
            if p.live:
                p.live = False
                self._n_puts -= 1
                return p
        return None

    def _withdraw_puts(self, entries: list[_PendingPut]) -> bool:
        """Withdraw the live ``entries``; ``True`` if any was still pending."""
        withdrew = False
        for p in entries:
            if p.live:
                p.live = False
                self._n_puts -= 1
                withdrew = True
        if len(self._puts) > 2 * self._n_puts + 64:
            self._puts = collections.deque(p for p in self._puts if p.live)
        if withdrew and self._closed and not self._n_puts and not self._buffer:
            self._set_drained()  # the withdrawn put was the last message
        return withdrew

    def _withdraw_take(self, t: _PendingTake) -> bool:
        if not t.live:
            return False
        t.live = False
        self._n_takes -= 1
        if len(self._takes) > 2 * self._n_takes + 64:
            self._takes = collections.deque(t for t in self._takes if t.live)
        return True

    # -- put -------------------------------------------------------------------

    def put(self, msg: Any) -> Deferred[bool]:
        """Offer ``msg``; fires ``True`` once accepted, ``False`` if the stream is closed.

        :raises ValueError: at once, for ``None`` (not a valid message).
        """
        return self._put(msg)[0]

    def _put(self, msg: Any) -> tuple[Deferred[bool], list[_PendingPut]]:
        """:meth:`put`, also returning the entries left pending (for ``try_put``)."""
        if msg is None:
            raise ValueError("None is not a valid message")
        if self._closed:
            return succeed(False), []
        if self._xform is not None:
            try:
                msgs = [m for m in self._xform(msg) if m is not None]
            except Exception as e:
                self._fail(e)
                return succeed(False), []
        else:
            if self._n_takes:
                take = self._pop_take()
                take.d.callback(msg)  # type: ignore[union-attr]
                return succeed(True), []
            if self._has_room():
                self._push(msg)
                return succeed(True), []
            msgs = [msg]
        entries: list[_PendingPut] = []
        for m in msgs:
            if not entries and self._n_takes:
                self._pop_take().d.callback(m)  # type: ignore[union-attr]
            elif not entries and self._has_room():
                self._push(m)
            else:
                entries.append(_PendingPut(m))
        if not entries:
            return succeed(True), []
        if self._n_puts + len(entries) > MAX_PENDING:
            return fail(BackpressureError(f"more than {MAX_PENDING} pending puts on {self!r}")), []
        d: Deferred[bool] = Deferred(lambda _: _discard(self._withdraw_puts(entries)))
        entries[-1].d = d  # fires when the last message is accepted
        self._puts.extend(entries)
        self._n_puts += len(entries)
        return d, entries

    def _has_room(self) -> bool:
        if self._metric is None:
            return len(self._buffer) < self._buffer_size
        return self._weight < self._buffer_size

    def _push(self, msg: Any) -> None:
        self._buffer.append(msg)
        if self._metric is not None:
            self._weight += self._metric(msg)

    def try_put(
        self,
        msg: Any,
        timeout: float,
        timeout_value: Any = False,
        clock: IReactorTime | None = None,
    ) -> Deferred[Any]:
        """Like :meth:`put`; fires ``timeout_value`` (the message withdrawn) if not accepted in time."""
        _check_timeout(timeout)
        d, entries = self._put(msg)
        if d.called:
            return d
        return _with_timeout(d, timeout, timeout_value, clock, lambda: self._withdraw_puts(entries))

    # -- take ------------------------------------------------------------------

    def take(self, default: Any = None) -> Deferred[Any]:
        """Fires with the next message, or ``default`` once the stream is drained."""
        return self._take(default)[0]

    def _take(self, default: Any) -> tuple[Deferred[Any], _PendingTake | None]:
        buf = self._buffer
        if buf:
            msg = buf.popleft()
            if self._metric is not None:
                self._weight -= self._metric(msg)
            if self._n_puts:
                self._refill()
            elif self._closed and not buf:
                self._set_drained()
            return succeed(msg), None
        if self._n_puts:
            p = self._pop_put()
            assert p is not None
            if p.d is not None:
                p.d.callback(True)
            if self._closed and not self._n_puts:
                self._set_drained()
            return succeed(p.msg), None
        if self._closed:
            return succeed(default), None
        if self._n_takes >= MAX_PENDING:
            return fail(BackpressureError(f"more than {MAX_PENDING} pending takes on {self!r}")), None
        t = _PendingTake(default)
        t.d = Deferred(lambda _: _discard(self._withdraw_take(t)))
        self._takes.append(t)
        self._n_takes += 1
        return t.d, t

    def _refill(self) -> None:
        """Move pending puts into the buffer while it has room, firing their Deferreds."""
        fired = []
        while self._n_puts and self._has_room():
            p = self._pop_put()
            assert p is not None
            self._push(p.msg)
            if p.d is not None:
                fired.append(p.d)
        for d in fired:
            d.callback(True)

    def try_take(
        self,
        timeout: float,
        default: Any = None,
        timeout_value: Any = None,
        clock: IReactorTime | None = None,
    ) -> Deferred[Any]:
        """Like :meth:`take`; fires ``timeout_value`` (the take withdrawn) if nothing arrives in time."""
        _check_timeout(timeout)
        d, t = self._take(default)
        if t is None:
            return d
        return _with_timeout(d, timeout, timeout_value, clock, lambda: self._withdraw_take(t))

    # -- close -----------------------------------------------------------------

    def close(self) -> None:
        """No more puts; what is buffered or pending can still be taken. Idempotent."""
        if self._closed:
            return
        self._closed = True
        callbacks, self._on_closed = self._on_closed, None
        for fn in callbacks or ():
            _call_safely(fn)
        if not self._buffer and not self._n_puts:
            self._set_drained()

    def _set_drained(self) -> None:
        if self._drained:
            return
        self._drained = True
        # on_drained callbacks run before the waiting takes resume, so code after
        # ``await st.take()`` sees their effects.
        callbacks, self._on_drained = self._on_drained, None
        for fn in callbacks or ():
            _call_safely(fn)
        takes, self._takes = self._takes, collections.deque()
        self._n_takes = 0
        for t in takes:
            if t.live:
                t.live = False
                t.d.callback(t.default)

    def _fail(self, error: BaseException) -> None:
        """Close because of ``error``: log it and keep it in :meth:`description`."""
        if self._error is None:
            self._error = error
            _log.failure("stream {stream!r} closed by an error", Failure(error), stream=self)
        self.close()

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` was called (or the peer closed a network stream)."""
        return self._closed

    @property
    def drained(self) -> bool:
        """``True`` once closed and every message was taken."""
        return self._drained

    def on_closed(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once when the stream closes (at once if it has)."""
        if self._closed:
            _call_safely(fn)
        else:
            if self._on_closed is None:
                self._on_closed = []
            self._on_closed.append(fn)

    def on_drained(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once when the stream is drained (at once if it is)."""
        if self._drained:
            _call_safely(fn)
        else:
            if self._on_drained is None:
                self._on_drained = []
            self._on_drained.append(fn)

    def description(self) -> dict[str, Any]:
        """A snapshot of plain values describing the stream's state."""
        desc: dict[str, Any] = {
            "type": "stream",
            "buffer_size": self._buffer_size,
            "buffer_count": len(self._buffer),
            "pending_puts": self._n_puts,
            "pending_takes": self._n_takes,
            "closed": self._closed,
            "drained": self._drained,
        }
        if self._metric is not None:
            desc["buffer_weight"] = self._weight
        if self._error is not None:
            desc["error"] = self._error
        extra = self._description
        if extra is not None:
            desc.update(extra() if callable(extra) else extra)
        return desc

    def __repr__(self) -> str:
        state = "drained" if self._drained else "closed" if self._closed else "open"
        return f"<{type(self).__name__} {state} buffer={len(self._buffer)}/{self._buffer_size}>"

    # -- async iteration -------------------------------------------------------

    def __aiter__(self) -> _StreamIterator:
        return _StreamIterator(self)


_END = object()


class _StreamIterator:
    __slots__ = ("_stream",)

    def __init__(self, st: Stream) -> None:
        self._stream = st

    def __aiter__(self) -> _StreamIterator:
        return self

    async def __anext__(self) -> Any:
        msg = await self._stream.take(_END)
        if msg is _END:
            raise StopAsyncIteration
        return msg


def _call_safely(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        _log.failure("error in an on_closed/on_drained callback {fn!r}", fn=fn)


def _with_timeout(
    d: Deferred[Any],
    timeout: float,
    timeout_value: Any,
    clock: IReactorTime | None,
    withdraw: Callable[[], bool],
) -> Deferred[Any]:
    """Fire ``d`` with ``timeout_value`` after ``timeout`` unless it fired; cancel the timer."""

    def expire() -> None:
        if not d.called and withdraw():
            d.callback(timeout_value)

    call: IDelayedCall = _reactor_clock(clock).callLater(timeout, expire)

    def disarm(result: Any) -> Any:
        if call.active():
            call.cancel()
        return result

    d.addBoth(disarm)
    return d


def stream(
    buffer_size: int = 0,
    xform: Callable[[Any], Iterable[Any]] | None = None,
    description: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
) -> Stream:
    """A new :class:`Stream` (unbuffered by default: a put waits for a take)."""
    return Stream(buffer_size, xform, description)
