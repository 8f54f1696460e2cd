"""Sustained throughput: 10 concurrent senders, each to its own live, consuming recipient.

Every message is durable (committed before it is pushed and before the sender gets
its answer) and every send is answered by the broker (``received`` once the live
recipient's client confirms it). Each sender keeps ``--window`` sends in flight
(``--window 1`` = strictly sequential per sender). The 20 clients run in this
process; the broker in a subprocess. Messages/s counts answered sends in the
measuring window (after a warm-up); broker CPU is read from /proc.

    python benchmarks/bench_throughput.py [--senders 10] [--window 16] [--duration 8] [--json]
"""

from __future__ import annotations

import asyncio
import time

import _common as c


async def run(senders: int, window: int, duration: float, warmup: float) -> dict:
    from sessionmesh.client.aio import AsyncClient

    with c.broker() as b:
        settings = b.settings()
        rx = [AsyncClient(settings, f"tp-recv-{i}") for i in range(senders)]
        tx = [AsyncClient(settings, f"tp-send-{i}") for i in range(senders)]
        await asyncio.wait_for(asyncio.gather(*(x.connect() for x in rx + tx)), 30)
        received = [0] * senders

        async def consume(i: int) -> None:
            while True:
                await rx[i].recv()
                received[i] += 1

        consumers = [asyncio.create_task(consume(i)) for i in range(senders)]
        counting = False
        stop = False
        answered = 0
        statuses: dict[str, int] = {}
        lat: list[float] = []

        async def worker(i: int) -> None:
            nonlocal answered
            while not stop:
                t0 = time.perf_counter()
                res = await tx[i].send(f"tp-recv-{i}", c.BODY)
                if counting:
                    answered += 1
                    lat.append(time.perf_counter() - t0)
                    statuses[res.status.value] = statuses.get(res.status.value, 0) + 1

        workers = [asyncio.create_task(worker(i)) for i in range(senders) for _ in range(window)]
        await asyncio.sleep(warmup)  # the run length itself; nothing is synchronised by it
        counting = True
        cpu0, t0, me0 = c.cpu_seconds(b.pid), time.perf_counter(), time.process_time()
        await asyncio.sleep(duration)
        counting = False
        elapsed = time.perf_counter() - t0
        cpu1, me1 = c.cpu_seconds(b.pid), time.process_time()
        rss = c.rss_kib(b.pid)
        stop = True
        await asyncio.wait_for(asyncio.gather(*workers), 30)
        total_sent = sum(x.core._next_rid for x in tx)  # upper bound of sends issued
        for t in consumers:
            t.cancel()
        await asyncio.gather(*(x.close() for x in rx + tx), return_exceptions=True)
    out = {
        "senders": senders,
        "window": window,
        "duration_s": round(elapsed, 2),
        "messages_per_s": round(answered / elapsed, 1),
        "answered": answered,
        "statuses": statuses,
        "latency": c.summary_ms(lat),
        "broker_cpu_pct": round((cpu1 - cpu0) / elapsed * 100, 1),
        "broker_cpu_us_per_msg": round((cpu1 - cpu0) / max(answered, 1) * 1e6, 1),
        "broker_rss_mib": round(rss / 1024, 1),
        "clients_cpu_pct": round((me1 - me0) / elapsed * 100, 1),
        "requests_issued": total_sent,
    }
    return out


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--window", type=int, action="append",
                   help="sends in flight per sender (repeatable; default: 1 and 16)")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=1.5)
    args = p.parse_args()
    windows = args.window or [1, 16]
    runs = [asyncio.run(run(args.senders, w, args.duration, args.warmup)) for w in windows]
    best = max(runs, key=lambda r: r["messages_per_s"])
    lines = []
    for r in runs:
        lines.append(f"{r['senders']} senders x window {r['window']:<3}: {r['messages_per_s']:>8.0f} msg/s "
                     f"(answered {r['answered']} in {r['duration_s']} s; {r['statuses']})")
        lines.append(f"{'':30}send->answer p50 {r['latency']['p50_ms']} ms p99 {r['latency']['p99_ms']} ms; "
                     f"broker CPU {r['broker_cpu_pct']}% = {r['broker_cpu_us_per_msg']} us/msg; "
                     f"clients' process CPU {r['clients_cpu_pct']}%; "
                     f"RSS {r['broker_rss_mib']} MiB")
    result = {"runs": runs, "best_messages_per_s": best["messages_per_s"],
              "targets": {"at_least_10000_per_s": best["messages_per_s"] >= 10000}}
    lines.append(f"targets: {result['targets']}")
    c.emit(args, "throughput", result, lines)


if __name__ == "__main__":
    main()
