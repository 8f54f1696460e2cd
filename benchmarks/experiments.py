"""What-if A/B runs: the suggested broker fixes, applied in memory, against the baseline.

Each variant starts the broker through _patched_serve.py with some patches on; the
round trip (sequential sends) and the throughput (10 senders x 16 in flight) are
measured for every variant, round after round, interleaved, so the machine's drift
hits all variants alike. Medians over rounds, and each variant's ratio to the
baseline of the same round.

Patches (see _patched_serve.py; only fixes that are not in src/ yet):
  batchframes  all frames queued for a connection in one loop turn go as one WS message

    python benchmarks/experiments.py [--variants ';batchframes'] [--rounds 3] [--only roundtrip] [--json]
"""

from __future__ import annotations

import asyncio
import os

import _common as c
import _patched_serve
import bench_roundtrip
import bench_throughput

HERE = os.path.dirname(os.path.abspath(__file__))


def default_variants() -> list[str]:
    return ["", *sorted(_patched_serve.KNOWN)]


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--variants", help="';'-separated patch sets; '' is the baseline")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=1500)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--only", choices=["roundtrip", "throughput"], help="run one of the two workloads")
    args = p.parse_args()
    variants = args.variants.split(";") if args.variants is not None else default_variants()
    if "" not in variants:
        variants.insert(0, "")
    _patched_serve.patch_client_for_batches()  # harmless unless the broker batches

    current = {"patches": ""}
    orig_start = c.start_broker

    def start(home, **kw):  # type: ignore[no-untyped-def]
        kw["python_args"] = [os.path.join(HERE, "_patched_serve.py")]
        kw["env"] = {**(kw.get("env") or {}), "MESH_BENCH_PATCHES": current["patches"]}
        return orig_start(home, **kw)

    c.start_broker = start
    keys = ("rt_p50_ms", "rt_p99_ms", "rt_over_2_5ms", "rt_broker_us", "tp_msgs_s", "tp_broker_us")
    res: dict[str, dict[str, list[float]]] = {v: {k: [] for k in keys} for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            current["patches"] = v
            d = res[v]
            if args.only != "throughput":
                rt = asyncio.run(bench_roundtrip.mesh_roundtrip(args.samples, 200))
                d["rt_p50_ms"].append(rt["p50_ms"])
                d["rt_p99_ms"].append(rt["p99_ms"])
                d["rt_over_2_5ms"].append(sum(1 for x in rt["_lat"] if x > 0.0025))
                d["rt_broker_us"].append(rt["broker_cpu_us_per_msg"])
            if args.only != "roundtrip":
                tp = asyncio.run(bench_throughput.run(10, 16, args.duration, 1.0))
                d["tp_msgs_s"].append(tp["messages_per_s"])
                d["tp_broker_us"].append(tp["broker_cpu_us_per_msg"])
    base = res[""]
    out = []
    for v in variants:
        row = {"variant": v or "baseline"}
        for k in keys:
            row[k] = round(c.median(res[v][k]), 3) if res[v][k] else float("nan")
            ratios = [x / b for x, b in zip(res[v][k], base[k], strict=True) if b]
            row[k + "_vs_base"] = round(c.median(ratios), 3) if ratios else None
        row["raw"] = res[v]
        out.append(row)
    lines = [
        f"{'variant':<42}{'rt p50':>9}{'rt p99':>9}{'>2.5ms':>8}{'rt CPU/msg':>12}{'msgs/s':>9}{'CPU/msg':>9}",
        f"{'':42}(each: median over rounds; below it, the median of per-round ratios to the baseline)",
    ]
    for r in out:
        lines.append(
            f"{r['variant']:<42}{r['rt_p50_ms']:>7.3f}ms{r['rt_p99_ms']:>7.2f}ms{r['rt_over_2_5ms']:>8.0f}"
            f"{r['rt_broker_us']:>10.0f}us{r['tp_msgs_s']:>9.0f}{r['tp_broker_us']:>7.0f}us"
        )
        lines.append(
            f"{'':42}{'x' + str(r['rt_p50_ms_vs_base']):>9}{'x' + str(r['rt_p99_ms_vs_base']):>9}"
            f"{'x' + str(r['rt_over_2_5ms_vs_base']):>8}{'x' + str(r['rt_broker_us_vs_base']):>12}"
            f"{'x' + str(r['tp_msgs_s_vs_base']):>9}{'x' + str(r['tp_broker_us_vs_base']):>9}"
        )
    c.emit(args, "experiments", {"rounds": args.rounds, "variants": out}, lines)


if __name__ == "__main__":
    main()
