"""The Stream: Manifold's default stream, on Twisted Deferreds.

A put goes, in this order, to a waiting take, else into the buffer if it has
room, else it waits (pending) until a take makes room. A take mirrors it: the
buffer first (moving the oldest pending put into the freed room), else the
oldest pending put, else it waits. Every Deferred that can fire at once fires
before the call returns: the module never touches the reactor except to arm a
``try_put``/``try_take`` timer.

What each path costs, and which benchmark keeps each fast path: docs/internals.rst,
"Streams: what a message costs".
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._time import withdraw_after
from aleph_tx.errors import BackpressureError
from aleph_tx.stream._fired import FAST, _Fired, _Waiting, fired, fired_true
from aleph_tx.stream._fired import is_deferred_type as is_deferred_type

__all__ = ["MAX_PENDING", "Stream", "stream"]

#: Pending puts (or takes) allowed on one stream before further ones fail with
#: :class:`~aleph_tx.errors.BackpressureError`; Manifold's limit.
MAX_PENDING = 16384

_log = Logger()

_fired_true = fired_true  # the name aleph_tx._adapter imports


def _discard(_: object) -> None:
    """Drop a result (a Deferred's canceller must return None; a put's ``fire`` that
    nobody waits on)."""


def _check_timeout(timeout: float) -> None:
    if timeout is None or timeout < 0:
        raise ValueError(f"timeout must be a number >= 0, not {timeout!r}")


# A pending put is a list ``[msg, fire]``: ``fire(result)`` is called once, with
# ``True`` when the message is accepted or ``False`` when it is dropped; ``fire`` is
# ``None`` once the put was withdrawn (lazy deletion: the entry is skipped later).
# A list costs a fraction of an object with ``__init__``.
_MSG = 0
_FIRE = 1


class _PendingTake:
    """A take waiting for a message, when it is not a bare Deferred: an internal
    callback take (``fire`` is the callback) or a take with a ``default``.

    Like a Deferred it has ``called`` (``True`` once fired or withdrawn) and
    ``callback(msg)``, so the queue of takes holds either kind.
    """

    __slots__ = ("called", "default", "fire", "stream")

    def __init__(self, stream: Stream, default: Any, fire: Callable[[Any], object] | None) -> None:
        self.stream = stream
        self.default = default
        self.fire = fire
        self.called = False

    def callback(self, msg: Any) -> None:
        self.called = True
        self.fire(msg)  # type: ignore[misc]

    def __call__(self, _: object) -> None:
        """The canceller of its Deferred (no closure per take): withdraw this take."""
        self.stream._withdraw_take(self)


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
        "_plain",
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
        self._puts: collections.deque[list[Any]] = collections.deque()
        self._takes: collections.deque[Any] = collections.deque()  # Deferreds and _PendingTakes
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
        self._plain = xform is None and metric is None  # open, no xform, no metric: fast paths

    # -- pending queues (lazy deletion) ------------------------------------------

    def _next_take(self) -> Any:
        """The oldest live pending take, popped (the head of the queue was dead), or
        ``None`` if a take's Deferred was fired by someone else and none is left."""
        takes = self._takes
        while takes:
            t = takes.popleft()
            if not t.called:
                return t
        self._n_takes = 0
        return None

    def _next_put(self) -> list[Any]:
        """The oldest live pending put, popped (the head of the queue was withdrawn)."""
        puts = self._puts
        p = puts.popleft()
        while p[_FIRE] is None:
            p = puts.popleft()
        return p

    def _withdraw_puts(self, entries: list[list[Any]]) -> bool:
        """Withdraw the live ``entries``; ``True`` if any was still pending."""
        withdrew = False
        for p in entries:
            if p[_FIRE] is not None:
                p[_FIRE] = None
                self._n_puts -= 1
                withdrew = True
        if len(self._puts) > 2 * self._n_puts + 64:
            self._puts = collections.deque(p for p in self._puts if p[_FIRE] is not None)
        if withdrew and self._closed and not self._n_puts and not self._buffer:
            self._set_drained()  # the withdrawn put was the last message
        return withdrew

    def _withdraw_take(self, t: Any) -> bool:
        """Withdraw the pending take ``t`` (a Deferred or a :class:`_PendingTake`);
        ``True`` if it was still pending. A Deferred is then fired by the caller."""
        if t.called:
            return False
        if t.__class__ is _PendingTake:
            t.called = True
        self._n_takes -= 1
        if len(self._takes) > 2 * self._n_takes + 64:
            self._takes = collections.deque(x for x in self._takes if not x.called and x is not t)
        return True

    def _cancel_take(self, d: Deferred[Any]) -> None:
        """The canceller of a bare take Deferred."""
        self._withdraw_take(d)

    # -- put -------------------------------------------------------------------

    def put(self, msg: Any) -> Deferred[bool]:
        """Offer ``msg``; fires ``True`` once accepted, ``False`` if the stream is closed.

        :raises ValueError: at once, for ``None``.
        """
        # Fast path (open, no xform, no metric): to a waiting take, or into the buffer.
        if self._plain and msg is not None:
            if self._n_takes:
                t = self._takes.popleft()
                if not t.called or (t := self._next_take()) is not None:
                    self._n_takes -= 1
                    t.callback(msg)
                    return fired_true()
            buf = self._buffer
            if len(buf) < self._buffer_size:
                buf.append(msg)
                return fired_true()
        return self._put_deferred(msg)[0]

    def _put_deferred(self, msg: Any) -> tuple[Deferred[Any], list[list[Any]] | None]:
        """The general put: its Deferred, and its pending entries if it waits."""
        try:
            r = self._offer(msg, _discard)
        except BackpressureError as e:
            return fail(e), None
        if r.__class__ is bool:
            return fired(r), None
        d: Deferred[bool] = Deferred(lambda _: _discard(self._withdraw_puts(r)))
        r[-1][_FIRE] = d.callback
        return d, r

    def _put_cb(self, msg: Any, cb: Callable[[bool], object]) -> Any:
        """Internal put: ``True``/``False`` if decided now, else a marker of the pending
        put (``cb(result)`` is called once, when it is decided). Raises BackpressureError."""
        # The fast path of put() without its Deferred, written out in both so that
        # neither pays a call more per message.
        if self._plain and msg is not None:
            if self._n_takes:
                t = self._takes.popleft()
                if not t.called or (t := self._next_take()) is not None:
                    self._n_takes -= 1
                    t.callback(msg)
                    return True
            buf = self._buffer
            if len(buf) < self._buffer_size:
                buf.append(msg)
                return True
            if self._n_puts < MAX_PENDING:
                entry = [msg, cb]
                self._puts.append(entry)
                self._n_puts += 1
                return entry
        return self._offer(msg, cb)

    def _offer(self, msg: Any, fire: Callable[[bool], object]) -> Any:
        """Accept ``msg`` now (``True``), refuse it (``False``, closed), or queue it and
        return the non-empty list of pending entries it left (the last one calls
        ``fire``)."""
        if msg is None:
            raise ValueError("None is not a valid message")
        if self._closed:
            return False
        if self._n_puts >= MAX_PENDING:  # puts wait, so this one would (checked before any effect)
            raise BackpressureError(f"more than {MAX_PENDING} pending puts on {self!r}")
        if self._xform is None:
            msgs: Iterable[Any] = (msg,)
        else:
            try:
                msgs = [m for m in self._xform(msg) if m is not None]
            except Exception as e:
                self._fail(e)
                return False
        entries: list[list[Any]] = []
        for m in msgs:
            if entries:
                entries.append([m, _discard])
            elif self._n_takes and (t := self._pop_take()) is not None:
                t.callback(m)
            elif self._has_room():
                self._push(m)
            else:
                entries.append([m, _discard])
        if not entries:
            return True
        # The limit counts puts: one put expanding into more messages (a burst) waits whole.
        entries[-1][_FIRE] = fire
        self._puts.extend(entries)
        self._n_puts += len(entries)
        return entries

    def _pop_take(self) -> Any:
        """The oldest live pending take, popped and counted out (``None`` if none)."""
        t = self._takes.popleft()
        if not t.called or (t := self._next_take()) is not None:
            self._n_takes -= 1
        return t

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
        d, entries = self._put_deferred(msg)
        if entries is None:
            return d
        return withdraw_after(d, timeout, lambda: self._withdraw_puts(entries), timeout_value, clock)

    # -- take ------------------------------------------------------------------

    def take(self, default: Any = None) -> Deferred[Any]:
        """Fires with the next message, or ``default`` once the stream is drained."""
        buf = self._buffer
        if buf:
            if self._plain and not self._n_puts:  # fast path: no refill, no drain
                if FAST:
                    d: Deferred[Any] = _Fired()
                    d.result = buf.popleft()
                    return d
                return fired(buf.popleft())
        elif default is None and self._plain and not self._n_puts and self._n_takes < MAX_PENDING:
            # fast path: the take waits, as a bare Deferred in the queue
            if FAST:  # Deferred(self._cancel_take) without the call to Deferred.__init__
                d = _Waiting()
                d._callbacks = []
                d.owner = self  # type: ignore[attr-defined]
            else:
                d = Deferred(self._cancel_take)
            self._takes.append(d)
            self._n_takes += 1
            return d
        return self._take_deferred(default)[0]

    def _take_deferred(self, default: Any) -> tuple[Deferred[Any], _PendingTake | None]:
        """The general take: its Deferred, and its pending entry if it waits."""
        try:
            r = self._take_cb(default, None)
        except BackpressureError as e:
            return fail(e), None
        if r.__class__ is not _PendingTake:
            return fired(r), None
        d: Deferred[Any] = Deferred(r)
        r.fire = d.callback
        return d, r

    def _take_cb(self, default: Any, cb: Callable[[Any], object] | None) -> Any:
        """Internal take: the message (or ``default``) if here, else the pending
        :class:`_PendingTake` (``cb(msg)`` is called when it arrives). Raises
        BackpressureError."""
        buf = self._buffer
        if buf:
            msg = buf.popleft()
            if self._metric is not None:
                self._weight -= self._metric(msg)
                if self._n_puts:
                    self._refill()
            elif self._n_puts:  # one message out, the oldest pending put in
                p = self._puts.popleft()
                if p[_FIRE] is None:
                    p = self._next_put()
                self._n_puts -= 1
                buf.append(p[_MSG])
                p[_FIRE](True)
            if self._closed and not buf and not self._n_puts:
                self._set_drained()
            return msg
        if self._n_puts:
            p = self._puts.popleft()
            if p[_FIRE] is None:
                p = self._next_put()
            self._n_puts -= 1
            p[_FIRE](True)
            if self._closed and not self._n_puts:
                self._set_drained()
            return p[_MSG]
        if self._closed:
            return default
        if self._n_takes >= MAX_PENDING:
            raise BackpressureError(f"more than {MAX_PENDING} pending takes on {self!r}")
        t = _PendingTake(self, default, cb)
        self._takes.append(t)
        self._n_takes += 1
        return t

    def _refill(self) -> None:
        """Move pending puts into a weighed buffer while it has room, then fire their puts."""
        moved = []
        while self._n_puts and self._has_room():
            p = self._puts.popleft()
            if p[_FIRE] is None:
                p = self._next_put()
            self._n_puts -= 1
            self._push(p[_MSG])
            moved.append(p)
        for p in moved:
            p[_FIRE](True)

    def try_take(
        self,
        timeout: float,
        default: Any = None,
        timeout_value: Any = None,
        clock: IReactorTime | None = None,
    ) -> Deferred[Any]:
        """Like :meth:`take`; fires ``timeout_value`` (the take withdrawn) if nothing arrives in time."""
        _check_timeout(timeout)
        d, entry = self._take_deferred(default)
        if entry is None:
            return d
        return withdraw_after(d, timeout, lambda: self._withdraw_take(entry), timeout_value, clock)

    # -- close -----------------------------------------------------------------

    def close(self) -> None:
        """No more puts; what is buffered or pending can still be taken. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._plain = False
        callbacks, self._on_closed = self._on_closed, None
        for fn in callbacks or ():
            _call_safely(fn)
        if not self._buffer and not self._n_puts:
            self._set_drained()

    def _break(self, error: BaseException) -> None:
        """Close because the peer broke off (not logged): ``error`` is kept in
        :meth:`description` and what was received can still be taken."""
        if self._error is None:
            self._error = error
        self.close()

    def _drop(self) -> None:
        """Close and drop every message held; pending puts fire ``False``.

        For a network stream whose peer is gone for good: what was put can no longer
        be sent, so a producer looping on ``await st.put(x)`` ends (it never waits
        on a dead connection). Idempotent.
        """
        puts, self._puts = self._puts, collections.deque()
        self._n_puts = 0
        self._buffer.clear()
        self._weight = 0
        self.close()
        self._set_drained()
        for p in puts:
            if p[_FIRE] is not None:
                p[_FIRE](False)

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
            if not t.called:
                t.callback(t.default if t.__class__ is _PendingTake else None)

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
        if self._downstream is not None:
            desc["sinks"] = self._downstream.describe()
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


def stream(
    buffer_size: int = 0,
    xform: Callable[[Any], Iterable[Any]] | None = None,
    description: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
) -> Stream:
    """A new :class:`Stream` (unbuffered by default: a put waits for a take)."""
    return Stream(buffer_size, xform, description)
