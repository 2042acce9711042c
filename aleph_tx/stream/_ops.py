"""Stream operators: derived streams and reductions (Manifold's ``stream.clj``).

Derived streams (``map``, ``filter``, ``mapcat``, ``buffer``, ``batch``,
``throttle``, ``zip``) close when their source is drained, and closing one closes
its source when the source has no other sink. A ``None`` result of ``map``'s
function is skipped: ``None`` is not a message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from aleph_tx._time import TOLERANCE, Timer, get_clock
from aleph_tx.deferred import NOTHING
from aleph_tx.stream._core import Stream, _PendingTake, is_deferred_type
from aleph_tx.stream._graph import (
    _END,
    PENDING,
    VALUE_TYPES,
    _fast_take,
    connect,
    connect_via,
    must_wait,
    ready,
    resolve,
)


def _then(x: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn(x)`` now if ``x`` is a value (or fired Deferred), else chained on it."""
    x = resolve(x)
    if is_deferred_type(type(x)):
        v = ready(x)
        if v is PENDING:
            return x.addCallback(fn)
        return fn(v)
    return fn(x)


def _put_later(value: Any, dst: Stream) -> Any:
    """Put ``value`` once a Deferred produced it: a Deferred result for the pump."""
    return True if value is None else dst.put(value)


def map(f: Callable[..., Any], *sources: Any) -> Stream:  # noqa: A001
    """A stream of ``f(msg)`` (``f(*msgs)`` over several sources, zipped).

    ``f`` may return a Deferred or a coroutine; results are awaited in order.
    """
    if not sources:
        raise TypeError("map needs at least one source")
    if len(sources) == 1:
        source, fn = sources[0], f
    else:
        source, fn = zip(*sources), lambda t: f(*t)
    dst = Stream(description={"op": "map"})
    put = dst._put_cb

    def offer(msg: Any, cb: Callable[[bool], object]) -> Any:
        v = fn(msg)
        t = type(v)
        if t not in VALUE_TYPES:
            if v is None:
                return True
            if must_wait(t):
                return resolve(v).addCallback(_put_later, dst)
        return put(v, cb)

    connect_via(source, offer, dst)
    return dst


def filter(pred: Callable[[Any], Any], source: Any) -> Stream:  # noqa: A001
    """A stream of the messages for which ``pred`` (possibly a Deferred) is true."""
    dst = Stream(description={"op": "filter"})

    def offer(msg: Any, cb: Callable[[bool], object]) -> Any:
        keep = pred(msg)
        t = type(keep)
        if t not in VALUE_TYPES and must_wait(t):
            return resolve(keep).addCallback(lambda k: dst.put(msg) if k else True)
        return dst._put_cb(msg, cb) if keep else True

    connect_via(source, offer, dst)
    return dst


def _put_all(dst: Stream, items: Iterator[Any]) -> Any:
    """Put every item in order, each after the previous one was accepted."""
    for item in items:
        if item is None:
            continue
        d = dst.put(item)
        r = ready(d)
        if r is PENDING:
            return d.addCallback(lambda ok: _put_all(dst, items) if ok else False)
        if r is not True:
            return r
    return True


def mapcat(f: Callable[[Any], Any], source: Any) -> Stream:
    """A stream of every item of every iterable ``f(msg)`` returns, in order."""
    dst = Stream(description={"op": "mapcat"})
    connect_via(source, lambda msg, _cb: _then(f(msg), lambda items: _put_all(dst, iter(items))), dst)
    return dst


def _loop(source: Any, step: Callable[[Any], Any], finish: Callable[[], Any]) -> Deferred[Any]:
    """Take every message of ``source`` into ``step`` (awaiting its Deferreds); fire ``finish()``.

    Loops while results have already fired, so long synchronous sources use no recursion.
    """
    done: Deferred[Any] = Deferred()
    fast = _fast_take(source)

    def run(msg: Any = PENDING) -> None:
        try:
            while True:
                if msg is PENDING:
                    if fast is not None:
                        msg = fast(_END, run)
                        if msg.__class__ is _PendingTake:
                            return
                    else:
                        d = source.take(_END)
                        msg = ready(d)
                        if msg is PENDING:
                            d.addCallbacks(run, done.errback)
                            return
                if msg is _END:
                    done.callback(finish())
                    return
                r = step(msg)
                msg = PENDING
                if r is not None and (t := type(r)) not in VALUE_TYPES and must_wait(t):
                    r = resolve(r)
                    if ready(r) is PENDING:
                        r.addCallbacks(lambda _: run(), done.errback)
                        return
        except Exception:
            done.errback(Failure())

    run()
    return done


