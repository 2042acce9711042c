"""connect, splice and drain_into: the propagation loop (Manifold's ``graph.clj``).

Every source with at least one sink owns a :class:`_Node`. The node's pump takes
one message, offers it to every edge, and takes the next only when every edge has
accepted it: a source feeds all its sinks at the pace of the slowest, and holds
at most one message in flight. The pump loops while Deferreds have already fired
(Manifold's trampoline), so synchronous pipelines use no recursion and no
callbacks.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from types import CoroutineType
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aleph_tx.stream._core import Stream, _check_timeout, _PendingTake, is_deferred_type

__all__ = ["SplicedStream", "connect", "drain_into", "splice"]

_log = Logger()

#: Returned by :func:`ready` for a Deferred whose result is not here yet.
PENDING: Any = object()
_END = object()
_TIMED_OUT = object()


def ready(d: Deferred[Any]) -> Any:
    """The successful result of ``d`` if it has already fired, else :data:`PENDING`."""
    if d.called and not d.paused:
        r = d.result
        if not (isinstance(r, Failure) or is_deferred_type(type(r))):
            return r
    return PENDING


#: Types already seen to be plain values (neither a Deferred nor a coroutine):
#: ``type(v) in VALUE_TYPES`` is the cheapest test that a result needs no waiting.
VALUE_TYPES: set[type] = {int, float, str, bytes, bool, tuple, list, dict}


def must_wait(t: type) -> bool:
    """Whether a result of type ``t`` is a Deferred or a coroutine (else ``t`` joins
    :data:`VALUE_TYPES`). Use as ``t not in VALUE_TYPES and must_wait(t)``."""
    if t is CoroutineType or is_deferred_type(t):
        return True
    if len(VALUE_TYPES) > 256:  # bounded, should types be made on the fly
        VALUE_TYPES.clear()
    VALUE_TYPES.add(t)
    return False


def resolve(x: Any) -> Any:
    """``x`` as a value or a Deferred: coroutines are started as Deferreds."""
    if is_deferred_type(type(x)):
        return x
    if type(x) is CoroutineType:  # inspect.iscoroutine, without a call per message
        return Deferred.fromCoroutine(x)
    return x


def _fast_take(st: Any) -> Callable[[Any, Callable[[Any], object]], Any] | None:
    """The internal callback take of a plain :class:`Stream` (no Deferred), else ``None``."""
    if isinstance(st, Stream) and type(st).take is Stream.take:
        return st._take_cb
    return None


def _fast_put(st: Any) -> Callable[[Any, Callable[[bool], object]], Any] | None:
    """A put without a Deferred per message: a plain :class:`Stream`'s internal
    callback put, or a network stream's ``put_now`` (``True`` when written at once,
    else a Deferred); ``None`` for other sinks (their ``put`` is used)."""
    if isinstance(st, Stream) and type(st).put is Stream.put:
        return st._put_cb
    put_now: Callable[[Any, Callable[[bool], object]], Any] | None = getattr(st, "put_now", None)
    return put_now


@dataclasses.dataclass(slots=True, eq=False)
class _Edge:
    """One connection from a node's source to a sink.

    ``put_cb(msg, cb)`` (a plain sink's internal put, or an operator's offer) is used
    when set, else ``offer(msg)``, which returns a Deferred. ``pending`` is the marker
    of the put in flight, if any. ``on_error(exc)`` is called when a put raises or its
    Deferred fails (default: log it); the edge is then removed.
    """

    sink: Any
    offer: Callable[[Any], Deferred[Any]]
    downstream: bool
    upstream: bool
    on_end: Callable[[], object] | None = None
    put_cb: Callable[[Any, Callable[[bool], object]], Any] | None = None
    on_error: Callable[[BaseException], object] | None = None
    description: dict[str, Any] | None = None
    active: bool = dataclasses.field(default=True, init=False)
    pending: Any = dataclasses.field(default=None, init=False)
    node: _Node | None = dataclasses.field(default=None, init=False)
    accepted_cb: Callable[[Any], None] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.accepted_cb = self.accepted  # made once: put_cb's callback for every message

    def accepted(self, result: Any) -> None:
        """``put_cb``'s callback: the put in flight was decided (``True``/``False``)."""
        node = self.node
        if self.pending is None or node is None:
            return  # the edge was removed meanwhile
        self.pending = None
        node.in_flight -= 1
        if result is not True:
            node._refused(self, result)
        node.pump()


