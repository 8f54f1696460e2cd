"""The NATS backend: cross-broker round trip and throughput, with raw NATS in the same run.

Two brokers, machines ``a`` and ``b`` (``mesh serve --backend nats`` subprocesses,
each its own home), share one JetStream nats-server (``--nodes 3``: a three-node
cluster with R3 streams and buckets, each broker given every node's URL). Measured,
round by round, interleaved:

* cross-broker round trip: a sender on ``a`` and a live, consuming recipient on
  ``b``; one sample = ``await tx.send("b:rx", ...)`` until the answer ``received``
  (stored and committed on a, published to b's route subject, committed on b, pushed
  to rx, acknowledged by rx's client, the receipt back on a's route subject, the ack
  committed on a, answered). Sequential.
* the same on one NATS-backed broker (sender and recipient both on ``a``): what the
  NATS store costs against SQLite's ``bench_roundtrip.py`` figure.
* raw NATS request/reply with nats-py on the same server(s), a requester and a
  responder: no storage at all, the floor.
* JetStream request/reply: the same two hops made durable the way the brokers' route
  records are (a record published to a stream with the other side's push consumer,
  explicit acks, the replicas of the run), with nothing else: a requester publishes
  to its peer's stream, the peer's consumer gets it, acks it and publishes the
  answer to the requester's stream, whose consumer gets it. What a cross-broker
  ``received`` costs beyond this is the brokers' and the clients' own work.
* throughput: SENDERS senders on ``a``, each WINDOW sends in flight to its own
  consuming recipient on ``b``; messages/s answered (``received``) in the window.
  Against it, raw nats-py request/reply with the same senders and window.

    python benchmarks/bench_nats.py [--nodes 1|3] [--samples 1000] [--rounds 3]
                                    [--senders 10] [--window 16] [--duration 6] [--json]

Time bound: every phase has its own limit, and the whole run `run_bound` (335 s at
the defaults); past it the run fails instead of hanging. Every child (nats-server,
brokers) runs in a process group of its own that is ended however the run ends.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.natsserver import NatsNode, cluster, start_all  # noqa: E402 - the test suite's server helper


def start_nodes(root: Path, nodes: int) -> list[NatsNode]:
    """One JetStream nats-server, or a cluster, each in a process group of its own."""
    found = [NatsNode("solo", root)] if nodes == 1 else cluster(root, nodes)
    for node in found:
        node.spawn = c.spawn
    return start_all(found)


def start_machines(nodes: list[NatsNode], root: Path) -> tuple[c.Broker, c.Broker]:
    shared = {
        "MESH_BACKEND": "nats",
        "MESH_NATS_URL": ",".join(n.url for n in nodes),
        "MESH_NATS_REPLICAS": str(len(nodes)),
        "MESH_NATS_NAMESPACE": "b" + secrets.token_hex(4),
    }
    brokers = []
    for machine in ("a", "b"):
        home = str(root / f"home-{machine}")
        brokers.append(c.start_broker(home, env={**shared, "MESH_MACHINE": machine}))
    return brokers[0], brokers[1]


async def _until(pred: Any, step: float = 0.005) -> None:
    while not pred():
        await asyncio.sleep(step)


async def mesh_roundtrip(a: c.Broker, b: c.Broker, *, samples: int, warmup: int, cross: bool) -> dict:
    from sessionmesh.client.aio import AsyncClient

    tag = secrets.token_hex(3)
    rx_name, tx_name = f"rx-{tag}", f"tx-{tag}"
    async with (
        AsyncClient((b if cross else a).settings(), rx_name) as rx,
        AsyncClient(a.settings(), tx_name) as tx,
    ):
        to = f"b:{rx_name}" if cross else rx_name
        got = 0

        async def consume() -> None:
            nonlocal got
            while True:
                await rx.recv()
                got += 1

        consumer = asyncio.create_task(consume())
        # the other broker learns of the recipient through KV: wait until it answers received
        async with asyncio.timeout(20):
            while (await tx.send(to, c.BODY)).status.value != "received":
                await asyncio.sleep(0.05)
        for _ in range(warmup):
            await tx.send(to, c.BODY)
        statuses: dict[str, int] = {}
        lat: list[float] = []
        t_start = time.perf_counter()
        for _ in range(samples):
            t0 = time.perf_counter()
            res = await tx.send(to, c.BODY)
            lat.append(time.perf_counter() - t0)
            statuses[res.status.value] = statuses.get(res.status.value, 0) + 1
        elapsed = time.perf_counter() - t_start
        consumer.cancel()
    out = c.summary_ms(lat)
    out.update({"rate_per_s": round(samples / elapsed, 1), "statuses": statuses, "_lat": lat})
    return out


async def mesh_throughput(a: c.Broker, b: c.Broker, *, senders: int, window: int, duration: float) -> dict:
    from sessionmesh.client.aio import AsyncClient

    tag = secrets.token_hex(3)
    rx = [AsyncClient(b.settings(), f"tprx-{tag}-{i}") for i in range(senders)]
    tx = [AsyncClient(a.settings(), f"tptx-{tag}-{i}") for i in range(senders)]
    await asyncio.wait_for(asyncio.gather(*(x.connect() for x in rx + tx)), 30)
    received = [0] * senders
    answered: dict[str, int] = {}
    counting = False
    count = 0

    async def consume(i: int) -> None:
        while True:
            await rx[i].recv()
            received[i] += 1

    stopping = False

    async def send_loop(i: int) -> None:
        nonlocal count

        async def one() -> None:
            nonlocal count
            while not stopping:
                res = await tx[i].send(f"b:{rx[i].name}", c.BODY)
                if counting:
                    count += 1
                    answered[res.status.value] = answered.get(res.status.value, 0) + 1

        await asyncio.gather(*(one() for _ in range(window)))

    consumers = [asyncio.create_task(consume(i)) for i in range(senders)]
    async with asyncio.timeout(30):  # every recipient known on a before the clock starts
        for i in range(senders):
            while (await tx[i].send(f"b:{rx[i].name}", c.BODY)).status.value != "received":
                await asyncio.sleep(0.05)
    loops = [asyncio.create_task(send_loop(i)) for i in range(senders)]
    await asyncio.sleep(1.0)  # warm-up (a measuring window, not synchronisation)
    cpu_a0, cpu_b0 = c.cpu_seconds(a.pid), c.cpu_seconds(b.pid)
    counting = True
    t0 = time.perf_counter()
    await asyncio.sleep(duration)  # the measuring window
    counting = False
    elapsed = time.perf_counter() - t0
    cpu_a1, cpu_b1 = c.cpu_seconds(a.pid), c.cpu_seconds(b.pid)
    stopping = True
    await finish(loops)
    await finish(consumers, timeout=0)
    await asyncio.gather(*(x.close() for x in rx + tx), return_exceptions=True)
    return {
        "msgs_per_s": round(count / elapsed, 1),
        "statuses": answered,
        "broker_a_cpu_us_per_msg": round((cpu_a1 - cpu_a0) / max(count, 1) * 1e6, 1),
        "broker_b_cpu_us_per_msg": round((cpu_b1 - cpu_b0) / max(count, 1) * 1e6, 1),
    }


async def finish(tasks: list[asyncio.Task[Any]], timeout: float = 15.0) -> None:
    """Let looping tasks see their stop flag and end; cancel what is still running
    after ``timeout``. Cancelling alone is not enough: on Python 3.11 a cancel that
    lands as a request's answer arrives is lost inside ``asyncio.wait_for`` (which
    nats-py's request and the client's send use), and the loop runs on forever;
    under load that happens every time (this was bench_nats's stall at its defaults)."""
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:  # bounded too: a task whose cancel was lost is left behind, not awaited
            await asyncio.wait(pending, timeout=5.0)


async def answered(requester: Any, subject: str, body: bytes, timeout: float = 10.0) -> None:
    """Wait until a request on ``subject`` is answered: the responder's interest
    reaches the requester's server a moment after the responder's flush (on a
    cluster, another node), and a request before that fails with no responders."""
    import nats.errors

    async with asyncio.timeout(timeout):
        while True:
            try:
                await requester.request(subject, body, timeout=1)
                return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.05)


