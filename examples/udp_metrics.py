"""UDP: a statsd-style metrics collector (Aleph's ``udp`` example).

Clients send datagrams ``name:value``; the collector adds the values up per name
and reports the totals every period, then starts again from zero.

Run the collector: python examples/udp_metrics.py [--port 8125] [--period 10]
then:              echo -n "requests:1" | nc -u -w0 localhost 8125
Check it works:    python examples/udp_metrics.py --selftest
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer, task

from aleph_tx import byte_streams as bs
from aleph_tx import stream as s
from aleph_tx import udp


def parse_statsd_packet(packet: dict[str, Any]) -> list[tuple[str, int]]:
    """``{"message": b"name:value", ...}`` -> ``[(name, value)]``; a malformed packet -> ``[]``."""
    metric, _, value = bs.to_str(packet["message"]).partition(":")
    try:
        return [(metric, int(value))]
    except ValueError:
        return []  # UDP is lossy anyway: a bad datagram is dropped, not fatal


async def start_collector(port: int, period: float, host: str = "") -> tuple[s.Stream, s.Stream]:
    """The socket, and a stream of ``{name: total}`` dicts, one per ``period`` seconds.

    Aleph: ``(->> server (s/map parse-statsd-packet) (s/consume ...))`` accumulates
    into an atom, and ``(s/periodically period #(get-and-set! accumulator {}))``
    reports. ``mapcat`` drops the malformed packets on the way. Like Manifold's,
    ``periodically`` never queues: a report nobody takes before the next one is
    dropped, so keep a consumer on ``reports``.
    """
    sock = await udp.socket(port=port, host=host)
    totals: dict[str, int] = {}

    def add(metric: tuple[str, int]) -> None:
        name, value = metric
        totals[name] = totals.get(name, 0) + value

    s.consume(add, s.mapcat(parse_statsd_packet, sock))

    def report() -> dict[str, int]:
        snapshot = dict(totals)
        totals.clear()
        return snapshot

    reports = s.periodically(period, report)
    sock.on_closed(reports.close)
    return sock, reports


def send_metric(client: s.Stream, host: str, port: int, metric: str, value: int) -> defer.Deferred[bool]:
    return client.put({"host": host, "port": port, "message": f"{metric}:{value}"})


async def selftest(reactor: Any) -> None:
    server, reports = await start_collector(0, period=0.2, host="127.0.0.1")
    port = server.description()["port"]
    client = await udp.socket(host="127.0.0.1")
    try:
        for _ in range(10):
            await send_metric(client, "127.0.0.1", port, "requests", 1)
        await send_metric(client, "127.0.0.1", port, "bytes", 1500)
        await client.put({"host": "127.0.0.1", "port": port, "message": b"garbage"})
        await send_metric(client, "127.0.0.1", port, "bytes", 500)

        # The datagrams may land in one period or straddle two: add the reports up.
        seen: dict[str, int] = {}
        while seen != {"requests": 10, "bytes": 2000}:
            report = await reports.take()
            for name, value in report.items():
                seen[name] = seen.get(name, 0) + value
            assert set(seen) <= {"requests", "bytes"}, seen
        empty = await reports.take()  # nothing new: the next report is empty
        assert empty == {}, empty
    finally:
        client.close()
        server.close()
    assert reports.closed
    print("udp_metrics: ok")


def serve(reactor: Any, port: int, period: float) -> defer.Deferred[None]:
    async def run() -> None:
        server, reports = await start_collector(port, period)
        print(f"udp_metrics: collecting on UDP port {server.description()['port']} (Ctrl-C to stop)")
        async for report in reports:
            print("metrics:", report)

    return defer.ensureDeferred(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8125)
    parser.add_argument("--period", type=float, default=10.0, help="seconds between reports")
    parser.add_argument("--selftest", action="store_true", help="collect on a free port, check, exit")
    args = parser.parse_args()
    if args.selftest:
        task.react(lambda reactor: defer.ensureDeferred(selftest(reactor)).addTimeout(30, reactor))
    else:
        task.react(serve, [args.port, args.period])


if __name__ == "__main__":
    main()
