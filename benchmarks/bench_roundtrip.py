"""Unicast round trip: ``send`` until the broker answers ``received``, with baselines.

Three measurements in the same run, same sample count, same 100-byte body:

* sessionmesh: a sender and a live, consuming recipient (two `AsyncClient`s in this
  process, the broker in a subprocess). One sample = ``await tx.send(...)`` until the
  answer ``received`` (stored, committed, pushed, acknowledged by the recipient's
  client, committed again, answered). Sequential: one send in flight.
* with ``--raw-clients``, sessionmesh again with the thinnest clients there can be: two
  WebSocket connections (aiohttp, the json module) that say ``hello`` and then speak
  frames by hand (protocol.md): the sender writes ``send`` and reads until its
  ``result``; the recipient answers each ``deliver`` with ``ack read``. What the
  broker costs with nothing of the client library around it; each round also gives
  this process's CPU per round trip for both (the clients' share).
* NATS: request/reply through a real ``nats-server`` (``-p PORT``) with nats-py, a
  requester and a responder on two connections in this process. Sequential.
* bare aiohttp relay (ws_relay_server.py): the same hops through a WebSocket relay
  with no storage, on the broker's stack (uvloop, orjson): the floor for this stack.
  Also ``--plain`` (asyncio's loop, the json module), the relay of the first
  measurement, as an unchanged control.
* JSONL file channel: a writer thread appends ``{"ts","from","body"}`` lines; a reader
  thread polls the file every 200 ms and records now - ts for each new line.

    python benchmarks/bench_roundtrip.py [--samples 3000] [--raw-clients] [--json]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import _common as c


def _served(lat: list[float], samples: int, elapsed: float, server_cpu: float) -> dict:
    """Latency summary of a baseline run, with its rate and the server's CPU per message."""
    out = c.summary_ms(lat)
    out.update(
        {
            "_lat": lat,
            "rate_per_s": round(samples / elapsed, 1),
            "server_cpu_us_per_msg": round(server_cpu / samples * 1e6, 1),
        }
    )
    return out


async def mesh_roundtrip(samples: int, warmup: int) -> dict:
    from sessionmesh.client.aio import AsyncClient

    with c.broker() as b:
        settings = b.settings()
        async with AsyncClient(settings, "rt-recv") as rx, AsyncClient(settings, "rt-send") as tx:
            got = 0

            async def consume() -> None:
                nonlocal got
                while True:
                    await rx.recv()
                    got += 1

            consumer = asyncio.create_task(consume())
            statuses: dict[str, int] = {}
            for _ in range(warmup):
                await tx.send("rt-recv", c.BODY)
            cpu0, m0 = c.cpu_seconds(b.pid), c.machine_ticks()
            lat: list[float] = []
            t_start, own0 = time.perf_counter(), time.thread_time()
            for _ in range(samples):
                t0 = time.perf_counter()
                res = await tx.send("rt-recv", c.BODY)
                lat.append(time.perf_counter() - t0)
                statuses[res.status.value] = statuses.get(res.status.value, 0) + 1
            elapsed, own = time.perf_counter() - t_start, time.thread_time() - own0
            cpu1, m1 = c.cpu_seconds(b.pid), c.machine_ticks()
            await asyncio.wait_for(_until(lambda: got >= warmup + samples), 10)
            consumer.cancel()
    return _measured(lat, statuses, elapsed, own, cpu1 - cpu0, c.machine_load(m0, m1))


def _measured(
    lat: list[float], statuses: dict[str, int], elapsed: float, own_cpu: float, broker_cpu: float, load: dict
) -> dict:
    """A sessionmesh round's figures: latencies, statuses, rate, both sides' CPU per message."""
    out = c.summary_ms(lat)
    out.update(
        {
            "_lat": lat,
            "statuses": statuses,
            "rate_per_s": round(len(lat) / elapsed, 1),
            "broker_cpu_us_per_msg": round(broker_cpu / len(lat) * 1e6, 1),
            "clients_cpu_us_per_msg": round(own_cpu / len(lat) * 1e6, 1),
            "machine": load,
        }
    )
    return out


async def _hello(http, address, name: str):  # type: ignore[no-untyped-def]
    """A WebSocket session that has said hello as ``name`` (a new name: no secret)."""
    ws = await http.ws_connect(address.ws_url, headers={"Authorization": f"Bearer {address.token}"})
    await ws.send_str(json.dumps({"op": "hello", "args": {"name": name}}))
    welcome = json.loads((await ws.receive(timeout=10)).data)
    if welcome.get("op") != "welcome":
        raise RuntimeError(f"no welcome for {name}: {welcome}")
    return ws