async def nats_requests(urls: list[str], *, samples: int, warmup: int) -> dict:
    import nats

    responder = await nats.connect(servers=urls)
    requester = await nats.connect(servers=urls)
    subject = f"bench.echo.{secrets.token_hex(3)}"

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    await responder.subscribe(subject, cb=echo)
    await responder.flush()
    body = c.BODY.encode()
    await answered(requester, subject, body)
    for _ in range(warmup):
        await requester.request(subject, body, timeout=5)
    lat: list[float] = []
    t_start = time.perf_counter()
    for _ in range(samples):
        t0 = time.perf_counter()
        await requester.request(subject, body, timeout=5)
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - t_start
    await requester.close()
    await responder.close()
    out = c.summary_ms(lat)
    out.update({"rate_per_s": round(samples / elapsed, 1), "_lat": lat})
    return out


async def jetstream_requests(urls: list[str], *, samples: int, warmup: int, replicas: int) -> dict:
    """Request/reply over two JetStream streams, one per side (see the module's doc)."""
    import nats
    from nats.js import api

    tag = secrets.token_hex(3)
    ask_nc, answer_nc = await nats.connect(servers=urls), await nats.connect(servers=urls)
    ask_js, answer_js = ask_nc.jetstream(), answer_nc.jetstream()
    for side in ("ask", "answer"):
        await ask_js.add_stream(
            name=f"bench-{side}-{tag}", subjects=[f"bench.{side}.{tag}"], num_replicas=replicas
        )

    def consume(js: Any, side: str, cb: Any) -> Any:
        """``side``'s stream, pushed to ``cb`` (a config of its own each time: nats-py
        fills in the one it is given)."""
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT, flow_control=True, idle_heartbeat=5.0, num_replicas=replicas
        )
        return js.subscribe(
            f"bench.{side}.{tag}",
            stream=f"bench-{side}-{tag}",
            cb=cb,
            manual_ack=True,
            config=config,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )

    waiting: asyncio.Future[None] | None = None

    async def answer(msg: Any) -> None:
        await msg.ack()
        await answer_js.publish_async(f"bench.ask.{tag}", msg.data)

    async def answered(msg: Any) -> None:
        await msg.ack()
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    subs = [await consume(answer_js, "answer", answer), await consume(ask_js, "ask", answered)]
    body = c.BODY.encode()
    lat: list[float] = []
    for i in range(warmup + samples):
        waiting = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        await ask_js.publish_async(f"bench.answer.{tag}", body)
        await asyncio.wait_for(waiting, 10)
        if i >= warmup:
            lat.append(time.perf_counter() - t0)
    for sub in subs:
        await sub.unsubscribe()
    for side in ("ask", "answer"):
        await ask_js.delete_stream(f"bench-{side}-{tag}")
    await ask_nc.close()
    await answer_nc.close()
    out = c.summary_ms(lat)
    out["_lat"] = lat
    return out


