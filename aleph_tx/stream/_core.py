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
import functools
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx._time import arm_timeout, get_clock
from aleph_tx.errors import BackpressureError
from aleph_tx.stream._clock import early

__all__ = ["MAX_PENDING", "Stream", "stream"]

#: Pending puts (or takes) allowed on one stream before further ones fail with
#: :class:`~aleph_tx.errors.BackpressureError`; Manifold's limit.
MAX_PENDING = 16384

_log = Logger()


#: The clock lookup of this package is ``aleph_tx._time.get_clock``; this name is
#: kept for the modules that still import it.
_reactor_clock = get_clock


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


def _fast_fired(result: Any, _cls: Any = _Fired) -> Deferred[Any]:
    """``succeed(result)``, about three times cheaper."""
    d = _cls()
    d.result = result
    return d  # type: ignore[no-any-return]


def _check_fired() -> bool:
    """Whether :class:`_Fired` instances behave as ``succeed`` ones (chaining, await, cancel)."""
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
        return separate and probe == [2, 3, 4]
    except Exception:
        return False


async def _await(d: Deferred[Any]) -> Any:
    return await d


_FAST = _check_fired()
#: A Deferred already fired with its argument (the fastest equivalent of ``succeed``).
fired: Callable[[Any], Deferred[Any]] = _fast_fired if _FAST else succeed
#: ``fired(True)`` for the hot paths (``_Fired()`` is a fired Deferred whose result to set).
_fired_true: Callable[[], Deferred[bool]] = _FiredTrue if _FAST else functools.partial(succeed, True)


def _discard(_: object) -> None:
    """Drop a result (a Deferred's canceller must return None)."""


def _check_timeout(timeout: float) -> None:
    if timeout is None or timeout < 0:
        raise ValueError(f"timeout must be a number >= 0, not {timeout!r}")


class _PendingPut:
    """A put waiting for room; ``live`` goes False when it is withdrawn (lazy deletion).

    Only the last entry of a put fires: through its Deferred, or through ``cb`` for
    the stream's own machinery (no Deferred on the hot path).
    """

    __slots__ = ("cb", "d", "live", "msg")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self.d: Deferred[Any] | None = None
        self.cb: Callable[[Any], object] | None = None
        self.live = True

    def fire(self, result: bool) -> None:
        if self.cb is not None:
            self.cb(result)
        elif self.d is not None:
            self.d.callback(result)


class _PendingTake:
    """A take waiting for a message; ``live`` goes False when it is withdrawn."""

    __slots__ = ("cb", "d", "default", "live", "stream")

    def __init__(self, stream: Stream, default: Any) -> None:
        self.stream = stream
        self.default = default
        self.live = True
        self.d: Deferred[Any] | None = None
        self.cb: Callable[[Any], object] | None = None

    def __call__(self, _: object) -> None:
        """The canceller of :attr:`d` (no closure per take): withdraw this take."""
        self.stream._withdraw_take(self)

    def fire(self, msg: Any) -> None:
        if self.cb is not None:
            self.cb(msg)
        else:
            self.d.callback(msg)  # type: ignore[union-attr]


