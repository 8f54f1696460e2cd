"""How soon `mesh mcp` answers a program that starts it, and what each program's hook
costs per call.

1. Start-up: spawn ``mesh mcp`` as a program does, send ``initialize`` and
   ``tools/list`` the moment it starts, and time until each answer arrives (target:
   tools/list < 300 ms median). Baseline in the same run: ``python -c pass``, and
   the time until the first *tool call* is answered (which waits for the MCP SDK to
   load and the server to join the broker).
2. Hooks: ``mesh hook TOOL EVENT`` for each program's per-tool-call event (Claude
   Code and Codex PostToolUse, Gemini AfterTool, Pi tool_result) with nothing
   waiting, and with one message waiting; reported as time over the bare
   interpreter.

Every command runs ``--runs`` times after 2 warm-up runs, interleaved round by round;
figures are medians. Runs the real console script, not a pyenv shim.

    python benchmarks/bench_mcp_start.py [--runs 25] [--json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import _common as c

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}
HOOK_EVENTS = {
    "claude-code": "PostToolUse",
    "codex": "PostToolUse",
    "gemini": "AfterTool",
    "pi": "tool_result",
}


def start_once(env: dict[str, str], name: str) -> dict[str, float]:
    """One ``mesh mcp`` start: seconds to the initialize answer, the tools/list answer,
    and the first tool call's answer."""
    t0 = time.perf_counter()
    proc = c.spawn(
        [c.MESH_BIN, "mcp", "--as", name],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines = [
        INIT,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "locks", "arguments": {}}},
    ]
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
    proc.stdin.flush()
    seen: dict[str, float] = {}
    try:
        while len(seen) < 3:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("mesh mcp closed stdout")
            msg = json.loads(line)
            key = {1: "initialize", 2: "tools_list", 3: "first_tool_call"}.get(msg.get("id"))
            if key:
                seen[key] = time.perf_counter() - t0
    finally:
        proc.stdin.close()
        proc.wait(15)
    return seen


def pass_once(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t0


def hook_once(env: dict[str, str], tool: str, name: str, expect: bool) -> float:
    event = HOOK_EVENTS[tool]
    stdin = json.dumps({"session_id": f"bench-{time.perf_counter_ns()}", "hook_event_name": event}).encode()
    t0 = time.perf_counter()
    done = subprocess.run(
        [c.MESH_BIN, "hook", tool, event, "--as", name], env=env, input=stdin, capture_output=True, check=True
    )
    dt = time.perf_counter() - t0
    if bool(done.stdout.strip()) != expect:
        raise RuntimeError(f"hook {tool}: expected {'output' if expect else 'silence'}, got {done.stdout!r}")
    return dt


def run(runs: int) -> dict:
    from sessionmesh.client.sync import SyncClient

    with c.broker() as b:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env["MESH_HOME"] = b.home
        settings = b.settings()
        for tool in HOOK_EVENTS:
            for suffix in ("quiet", "busy"):
                with SyncClient(settings, f"h-{tool}-{suffix}"):
                    pass  # joined once: the hook's name exists, nothing waits
        samples: dict[str, list[float]] = {}
        with SyncClient(settings, "bench-sender") as sender:
            for i in range(2 + runs):
                row = {"python_c_pass": pass_once(env)}
                start = start_once(env, f"start-{i}")
                row.update({f"mcp_{k}": v for k, v in start.items()})
                for tool in HOOK_EVENTS:
                    row[f"hook_{tool}_quiet"] = hook_once(env, tool, f"h-{tool}-quiet", expect=False)
                    sender.send(f"h-{tool}-busy", "one waiting")
                    row[f"hook_{tool}_one_waiting"] = hook_once(env, tool, f"h-{tool}-busy", expect=True)
                if i >= 2:
                    for k, v in row.items():
                        samples.setdefault(k, []).append(v)
    medians = {k: round(c.median(v) * 1000, 1) for k, v in samples.items()}
    base = medians["python_c_pass"]
    return {
        "runs": runs,
        "median_ms": medians,
        "p90_ms": {k: round(c.pct(v, 90) * 1000, 1) for k, v in samples.items()},
        "hook_over_interpreter_ms": {
            k: round(v - base, 1) for k, v in medians.items() if k.startswith("hook_")
        },
        "target_tools_list_under_300ms": medians["mcp_tools_list"] < 300,
    }


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=25)
    args = p.parse_args()
    r = run(args.runs)
    m, over = r["median_ms"], r["hook_over_interpreter_ms"]
    lines = [
        f"{r['runs']} runs each, interleaved; medians (p90)",
        f"python -c pass                      {m['python_c_pass']:7.1f} ms ({r['p90_ms']['python_c_pass']})",
        f"mesh mcp: initialize answered       {m['mcp_initialize']:7.1f} ms ({r['p90_ms']['mcp_initialize']})",
        f"mesh mcp: tools/list answered       {m['mcp_tools_list']:7.1f} ms ({r['p90_ms']['mcp_tools_list']})"
        f"   target < 300 ms: {r['target_tools_list_under_300ms']}",
        f"mesh mcp: first tool call answered  {m['mcp_first_tool_call']:7.1f} ms ({r['p90_ms']['mcp_first_tool_call']})"
        "   (SDK loaded, joined the broker)",
        "hook per call, over the bare interpreter (nothing waiting / one message waiting):",
    ]
    for tool, event in HOOK_EVENTS.items():
        lines.append(
            f"  {tool:<12} {event:<12} {m[f'hook_{tool}_quiet']:6.1f} ms (+{over[f'hook_{tool}_quiet']:.1f})"
            f"   {m[f'hook_{tool}_one_waiting']:6.1f} ms (+{over[f'hook_{tool}_one_waiting']:.1f})"
        )
    c.emit(args, "mcp_start", r, lines)


if __name__ == "__main__":
    main()
