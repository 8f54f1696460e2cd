"""Shared helpers for the sessionmesh benchmarks (standard library + sessionmesh only).

Every benchmark starts its own broker with ``python -m sessionmesh serve --port 0
--home TMPDIR`` in a subprocess (the same way tests/conftest.py does), so the
broker and the clients are different processes, as in real use.

No benchmark leaves a process behind, however it ends: every child (`spawn`) runs
in a process group of its own, and each group is ended when the benchmark exits
(normally, by an exception, on SIGINT or SIGTERM), and by the kernel when it is
killed outright (the children ask for SIGTERM when their parent dies).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
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
STOP_GRACE = 8.0  # a child's group has this long after SIGTERM before SIGKILL
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


# -- child processes ------------------------------------------------------------
_children: list[subprocess.Popen[Any]] = []
_PR_SET_PDEATHSIG = 1


def _in_child() -> None:
    """Runs in the child before exec: SIGTERM it when the benchmark dies, even by
    SIGKILL (Linux; elsewhere the atexit and signal handlers are all there is)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _on_signal(signum: int, _frame: Any) -> None:
    end_children()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the signal, as without this handler


def _install_reaper() -> None:
    if getattr(_install_reaper, "done", False):
        return
    _install_reaper.done = True  # type: ignore[attr-defined]
    atexit.register(end_children)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` in a process group (session) of its own, ended with every
    other child when the benchmark ends (`end_children`)."""
    _install_reaper()
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_in_child, **kw)
    _children.append(proc)
    return proc


def end_group(proc: subprocess.Popen[Any], grace: float = STOP_GRACE) -> None:
    """SIGTERM the child's whole process group; SIGKILL what is left after ``grace``
    (the leader's children too, though the leader itself may be gone already)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.05)  # sleep-ok: bounded wait for processes this benchmark started
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    forget(proc)


def forget(proc: subprocess.Popen[Any]) -> None:
    """A child that ended on its own, with its group: nothing to end any more."""
    with contextlib.suppress(ValueError):
        _children.remove(proc)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_children() -> None:
    """End every child's process group that is still there (atexit, signals)."""
    while _children:
        end_group(_children[-1])


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
    # MESHBENCH_BROKER_LOG=FILE keeps the brokers' stderr (their logs) for a post-mortem
    log_path = os.environ.get("MESHBENCH_BROKER_LOG")
    err: Any = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    if log_path:
        err.close()
    line = _read_line(proc, START_TIMEOUT)
    if "listening on" not in line:
        end_group(proc)
        raise RuntimeError(f"broker did not start: {line!r}")
    url = line.split("listening on ", 1)[1].split()[0]
    return Broker(home, proc, url, env)


def stop_broker(b: Broker) -> None:
    """SIGTERM the broker and its children (screening workers); SIGKILL after a grace."""
    end_group(b.proc)


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
