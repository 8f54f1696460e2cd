"""Where the broker's time goes: py-spy samples the broker process under load.

Starts a broker, attaches ``py-spy record --format raw`` to its pid, drives one of
two workloads against it, then folds the stacks into a table of self time (the
innermost frame) and inclusive time, plus a coarse breakdown by area (SQLite,
JSON, WebSocket I/O, the core, the event loop). Needs py-spy (``pip install
py-spy``) and ptrace rights on the broker; with ``--cprofile`` the broker runs
under cProfile instead (slower, but needs nothing).

    python benchmarks/profile_broker.py --workload throughput [--seconds 8] [--json]
    python benchmarks/profile_broker.py --workload roundtrip
"""

from __future__ import annotations

import asyncio
import collections
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import _common as c

AREAS = [  # first match wins, tested against each frame of a stack from the innermost out
    ("sqlite: commit", ("commit (sessionmesh/storage/sqlite.py",)),
    ("sqlite: statements", ("sessionmesh/storage/sqlite.py",)),
    ("json encode/decode", ("json/encoder.py", "json/decoder.py", "json/__init__.py")),
    ("envelope/ids/validation", ("sessionmesh/envelope.py",)),
    ("core logic (broker.py)", ("sessionmesh/core/",)),
    ("websocket frames (aiohttp)", ("aiohttp/",)),
    ("server/transports glue", ("sessionmesh/server.py", "sessionmesh/transports.py")),
    ("asyncio event loop", ("asyncio/",)),
]


def area_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, needles in AREAS:
            if any(n in frame for n in needles):
                return area
    return "other"


def fold(raw_path: str, top: int) -> dict:
    self_t: collections.Counter[str] = collections.Counter()
    lines_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw_path) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
            if not frames:
                continue
            total += n
            lines_t[_short(frames[-1])] += n
            self_t[_func(frames[-1])] += n
            for f in {_func(f) for f in frames}:
                incl[f] += n
            areas[area_of(frames)] += n
    pct = lambda k: round(100.0 * k / max(total, 1), 1)  # noqa: E731
    return {
        "samples": total,
        "areas": [{"area": a, "pct": pct(n)} for a, n in areas.most_common()],
        "self": [{"frame": f, "pct": pct(n)} for f, n in self_t.most_common(top)],
        "hot_lines": [{"frame": f, "pct": pct(n)} for f, n in lines_t.most_common(top)],
        "inclusive": [{"frame": f, "pct": pct(n)} for f, n in incl.most_common(top * 2)
                      if "sessionmesh" in f][:top],
    }


def _func(frame: str) -> str:
    """The frame without its line number: one row per function."""
    short = _short(frame)
    head, sep, tail = short.rpartition(":")
    return f"{head})" if sep and tail.rstrip(")").isdigit() else short


def _short(frame: str) -> str:
    # "send (sessionmesh/core/broker.py:271)" -> keep, but trim long absolute paths
    for marker in ("site-packages/", "lib/python3.", "/src/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            path = tail.split(marker, 1)[1] if marker in tail else tail
            if marker == "lib/python3.":
                path = path.split("/", 1)[1] if "/" in path else path
            return f"{head}({path}"
    return frame


async def workload(kind: str, settings, seconds: float, senders: int, window: int) -> dict:
    from sessionmesh.client.aio import AsyncClient

    if kind == "roundtrip":
        senders, window = 1, 1
    rx = [AsyncClient(settings, f"pf-recv-{i}") for i in range(senders)]
    tx = [AsyncClient(settings, f"pf-send-{i}") for i in range(senders)]
    await asyncio.wait_for(asyncio.gather(*(x.connect() for x in rx + tx)), 30)

    async def consume(x) -> None:
        while True:
            await x.recv()

    consumers = [asyncio.create_task(consume(x)) for x in rx]
    deadline = time.perf_counter() + seconds
    count = 0

    async def worker(i: int) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await tx[i].send(f"pf-recv-{i}", c.BODY)
            count += 1

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(senders) for _ in range(window))), seconds + 30)
    elapsed = time.perf_counter() - t0
    for t in consumers:
        t.cancel()
    await asyncio.gather(*(x.close() for x in rx + tx), return_exceptions=True)
    return {"kind": kind, "senders": senders, "window": window, "sends": count,
            "sends_per_s": round(count / elapsed, 1)}


def run_pyspy(args) -> dict:
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy not found: pip install py-spy (or use --cprofile)")
    raw = tempfile.mktemp(prefix="meshbench-pyspy-", suffix=".txt")
    with c.broker() as b:
        spy = subprocess.Popen([pyspy, "record", "--format", "raw", "-o", raw, "-r", str(args.rate),
                                "-d", str(int(args.seconds + 3)), "--nonblocking", "-p", str(b.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        load = asyncio.run(workload(args.workload, b.settings(), args.seconds, args.senders, args.window))
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=10)
    if not os.path.exists(raw):
        raise SystemExit(f"py-spy wrote nothing: {err[-500:]}")
    folded = fold(raw, args.top)
    if args.keep:
        shutil.copy(raw, args.keep)
    os.unlink(raw)
    return {"profiler": "py-spy", "rate_hz": args.rate, "load": load, **folded}


def run_cprofile(args) -> dict:
    prof = tempfile.mktemp(prefix="meshbench-", suffix=".prof")
    home = tempfile.mkdtemp(prefix="meshbench-")
    b = c.start_broker(home, python_args=["-m", "cProfile", "-o", prof])
    try:
        load = asyncio.run(workload(args.workload, b.settings(), args.seconds, args.senders, args.window))
    finally:
        c.stop_broker(b)
        shutil.rmtree(home, ignore_errors=True)
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[: args.top]  # type: ignore[attr-defined]
    os.unlink(prof)
    return {"profiler": "cProfile", "load": load, "total_s": round(total, 3),
            "self": [{"frame": f"{fn} ({os.path.basename(file)}:{line})", "pct": round(100 * v[2] / total, 1)}
                     for (file, line, fn), v in rows]}


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--workload", choices=["throughput", "roundtrip"], default="throughput")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--keep", help="copy the raw py-spy stacks (flamegraph.pl input) here")
    p.add_argument("--cprofile", action="store_true", help="profile with cProfile instead of py-spy")
    args = p.parse_args()
    r = run_cprofile(args) if args.cprofile else run_pyspy(args)
    lines = [f"{r['profiler']} on the broker, workload {r['load']}, {r.get('samples', '?')} samples"]
    if "areas" in r:
        lines.append("by area (innermost sessionmesh/library frame that matches):")
        lines += [f"  {a['pct']:5.1f}%  {a['area']}" for a in r["areas"]]
    lines.append("self time by function (innermost frame):")
    lines += [f"  {s['pct']:5.1f}%  {s['frame']}" for s in r["self"]]
    if "hot_lines" in r:
        lines.append("hot lines (innermost frame):")
        lines += [f"  {s['pct']:5.1f}%  {s['frame']}" for s in r["hot_lines"][:15]]
    if "inclusive" in r:
        lines.append("inclusive time by function (sessionmesh frames):")
        lines += [f"  {s['pct']:5.1f}%  {s['frame']}" for s in r["inclusive"]]
    c.emit(args, f"profile-{args.workload}", r, lines)


if __name__ == "__main__":
    main()