class _Node:
    """The pump of one source and its edges.

    ``running`` guards the loop against re-entry from callbacks that fire while it
    delivers; ``in_flight`` counts the edges whose put has not fired yet; ``waiting``
    is the pending take on the source (a Deferred, or an internal entry of a plain
    :class:`Stream`).
    """

    __slots__ = ("edges", "fast_take", "in_flight", "running", "source", "taken_cb", "waiting")

    def __init__(self, source: Any) -> None:
        self.source = source
        self.edges: list[_Edge] = []
        self.waiting: Any = None
        self.in_flight = 0
        self.running = False
        self.fast_take = _fast_take(source)
        self.taken_cb = self._taken_cb  # made once: the fast take's callback

    def describe(self) -> list[dict[str, Any]]:
        """One dict per connected sink: the ``description`` given to ``connect``, plus
        ``sink`` (its repr), ``downstream`` and ``upstream``."""
        return [
            {
                **(edge.description or {}),
                "sink": repr(edge.sink),
                "downstream": edge.downstream,
                "upstream": edge.upstream,
            }
            for edge in self.edges
        ]

    def add(self, edge: _Edge) -> None:
        edge.node = self
        self.edges.append(edge)
        edge.sink.on_closed(lambda: self.remove(edge, sink_closed=True))
        if self.source.drained:
            self.end()
        elif self.waiting is None:
            self.pump()

    def remove(self, edge: _Edge, sink_closed: bool = False) -> None:
        if not edge.active:
            return
        edge.active = False
        self.edges.remove(edge)
        if edge.pending is not None:
            # Its put may stay pending on a closed sink forever: stop waiting for it.
            edge.pending = None
            self.in_flight -= 1
        if self.edges:
            self.pump()
            return
        self._withdraw()
        if sink_closed and edge.upstream:
            self.source.close()

    def _withdraw(self) -> None:
        """Withdraw the pending take, so no message is taken with nowhere to go."""
        waiting, self.waiting = self.waiting, None
        if is_deferred_type(type(waiting)):
            waiting.cancel()
        elif waiting is not None:
            self.source._withdraw_take(waiting)

    def pump(self, msg: Any = PENDING) -> None:
        """Deliver ``msg`` (if given), then take and deliver until something has to wait."""
        if self.running:
            return
        self.running = True
        try:
            if msg is not PENDING:
                self.deliver(msg)
            source, fast = self.source, self.fast_take
            while self.edges and not self.in_flight and self.waiting is None:
                if fast is not None:
                    msg = fast(_END, self.taken_cb)
                    if msg.__class__ is _PendingTake:
                        self.waiting = msg
                        return
                else:
                    d = source.take(_END)
                    msg = ready(d)
                    if msg is PENDING:
                        self.waiting = d
                        d.addCallbacks(self._taken, self._take_failed, callbackArgs=(d,), errbackArgs=(d,))
                        return
                edges = self.edges
                if len(edges) == 1 and msg is not _END and edges[0].put_cb is not None:
                    # one sink (the common case): deliver inline
                    edge = edges[0]
                    try:
                        r = edge.put_cb(msg, edge.accepted_cb)  # type: ignore[misc]
                    except Exception as e:
                        self._failed(edge, e)
                        continue
                    if r is not True:
                        if r.__class__ is list:  # a pending put of a plain sink
                            self.in_flight = 1
                            edge.pending = r
                        else:
                            self._put_result(edge, r)
                else:
                    self.deliver(msg)
        finally:
            self.running = False

    def _taken_cb(self, msg: Any) -> None:
        self.waiting = None
        self.pump(msg)

    def _taken(self, msg: Any, d: Deferred[Any]) -> None:
        if self.waiting is d:
            self.waiting = None
            self.pump(msg)

    def _take_failed(self, f: Failure, d: Deferred[Any]) -> None:
        if f.check(CancelledError):
            return
        if self.waiting is d:
            self.waiting = None
        _log.failure("take from {source!r} failed; disconnecting its sinks", f, source=self.source)
        for edge in tuple(self.edges):
            self.remove(edge)

    def deliver(self, msg: Any) -> None:
        if msg is _END:
            self.end()
            return
        for edge in tuple(self.edges):
            if not edge.active:
                continue
            try:
                if edge.put_cb is not None:
                    r = edge.put_cb(msg, edge.accepted_cb)
                else:
                    r = edge.offer(msg)
            except Exception as e:
                self._failed(edge, e)
                continue
            if r is not True:
                self._put_result(edge, r)

    def _put_result(self, edge: _Edge, r: Any) -> None:
        """A put that was not accepted at once: refused (``False``), pending (an
        internal marker: ``edge.accepted`` follows), or a Deferred."""
        if r is False:
            self._refused(edge, False)
            return
        if not is_deferred_type(type(r)):
            self.in_flight += 1
            edge.pending = r
            return
        v = ready(r)
        if v is PENDING:
            self.in_flight += 1
            edge.pending = r
            r.addBoth(self._offered, edge, r)
        elif v is not True:
            self._refused(edge, v)

    def _offered(self, result: Any, edge: _Edge, marker: Deferred[Any]) -> None:
        """The Deferred put ``marker`` was decided."""
        if edge.pending is not marker:
            return  # the edge was removed meanwhile
        edge.pending = None
        self.in_flight -= 1
        if isinstance(result, Failure):
            if result.check(CancelledError):
                self._refused(edge, False)
            else:
                self._failed(edge, result.value if result.value is not None else RuntimeError(repr(result)))
        elif result is not True:
            self._refused(edge, result)
        self.pump()

    def _failed(self, edge: _Edge, error: BaseException) -> None:
        """A put into ``edge`` raised or failed: report it, drop the edge."""
        if edge.on_error is not None:
            edge.on_error(error)
        else:
            _log.failure("put into {sink!r} failed", Failure(error), sink=edge.sink)
        self._refused(edge, False)

    def _refused(self, edge: _Edge, result: Any) -> None:
        if result is _TIMED_OUT:
            edge.sink.close()
        self.remove(edge, sink_closed=bool(edge.sink.closed))

    def end(self) -> None:
        """The source is drained: close the downstream sinks, drop every edge."""
        edges, self.edges = self.edges, []
        for edge in edges:
            edge.active = False
            if edge.on_end is not None:
                edge.on_end()
            elif edge.downstream:
                edge.sink.close()


