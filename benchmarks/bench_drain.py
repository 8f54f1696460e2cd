"""Draining an inbox of 10,000 queued messages.

The recipient joins once and leaves; 4 senders then queue 10,000 messages for it
(answer ``queued``: durable inbox) and leave too. Timed: the recipient's
``connect()`` until ``recv()`` has handed over all 10,000 (distinct ids, checked).
The queueing phase is reported as well (durable sends/s with nobody live).

    python benchmarks/bench_drain.py [--messages 10000] [--json]
"""

from __future__ import annotations

import asyncio
import time

import _common as c


async def run(messages: int, senders: int, window: int) -> dict:
    from sessionmesh.client.aio import AsyncClient

    with c.broker() as b:
        settings = b.settings()
        async with AsyncClient(settings, "dr-recv"):
            pass  # known to the broker, now offline

        tx = [AsyncClient(settings, f"dr-send-{i}") for i in range(senders)]
        await asyncio.wait_for(asyncio.gather(*(x.connect() for x in tx)), 30)
        per_sender = messages // senders
        statuses: dict[str, int] = {}

        async def worker(x: AsyncClient, n: int) -> None:
            for _ in range(n):
                res = await x.send("dr-recv", c.BODY)
                statuses[res.status.value] = statuses.get(res.status.value, 0) + 1

        t_q = time.perf_counter()
        jobs = []
        for i, x in enumerate(tx):
            n = per_sender + (messages - per_sender * senders if i == 0 else 0)
            jobs += [worker(x, n // window + (1 if k < n % window else 0)) for k in range(window)]
        await asyncio.wait_for(asyncio.gather(*jobs), 300)
        queue_s = time.perf_counter() - t_q
        await asyncio.gather(*(x.close() for x in tx))
        assert statuses == {"queued": messages}, statuses

        rss_before = c.rss_kib(b.pid)
        rx = AsyncClient(settings, "dr-recv")
        seen: set[str] = set()
        first = None
        t0 = time.perf_counter()
        await rx.connect()
        t_conn = time.perf_counter()

        async def drain() -> None:
            nonlocal first
            while len(seen) < messages:
                env = await rx.recv()
                if first is None:
                    first = time.perf_counter()
                seen.add(env.id)

        await asyncio.wait_for(drain(), 300)
        t1 = time.perf_counter()
        rss_after = c.rss_kib(b.pid)
        extra = rx.inbox.qsize()
        await rx.close()
    elapsed = t1 - t0
    return {
        "messages": messages,
        "queue_phase_s": round(queue_s, 3),
        "queue_phase_msgs_per_s": round(messages / queue_s, 1),
        "drain_s": round(elapsed, 3),
        "drain_msgs_per_s": round(messages / elapsed, 1),
        "connect_s": round(t_conn - t0, 3),
        "first_message_s": round((first or t1) - t0, 3),
        "distinct_received": len(seen),
        "extra_after_drain": extra,
        "broker_rss_mib_before": round(rss_before / 1024, 1),
        "broker_rss_mib_after": round(rss_after / 1024, 1),
    }


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=10000)
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--window", type=int, default=8)
    args = p.parse_args()
    r = asyncio.run(run(args.messages, args.senders, args.window))
    lines = [
        f"queue {r['messages']} (recipient offline): {r['queue_phase_s']} s = {r['queue_phase_msgs_per_s']:.0f} msg/s",
        f"drain: connect -> all {r['messages']} received: {r['drain_s']} s = {r['drain_msgs_per_s']:.0f} msg/s "
        f"(connect {r['connect_s']} s, first message at {r['first_message_s']} s; "
        f"{r['distinct_received']} distinct)",
        f"broker RSS {r['broker_rss_mib_before']} MiB -> {r['broker_rss_mib_after']} MiB",
    ]
    c.emit(args, "drain", r, lines)


if __name__ == "__main__":
    main()
