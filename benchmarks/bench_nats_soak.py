"""A soak between two machines on a three-node R3 cluster, with one node killed and
restarted halfway: how many answered messages are lost, how many reach the
application twice (both must be 0).

Machines ``a`` and ``b`` (as bench_nats.py, ``--nodes 3``); ``--senders`` peers on
``a`` send ``--messages`` in all to as many consuming peers on ``b``, each with
``--window`` sends in flight. When half are answered, one NATS node is SIGKILLed;
``--down`` seconds later it starts again on the same store. A send answered
``timeout`` is sent again with the same id (a resend is never stored twice) until it
is answered. At the end every answered message must have reached its recipient's
application once: the client de-duplicates by id, and the count is of what it
handed on.

    python benchmarks/bench_nats_soak.py [--messages 100000] [--senders 10] [--window 16] [--down 5]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
from bench_nats import finish, start_machines, start_nodes

RESEND_ROUNDS = 20


async def main_async(args: Any) -> dict[str, Any]:
    from sessionmesh.client.aio import AsyncClient
    from sessionmesh.envelope import new_id

    root = Path(tempfile.mkdtemp(prefix="meshbench-soak-"))
    nodes = start_nodes(root / "nats", 3)
    a, b = start_machines(nodes, root)
    rx = [AsyncClient(b.settings(), f"soak-rx-{i}") for i in range(args.senders)]
    tx = [AsyncClient(a.settings(), f"soak-tx-{i}") for i in range(args.senders)]
    seen: list[dict[str, int]] = [{} for _ in range(args.senders)]
    answered: dict[str, str] = {}
    timeouts = 0
    events: dict[str, float] = {}
    try:
        await asyncio.wait_for(asyncio.gather(*(x.connect() for x in rx + tx)), 60)

        async def consume(i: int) -> None:
            while True:
                env = await rx[i].recv()
                seen[i][env.id] = seen[i].get(env.id, 0) + 1

        consumers = [asyncio.create_task(consume(i)) for i in range(args.senders)]
        async with asyncio.timeout(60):  # every recipient known on a before the clock starts
            for i in range(args.senders):
                while (await tx[i].send(f"b:{rx[i].name}", "hello")).status.value != "received":
                    await asyncio.sleep(0.05)
        per_sender = args.messages // args.senders
        half = args.messages // 2

        async def fault() -> None:
            while len(answered) < half:
                await asyncio.sleep(0.1)
            events["killed_at_answered"] = len(answered)
            nodes[0].kill()
            events["killed"] = time.perf_counter()
            await asyncio.sleep(args.down)
            await asyncio.to_thread(nodes[0].start)
            events["restarted"] = time.perf_counter()

        async def send_one(i: int, msg_id: str) -> None:
            nonlocal timeouts
            for _ in range(RESEND_ROUNDS):
                res = await tx[i].send(f"b:{rx[i].name}", c.BODY, id=msg_id)
                if res.status.value != "timeout":
                    answered[msg_id] = res.status.value
                    return
                timeouts += 1

        async def sender(i: int) -> None:
            ids = [new_id() for _ in range(per_sender)]
            queue = iter(ids)

            async def lane() -> None:
                for msg_id in queue:
                    await send_one(i, msg_id)

            await asyncio.gather(*(lane() for _ in range(args.window)))

        t0 = time.perf_counter()
        faulting = asyncio.create_task(fault())
        await asyncio.gather(*(sender(i) for i in range(args.senders)))
        elapsed = time.perf_counter() - t0
        await asyncio.wait_for(faulting, 120)
        acked = {m for m, s in answered.items() if s in ("received", "queued")}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not acked <= set().union(*seen):
            await asyncio.sleep(0.2)  # bounded wait for the consumers (other tasks) to catch up
        got = set().union(*seen)
        twice = sum(1 for d in seen for n in d.values() if n > 1)
        await finish(consumers, timeout=0)
        return {
            "messages": per_sender * args.senders,
            "answered": len(answered),
            "answered_received_or_queued": len(acked),
            "statuses": {s: list(answered.values()).count(s) for s in set(answered.values())},
            "timeouts_sent_again": timeouts,
            "lost": len(acked - got),
            "handed_twice": twice,
            "send_phase_s": round(elapsed, 1),
            "msgs_per_s": round(len(answered) / elapsed, 1),
            "node_killed_after_answered": events.get("killed_at_answered"),
            "node_down_s": round(events["restarted"] - events["killed"], 1)
            if "restarted" in events
            else None,
        }
    finally:
        await asyncio.gather(*(x.close() for x in rx + tx), return_exceptions=True)
        c.stop_broker(a)
        c.stop_broker(b)
        for node in nodes:
            node.stop()


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--down", type=float, default=5.0)
    args = p.parse_args()
    c.raise_nofile()
    r = asyncio.run(main_async(args))
    lines = [f"{k}: {v}" for k, v in r.items()]
    c.emit(args, "nats_soak", r, lines)
    sys.exit(0 if r["lost"] == 0 and r["handed_twice"] == 0 else 1)


if __name__ == "__main__":
    main()
