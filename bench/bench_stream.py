"""Messages per second through aleph_tx streams, against DeferredQueue and asyncio.Queue.

    python bench/bench_stream.py [--n 200000] [--repeat 5] [--only WORKLOAD ...] [--record]

Each of ``--repeat`` rounds runs every peer of a workload once, in turn (so a change
in the machine's speed affects them all alike). Prints the median rate of each peer
and the median over rounds of aleph_tx's ratio to each peer. No reactor is
involved: every put and take here completes synchronously (aleph_tx streams never
use the reactor). docs/internals.rst, "Streams: what a message costs", says which
fast path each workload keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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
    """A consumer waiting first (its take re-armed in its callback); each put hands
    the message over to it."""
    st = s.stream()
    take = st.take

    def got(msg: int) -> None:
        take().addCallback(got)

    take().addCallback(got)
    put = st.put
    for i in range(n):
        put(i)


def batch_aleph(n: int) -> None:
    """A buffered stream: 1,024 puts, then 1,024 takes."""
    st = s.stream(1024)
    put, take = st.put, st.take
    for _ in range(n // 1024):
        for i in range(1024):
            put(i)
        for _ in range(1024):
            take()


def put_take_deferredqueue(n: int) -> None:
    q: DeferredQueue[int] = DeferredQueue()
    put, get = q.put, q.get
    for i in range(n):
        put(i)
        get()


def take_put_deferredqueue(n: int) -> None:
    q: DeferredQueue[int] = DeferredQueue()
    get = q.get

    def got(msg: int) -> None:
        get().addCallback(got)

    get().addCallback(got)
    put = q.put
    for i in range(n):
        put(i)


def batch_deferredqueue(n: int) -> None:
    q: DeferredQueue[int] = DeferredQueue(size=1024)
    put, get = q.put, q.get
    for _ in range(n // 1024):
        for i in range(1024):
            put(i)
        for _ in range(1024):
            get()


def batch_asyncio(n: int) -> None:
    q: asyncio.Queue[int] = asyncio.Queue(1024)
    put, get = q.put_nowait, q.get_nowait
    for _ in range(n // 1024):
        for i in range(1024):
            put(i)
        for _ in range(1024):
            get()


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

        async def consumer() -> None:
            for _ in range(n):
                await q.get()

        task = asyncio.get_running_loop().create_task(consumer())
        await asyncio.sleep(0)
        for i in range(n):
            q.put_nowait(i)
            await asyncio.sleep(0)
        await task

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


def _dec(x: int) -> int:
    return x - 1


def _dbl(x: int) -> int:
    return x * 2


def _inc(x: int) -> int:
    return x + 1


def map_chain_aleph(n: int) -> None:
    """Three maps then reduce (the functions are defined apart, so that ``--costs``
    counts each: cProfile merges functions written on one line)."""
    out = s.map(_inc, s.map(_dbl, s.map(_dec, s.from_iterable(range(n)))))
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
        d.addCallback(_dec).addCallback(_dbl).addCallback(_inc).addCallback(add)
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
    "1,024 puts, takes": {
        "aleph_tx": batch_aleph,
        "DeferredQueue": batch_deferredqueue,
        "asyncio.Queue": batch_asyncio,
    },
    "connect (pump)": {"aleph_tx": connect_aleph, "DeferredQueue": connect_deferredqueue},
    "map x3 + reduce": {"aleph_tx": map_chain_aleph, "Deferred chain": map_chain_deferred},
}

# ``--record``: workload -> (results.json key, baseline, title)
RECORD: dict[str, tuple[str, str, str]] = {
    "put then take": ("stream", "DeferredQueue", "Streams: put then take, one message at a time"),
    "take then put": (
        "stream_take_put",
        "DeferredQueue",
        "Streams: a waiting take (re-armed in its callback), then put",
    ),
    "1,024 puts, takes": ("stream_batch", "DeferredQueue", "Streams: buffered, 1,024 puts then 1,024 takes"),
    "connect (pump)": ("stream_connect", "DeferredQueue", "Streams: from_iterable -> connect -> consume"),
    "map x3 + reduce": ("stream_map", "Deferred chain", "Streams: map x3 + reduce"),
}


def rates(peers: dict[str, Callable[[int], None]], n: int, repeat: int) -> list[dict[str, float]]:
    """The rate of each peer in each of ``repeat`` rounds; each round runs every peer
    once, in turn, so a change in the machine's speed affects them all alike."""
    rounds = []
    for _ in range(repeat):
        rates_ = {}
        for name, fn in peers.items():
            t0 = time.perf_counter()
            fn(n)
            rates_[name] = n / (time.perf_counter() - t0)
        rounds.append(rates_)
    return rounds


def calls_per_message(fn: Callable[[int], None], n: int = 20_480) -> tuple[float, float]:
    """Function calls per message in ``fn`` (cProfile: Python functions, then builtins
    and C methods), for docs/internals.rst."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn, n)
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    python = builtin = 0
    for (filename, _, _), (_, ncalls, _, _, _) in stats.items():
        if filename == "~":
            builtin += ncalls
        else:
            python += ncalls
    return python / n, builtin / n


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
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS), help="run these workloads only")
    parser.add_argument("--costs", action="store_true", help="print function calls per message, then exit")
    parser.add_argument("--record", action="store_true", help="store the result in bench/results.json")
    args = parser.parse_args()
    if args.costs:
        for workload, peers in WORKLOADS.items():
            costs = ", ".join(
                "{} {:.1f} + {:.1f}".format(name, *calls_per_message(fn))
                for name, fn in peers.items()
                if not name.startswith("asyncio")
            )
            print(f"{workload:18} calls per message (Python + builtin): {costs}")
        return
    print(f"messages: {args.n}, medians of {args.repeat} interleaved rounds")
    measured: dict[str, dict[str, float]] = {}
    for workload, peers in WORKLOADS.items():
        if args.only and workload not in args.only:
            continue
        rounds = rates(peers, args.n, args.repeat)
        medians = measured[workload] = {name: statistics.median(r[name] for r in rounds) for name in peers}
        line = ", ".join(f"{name} {r / 1e3:,.0f}k/s" for name, r in medians.items())
        ratios = ", ".join(
            f"{statistics.median(r['aleph_tx'] / r[name] for r in rounds):.2f}x {name}"
            for name in peers
            if name != "aleph_tx"
        )
        print(f"{workload:18} {line}  ->  aleph_tx = {ratios}")
    print(f"allocation sites in defer.py for one buffered put: {deferreds_per_buffered_put()}")
    if args.record:
        from _record import record

        for workload, (key, baseline, title) in RECORD.items():
            if workload not in measured:
                continue
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