#: Returned by the internal ``_poll`` when a take would have to wait.
EMPTY: Any = object()


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
        self._plain = xform is None and metric is None  # open, no xform, no metric: fast paths

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
        # Fast path: an open stream with no xform and no metric, straight to a
        # waiting take or into the buffer.
        if self._plain and msg is not None:
            if self._n_takes:
                self._pop_take().fire(msg)  # type: ignore[union-attr]
                return _fired_true()
            buf = self._buffer
            if len(buf) < self._buffer_size:
                buf.append(msg)
                return _fired_true()
        try:
            r = self._offer(msg)
        except BackpressureError as e:
            return fail(e)
        if r.__class__ is bool:
            return fired(r)
        d: Deferred[bool] = Deferred(lambda _: _discard(self._withdraw_puts(r)))
        r[-1].d = d
        return d

    def _put_cb(self, msg: Any, cb: Callable[[bool], object]) -> Any:
        """Internal put: ``True``/``False`` if decided now, else the pending entries
        (``cb(result)`` is called when they are decided). Raises BackpressureError."""
        r = self._offer(msg)
        if r.__class__ is not bool:
            r[-1].cb = cb
        return r

    def _offer(self, msg: Any) -> Any:
        """Accept ``msg`` now (``True``), refuse it (``False``, closed), or queue it
        and return the non-empty list of pending entries it left."""
        if msg is None:
            raise ValueError("None is not a valid message")
        if self._closed:
            return False
        if self._xform is None:  # the common case: one message, no lists
            if self._n_takes:
                self._pop_take().fire(msg)  # type: ignore[union-attr]
                return True
            if self._has_room():
                self._push(msg)
                return True
            if self._n_puts >= MAX_PENDING:
                raise BackpressureError(f"more than {MAX_PENDING} pending puts on {self!r}")
            entry = _PendingPut(msg)
            self._puts.append(entry)
            self._n_puts += 1
            return [entry]
        else:
            try:
                msgs = [m for m in self._xform(msg) if m is not None]
            except Exception as e:
                self._fail(e)
                return False
        entries: list[_PendingPut] = []
        for m in msgs:
            if entries:
                entries.append(_PendingPut(m))
            elif self._n_takes:
                self._pop_take().fire(m)  # type: ignore[union-attr]
            elif self._has_room():
                self._push(m)
            else:
                entries.append(_PendingPut(m))
        if not entries:
            return True
        if self._n_puts + len(entries) > MAX_PENDING:
            raise BackpressureError(f"more than {MAX_PENDING} pending puts on {self!r}")
        self._puts.extend(entries)
        self._n_puts += len(entries)
        return entries

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
        try:
            r = self._offer(msg)
        except BackpressureError as e:
            return fail(e)
        if r.__class__ is bool:
            return fired(r)
        d: Deferred[bool] = Deferred(lambda _: _discard(self._withdraw_puts(r)))
        r[-1].d = d

        def expire() -> None:
            if not d.called and self._withdraw_puts(r):
                d.callback(timeout_value)

        return arm_timeout(d, early(timeout), expire, clock)

    # -- take ------------------------------------------------------------------

    def take(self, default: Any = None) -> Deferred[Any]:
        """Fires with the next message, or ``default`` once the stream is drained."""
        buf = self._buffer
        if buf and self._plain and not self._n_puts:  # fast path: no refill, no drain
            if _FAST:
                d: Deferred[Any] = _Fired()
                d.result = buf.popleft()
                return d
            return fired(buf.popleft())
        msg = self._poll(default)
        if msg is not EMPTY:
            return fired(msg)
        try:
            t = self._wait(default)
        except BackpressureError as e:
            return fail(e)
        d = t.d = Deferred(t)
        return d

    def _take_cb(self, default: Any, cb: Callable[[Any], object]) -> Any:
        """Internal take: the message (or ``default``) if here, else the pending entry
        (``cb(msg)`` is called when it arrives). Raises BackpressureError."""
        msg = self._poll(default)
        if msg is not EMPTY:
            return msg
        t = self._wait(default)
        t.cb = cb
        return t

    def _poll(self, default: Any) -> Any:
        """The next message, ``default`` if drained, or :data:`EMPTY` if a take must wait."""
        buf = self._buffer
        if buf:
            msg = buf.popleft()
            if self._metric is not None:
                self._weight -= self._metric(msg)
            if self._n_puts:
                self._refill()
            elif self._closed and not buf:
                self._set_drained()
            return msg
        if self._n_puts:
            p = self._pop_put()
            assert p is not None
            p.fire(True)
            if self._closed and not self._n_puts:
                self._set_drained()
            return p.msg
        if self._closed:
            return default
        return EMPTY

    def _wait(self, default: Any) -> _PendingTake:
        if self._n_takes >= MAX_PENDING:
            raise BackpressureError(f"more than {MAX_PENDING} pending takes on {self!r}")
        t = _PendingTake(self, default)
        self._takes.append(t)
        self._n_takes += 1
        return t

    def _refill(self) -> None:
        """Move pending puts into the buffer while it has room, then fire their puts."""
        moved = []
        while self._n_puts and self._has_room():
            p = self._pop_put()
            assert p is not None
            self._push(p.msg)
            moved.append(p)
        for p in moved:
            p.fire(True)

    def try_take(
        self,
        timeout: float,
        default: Any = None,
        timeout_value: Any = None,
        clock: IReactorTime | None = None,
    ) -> Deferred[Any]:
        """Like :meth:`take`; fires ``timeout_value`` (the take withdrawn) if nothing arrives in time."""
        _check_timeout(timeout)
        msg = self._poll(default)
        if msg is not EMPTY:
            return fired(msg)
        try:
            t = self._wait(default)
        except BackpressureError as e:
            return fail(e)
        d = t.d = Deferred(t)

        def expire() -> None:
            if not d.called and self._withdraw_take(t):
                d.callback(timeout_value)

        return arm_timeout(d, early(timeout), expire, clock)

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

    def _drop(self) -> None:
        """Close and drop every message held; pending puts fire ``False``.

        For a network stream whose peer is gone for good: what was put can no longer
        be sent, so a producer looping on ``await st.put(x)`` ends (it never waits
        on a dead connection). Idempotent.
        """
        puts = []
        while (p := self._pop_put()) is not None:
            puts.append(p)
        self._buffer.clear()
        self._weight = 0
        self.close()
        self._set_drained()
        for p in puts:
            p.fire(False)

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
                t.fire(t.default)

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


def stream(
    buffer_size: int = 0,
    xform: Callable[[Any], Iterable[Any]] | None = None,
    description: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
) -> Stream:
    """A new :class:`Stream` (unbuffered by default: a put waits for a take)."""
    return Stream(buffer_size, xform, description)