async def mesh_raw_roundtrip(samples: int, warmup: int) -> dict:
    """The broker's round trip with two clients that speak frames by hand."""
    import aiohttp

    from sessionmesh.client import discovery
    from sessionmesh.ids import new_id

    with c.broker() as b:
        address = discovery.locate(b.settings())
        async with aiohttp.ClientSession() as http:
            rx = await _hello(http, address, "raw-recv")
            tx = await _hello(http, address, "raw-send")

            async def acknowledge() -> None:
                async for msg in rx:
                    frame = json.loads(msg.data)
                    if frame.get("op") == "deliver":
                        ids = [m["id"] for m in frame["messages"]]
                        await rx.send_str(json.dumps({"op": "ack", "args": {"ids": ids, "state": "read"}}))

            async def one(rid: int) -> str:
                args = {"id": new_id(), "to": "raw-recv", "body": c.BODY}
                await tx.send_str(json.dumps({"op": "send", "rid": rid, "args": args}))
                while True:  # a receipt frame for the earlier message may come first
                    frame = json.loads((await tx.receive(timeout=10)).data)
                    if frame.get("rid") == rid:
                        return frame["result"]["status"] if frame.get("ok") else "error"

            acker = asyncio.create_task(acknowledge())
            for rid in range(warmup):
                await one(rid)
            statuses: dict[str, int] = {}
            lat: list[float] = []
            cpu0, m0 = c.cpu_seconds(b.pid), c.machine_ticks()
            t_start, own0 = time.perf_counter(), time.thread_time()
            for rid in range(warmup, warmup + samples):
                t0 = time.perf_counter()
                status = await one(rid)
                lat.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
            elapsed, own = time.perf_counter() - t_start, time.thread_time() - own0
            cpu1, m1 = c.cpu_seconds(b.pid), c.machine_ticks()
            acker.cancel()
            await tx.close()
            await rx.close()
    return _measured(lat, statuses, elapsed, own, cpu1 - cpu0, c.machine_load(m0, m1))


async def _until(pred, step: float = 0.005) -> None:
    while not pred():
        await asyncio.sleep(step)


