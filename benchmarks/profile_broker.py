"""Where the broker's time goes: py-spy samples the broker process under load.

Starts a broker, attaches ``py-spy record --native --format raw`` to its pid, drives
one of two workloads against it, then folds the stacks into a table of self time
(the innermost frame) and inclusive time, plus a breakdown by area (SQLite, JSON,
WebSocket I/O, the core, the event loop). Samples of a thread waiting for work (the
event loop in epoll_wait, the checkpoint worker waiting for its next job) are
dropped, so the percentages are shares of the broker's busy time. ``--native``
(the default) pauses the broker at each sample to unwind C frames too (SQLite's WAL
writes, uvloop's socket writes); at the default 100 Hz that cost no measurable
speed here (round trips/s with and without it, interleaved, 3 rounds), and it is the
only way to tell uvloop's work from its idle wait; ``--no-native`` samples without
pausing, but then counts much of the wait in epoll as busy time. Needs py-spy (``pip install
py-spy``) and ptrace rights on the broker; with ``--cprofile`` the broker runs under
cProfile instead (slower, but needs nothing).

    python benchmarks/profile_broker.py --workload throughput [--seconds 8] [--json]
    python benchmarks/profile_broker.py --workload roundtrip
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pstats
import shutil
import signal
import subprocess
import tempfile
import time

import _common as c

AREAS = [  # first match wins, tested against each frame of a stack from the innermost out
    # the WAL checkpoint runs on a worker thread (server.py _checkpointer), off the loop
    (
        "sqlite: checkpoint (worker thread)",
        ("sqlite3WalCheckpoint", "checkpoint (sessionmesh/storage/sqlite.py"),
    ),
    # (native frames) appending a commit's pages to the WAL: one pwrite per page
    ("sqlite: commit, WAL page writes", ("sqlite3WalFrames",)),
    (
        "sqlite: commit, rest",
        (
            "commit (sessionmesh/storage/sqlite.py",
            "_flush_receipts (sessionmesh/storage/sqlite.py",
            "_flush_audit (sessionmesh/storage/sqlite.py",
        ),
    ),
    ("sqlite: statements", ("sessionmesh/storage/sqlite.py",)),
    # orjson is C: its time shows under codec.py's dumps/loads
    (
        "json encode/decode",
        ("sessionmesh/codec.py", "json/encoder.py", "json/decoder.py", "json/__init__.py"),
    ),
    ("envelope/ids/validation", ("sessionmesh/envelope.py",)),
    ("metrics (prometheus_client)", ("prometheus_client/", "sessionmesh/metrics.py")),
    ("core logic (core/)", ("sessionmesh/core/",)),
    # (native frames) uvloop writing a frame to the socket: the send() syscall
    ("socket writes (uvloop -> kernel)", ("UVStream_write", "UVStream__try_write")),
    ("websocket frames (aiohttp)", ("aiohttp/",)),
    ("server/transports glue", ("sessionmesh/server.py", "sessionmesh/transports.py")),
    # uvloop's own C code (native frames), or, without --native, uvloop.run's frame
    ("event loop (uvloop/asyncio)", ("uvloop/", "asyncio/", "uv_run", "uv__", "Loop__", "Handle__run")),
]

# a sample with one of these near the top of its stack is a thread waiting for work
IDLE = ("epoll_pwait", "epoll_wait", "_queue_SimpleQueue_get", "EpollSelector.select")


def area_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, needles in AREAS:
            if any(n in frame for n in needles):
                return area
    return "other"


def fold(raw_path: str, top: int) -> dict:
    self_t: collections.Counter[str] = collections.Counter()
    self_py: collections.Counter[str] = collections.Counter()  # native frames folded into their Python caller
    lines_py: collections.Counter[str] = collections.Counter()
    lines_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = idle = 0
    with open(raw_path) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = [
                f
                for f in stack.split(";")
                if f and not f.startswith("process ") and not f.startswith("thread ")
            ]
            if not frames:
                continue
            if any(w in f for f in frames[-6:] for w in IDLE):
                idle += n
                continue
            total += n
            lines_t[_short(frames[-1])] += n
            self_t[_func(frames[-1])] += n
            py = next((f for f in reversed(frames) if ".py:" in f or ".py)" in f), frames[-1])
            self_py[_func(py)] += n
            lines_py[_short(py)] += n
            for f in {_func(f) for f in frames}:
                incl[f] += n
            areas[area_of(frames)] += n
    pct = lambda k: round(100.0 * k / max(total, 1), 1)  # noqa: E731
    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "areas": [{"area": a, "pct": pct(n)} for a, n in areas.most_common()],
        "self": [{"frame": f, "pct": pct(n)} for f, n in self_t.most_common(top)],
        "hot_lines": [{"frame": f, "pct": pct(n)} for f, n in lines_t.most_common(top)],
        "self_python": [{"frame": f, "pct": pct(n)} for f, n in self_py.most_common(top)],
        "hot_python_lines": [{"frame": f, "pct": pct(n)} for f, n in lines_py.most_common(top)],
        "inclusive": [
            {"frame": f, "pct": pct(n)}
            for f, n in incl.most_common(top * 3)
            if "sessionmesh" in f and not any(w in f for w in _WRAPPERS)
        ][:top],
    }


# the frames every broker stack starts with: not worth a row in the inclusive table
_WRAPPERS = (
    "sessionmesh/cli.py",
    "sessionmesh/__main__.py",
    "run (sessionmesh/server.py",
    "_main (sessionmesh/server.py",
)


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
    await asyncio.wait_for(
        asyncio.gather(*(worker(i) for i in range(senders) for _ in range(window))), seconds + 30
    )
    elapsed = time.perf_counter() - t0
    for t in consumers:
        t.cancel()
    await asyncio.gather(*(x.close() for x in rx + tx), return_exceptions=True)
    return {
        "kind": kind,
        "senders": senders,
        "window": window,
        "sends": count,
        "sends_per_s": round(count / elapsed, 1),
    }


def run_pyspy(args) -> dict:
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy not found: pip install py-spy (or use --cprofile)")
    raw = tempfile.mktemp(prefix="meshbench-pyspy-", suffix=".txt")
    with c.broker() as b:
        mode = ["--native"] if args.native else ["--nonblocking"]
        spy = c.spawn(
            [
                pyspy,
                "record",
                "--format",
                "raw",
                "-o",
                raw,
                "-r",
                str(args.rate),
                "-d",
                str(int(args.seconds + 3)),
                *mode,
                "-p",
                str(b.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
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
    return {
        "profiler": "py-spy --native" if args.native else "py-spy --nonblocking",
        "rate_hz": args.rate,
        "load": load,
        **folded,
    }


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
    return {
        "profiler": "cProfile",
        "load": load,
        "total_s": round(total, 3),
        "self": [
            {"frame": f"{fn} ({os.path.basename(file)}:{line})", "pct": round(100 * v[2] / total, 1)}
            for (file, line, fn), v in rows
        ],
    }


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--workload", choices=["throughput", "roundtrip"], default="throughput")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--window", type=int, default=16)
    p.add_argument(
        "--rate",
        type=int,
        default=100,
        help="py-spy samples per second (100: --native costs the broker no measurable speed here)",
    )
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--keep", help="copy the raw py-spy stacks (flamegraph.pl input) here")
    p.add_argument(
        "--native",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="unwind C frames too (pauses the broker at each sample; default on)",
    )
    p.add_argument("--cprofile", action="store_true", help="profile with cProfile instead of py-spy")
    args = p.parse_args()
    r = run_cprofile(args) if args.cprofile else run_pyspy(args)
    lines = [
        f"{r['profiler']} on the broker, workload {r['load']}, {r.get('samples', '?')} busy samples "
        f"({r.get('idle_samples_dropped', 0)} idle-wait samples dropped)"
    ]
    if "areas" in r:
        lines.append("by area (innermost sessionmesh/library frame that matches):")
        lines += [f"  {a['pct']:5.1f}%  {a['area']}" for a in r["areas"]]
    lines.append("self time by function (innermost frame):")
    lines += [f"  {s['pct']:5.1f}%  {s['frame']}" for s in r["self"]]
    if "hot_lines" in r:
        lines.append("hot lines (innermost frame):")
        lines += [f"  {s['pct']:5.1f}%  {s['frame']}" for s in r["hot_lines"][:15]]
    if "self_python" in r:
        lines.append("self time by innermost Python function (C frames counted in their Python caller):")
        lines += [f"  {s['pct']:5.1f}%  {s['frame']}" for s in r["self_python"]]
        lines.append("hot Python lines (the same, per line):")
        lines += [f"  {s['pct']:5.1f}%  {s['frame']}" for s in r["hot_python_lines"][:15]]
    if "inclusive" in r:
        lines.append("inclusive time by function (sessionmesh frames):")
        lines += [f"  {s['pct']:5.1f}%  {s['frame']}" for s in r["inclusive"]]
    c.emit(args, f"profile-{args.workload}", r, lines)


if __name__ == "__main__":
    main()
