"""What an agent's hook costs per call, against a bare interpreter start (#18 item 1).

Runs each hook the way the installers write it (``python -m sessionmesh hook TOOL EVENT
--as NAME``, with the hook's JSON on stdin and only ``MESH_HOME`` set), against a real
broker, interleaved round by round with ``python -c pass`` on the same interpreter:

- the quiet tool hook of each hook format (Claude Code ``PostToolUse``, Codex
  ``PostToolUse``, Gemini CLI ``AfterTool``): nothing waiting, decided from files;
- the quiet pre-tool hook (``PreToolUse``: no guard's stop);
- the full tool hook with nothing waiting (``--url`` makes it ask the broker: the
  path every tool call took before `sessionmesh.quiet`);
- the hook that injects one waiting message (a new message before each sample, sent
  untimed; a fresh session each time, so nothing is acked in the sample).

One sample = spawn until exit. Medians of ``--runs`` samples (default 30) after 3
warm-up rounds, and each as a ratio of the same round's ``python -c pass`` median.
The bytecode cache is on (a temporary ``PYTHONPYCACHEPREFIX``), as in a normal install.

``--no-site`` runs every command (``python -c pass`` too) with ``python -S`` and the
repository's ``src`` on ``PYTHONPATH``: the same comparison without what the machine's
``site-packages/*.pth`` files import at every start (on some machines most of it).

    python benchmarks/bench_hook.py [--runs 30] [--no-site] [--json]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import _common as c

PY = sys.executable
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
QUIET = "hook-quiet"
MAIL = "hook-mail"


def sample(cmd: list[str], env: dict[str, str], stdin: bytes, expect: str | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=30)
    dt = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    out = done.stdout.decode()
    if expect is not None and expect not in out:
        raise RuntimeError(f"{cmd}: expected {expect!r} in {out[:300]!r}")
    if expect is None and out:
        raise RuntimeError(f"{cmd}: printed {out[:300]!r} where nothing was expected")
    return dt


def run(runs: int, *, no_site: bool = False, warmup: int = 3) -> dict:
    pycache = tempfile.mkdtemp(prefix="meshbench-pycache-")
    try:
        with c.broker() as b:
            return _run(b, runs, warmup, pycache, no_site)
    finally:
        shutil.rmtree(pycache, ignore_errors=True)


def _run(b: c.Broker, runs: int, warmup: int, pycache: str, no_site: bool) -> dict:
    from sessionmesh.client.sync import SyncClient

    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MESH_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(MESH_HOME=b.home, PYTHONPYCACHEPREFIX=pycache)
    py = [PY, "-S"] if no_site else [PY]
    if no_site:
        env["PYTHONPATH"] = SRC
    hook = [*py, "-m", "sessionmesh", "hook"]
    settings = b.settings()
    for name in (QUIET, MAIL):
        with SyncClient(settings, name):
            pass
    sender = SyncClient(settings, "hook-sender")
    sender.__enter__()
    tool_input = json.dumps(
        {"session_id": "bench", "hook_event_name": "PostToolUse", "tool_name": "Bash"}
    ).encode()
    pre_input = json.dumps(
        {"session_id": "bench", "tool_name": "Bash", "tool_input": {"command": "ls"}}
    ).encode()
    # one full fetch per name, so its tool hooks know when they last looked
    for tool, event in (("claude-code", "PostToolUse"),):
        sample([*hook, tool, event, "--as", QUIET], env, tool_input)
    cases: dict[str, tuple[list[str], bytes]] = {
        "python -c pass": ([*py, "-c", "pass"], b""),
        "quiet claude-code PostToolUse": ([*hook, "claude-code", "PostToolUse", "--as", QUIET], tool_input),
        "quiet codex PostToolUse": ([*hook, "codex", "PostToolUse", "--as", QUIET], tool_input),
        "quiet gemini AfterTool": ([*hook, "gemini", "AfterTool", "--as", QUIET], tool_input),
        "quiet claude-code PreToolUse": ([*hook, "claude-code", "PreToolUse", "--as", QUIET], pre_input),
        "full PostToolUse, nothing waiting (--url)": (
            [*hook, "claude-code", "PostToolUse", "--as", QUIET, "--url", b.url],
            tool_input,
        ),
    }
    samples: dict[str, list[float]] = {k: [] for k in [*cases, "one message waiting: PostToolUse"]}
    for i in range(warmup + runs):
        for key, (cmd, stdin) in cases.items():
            dt = sample(cmd, env, stdin)
            if i >= warmup:
                samples[key].append(dt)
        sender.send(MAIL, f"round {i}")  # untimed
        fresh = json.dumps({"session_id": f"s{i}", "hook_event_name": "PostToolUse"}).encode()
        dt = sample([*hook, "claude-code", "PostToolUse", "--as", MAIL], env, fresh, expect=f"round {i}")
        if i >= warmup:
            samples["one message waiting: PostToolUse"].append(dt)
    sender.__exit__(None, None, None)
    base = c.median(samples["python -c pass"])
    rows = {
        k: {"median_ms": round(c.median(v) * 1000, 2), "ratio": round(c.median(v) / base, 2), "n": len(v)}
        for k, v in samples.items()
    }
    return {"runs": runs, "interpreter": " ".join(py), "no_site": no_site, "rows": rows}


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--no-site", action="store_true", help="python -S, src on PYTHONPATH")
    args = p.parse_args()
    r = run(args.runs, no_site=args.no_site)
    lines = [
        f"{r['interpreter']}: {r['runs']} samples each, interleaved round by round; medians;"
        " ratio to python -c pass"
    ]
    for key, row in r["rows"].items():
        lines.append(f"{key:<44}{row['median_ms']:>9.1f} ms   ×{row['ratio']:.2f}")
    c.emit(args, "hook", r, lines)


if __name__ == "__main__":
    main()
