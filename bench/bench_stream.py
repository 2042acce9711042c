"""Messages per second through aleph_tx streams, against DeferredQueue and asyncio.Queue.

    python bench/bench_stream.py [--n 200000] [--repeat 5] [--record]

Prints the best of ``--repeat`` runs for each workload and the ratios of aleph_tx to
the peers measured in the same run. No reactor is involved: every put and take
here completes synchronously (aleph_tx streams never use the reactor).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tracemalloc
from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredQueue

from aleph_tx import stream as s


def put_take_aleph(n: int) -> None:
    """One message at a time: put into a stream with room, then take it."""
    st = s.stream(1)
    put, take = st.put, st.take
    for i in range(n):
        put(i)
        take()


def take_put_aleph(n: int) -> None:
    """A consumer waiting first: take (pending), then put hands the message over."""
    st = s.stream()
    put, take = st.put, st.take
    for i in range(n):
        take()
        put(i)


def put_take_deferredqueue(n: int) -> None:
    q: DeferredQueue[int] = DeferredQueue()
    put, get = q.put, q.get
    for i in range(n):
        put(i)
        get()


def take_put_deferredqueue(n: int) -> None:
    q: DeferredQueue[int] = DeferredQueue()
    put, get = q.put, q.get
    for i in range(n):
        get()
        put(i)


def put_take_asyncio(n: int) -> None:
    async def run() -> None:
        q: asyncio.Queue[int] = asyncio.Queue(1)
        for i in range(n):
            await q.put(i)
            await q.get()

    asyncio.run(run())


def take_put_asyncio(n: int) -> None:
    async def run() -> None:
        q: asyncio.Queue[int] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for i in range(n):
            getter = loop.create_task(q.get())
            await asyncio.sleep(0)
            q.put_nowait(i)
            await getter

    asyncio.run(run())


def connect_aleph(n: int) -> None:
    """from_iterable -> connect -> consume: the pump's trampoline."""
    src = s.from_iterable(range(n))
    dst = s.stream(16)
    s.connect(src, dst)
    d = s.consume(lambda m: None, dst)
    assert d.called


def connect_deferredqueue(n: int) -> None:
    """The same pipeline by hand with two DeferredQueues and callbacks."""
    a: DeferredQueue[int] = DeferredQueue()
    b: DeferredQueue[int] = DeferredQueue(backlog=None)
    for i in range(n):
        a.put(i)
        a.get().addCallback(b.put)
        b.get()


def map_chain_aleph(n: int) -> None:
    """Three maps then reduce."""
    out = s.map(lambda x: x + 1, s.map(lambda x: x * 2, s.map(lambda x: x - 1, s.from_iterable(range(n)))))
    d = s.reduce(lambda a, b: a + b, out, 0)
    assert d.called


def map_chain_deferred(n: int) -> None:
    """The same three functions chained on a Deferred per message."""
    total = 0

    def add(v: int) -> None:
        nonlocal total
        total += v

    for i in range(n):
        d: Deferred[int] = Deferred()
        d.addCallback(lambda x: x - 1).addCallback(lambda x: x * 2).addCallback(lambda x: x + 1).addCallback(
            add
        )
        d.callback(i)


WORKLOADS: dict[str, dict[str, Callable[[int], None]]] = {
    "put then take": {
        "aleph_tx": put_take_aleph,
        "DeferredQueue": put_take_deferredqueue,
        "asyncio.Queue": put_take_asyncio,
    },
    "take then put": {
        "aleph_tx": take_put_aleph,
        "DeferredQueue": take_put_deferredqueue,
        "asyncio.Queue": take_put_asyncio,
    },
    "connect (pump)": {"aleph_tx": connect_aleph, "DeferredQueue": connect_deferredqueue},
    "map x3 + reduce": {"aleph_tx": map_chain_aleph, "Deferred chain": map_chain_deferred},
}

# ``--record``: workload -> (results.json key, baseline, title)
RECORD: dict[str, tuple[str, str, str]] = {
    "put then take": ("stream", "DeferredQueue", "Streams: put then take, one message at a time"),
    "take then put": ("stream_take_put", "DeferredQueue", "Streams: a waiting take, then put"),
    "connect (pump)": ("stream_connect", "DeferredQueue", "Streams: from_iterable -> connect -> consume"),
    "map x3 + reduce": ("stream_map", "Deferred chain", "Streams: map x3 + reduce"),
}


def rates(peers: dict[str, Callable[[int], None]], n: int, repeat: int) -> dict[str, float]:
    """Best rate of each peer over ``repeat`` rounds; each round runs every peer once,
    in turn, so a change in the machine's speed affects them all alike."""
    best = dict.fromkeys(peers, float("inf"))
    for _ in range(repeat):
        for name, fn in peers.items():
            t0 = time.perf_counter()
            fn(n)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: n / t for name, t in best.items()}


def deferreds_per_buffered_put() -> int:
    """Deferred objects allocated by one put into a stream with room (must be <= 1)."""
    st = s.stream(10)
    st.put(0)
    st.take()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    d = st.put(1)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    del d
    stats = after.compare_to(before, "traceback")
    return sum(1 for stat in stats if stat.count_diff > 0 and "defer.py" in str(stat.traceback))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="store the result in bench/results.json")
    args = parser.parse_args()
    print(f"messages: {args.n}, best of {args.repeat}")
    measured: dict[str, dict[str, float]] = {}
    for workload, peers in WORKLOADS.items():
        measured_rates = measured[workload] = rates(peers, args.n, args.repeat)
        ours = measured_rates["aleph_tx"]
        line = ", ".join(f"{name} {r / 1e3:,.0f}k/s" for name, r in measured_rates.items())
        ratios = ", ".join(
            f"{ours / r:.2f}x {name}" for name, r in measured_rates.items() if name != "aleph_tx"
        )
        print(f"{workload:18} {line}  ->  aleph_tx = {ratios}")
    print(f"allocation sites in defer.py for one buffered put: {deferreds_per_buffered_put()}")
    if args.record:
        from _record import record

        for workload, (key, baseline, title) in RECORD.items():
            record(
                key,
                title=title,
                unit="msg/s",
                baseline=baseline,
                values={name: round(r) for name, r in measured[workload].items()},
                command="PYTHONPATH=. python bench/bench_stream.py " + " ".join(sys.argv[1:]),
            )


if __name__ == "__main__":
    main()