async def nats_throughput(urls: list[str], *, senders: int, window: int, duration: float) -> dict:
    import nats

    responder = await nats.connect(servers=urls)
    requesters = [await nats.connect(servers=urls) for _ in range(senders)]
    subject = f"bench.tp.{secrets.token_hex(3)}"

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    await responder.subscribe(subject, cb=echo)
    await responder.flush()
    body = c.BODY.encode()
    for nc in requesters:
        await answered(nc, subject, body)
    counting = False
    count = 0

    stopping = False

    async def one(nc: Any) -> None:
        nonlocal count
        while not stopping:
            await nc.request(subject, body, timeout=10)
            if counting:
                count += 1

    tasks = [asyncio.create_task(one(nc)) for nc in requesters for _ in range(window)]
    await asyncio.sleep(1.0)  # warm-up (a measuring window, not synchronisation)
    counting = True
    t0 = time.perf_counter()
    await asyncio.sleep(duration)  # the measuring window
    counting = False
    elapsed = time.perf_counter() - t0
    stopping = True
    await finish(tasks)
    for nc in (*requesters, responder):
        await nc.close()
    return {"msgs_per_s": round(count / elapsed, 1)}


def progress(line: str) -> None:
    print(f"    {line}", file=sys.stderr, flush=True)


def _median_of(rounds: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 3)


