"""Manifold streams on Twisted Deferreds: put/take with backpressure, and operators.

``aleph_tx.stream`` never uses the reactor (except to arm a timer that was asked
for): a put, take or derived operation that can complete fires its Deferred before
the call returns.
"""

from aleph_tx.deferred import NOTHING
from aleph_tx.stream._core import MAX_PENDING, Stream, stream
from aleph_tx.stream._graph import SplicedStream, connect, drain_into, splice
from aleph_tx.stream._ops import (
    batch,
    buffer,
    collect,
    consume,
    filter,
    from_iterable,
    map,
    mapcat,
    periodically,
    reduce,
    throttle,
    zip,
)

__all__ = [
    "MAX_PENDING",
    "NOTHING",
    "SplicedStream",
    "Stream",
    "batch",
    "buffer",
    "collect",
    "connect",
    "consume",
    "drain_into",
    "filter",
    "from_iterable",
    "map",
    "mapcat",
    "periodically",
    "reduce",
    "splice",
    "stream",
    "throttle",
    "zip",
]