_foreign_nodes: weakref.WeakKeyDictionary[Any, _Node] = weakref.WeakKeyDictionary()


def _node(source: Any) -> _Node:
    """The node of ``source`` (kept on the stream itself, or beside it for other classes)."""
    node: _Node | None = getattr(source, "_downstream", None)
    if node is None:
        node = _Node(source)
        try:
            source._downstream = node
        except AttributeError:
            node = _foreign_nodes.setdefault(source, node)
    return node


def connect(
    source: Any,
    sink: Any,
    downstream: bool = True,
    upstream: bool = False,
    timeout: float | None = None,
    description: dict[str, Any] | None = None,
    clock: IReactorTime | None = None,
) -> None:
    """Pump every message of ``source`` into ``sink``, respecting backpressure.

    :param downstream: close ``sink`` when ``source`` is drained.
    :param upstream: close ``source`` when ``sink`` closes and it has no other open sink.
    :param timeout: a sink that does not accept a message within it is closed and
        disconnected (a slow consumer is cut off, not buffered for).
    :param description: a dict describing the connection: the source's
        ``description()["sinks"]`` lists it (with ``sink``, ``downstream`` and
        ``upstream``), as Manifold's ``downstream`` introspection does.
    :raises ValueError: for a negative ``timeout``.
    :raises TypeError: for a ``description`` that is not a dict.
    """
    if description is not None and not isinstance(description, dict):
        raise TypeError(f"description must be a dict or None, not {description!r}")
    put_cb = None
    if timeout is None:
        offer: Callable[[Any], Deferred[Any]] = sink.put
        put_cb = _fast_put(sink)
    else:
        _check_timeout(timeout)

        def offer(msg: Any) -> Deferred[Any]:
            return sink.try_put(msg, timeout, _TIMED_OUT, clock)  # type: ignore[no-any-return]

    node = _node(source)
    node.add(_Edge(sink, offer, downstream, upstream, put_cb=put_cb, description=description))