def reduce(f: Callable[[Any, Any], Any], source: Any, initial: Any = NOTHING) -> Deferred[Any]:
    """Like :func:`functools.reduce` over every message; ``f`` may return a Deferred.

    An empty source without ``initial`` fails with :class:`TypeError`.
    """
    acc = initial

    def store(v: Any) -> None:
        nonlocal acc
        acc = v

    def step(msg: Any) -> Any:
        nonlocal acc
        if acc is NOTHING:
            acc = msg
            return None
        v = f(acc, msg)
        t = type(v)
        if t not in VALUE_TYPES and must_wait(t):
            return _then(v, store)
        acc = v
        return None

    def finish() -> Any:
        if acc is NOTHING:
            raise TypeError("reduce() of an empty stream with no initial value")
        return acc

    return _loop(source, step, finish)


def consume(f: Callable[[Any], Any], source: Any) -> Deferred[bool]:
    """Call ``f`` on each message (awaiting Deferred results); fires ``True`` when drained."""
    return _loop(source, f, lambda: True)


def collect(source: Any) -> Deferred[list[Any]]:
    """Every message until the source is drained, as a list."""
    out: list[Any] = []
    return _loop(source, out.append, lambda: out)


def buffer(size: int, source: Any, metric: Callable[[Any], float] | None = None) -> Stream:
    """A view of ``source`` buffering up to ``size`` messages (or ``size`` weight by ``metric``)."""
    dst = Stream(size, metric=metric, description={"op": "buffer"})
    connect(source, dst, upstream=True)
    return dst