async def main_async(args: Any) -> dict:
    root = Path(tempfile.mkdtemp(prefix="meshbench-nats-"))
    nodes = start_nodes(root / "nats", args.nodes)
    urls = [n.url for n in nodes]
    a, b = start_machines(nodes, root)
    rounds: dict[str, list[dict]] = {
        "cross": [],
        "local": [],
        "nats": [],
        "jetstream": [],
        "tp_mesh": [],
        "tp_nats": [],
    }
    try:
        kw = {"samples": args.samples, "warmup": args.warmup}
        bound = 60 + args.samples * 0.05  # every phase is bounded: a stuck run fails, never hangs
        tp = {"senders": args.senders, "window": args.window, "duration": args.duration}
        tp_bound = args.duration + 90
        for n in range(args.rounds):
            for key, phase, limit in (
                ("cross", lambda: mesh_roundtrip(a, b, cross=True, **kw), bound),
                ("nats", lambda: nats_requests(urls, **kw), bound),
                ("jetstream", lambda: jetstream_requests(urls, replicas=args.nodes, **kw), bound),
                ("local", lambda: mesh_roundtrip(a, b, cross=False, **kw), bound),
                ("tp_mesh", lambda: mesh_throughput(a, b, **tp), tp_bound),
                ("tp_nats", lambda: nats_throughput(urls, **tp), tp_bound),
            ):
                t0 = time.perf_counter()
                rounds[key].append(await asyncio.wait_for(phase(), limit))
                progress(f"round {n + 1} {key}: {time.perf_counter() - t0:.1f} s")
    finally:
        c.stop_broker(a)
        c.stop_broker(b)
        for node in nodes:
            node.stop()
    result: dict[str, Any] = {"nodes": args.nodes, "replicas": args.nodes}
    for key in ("cross", "local", "nats", "jetstream"):
        lat = [x for r in rounds[key] for x in r.pop("_lat")]
        result[key] = {
            **c.summary_ms(lat),
            "p50_rounds_ms": [r["p50_ms"] for r in rounds[key]],
            "statuses": [r.get("statuses") for r in rounds[key]],
        }
    result["ratio_cross_to_nats_p50"] = round(result["cross"]["p50_ms"] / result["nats"]["p50_ms"], 1)
    result["ratio_cross_to_jetstream_p50"] = round(
        result["cross"]["p50_ms"] / result["jetstream"]["p50_ms"], 1
    )
    result["throughput"] = {
        "mesh_cross_msgs_per_s": _median_of(rounds["tp_mesh"], "msgs_per_s"),
        "mesh_rounds": rounds["tp_mesh"],
        "nats_request_reply_msgs_per_s": _median_of(rounds["tp_nats"], "msgs_per_s"),
        "nats_rounds": [r["msgs_per_s"] for r in rounds["tp_nats"]],
        "senders": args.senders,
        "window": args.window,
    }
    os.environ.pop("MESH_HOME", None)
    return result


def run_bound(args: Any) -> float:
    """How long the whole run may take: setup, and per round both round trips, raw
    NATS and both throughput windows with their warm-ups, with room for a slow host."""
    per_round = 4 * (args.samples + args.warmup) * 0.012 + 2 * (args.duration + 1) + 25
    return 60 + args.rounds * per_round


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, choices=[1, 3], default=1)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--duration", type=float, default=6.0)
    args = p.parse_args()
    c.raise_nofile()
    r = asyncio.run(asyncio.wait_for(main_async(args), run_bound(args)))
    tp = r["throughput"]
    lines = [
        f"NATS: {r['nodes']} node(s), R{r['replicas']}",
        c.fmt_summary("cross-broker send → received", r["cross"]),
        c.fmt_summary("one NATS-backed broker", r["local"]),
        c.fmt_summary("raw nats-py request/reply", r["nats"]),
        c.fmt_summary("JetStream request/reply", r["jetstream"]),
        f"cross-broker p50 / raw NATS p50: ×{r['ratio_cross_to_nats_p50']}; "
        f"/ JetStream request/reply p50: ×{r['ratio_cross_to_jetstream_p50']}",
        f"throughput, {tp['senders']} senders × {tp['window']} in flight: mesh a→b "
        f"{tp['mesh_cross_msgs_per_s']:,.0f}/s, raw NATS request/reply {tp['nats_request_reply_msgs_per_s']:,.0f}/s",
    ]
    c.emit(args, "nats", r, lines)


if __name__ == "__main__":
    main()
