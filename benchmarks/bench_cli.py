"""Wall time of one-shot CLI calls: ``mesh send``, ``mesh inbox`` with nothing waiting,
and ``mesh hook claude-code PostToolUse`` with nothing to report (it runs on every
tool call of an agent: target < 80 ms median; the others < 150 ms).

Runs the real console script ``$(sys.prefix)/bin/mesh`` (the file pip wrote), not a
pyenv shim: a shim is a bash script that runs ``pyenv exec`` first and adds tens of
milliseconds. The environment is what a hook sees: ``MESH_HOME`` only (the CLI
finds the broker through broker.json and checks /health). One sample = spawn until
exit, measured here; each command runs ``--runs`` times after 2 warm-up runs, and
the median is the figure; the commands run interleaved, round by round. For scale,
``python -c pass`` and ``mesh --version`` (the interpreter plus the import of the
CLI) are timed the same way. Everything is timed twice: with the environment as it
is, and with a bytecode cache (``PYTHONDONTWRITEBYTECODE`` unset,
``PYTHONPYCACHEPREFIX`` = a temp dir), since a machine that sets
PYTHONDONTWRITEBYTECODE=1 recompiles sessionmesh's modules on every call.

    python benchmarks/bench_cli.py [--runs 25] [--json]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time

import _common as c


async def _once(cmd: list[str], env: dict[str, str], expect: str | None) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # what an agent's hook gets on stdin; the other commands ignore it
    stdout, stderr = await asyncio.wait_for(proc.communicate(HOOK_INPUT), 30)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {stderr.decode()[-500:]}")
    if expect is not None and expect not in stdout.decode():
        raise RuntimeError(f"{cmd}: expected {expect!r} in {stdout.decode()!r}")
    return dt


async def timed_set(
    cmds: dict[str, tuple[list[str], str | None, dict[str, str]]], runs: int, warmup: int = 2
) -> dict[str, dict]:
    """Run every command once per round (interleaved, so drift hits all alike)."""
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(warmup + runs):
        for key, (cmd, expect, env) in cmds.items():
            dt = await _once(cmd, env, expect)
            if i >= warmup:
                samples[key].append(dt)
    out = {}
    for key, xs in samples.items():
        s = c.summary_ms(xs)
        s["median_ms"] = round(c.median(xs) * 1000, 2)
        out[key] = s
    return out


async def importtime(cmd: list[str], env: dict[str, str], top: int = 8) -> list[dict]:
    """``python -X importtime``: the slowest top-level imports of one run (cumulative),
    each with its slowest direct children."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    rows: list[dict] = []
    children: list[dict] = []
    for line in err.decode().splitlines():  # children are printed before their parent
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        row = {"module": name.strip(), "cumulative_ms": round(int(cum_us) / 1000, 1)}
        if depth == 1:
            children.append(row)
        elif depth == 0:
            row["children"] = sorted(children, key=lambda r: -r["cumulative_ms"])[:4]
            children = []
            rows.append(row)
    rows.sort(key=lambda r: -r["cumulative_ms"])
    return rows[:top]


HOOK_INPUT = b'{"session_id":"bench","cwd":"/tmp","hook_event_name":"PostToolUse","tool_name":"Bash"}'
LABELS = {
    "python_c_pass": "python -c pass (interpreter only)",
    "mesh_version": "mesh --version (CLI import)",
    "mesh_send_queued": "mesh send (recipient offline)",
    "mesh_send_received": "mesh send (recipient live)",
    "mesh_inbox_empty": "mesh inbox (nothing waiting)",
    "mesh_peers": "mesh peers",
    "mesh_hook_empty": "mesh hook (nothing to report)",
}
TARGETED = ("mesh_send_queued", "mesh_send_received", "mesh_inbox_empty", "mesh_peers")
RATIO_TARGET = 2.5  # #18: a one-shot command within 2.5x a bare interpreter start, same run
HOOK_TARGET_MS = 80


async def run(runs: int) -> dict:
    if not os.path.exists(c.MESH_BIN):
        raise SystemExit(f"no console script at {c.MESH_BIN}: pip install -e '.[dev]'")
    pycache = tempfile.mkdtemp(prefix="meshbench-pycache-")
    try:
        return await _run(runs, pycache)
    finally:
        shutil.rmtree(pycache, ignore_errors=True)


