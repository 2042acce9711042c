"""The inbound half of every stream over a transport: received messages into a stream.

:class:`Receiver` (an ``IConsumer``) is used by TCP, TLS, UDP, WebSockets, request
bodies on every server front and the client's response bodies (docs/internals.rst,
"One of each"). While a put is pending it pauses its producer (normally the
transport), so a connection stops reading while nobody takes; a burst (one read
carrying many messages) waits here in order, never past the stream's pending limit.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aleph_tx.stream._core import is_deferred_type

__all__ = ["Receiver"]

_log = Logger()


@implementer(IConsumer)
class Receiver:
    """Puts received messages into a stream, pausing the producer while a put is pending.

    At most one put is pending on the stream at a time: messages that arrive while
    one is pending (a single read can carry thousands of small WebSocket frames or
    UDP datagrams) wait here, in order, and are put one by one as takes make room.
    So a burst never exceeds the stream's pending limit, no message that arrived is
    dropped, and the producer stays paused until every one was accepted; memory is
    bounded by what arrived before the pause took effect (one read).

    :param put: the stream's put (for a :class:`ConnectionStream`, its raw input put).
    :param close: closes the stream's input (called once, after every message
        received before :meth:`finish` was put).
    :param producer: the push producer to pause (normally the transport); may be
        set later with :meth:`registerProducer`.
    :param put_cb: the stream's internal put (``put_cb(msg, cb)``: ``True`` or
        ``False`` when decided at once, else a pending marker and ``cb(result)``
        later), used instead of ``put`` when given: no Deferred per message
        (a :class:`ConnectionStream`'s ``_receive_cb``; docs/internals.rst, "The
        WebSocket fast path").
    """

    def __init__(
        self,
        put: Callable[[Any], Deferred[bool]],
        close: Callable[[], object],
        producer: IPushProducer | None = None,
        put_cb: Callable[[Any, Callable[[bool], object]], Any] | None = None,
    ) -> None:
        self._put = put
        self._put_cb = put_cb
        self._accepted_cb = self._accepted  # made once: put_cb's callback for every message
        self._close = close
        self._producer = producer
        self._backlog: collections.deque[Any] = collections.deque()
        self._waiting = False  # a put is pending on the stream
        self._paused = False
        self._finished = False
        self._closed = False
        self.bytes_received = 0

    @property
    def paused(self) -> bool:
        """``True`` while the producer is paused because a put is pending."""
        return self._paused

    @property
    def finished(self) -> bool:
        """``True`` once :meth:`finish` was called."""
        return self._finished

    def write(self, data: Any) -> None:
        """Put ``data`` (after the messages already waiting); pause until it is accepted."""
        if self._finished:
            return
        try:
            self.bytes_received += len(data)
        except TypeError:
            pass
        if self._waiting:
            self._backlog.append(data)
            return
        put_cb = self._put_cb
        if put_cb is not None:
            r = put_cb(data, self._accepted_cb)
            if r is not True and r is not False:
                self._wait()
        elif not self._offer(data):
            self._wait()

    def write_many(self, msgs: list[Any], size: int) -> None:
        """:meth:`write` each of ``msgs`` in order (``size``: their bytes, counted once).

        The same as one :meth:`write` per message, in one call: a WebSocket read
        carrying many frames is delivered as one batch.
        """
        if self._finished:
            return
        self.bytes_received += size
        if self._waiting:
            self._backlog.extend(msgs)
            return
        put_cb = self._put_cb
        it = iter(msgs)
        if put_cb is not None:
            cb = self._accepted_cb
            for msg in it:
                r = put_cb(msg, cb)
                if r is not True and r is not False:  # pending: cb fires later
                    self._backlog.extend(it)
                    self._wait()
                    return
                if self._finished:  # lost while the message was handled
                    return  # type: ignore[unreachable]  # (mypy: set by a callback)
            return
        for msg in it:
            if not self._offer(msg):
                self._backlog.extend(it)
                self._wait()
                return
            if self._finished:
                return  # type: ignore[unreachable]

    def _offer(self, msg: Any) -> bool:
        """Put ``msg``: ``True`` if decided at once, ``False`` if it waits (``_accepted`` follows)."""
        put_cb = self._put_cb
        if put_cb is not None:
            r = put_cb(msg, self._accepted_cb)
            return r is True or r is False
        d = self._put(msg)
        if d.called:
            r = d.result
            if r is True or not (isinstance(r, Failure) or is_deferred_type(type(r))):
                return True
        d.addBoth(self._accepted)
        return False

    def _wait(self) -> None:
        self._waiting = True
        if not self._paused:
            self._paused = True
            if self._producer is not None:
                self._producer.pauseProducing()

    def _accepted(self, result: Any) -> None:
        if isinstance(result, Failure):
            _log.failure("putting received data failed", result)
        backlog = self._backlog
        while backlog:
            if not self._offer(backlog.popleft()):
                return
        self._waiting = False
        if self._finished:
            self._close_input()
        elif self._paused:
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()

    def finish(self) -> None:
        """No more data: close the stream's input once what was received is put into it."""
        if self._finished:
            return
        self._finished = True
        if not self._waiting:
            self._close_input()

    def _close_input(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:  # noqa: N802
        """Use ``producer`` (a push producer) as the source to pause.

        :raises RuntimeError: if a producer is already registered.
        :raises ValueError: for a pull producer (not supported).
        """
        if self._producer is not None:
            raise RuntimeError(f"producer {self._producer!r} already registered")
        if not streaming:
            raise ValueError("only streaming (push) producers are supported")
        self._producer = producer  # type: ignore[assignment]
        if self._paused:
            self._producer.pauseProducing()  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:  # noqa: N802
        """Forget the producer."""
        self._producer = None