def batch(max_size: int, max_latency: float, source: Any, clock: IReactorTime | None = None) -> Stream:
    """Lists of up to ``max_size`` messages; a batch waits at most ``max_latency`` seconds.

    The timer starts at a batch's first message; a partial batch is flushed when the
    source is drained.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, not {max_size!r}")
    if not max_latency >= 0:
        raise ValueError(f"max_latency must be >= 0, not {max_latency!r}")
    dst = Stream(description={"op": "batch"})
    acc: list[Any] = []

    def flush() -> Deferred[bool]:
        nonlocal acc
        timer.stop()
        out, acc = acc, []
        return dst.put(out)

    def expire() -> None:
        if acc:
            flush()

    timer = Timer(max_latency, expire, clock)

    def offer(msg: Any, _cb: object = None) -> Any:
        acc.append(msg)
        if len(acc) >= max_size:
            return flush()
        if len(acc) == 1:
            timer.start()
        return True

    def end() -> None:
        if acc:
            flush()
        dst.close()

    connect_via(source, offer, dst, on_end=end)
    dst.on_closed(timer.stop)
    return dst


def throttle(max_rate: float, source: Any, clock: IReactorTime | None = None) -> Stream:
    """At most ``max_rate`` messages a second, never dropping one.

    A token bucket of ``max_rate`` tokens (at least one): bursts of up to ``max_rate``
    after a pause. Messages are taken from ``source`` no faster than that (one is
    held while it waits for its token), so the source sees backpressure.
    """
    if not max_rate > 0:
        raise ValueError(f"max_rate must be > 0, not {max_rate!r}")
    dst = Stream(description={"op": "throttle"})
    rate = float(max_rate)
    capacity = max(1.0, rate)  # below one message a second, the bucket still holds one
    clk = get_clock(clock)
    tokens = capacity
    last = clk.seconds()
    held: list[Any] = []  # the message waiting for its token, and the Deferred the pump waits on

    def refill() -> None:
        nonlocal tokens, last
        now = clk.seconds()
        if now > last:
            tokens = min(capacity, tokens + (now - last) * rate)
            last = now

    def release() -> None:
        # The timer was armed for the instant this message's token is in: it is
        # spent without a second look (which float rounding can make miss the
        # token by an ulp, and re-arm a timer at the current instant forever).
        nonlocal tokens
        refill()
        tokens -= 1.0
        msg, d = held
        held.clear()
        d.callback(msg)

    timer = Timer(None, release, clock)

    def offer(msg: Any, cb: Callable[[bool], object]) -> Any:
        nonlocal tokens
        refill()
        wait = (1.0 - tokens) / rate
        if wait <= TOLERANCE:
            tokens -= 1.0  # within the tolerance of a token: a debt the next refill pays
            return dst._put_cb(msg, cb)
        d: Deferred[Any] = Deferred()
        held[:] = [msg, d]
        timer.start_at(clk.seconds() + wait)
        return d.addCallback(dst.put)

    dst.on_closed(timer.stop)
    connect_via(source, offer, dst)
    return dst


def periodically(
    period: float,
    f: Callable[[], Any],
    initial_delay: float = 0,
    clock: IReactorTime | None = None,
) -> Stream:
    """A source calling ``f()`` after ``initial_delay``, then every ``period`` seconds.

    Calls are due at ``initial_delay + k * period`` from now; when the clock has
    passed several of them at once (a blocked reactor, a large ``Clock.advance``),
    ``f`` is called once for all of them, as :class:`twisted.internet.task.LoopingCall`
    does. A value not taken before the next call is dropped, never queued. Closing
    the stream stops the timer. If ``f`` raises, the stream closes with the error logged.
    """
    if not period > 0:
        raise ValueError(f"period must be > 0, not {period!r}")
    if not initial_delay >= 0:
        raise ValueError(f"initial_delay must be >= 0, not {initial_delay!r}")
    dst = Stream(description={"op": "periodically"})
    clk = get_clock(clock)
    start = clk.seconds() + initial_delay
    due = 0  # the index of the next call due: at start + due * period
    last: Deferred[bool] | None = None

    def tick() -> None:
        nonlocal due, last
        if last is not None and not last.called:
            last.addErrback(lambda f: f.trap(CancelledError))
            last.cancel()
        try:
            value = f()
        except Exception as e:
            dst._fail(e)
            return
        if value is not None:
            last = dst.put(value)
        if not dst.closed:
            # the first call due strictly after now (the ones passed are skipped)
            passed = math.floor((clk.seconds() - start + TOLERANCE) / period)
            due = max(due + 1, passed + 1)
            timer.start_at(start + due * period)

    timer = Timer(None, tick, clock)
    timer.start(initial_delay)
    dst.on_closed(timer.stop)
    return dst


def zip(*sources: Any) -> Stream:  # noqa: A001
    """A stream of tuples, one message from each source; closes when any is drained."""
    if not sources:
        raise TypeError("zip needs at least one source")
    dst = Stream(description={"op": "zip"})
    takes: list[Deferred[Any]] = []

    def cancel_takes() -> None:
        for d in takes:
            if not d.called:
                d.addErrback(lambda f: f.trap(CancelledError))
                d.cancel()
        takes.clear()

    def close_all() -> None:
        cancel_takes()
        for s in sources:
            s.close()

    def round_() -> None:
        while not dst.closed:
            takes[:] = [s.take(_END) for s in sources]
            values = [ready(d) for d in takes]
            if any(v is PENDING for v in values):
                _gather(takes).addCallback(lambda vs: round_() if emit(vs) else None)
                return
            if not emit(values):
                return

    def emit(values: list[Any]) -> bool:
        """Put one tuple; ``True`` to go on at once, else continues when the put fires."""
        takes.clear()
        if any(v is _END for v in values):
            dst.close()
            return False
        d = dst.put(tuple(values))
        r = ready(d)
        if r is PENDING:
            d.addCallback(lambda ok: round_() if ok else None)
            return False
        return bool(r)

    dst.on_closed(close_all)
    round_()
    return dst


def _gather(ds: list[Deferred[Any]]) -> Deferred[list[Any]]:
    """The results of ``ds`` in order, once all have fired."""
    results: list[Any] = [None] * len(ds)
    remaining = len(ds)
    out: Deferred[list[Any]] = Deferred()

    def got(v: Any, i: int) -> None:
        nonlocal remaining
        results[i] = v
        remaining -= 1
        if remaining == 0:
            out.callback(results)

    for i, d in enumerate(ds):
        d.addCallbacks(got, lambda f: f.trap(CancelledError), callbackArgs=(i,))
    return out


def from_iterable(iterable: Iterable[Any]) -> Stream:
    """A source of the iterable's items (pulled lazily, one ahead), closed at the end."""
    dst = Stream(description={"op": "from_iterable"})
    it = iter(iterable)

    def run(ok: Any = True) -> None:
        while ok is True:
            try:
                item = next(it)
            except StopIteration:
                dst.close()
                return
            except Exception as e:
                dst._fail(e)
                return
            if item is not None:
                ok = dst._put_cb(item, run)

    run()
    return dst
