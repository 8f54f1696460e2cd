"""The NATS backend as history grows: is a broker as fast, as small and as quick to
start with a million stored messages as with a thousand?

Two brokers, machines ``a`` and ``b``, on one JetStream nats-server (as
bench_nats.py). History grows in steps to each of ``--sizes`` messages stored on
each machine (``a:alice`` → ``b:bob``, 200-byte bodies of text in made-up words, read): it is written
straight into each machine's state log in JetStream while the brokers are down, as
the batches a broker writes (`backends.nats.journal`), so the brokers read it back
as their own history. With it goes a backlog of ``--backlog`` queued messages for
a peer of ``b`` that is offline. Then, at each size:

* start-up: the first start after the growth (the broker reads the new batches
  into its cache: grows with what was added) and a restart (its cache holds
  everything: should stay flat);
* broker RSS after the restart, and after the drain;
* cross-broker send → ``received``, sequential (p50/p99);
* drain: the backlog's peer connects and receives all of it (connect → last);
* what is stored, on ``b``: the state log in JetStream (stream info: messages and
  bytes), the newest snapshot (compressed, in the object store), the cache file;
* rebuild: ``b`` stopped, its cache deleted, started again (from the snapshot and
  the log after it, or from the whole log when it was never compacted).

The brokers compact their state logs with ``--compact-bytes`` (``nats_compact_bytes``;
the default is the setting's): after the first start of a step, the benchmark waits
until each broker whose log holds at least that much has written a snapshot holding
the new history and purged the log.

    python benchmarks/bench_nats_history.py [--sizes 1000,10000,100000,1000000]
                                            [--backlog 10000] [--samples 300]
                                            [--compact-bytes N] [--json]

Every child runs in a process group of its own, ended however the run ends.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
from bench_nats import mesh_roundtrip, start_machines, start_nodes

BODY_BYTES = 200
_WORDS = random.Random(10).choices("abcdefghijklmnopqrstuvwxyz", k=30_000)
# 3,000 made-up words of 2-10 letters; a body draws them by a Zipf-like weight, as a
# language does, so the search index and compression see something like prose
VOCABULARY = ["".join(_WORDS[i * 10 : i * 10 + 2 + i % 9]) for i in range(3000)]
CUM_WEIGHTS = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(VOCABULARY))))


def body_text(rng: random.Random) -> str:
    """About `BODY_BYTES` of text in made-up words."""
    words = rng.choices(VOCABULARY, cum_weights=CUM_WEIGHTS, k=BODY_BYTES // 3)
    return " ".join(words)[:BODY_BYTES]


OPS_PER_PUBLISH = 2000  # encoded ops handed to journal.pack at a time


def cached_batch(home: str, namespace: str, machine: str) -> int:
    """The last state-log batch a stopped broker's cache holds."""
    db = sqlite3.connect(f"{home}/nats-{namespace}-{machine}.db")
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'nats_batch'").fetchone()
        return int(row[0]) if row else 0
    finally:
        db.close()


def history_ops(machine: str, count: int, seq0: int, *, to: str, sender: str, state: str) -> list[bytes]:
    """``count`` messages as a broker journals them: the message, and its receipt."""
    from sessionmesh.codec import dumps
    from sessionmesh.envelope import Envelope, Target, new_id

    now = time.time()
    rng = random.Random(f"{machine}{seq0}")
    ops = []
    for i in range(count):
        body = body_text(rng)
        env = Envelope(id=new_id(), sender=sender, to=Target.parse(to), body=body, ts=now, ttl=30 * 86400.0)
        env.thread = env.id
        ops.append(dumps(["M", env.to_wire(), seq0 + i + 1]).encode())
        ops.append(dumps(["R", env.id, [to], state]).encode())
    return ops


async def publish_history(url: str, namespace: str, machine: str, first_batch: int, ops: list[bytes]) -> int:
    """Write ``ops`` into ``machine``'s state log as batches from ``first_batch``;
    returns the last batch number."""
    import nats

    from sessionmesh.backends.nats import Layout
    from sessionmesh.backends.nats.journal import pack

    layout = Layout(namespace, machine)
    nc = await nats.connect(url)
    js = nc.jetstream()
    n = first_batch - 1
    try:
        for i in range(0, len(ops), OPS_PER_PUBLISH):
            batches = pack(ops[i : i + OPS_PER_PUBLISH], n + 1)
            for batch, payload in batches:
                await js.publish_async(
                    layout.state_log_subject(batch), payload, headers={"Nats-Msg-Id": str(batch)}
                )
            n = batches[-1][0]
            await js.publish_async_completed()
        await js.publish_async_completed()
    finally:
        await nc.close()
    return n


