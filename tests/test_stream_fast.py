"""The stream's fast paths (docs/internals.rst, "Streams: what a message costs"):
each one is taken where it should be, and the general path it short-cuts gives the
same results. A small reference model of the stream contract is the judge: random
sequences of operations must leave the same trace on the model, on a Stream with
its fast paths, and on a Stream with the fired-Deferred fast paths turned off.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from _helpers import result_of
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, succeed

from aleph_tx import stream as s
from aleph_tx.stream import _core, _fired, _graph
from aleph_tx.testing import check_stream


@contextlib.contextmanager
def fallback() -> Iterator[None]:
    """The stream as it runs when the import-time check of its fired Deferreds fails."""
    with mock.patch.multiple(_core, FAST=False, fired=succeed, fired_true=functools.partial(succeed, True)):
        yield


# -- each fast path is taken ----------------------------------------------------------


def test_fired_deferreds_are_on_with_this_twisted() -> None:
    assert _fired.FAST
    # Deferred.callback only calls _startRunCallbacks: a waiting take calls it directly
    assert _fired._Waiting.callback is Deferred._startRunCallbacks


def test_put_and_take_fast_paths_are_taken() -> None:
    st_ = s.stream(1)
    assert type(st_.put(1)) is _fired._FiredTrue  # into the buffer
    assert type(st_.take()) is _fired._Fired  # out of the buffer
    w = st_.take()
    assert type(w) is _fired._Waiting  # a waiting take is its own Deferred in the queue
    assert list(st_._takes) == [w]
    assert type(st_.put(2)) is _fired._FiredTrue  # handed over to the waiting take
    assert result_of(w) == 2


def test_internal_put_queues_a_list_entry() -> None:
    st_ = s.stream()
    got: list[bool] = []
    entry = st_._put_cb("m", got.append)
    assert entry == ["m", got.append]  # the pending put: [msg, fire]
    assert st_._take_cb(None, None) == "m"
    assert got == [True]


def test_the_pump_delivers_to_one_sink_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    deliver = _graph._Node.deliver
    monkeypatch.setattr(_graph._Node, "deliver", lambda self, msg: (calls.append(msg), deliver(self, msg)))
    one = s.stream(10)
    s.connect(s.from_iterable(range(5)), one)
    assert [result_of(one.take()) for _ in range(5)] == list(range(5))
    assert calls == [_graph._END]  # one sink: messages inline, only the end through deliver
    a, b = s.stream(10), s.stream(10)
    src = s.stream()
    s.connect(src, a)
    s.connect(src, b)
    for i in range(3):
        src.put(i)
    assert [result_of(a.take()) for _ in range(3)] == [result_of(b.take()) for _ in range(3)] == [0, 1, 2]
    assert calls  # several sinks: the general loop


def test_results_of_known_value_types_skip_the_deferred_check(monkeypatch: pytest.MonkeyPatch) -> None:
    class Point:
        pass

    checked: list[type] = []
    must_wait = _graph.must_wait
    monkeypatch.setattr(_graph, "must_wait", lambda t: (checked.append(t), must_wait(t))[1])
    from aleph_tx.stream import _ops

    monkeypatch.setattr(_ops, "must_wait", _graph.must_wait)
    points = [Point() for _ in range(3)]
    out = result_of(s.collect(s.map(lambda i: points[i], s.map(lambda x: x, s.from_iterable(range(3))))))
    assert out == points
    assert checked == [Point]  # ints are known; Point is checked once, then known
    assert Point in _graph.VALUE_TYPES


# -- the fallbacks are exact ------------------------------------------------------------


@pytest.mark.parametrize("buffer_size", [0, 1, 16])
def test_check_stream_passes_without_the_fired_fast_paths(buffer_size: int) -> None:
    with fallback():
        assert type(s.stream(1).put(1)) is Deferred
        assert type(s.stream().take()) is Deferred
        assert result_of(check_stream(lambda: (lambda x: (x, x))(s.stream(buffer_size)))) is None


class Model:
    """The stream contract, written plainly: lists, no lazy deletion, no fast path."""

    def __init__(self, size: int, trace: list[Any]) -> None:
        self.size = size
        self.trace = trace
        self.buf: list[Any] = []
        self.puts: list[tuple[Any, int]] = []  # (msg, put id)
        self.takes: list[tuple[int, Any]] = []  # (take id, default)
        self.closed = False
        self.internal: set[int] = set()  # puts made without a Deferred: never cancelled

    def _drained(self) -> bool:
        return self.closed and not self.buf and not self.puts

    def _drain(self) -> None:
        if self._drained():
            takes, self.takes = self.takes, []
            for tid, default in takes:
                self.trace.append(("take", tid, default))

    def put(self, msg: Any, pid: int) -> None:
        if self.closed:
            self.trace.append(("put", pid, False))
        elif self.takes:
            tid, _ = self.takes.pop(0)
            self.trace.append(("take", tid, msg))
            self.trace.append(("put", pid, True))
        elif len(self.buf) < self.size:
            self.buf.append(msg)
            self.trace.append(("put", pid, True))
        else:
            self.puts.append((msg, pid))

    def take(self, tid: int, default: Any) -> None:
        if self.buf:
            msg = self.buf.pop(0)
            if self.puts:
                m, pid = self.puts.pop(0)
                self.buf.append(m)
                self.trace.append(("put", pid, True))
            self.trace.append(("take", tid, msg))
            self._drain()
        elif self.puts:
            m, pid = self.puts.pop(0)
            self.trace.append(("put", pid, True))
            self.trace.append(("take", tid, m))
            self._drain()
        elif self.closed:
            self.trace.append(("take", tid, default))
        else:
            self.takes.append((tid, default))

    def cancel_put(self, pid: int) -> None:
        for i, (_, p) in enumerate(self.puts):
            if p == pid and pid not in self.internal:
                del self.puts[i]
                self.trace.append(("put", pid, "cancelled"))
                self._drain()

    def cancel_take(self, tid: int) -> None:
        for i, (t, _) in enumerate(self.takes):
            if t == tid:
                del self.takes[i]
                self.trace.append(("take", tid, "cancelled"))

    def close(self) -> None:
        self.closed = True
        self._drain()


class Real:
    """The same operations on a Stream, through put/take or the internal callbacks."""

    def __init__(self, size: int, trace: list[Any]) -> None:
        self.st = s.stream(size)
        self.trace = trace
        self.puts: dict[int, Deferred[Any]] = {}
        self.takes: dict[int, Any] = {}

    def _record(self, kind: str, i: int) -> Any:
        def record(result: Any) -> None:
            if hasattr(result, "check") and result.check(CancelledError):
                result = "cancelled"
            self.trace.append((kind, i, result))

        return record

    def put(self, msg: Any, pid: int, internal: bool) -> None:
        if internal:
            r = self.st._put_cb(msg, self._record("put", pid))
            if r.__class__ is bool:
                self._record("put", pid)(r)
            return
        d = self.puts[pid] = self.st.put(msg)
        d.addBoth(self._record("put", pid))

    def take(self, tid: int, default: Any, internal: bool) -> None:
        if internal:
            r = self.st._take_cb(default, self._record("take", tid))
            if r.__class__ is _core._PendingTake:
                self.takes[tid] = r
            else:
                self._record("take", tid)(r)
            return
        d = self.takes[tid] = self.st.take(default)
        d.addBoth(self._record("take", tid))

    def cancel_put(self, pid: int) -> None:
        d = self.puts.get(pid)
        if d is not None:
            d.cancel()

    def cancel_take(self, tid: int) -> None:
        t = self.takes.get(tid)
        if isinstance(t, Deferred):
            t.cancel()
        elif t is not None and self.st._withdraw_take(t):
            self.trace.append(("take", tid, "cancelled"))


_op = st.one_of(
    st.tuples(st.just("put"), st.booleans()),
    st.tuples(st.just("take"), st.booleans(), st.sampled_from([None, "dflt"])),
    st.tuples(st.just("cancel_put"), st.integers(0, 3)),  # the k-th latest put
    st.tuples(st.just("cancel_take"), st.integers(0, 3)),  # the k-th latest take
    st.tuples(st.just("close")),
)


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(_op, max_size=40), size=st.integers(0, 3))
def test_streams_match_the_model(ops: list[tuple[Any, ...]], size: int) -> None:
    run_against_the_model(ops, size)


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(_op, max_size=40), size=st.integers(0, 3))
def test_streams_match_the_model_without_the_fired_fast_paths(ops: list[tuple[Any, ...]], size: int) -> None:
    with fallback():
        run_against_the_model(ops, size)


def run_against_the_model(ops: list[tuple[Any, ...]], size: int) -> None:
    want: list[Any] = []
    got: list[Any] = []
    model = Model(size, want)
    real = Real(size, got)
    put_ids: list[int] = []
    take_ids: list[int] = []
    for i, (name, *args) in enumerate(ops):
        if name == "put":
            if args[0]:
                model.internal.add(i)
            put_ids.append(i)
            model.put(i, i)
            real.put(i, i, internal=args[0])
        elif name == "take":
            internal, default = args
            take_ids.append(i)
            model.take(i, default)
            real.take(i, default, internal)
        elif name == "cancel_put" and put_ids:
            pid = put_ids[-1 - args[0] % len(put_ids)]
            model.cancel_put(pid)
            real.cancel_put(pid)
        elif name == "cancel_take" and take_ids:
            tid = take_ids[-1 - args[0] % len(take_ids)]
            model.cancel_take(tid)
            real.cancel_take(tid)
        elif name == "close":
            model.close()
            real.st.close()
        assert got == want, (i, name, args)
    assert real.st.drained is model._drained()
    desc = real.st.description()
    assert (desc["buffer_count"], desc["pending_puts"], desc["pending_takes"]) == (
        len(model.buf),
        len(model.puts),
        len(model.takes),
    )


def test_pipelines_make_no_deferred_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    init = Deferred.__init__

    def counting_init(self: Deferred[Any], canceller: Any = None) -> None:
        made.append(type(self).__name__)
        init(self, canceller)

    monkeypatch.setattr(Deferred, "__init__", counting_init)
    for name in ("fired", "fired_true", "_Fired", "_Waiting"):
        made_by = getattr(_core, name)
        monkeypatch.setattr(_core, name, lambda *a, _f=made_by, _n=name: (made.append(_n), _f(*a))[1])
    n = 1_000
    s.stream(1).put(1)  # counted once: the counter works
    # connect: two hand-offs per message; map x3 + reduce: four
    out: list[int] = []
    dst = s.stream(16)
    s.connect(s.from_iterable(range(n)), dst)
    done = s.consume(out.append, dst)
    total = s.reduce(
        lambda a, b: a + b, s.map(lambda x: x + 1, s.map(int, s.map(abs, s.from_iterable(range(n)))))
    )
    assert out == list(range(n))
    assert result_of(total) == sum(range(1, n + 1))
    assert result_of(done) is True
    assert 0 < len(made) < 20, made  # a few per pipeline (its final Deferreds), none per message
