"""Shared helpers for the sessionmesh benchmarks (standard library + sessionmesh only).

Every benchmark starts its own broker with ``python -m sessionmesh serve --port 0
--home TMPDIR`` in a subprocess (the same way tests/conftest.py does), so the
broker and the clients are different processes, as in real use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

START_TIMEOUT = 20.0
BIN_DIR = os.path.join(sys.prefix, "bin")
MESH_BIN = os.path.join(BIN_DIR, "mesh")
NATS_BIN = os.path.join(BIN_DIR, "nats-server")
BODY = "x" * 100  # every latency/throughput message carries a 100-byte body


# -- statistics -----------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of samples given in seconds."""
    ms = [x * 1000.0 for x in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 3),
        "p90_ms": round(pct(ms, 90), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- environment ----------------------------------------------------------------
def raise_nofile(want: int = 65536) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit (children inherit it); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = -1.0
    import sessionmesh

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sessionmesh": getattr(sessionmesh, "__version__", "?"),
        "loadavg_1m": round(load1, 2),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of all CPUs together, from the 'cpu' line of /proc/stat."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (
        user + nice + system + irq + softirq,
        steal,
        user + nice + system + idle + iowait + irq + softirq + steal,
    )


def machine_load(t0: tuple[int, int, int], t1: tuple[int, int, int]) -> dict[str, float]:
    """Between two machine_ticks(): cores busy, and cores stolen by the hypervisor (a shared
    host running someone else on our vCPUs: neither process runs, nor does it show as idle)."""
    n = os.cpu_count() or 1
    total = max(t1[2] - t0[2], 1)
    return {
        "busy_cores": round((t1[0] - t0[0]) / total * n, 2),
        "stolen_cores": round((t1[1] - t0[1]) / total * n, 2),
    }


# -- the broker -----------------------------------------------------------------
def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError(f"no output from pid {proc.pid} within {timeout}s")
        return proc.stdout.readline()
    finally:
        sel.close()


@dataclass
class Broker:
    home: str
    proc: subprocess.Popen[str]
    url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def settings(self, **overrides: Any) -> Any:
        from sessionmesh.config import load

        return load(env={}, overrides={"home": self.home, "url": self.url, "autostart": False, **overrides})


def start_broker(
    home: str, *, env: dict[str, str] | None = None, python_args: list[str] | None = None
) -> Broker:
    """``mesh serve --port 0 --home HOME`` in a subprocess; waits for its first line.

    ``python_args`` go between the interpreter and ``-m sessionmesh`` (e.g. cProfile).
    """
    env = {**os.environ, **(env or {}), "MESH_HOME": home}
    for key in ("MESH_URL", "MESH_NAME", "MESH_TOKEN"):
        env.pop(key, None)
    cmd = [sys.executable, *(python_args or []), "-m", "sessionmesh", "serve", "--port", "0", "--home", home]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = _read_line(proc, START_TIMEOUT)
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"broker did not start: {line!r}")
    url = line.split("listening on ", 1)[1].split()[0]
    return Broker(home, proc, url, env)


def stop_broker(b: Broker) -> None:
    if b.proc.poll() is None:
        b.proc.send_signal(signal.SIGTERM)
        try:
            b.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait(timeout=5)


@contextmanager
def broker(prefix: str = "meshbench-", **kw: Any) -> Iterator[Broker]:
    home = tempfile.mkdtemp(prefix=prefix)
    b = start_broker(home, **kw)
    try:
        yield b
    finally:
        stop_broker(b)
        shutil.rmtree(home, ignore_errors=True)


# -- output ---------------------------------------------------------------------
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def emit(args: argparse.Namespace, name: str, result: dict[str, Any], lines: list[str]) -> None:
    result = {"benchmark": name, "machine": machine(), **result}
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"== {name}")
        for line in lines:
            print("  " + line)
        sys.stdout.flush()


def fmt_summary(label: str, s: dict[str, float]) -> str:
    return (
        f"{label:<34} n={s['n']:<6} p50 {s['p50_ms']:8.3f} ms   p90 {s['p90_ms']:8.3f} ms   "
        f"p99 {s['p99_ms']:8.3f} ms   max {s['max_ms']:8.3f} ms"
    )


def now() -> float:
    return time.perf_counter()