async def log_and_snapshot(url: str, namespace: str, machine: str) -> tuple[Any, Any]:
    """The state log's stream state and the newest snapshot's head (None: none)."""
    import nats

    from sessionmesh.backends.nats import Layout, snapshot

    layout = Layout(namespace, machine)
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(layout.state_stream)).state
        return state, await snapshot.read_head(js, layout)
    finally:
        await nc.close()


async def until_compacted(url: str, namespace: str, machine: str, batch: int, limit: int) -> float:
    """Wait until ``machine``'s snapshot holds ``batch`` if its log holds ``limit``
    bytes or more (a compaction is due); seconds waited."""
    t0 = time.perf_counter()
    async with asyncio.timeout(1800):
        while True:
            state, head = await log_and_snapshot(url, namespace, machine)
            if (head is not None and head.batch >= batch) or state.bytes < limit:
                return time.perf_counter() - t0
            await asyncio.sleep(0.5)  # sleep-ok: polling another process's progress, bounded above


def cache_bytes(home: str, namespace: str, machine: str) -> int:
    path = f"{home}/nats-{namespace}-{machine}.db"
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


def delete_cache(home: str, namespace: str, machine: str) -> None:
    path = f"{home}/nats-{namespace}-{machine}.db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


def message_count(home: str, namespace: str, machine: str) -> int:
    db = sqlite3.connect(f"{home}/nats-{namespace}-{machine}.db")
    try:
        return int(db.execute("SELECT max(seq) FROM messages").fetchone()[0] or 0)
    finally:
        db.close()


async def join_once(broker: c.Broker, name: str) -> None:
    """Register ``name`` (its secret kept in the broker's home) and leave."""
    from sessionmesh.client.aio import AsyncClient

    async with AsyncClient(broker.settings(), name):
        return


async def drain(broker: c.Broker, name: str, want: int) -> float:
    from sessionmesh.client.aio import AsyncClient

    t0 = time.perf_counter()
    async with AsyncClient(broker.settings(), name) as peer:
        got = 0
        async with asyncio.timeout(600):
            while got < want:
                await peer.recv()
                got += 1
    return time.perf_counter() - t0


def restart(broker: c.Broker) -> tuple[c.Broker, float]:
    """Stop ``broker`` and start it again on its home; seconds to listening."""
    c.stop_broker(broker)
    t0 = time.perf_counter()
    again = c.start_broker(broker.home, env=broker.env)
    return again, time.perf_counter() - t0