def connect_via(
    source: Any,
    fn: Callable[[Any, Callable[[bool], object]], Any],
    sink: Stream,
    upstream: bool = True,
    on_end: Callable[[], object] | None = None,
) -> None:
    """Pump ``source`` through ``fn(msg, cb)``, which puts into ``sink``.

    ``fn`` returns ``True``/``False`` (accepted / sink closed), a Deferred of that,
    or what ``sink._put_cb(value, cb)`` returned (pending: ``cb`` is called later).
    If ``fn`` raises or its Deferred fails, ``sink`` closes with the error logged and
    kept in its description. Closing ``sink`` closes ``source`` if it has no other sink.
    When ``source`` is drained, ``on_end()`` is called instead of closing ``sink``.
    """
    node = _node(source)
    node.add(_Edge(sink, sink.put, True, upstream, on_end, put_cb=fn, on_error=sink._fail))


def drain_into(source: Any, sink: Any) -> Deferred[bool]:
    """Put every message of ``source`` into ``sink``; does not close ``sink``.

    :returns: fires ``True`` when ``source`` is drained, ``False`` if ``sink``
        closed first.
    """
    done: Deferred[bool] = Deferred()
    finished = False

    def finish(value: bool) -> None:
        nonlocal finished
        if not finished:
            finished = True
            done.callback(value)

    source.on_drained(lambda: finish(True))
    sink.on_closed(lambda: finish(False) if not source.drained else None)
    if not finished:
        _node(source).add(_Edge(sink, sink.put, False, False, put_cb=_fast_put(sink)))
    return done


class SplicedStream:
    """A duplex stream: puts go to ``sink``, takes come from ``source``.

    ``close()`` closes ``sink``; ``closed`` is the sink's, ``drained`` the source's.
    """

    __slots__ = ("_description", "_downstream", "_sink", "_source")

    def __init__(self, sink: Any, source: Any, description: dict[str, Any] | None = None) -> None:
        self._sink = sink
        self._source = source
        self._description = description
        self._downstream: Any = None

    def put(self, msg: Any) -> Deferred[bool]:
        """Put into the sink."""
        return self._sink.put(msg)  # type: ignore[no-any-return]

    def try_put(
        self, msg: Any, timeout: float, timeout_value: Any = False, clock: Any = None
    ) -> Deferred[Any]:
        """Try to put into the sink."""
        return self._sink.try_put(msg, timeout, timeout_value, clock)  # type: ignore[no-any-return]

    def take(self, default: Any = None) -> Deferred[Any]:
        """Take from the source."""
        return self._source.take(default)  # type: ignore[no-any-return]

    def try_take(
        self, timeout: float, default: Any = None, timeout_value: Any = None, clock: Any = None
    ) -> Deferred[Any]:
        """Try to take from the source."""
        return self._source.try_take(timeout, default, timeout_value, clock)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the sink side."""
        self._sink.close()

    @property
    def closed(self) -> bool:
        """Whether the sink side is closed."""
        return bool(self._sink.closed)

    @property
    def drained(self) -> bool:
        """Whether the source side is drained."""
        return bool(self._source.drained)

    def on_closed(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once the sink side closes."""
        self._sink.on_closed(fn)

    def on_drained(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once the source side is drained."""
        self._source.on_drained(fn)

    def description(self) -> dict[str, Any]:
        """The source's description, with ``type`` ``"splice"`` and the sink's under ``sink``."""
        desc = dict(self._source.description())
        desc.update(type="splice", closed=self.closed, sink=self._sink.description())
        if self._description:
            desc.update(self._description)
        return desc

    def __aiter__(self) -> Any:
        return self._source.__aiter__()

    def __repr__(self) -> str:
        return f"<SplicedStream sink={self._sink!r} source={self._source!r}>"


def splice(sink: Any, source: Any) -> SplicedStream:
    """One duplex stream whose puts go to ``sink`` and whose takes come from ``source``."""
    return SplicedStream(sink, source)