async def nats_roundtrip(samples: int, warmup: int) -> dict:
    import nats

    port = c.free_port()
    proc = c.spawn(
        [c.NATS_BIN, "-a", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await asyncio.wait_for(_port_open(port), 10)
        url = f"nats://127.0.0.1:{port}"
        responder = await nats.connect(url)
        requester = await nats.connect(url)

        async def echo(msg) -> None:
            await msg.respond(msg.data)

        await responder.subscribe("bench.echo", cb=echo)
        await responder.flush()
        body = c.BODY.encode()
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited {proc.returncode}")
        await asyncio.wait_for(_first_reply(requester, body), 10)
        for _ in range(warmup):
            await requester.request("bench.echo", body, timeout=5)
        cpu0 = c.cpu_seconds(proc.pid)
        lat: list[float] = []
        t_start = time.perf_counter()
        for _ in range(samples):
            t0 = time.perf_counter()
            await requester.request("bench.echo", body, timeout=5)
            lat.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - t_start
        cpu1 = c.cpu_seconds(proc.pid)
        await requester.close()
        await responder.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return _served(lat, samples, elapsed, cpu1 - cpu0)


async def _first_reply(nc, body: bytes) -> None:
    """The first request that gets an answer (the subscription is visible to the requester)."""
    import nats.errors

    while True:
        try:
            await nc.request("bench.echo", body, timeout=1)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            await asyncio.sleep(0.05)


async def _port_open(port: int) -> None:
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.02)


async def relay_roundtrip(samples: int, warmup: int, plain: bool = False) -> dict:
    """Request/reply through ws_relay_server.py (aiohttp, no storage): the stack's floor."""
    import aiohttp

    here = os.path.dirname(os.path.abspath(__file__))
    proc = c.spawn(
        [sys.executable, os.path.join(here, "ws_relay_server.py"), *(["--plain"] if plain else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = c._read_line(proc, c.START_TIMEOUT)
        port = int(line.split()[-1])
        async with aiohttp.ClientSession() as http:
            a = await http.ws_connect(f"http://127.0.0.1:{port}/ws?as=a")
            b = await http.ws_connect(f"http://127.0.0.1:{port}/ws?as=b")

            async def echo() -> None:
                async for msg in b:
                    frame = json.loads(msg.data)
                    await b.send_str(json.dumps({"op": "result", "rid": frame["rid"], "ok": True}))

            responder = asyncio.create_task(echo())
            lat: list[float] = []
            cpu0 = 0.0
            t_start = 0.0
            for i in range(warmup + samples):
                if i == warmup:
                    cpu0, t_start = c.cpu_seconds(proc.pid), time.perf_counter()
                t0 = time.perf_counter()
                await a.send_str(json.dumps({"op": "send", "rid": i, "args": {"to": "b", "body": c.BODY}}))
                msg = await a.receive(timeout=5)
                if i >= warmup:
                    lat.append(time.perf_counter() - t0)
                assert json.loads(msg.data)["rid"] == i
            elapsed = time.perf_counter() - t_start
            cpu1 = c.cpu_seconds(proc.pid)
            responder.cancel()
            await a.close()
            await b.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return _served(lat, samples, elapsed, cpu1 - cpu0)


def file_channel(samples: int, poll: float = 0.2, gap_max: float = 0.004) -> dict:
    """Writer appends lines at random gaps (0..4 ms); reader polls every ``poll`` s."""
    tmp = tempfile.mkdtemp(prefix="meshbench-jsonl-")
    path = os.path.join(tmp, "channel.jsonl")
    open(path, "w").close()
    lat: list[float] = []
    done = threading.Event()

    def reader() -> None:
        offset = 0
        buf = b""
        while len(lat) < samples:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            buf += chunk
            now = time.time()
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line:
                    lat.append(now - json.loads(line)["ts"])
            if len(lat) >= samples:
                break
            time.sleep(poll)  # the polling interval *is* the system under test
        done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    rng = random.Random(1)
    with open(path, "a") as fh:
        for _ in range(samples):
            fh.write(json.dumps({"ts": time.time(), "from": "writer", "body": c.BODY}) + "\n")
            fh.flush()
            time.sleep(rng.uniform(0, gap_max))
    done.wait(timeout=poll * 5 + 10)
    shutil.rmtree(tmp, ignore_errors=True)
    out = c.summary_ms(lat[:samples])
    out["poll_ms"] = poll * 1000
    return out


def _pool(rounds: list[dict], cpu_key: str) -> dict:
    """Percentiles over every sample of every round, plus each round's own p50."""
    lat = [x for r in rounds for x in r["_lat"]]
    out = c.summary_ms(lat)
    out["round_p50_ms"] = [r["p50_ms"] for r in rounds]
    out["round_p99_ms"] = [r["p99_ms"] for r in rounds]
    out[cpu_key] = round(c.median([r[cpu_key] for r in rounds]), 1)
    out["over_2_5ms"] = sum(1 for x in lat if x > 0.0025)
    if "machine" in rounds[0]:
        out["round_machine"] = [r["machine"] for r in rounds]
    if "statuses" in rounds[0]:
        st: dict[str, int] = {}
        for r in rounds:
            for k, v in r["statuses"].items():
                st[k] = st.get(k, 0) + v
        out["statuses"] = st
    return out


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=3000, help="samples per system per round")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds; each runs mesh, NATS and the relay back to back (ratios per round)",
    )
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--skip-nats", action="store_true")
    p.add_argument("--skip-file", action="store_true")
    p.add_argument("--skip-relay", action="store_true")
    p.add_argument(
        "--raw-clients",
        action="store_true",
        help="also sessionmesh with two clients that speak frames by hand (what the client library costs)",
    )
    args = p.parse_args()

    runs: dict[str, list[dict]] = {
        "mesh": [],
        "mesh_raw": [],
        "nats": [],
        "aiohttp_relay": [],
        "aiohttp_relay_plain": [],
    }
    for _ in range(args.rounds):
        runs["mesh"].append(asyncio.run(mesh_roundtrip(args.samples, args.warmup)))
        if args.raw_clients:
            runs["mesh_raw"].append(asyncio.run(mesh_raw_roundtrip(args.samples, args.warmup)))
        if not args.skip_nats:
            runs["nats"].append(asyncio.run(nats_roundtrip(args.samples, args.warmup)))
        if not args.skip_relay:
            runs["aiohttp_relay"].append(asyncio.run(relay_roundtrip(args.samples, args.warmup)))
            runs["aiohttp_relay_plain"].append(
                asyncio.run(relay_roundtrip(args.samples, args.warmup, plain=True))
            )

    result: dict = {"samples_per_round": args.samples, "rounds": args.rounds, "body_bytes": len(c.BODY)}
    result["mesh"] = _pool(runs["mesh"], "broker_cpu_us_per_msg")
    result["mesh"]["clients_cpu_us_per_msg"] = [r["clients_cpu_us_per_msg"] for r in runs["mesh"]]
    lines = [
        c.fmt_summary("sessionmesh send -> received", result["mesh"]),
        f"{'':34} per-round p50 {result['mesh']['round_p50_ms']} ms; broker CPU "
        f"{result['mesh']['broker_cpu_us_per_msg']} us/msg; clients' CPU per round "
        f"{result['mesh']['clients_cpu_us_per_msg']} us/msg; {result['mesh']['over_2_5ms']} samples over 2.5 ms; "
        f"statuses {result['mesh']['statuses']}; machine per round {result['mesh']['round_machine']}",
    ]
    if runs["mesh_raw"]:
        raw = result["mesh_raw"] = _pool(runs["mesh_raw"], "broker_cpu_us_per_msg")
        raw["clients_cpu_us_per_msg"] = [r["clients_cpu_us_per_msg"] for r in runs["mesh_raw"]]
        lines += [
            c.fmt_summary("sessionmesh, raw-frame clients", raw),
            f"{'':34} per-round p50 {raw['round_p50_ms']} ms; broker CPU {raw['broker_cpu_us_per_msg']} us/msg; "
            f"clients' CPU per round {raw['clients_cpu_us_per_msg']} us/msg; statuses {raw['statuses']}",
        ]
    if runs["nats"]:
        result["nats"] = _pool(runs["nats"], "server_cpu_us_per_msg")
        p50r = [m["p50_ms"] / n["p50_ms"] for m, n in zip(runs["mesh"], runs["nats"], strict=True)]
        p99r = [m["p99_ms"] / n["p99_ms"] for m, n in zip(runs["mesh"], runs["nats"], strict=True)]
        result["ratio_p50_mesh_over_nats"] = round(c.median(p50r), 2)
        result["ratio_p99_mesh_over_nats"] = round(c.median(p99r), 2)
        result["ratio_p50_per_round"] = [round(x, 2) for x in p50r]
        lines += [
            c.fmt_summary("NATS request/reply (nats-py)", result["nats"]),
            f"{'':34} per-round p50 {result['nats']['round_p50_ms']} ms; nats-server CPU "
            f"{result['nats']['server_cpu_us_per_msg']} us/msg",
            f"ratio mesh/NATS (median of per-round ratios): p50 x{result['ratio_p50_mesh_over_nats']} "
            f"{result['ratio_p50_per_round']}, p99 x{result['ratio_p99_mesh_over_nats']}",
        ]
        if runs["mesh_raw"]:
            rr = [m["p50_ms"] / n["p50_ms"] for m, n in zip(runs["mesh_raw"], runs["nats"], strict=True)]
            result["ratio_p50_raw_clients_over_nats"] = round(c.median(rr), 2)
            result["ratio_p50_raw_clients_per_round"] = [round(x, 2) for x in rr]
            lines.append(
                f"ratio mesh with raw-frame clients/NATS: p50 x{result['ratio_p50_raw_clients_over_nats']} "
                f"{result['ratio_p50_raw_clients_per_round']}"
            )
    for key, label in (
        ("aiohttp_relay", "bare aiohttp relay, uvloop+orjson"),
        ("aiohttp_relay_plain", "bare aiohttp relay, asyncio+json"),
    ):
        if runs[key]:
            result[key] = _pool(runs[key], "server_cpu_us_per_msg")
            lines += [
                c.fmt_summary(label, result[key]),
                f"{'':34} per-round p50 {result[key]['round_p50_ms']} ms; relay CPU "
                f"{result[key]['server_cpu_us_per_msg']} us/msg",
            ]
    if runs["aiohttp_relay"]:
        r = [m["p50_ms"] / x["p50_ms"] for m, x in zip(runs["mesh"], runs["aiohttp_relay"], strict=True)]
        result["ratio_p50_mesh_over_relay"] = round(c.median(r), 2)
        lines.append(
            f"ratio mesh/relay (median of per-round ratios): p50 x{result['ratio_p50_mesh_over_relay']}"
        )
    if not args.skip_file:
        result["file_channel"] = file_channel(args.samples)
        lines.append(c.fmt_summary("JSONL file, 200 ms poll", result["file_channel"]))
    m = result["mesh"]
    result["targets"] = {
        "p50_not_slower_than_nats": (m["p50_ms"] <= result["nats"]["p50_ms"]) if "nats" in result else None,
        "p99_under_5ms": m["p99_ms"] < 5.0,
    }
    lines.append(f"targets: {result['targets']}")
    c.emit(args, "roundtrip", result, lines)


if __name__ == "__main__":
    main()