async def main_async(args: Any) -> dict[str, Any]:
    c.START_TIMEOUT = args.start_timeout  # a first start reads what was added
    root = Path(tempfile.mkdtemp(prefix="meshbench-history-"))
    nodes = start_nodes(root / "nats", 1)
    url = nodes[0].url
    a, b = start_machines(nodes, root)
    namespace = a.env["MESH_NATS_NAMESPACE"]
    for broker in (a, b):  # from the first step's start on
        broker.env["MESH_NATS_COMPACT_BYTES"] = str(args.compact_bytes)
    steps = []
    stored = 0
    try:
        for size in args.sizes:
            drainer = f"drain-{size}"
            await join_once(b, drainer)
            c.stop_broker(a)
            c.stop_broker(b)
            t_fill = time.perf_counter()
            add = size - stored
            last: dict[str, int] = {}
            for broker, machine, to, sender, count in (
                (a, "a", "b:bob", "alice", add),
                (b, "b", "bob", "a:alice", add),
            ):
                first = cached_batch(broker.home, namespace, machine) + 1
                seq0 = message_count(broker.home, namespace, machine)
                ops = history_ops(machine, count, seq0, to=to, sender=sender, state="read")
                if machine == "b":  # the backlog: queued for a peer that is offline
                    ops += history_ops(
                        machine, args.backlog, seq0 + count, to=drainer, sender=sender, state="queued"
                    )
                last[machine] = await publish_history(url, namespace, machine, first, ops)
            fill_s = time.perf_counter() - t_fill
            stored = size
            t0 = time.perf_counter()
            a = c.start_broker(a.home, env=a.env)
            b = c.start_broker(b.home, env=b.env)
            first_start_s = time.perf_counter() - t0
            compaction_s = [
                await until_compacted(url, namespace, m, last[m], args.compact_bytes) for m in ("a", "b")
            ]
            a, _ = restart(a)
            b, restart_s = restart(b)
            rss_start = c.rss_kib(b.pid)
            rt = await mesh_roundtrip(a, b, samples=args.samples, warmup=50, cross=True)
            rt.pop("_lat")
            drain_s = await drain(b, drainer, args.backlog)
            rss_drained = c.rss_kib(b.pid)
            c.stop_broker(b)
            log_state, head = await log_and_snapshot(url, namespace, "b")
            cache = cache_bytes(b.home, namespace, "b")
            delete_cache(b.home, namespace, "b")
            t0 = time.perf_counter()
            b = c.start_broker(b.home, env=b.env)
            rebuild_s = time.perf_counter() - t0
            step = {
                "messages_per_machine": size,
                "fill_s": round(fill_s, 1),
                "first_start_both_s": round(first_start_s, 2),
                "restart_s": round(restart_s, 3),
                "broker_b_rss_mib_after_restart": round(rss_start / 1024, 1),
                "send_received": {k: rt[k] for k in ("p50_ms", "p90_ms", "p99_ms", "n")},
                "drain_s": round(drain_s, 2),
                "drain_msgs_per_s": round(args.backlog / drain_s),
                "broker_b_rss_mib_after_drain": round(rss_drained / 1024, 1),
                "compaction_wait_s": [round(x, 1) for x in compaction_s],
                "b_state_log_messages": log_state.messages,
                "b_state_log_mib": round(log_state.bytes / 2**20, 2),
                "b_snapshot_mib": round(head.size / 2**20, 2) if head else 0.0,
                "b_snapshot_raw_mib": round(head.raw_size / 2**20, 2) if head else 0.0,
                "b_cache_file_mib": round(cache / 2**20, 2),
                "b_rebuild_s": round(rebuild_s, 2),
            }
            steps.append(step)
            print(f"    {step}", file=sys.stderr, flush=True)
    finally:
        c.stop_broker(a)
        c.stop_broker(b)
        for node in nodes:
            node.stop()
    return {"backlog": args.backlog, "compact_bytes": args.compact_bytes, "steps": steps}


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--backlog", type=int, default=10_000)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--start-timeout", type=float, default=1800.0)
    p.add_argument(
        "--compact-bytes", type=int, default=None, help="nats_compact_bytes (default: the setting's)"
    )
    args = p.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    if args.compact_bytes is None:
        from sessionmesh.config import Settings

        args.compact_bytes = Settings._field_defaults["nats_compact_bytes"]
    c.raise_nofile()
    r = asyncio.run(main_async(args))
    lines = [
        f"{'stored/machine':>14} {'fill s':>7} {'1st start s':>11} {'restart s':>9} {'RSS MiB':>8} "
        f"{'send p50/p99 ms':>16} {'drain 10k s':>11} {'RSS after':>9} "
        f"{'log msgs':>8} {'log MiB':>8} {'snap MiB':>8} {'cache MiB':>9} {'rebuild s':>9}"
    ]
    for s in r["steps"]:
        sr = s["send_received"]
        lines.append(
            f"{s['messages_per_machine']:>14,} {s['fill_s']:>7} {s['first_start_both_s']:>11} {s['restart_s']:>9} "
            f"{s['broker_b_rss_mib_after_restart']:>8} {sr['p50_ms']:>7}/{sr['p99_ms']:<8} "
            f"{s['drain_s']:>11} {s['broker_b_rss_mib_after_drain']:>9} "
            f"{s['b_state_log_messages']:>8} {s['b_state_log_mib']:>8} {s['b_snapshot_mib']:>8} "
            f"{s['b_cache_file_mib']:>9} {s['b_rebuild_s']:>9}"
        )
    c.emit(args, "nats_history", r, lines)


if __name__ == "__main__":
    main()
