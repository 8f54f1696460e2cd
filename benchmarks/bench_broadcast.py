"""Broadcast to 100 connected peers: time from send until the last recipient holds it.

101 `AsyncClient`s in this process (100 consuming recipients + 1 sender), the broker
in a subprocess, a fresh home so ``broadcast`` reaches exactly the 100. One sample:
``send("broadcast")`` is called at t0; each recipient notes when ``recv()`` hands it
the message; the sample is (last arrival - t0). Repeated ``--repeat`` times, one
broadcast at a time; the median is the figure.

    python benchmarks/bench_broadcast.py [--peers 100] [--repeat 30] [--json]
"""

from __future__ import annotations

import asyncio
import time

import _common as c


async def run(peers: int, repeat: int, warmup: int) -> dict:
    from sessionmesh.client.aio import AsyncClient
    from sessionmesh.envelope import new_id

    c.raise_nofile()
    with c.broker() as b:
        settings = b.settings()
        rx = [AsyncClient(settings, f"bc-peer-{i:03d}") for i in range(peers)]
        tx = AsyncClient(settings, "bc-sender")
        sem = asyncio.Semaphore(25)

        async def connect(x: AsyncClient) -> None:
            async with sem:
                await x.connect()

        await asyncio.wait_for(asyncio.gather(*(connect(x) for x in rx + [tx])), 60)
        arrivals: dict[str, list[float]] = {}
        complete: dict[str, asyncio.Event] = {}

        async def consume(x: AsyncClient) -> None:
            while True:
                env = await x.recv()
                t = time.perf_counter()
                got = arrivals.setdefault(env.id, [])
                got.append(t)
                if len(got) == peers and env.id in complete:
                    complete[env.id].set()

        consumers = [asyncio.create_task(consume(x)) for x in rx]
        last: list[float] = []
        first: list[float] = []
        answer: list[float] = []
        for i in range(warmup + repeat):
            msg_id = new_id()
            complete[msg_id] = asyncio.Event()
            t0 = time.perf_counter()
            res = await tx.send("broadcast", c.BODY, id=msg_id)
            t_answer = time.perf_counter()
            assert res.status.value == "sent" and res.recipients == peers, res
            if len(arrivals.get(msg_id, ())) < peers:
                await asyncio.wait_for(complete[msg_id].wait(), 15)
            if i >= warmup:
                got = arrivals[msg_id]
                last.append(max(got) - t0)
                first.append(min(got) - t0)
                answer.append(t_answer - t0)
            # let this broadcast's receipts settle before the next: every copy 'read' (the
            # client acks a message its application takes at once as 'read' directly, so a
            # 'delivered' receipt may or may not come first)
            await asyncio.wait_for(_all_read(tx, msg_id, peers), 15)
        rss = c.rss_kib(b.pid)
        for t in consumers:
            t.cancel()
        await asyncio.gather(*(x.close() for x in rx + [tx]), return_exceptions=True)
    return {
        "peers": peers,
        "repeat": repeat,
        "last_recipient": c.summary_ms(last),
        "first_recipient": c.summary_ms(first),
        "sent_answer": c.summary_ms(answer),
        "median_last_ms": round(c.median(last) * 1000, 3),
        "median_answer_ms": round(c.median(answer) * 1000, 3),
        "broker_rss_mib": round(rss / 1024, 1),
    }


async def _all_read(tx, msg_id: str, peers: int) -> None:
    read: set[str] = set()
    while len(read) < peers:
        r = await tx.next_receipt()
        if r["id"] == msg_id and r["state"] == "read":
            read.add(r["recipient"])


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--peers", type=int, default=100)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    r = asyncio.run(run(args.peers, args.repeat, args.warmup))
    lines = [
        f"broadcast to {r['peers']} peers, {r['repeat']} repeats: median until the LAST holds it "
        f"{r['median_last_ms']} ms",
        c.fmt_summary("last recipient", r["last_recipient"]),
        c.fmt_summary("first recipient", r["first_recipient"]),
        c.fmt_summary("'sent' answer to the sender", r["sent_answer"]),
    ]
    c.emit(args, "broadcast", r, lines)


if __name__ == "__main__":
    main()