async def _run(runs: int, pycache: str) -> dict:
    from sessionmesh.client.aio import AsyncClient

    with c.broker() as b:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env["MESH_HOME"] = b.home
        # a normal install keeps .pyc files; this machine may set PYTHONDONTWRITEBYTECODE=1,
        # so time both. The cache goes to a temp dir (PYTHONPYCACHEPREFIX), not into src/.
        env_cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env_cached["PYTHONPYCACHEPREFIX"] = pycache
        settings = b.settings()
        async with AsyncClient(settings, "cli-hooked"):
            pass  # the agent whose hook runs: joined once, nothing waiting
        async with AsyncClient(settings, "cli-offline"):
            pass  # a known peer that is not connected: sends answer 'queued'
        async with AsyncClient(settings, "cli-live") as live:

            async def consume() -> None:
                while True:
                    await live.recv()

            consumer = asyncio.create_task(consume())
            cmds = {
                "python_c_pass": ([sys.executable, "-c", "pass"], None),
                "mesh_version": ([c.MESH_BIN, "--version"], None),
                "mesh_send_queued": (
                    [c.MESH_BIN, "send", "--as", "cli-sender", "cli-offline", "hello"],
                    "queued",
                ),
                "mesh_send_received": (
                    [c.MESH_BIN, "send", "--as", "cli-sender", "cli-live", "hello"],
                    "received",
                ),
                "mesh_inbox_empty": ([c.MESH_BIN, "inbox", "--as", "cli-empty"], "no new messages"),
                "mesh_peers": ([c.MESH_BIN, "peers"], "NAME"),
                "mesh_hook_empty": (
                    [c.MESH_BIN, "hook", "claude-code", "PostToolUse", "--as", "cli-hooked"],
                    "",
                ),
            }
            both = {
                **{k: (cmd, exp, env) for k, (cmd, exp) in cmds.items()},
                **{"cached:" + k: (cmd, exp, env_cached) for k, (cmd, exp) in cmds.items()},
            }
            timed = await timed_set(both, runs)
            as_is = {k: timed[k] for k in cmds}
            cached = {k: timed["cached:" + k] for k in cmds}
            imports = await importtime(
                [
                    sys.executable,
                    "-X",
                    "importtime",
                    c.MESH_BIN,
                    "send",
                    "--as",
                    "cli-sender",
                    "cli-offline",
                    "hello",
                ],
                env_cached,
            )
            consumer.cancel()
    return {
        "mesh_bin": c.MESH_BIN,
        "runs": runs,
        "dont_write_bytecode_here": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        "as_is": as_is,
        "bytecode_cached": cached,
        "send_imports_top": imports,
        "targets": {
            **{k: as_is[k]["median_ms"] < 150 for k in TARGETED},
            "mesh_hook_empty": as_is["mesh_hook_empty"]["median_ms"] < HOOK_TARGET_MS,
        },
        "targets_bytecode_cached": {
            **{k: cached[k]["median_ms"] < 150 for k in TARGETED},
            "mesh_hook_empty": cached["mesh_hook_empty"]["median_ms"] < HOOK_TARGET_MS,
        },
        "ratio_to_interpreter": {
            k: round(cached[k]["median_ms"] / cached["python_c_pass"]["median_ms"], 2) for k in TARGETED
        },
        "ratio_targets": {
            k: cached[k]["median_ms"] / cached["python_c_pass"]["median_ms"] <= RATIO_TARGET for k in TARGETED
        },
        "hook_over_interpreter_ms": round(
            cached["mesh_hook_empty"]["median_ms"] - cached["python_c_pass"]["median_ms"], 1
        ),
    }


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=25)
    args = p.parse_args()
    r = asyncio.run(run(args.runs))
    lines = [
        f"console script {r['mesh_bin']} (not a pyenv shim), {r['runs']} runs each, interleaved; "
        f"medians (PYTHONDONTWRITEBYTECODE here: {r['dont_write_bytecode_here']!r})",
        f"{'':38}{'as this env is':>16}{'with .pyc cache':>18}",
    ]
    for key, label in LABELS.items():
        a, b = r["as_is"][key], r["bytecode_cached"][key]
        lines.append(
            f"{label:<38}{a['median_ms']:>12.1f} ms{b['median_ms']:>14.1f} ms   "
            f"(p90 {a['p90_ms']:.1f} / {b['p90_ms']:.1f})"
        )
    lines.append(
        f"targets (< 150 ms; hook < {HOOK_TARGET_MS} ms): {r['targets']}; "
        f"with .pyc cache: {r['targets_bytecode_cached']}"
    )
    lines.append(
        f"hook cost over a bare interpreter start (with .pyc cache): {r['hook_over_interpreter_ms']} ms"
    )
    lines.append(
        f"ratio to python -c pass (with .pyc cache; target <= {RATIO_TARGET}x): {r['ratio_to_interpreter']};"
        f" met: {r['ratio_targets']}"
    )
    lines.append(
        "slowest top-level imports of one 'mesh send' (-X importtime, with .pyc cache; "
        "'site' runs the .pth files of site-packages):"
    )
    for x in r["send_imports_top"][:5]:
        kids = ", ".join(
            f"{k['module']} {k['cumulative_ms']}" for k in x["children"] if k["cumulative_ms"] >= 1
        )
        lines.append(f"  {x['cumulative_ms']:6.1f} ms  {x['module']}" + (f"  ({kids})" if kids else ""))
    c.emit(args, "cli", r, lines)


if __name__ == "__main__":
    main()
