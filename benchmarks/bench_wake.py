"""Wake latency: from ``send`` to the model request of the turn it starts, with the real
agent programs idle at their prompts, and the broker's CPU per idle waiting agent.

1. For each program (Claude Code, Codex, Gemini CLI with ``mesh bridge tmux --wake``,
   Pi), installed with ``mesh install`` in a fresh project and running in tmux
   against the scripted model server of tests/agents: ``--wakes`` times, a peer
   sends one message to the idle agent, and the time until the model server receives
   the request that carries it is one sample (the agent then answers and goes idle
   again). p50 and p95 per program. The wake budget is raised for the run
   (``MESH_WAKE_BUDGET``) so every send wakes; the burst window (1 s) is part of the
   latency of a normal message, so each message is sent urgent (no window) and once
   normal.
2. Broker CPU with ``--waiters`` idle ``wake`` requests open (as many waiting agents)
   against the same broker with none, over ``--idle-seconds`` each, interleaved.

    python benchmarks/bench_wake.py [--wakes 20] [--programs claude,codex,gemini,pi] [--json]
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import _common as c

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agents.mesh import AGENT, MeshProject, end_processes_of  # noqa: E402
from tests.agents.modelserver import ModelRequest, ModelServer, Say  # noqa: E402
from tests.agents.programs import Sandbox, Terminal, program  # noqa: E402
from tests.agents.test_interactive import answer_first_run  # noqa: E402
from tests.agents.test_wake import start  # noqa: E402
from tests.conftest import BrokerProcess, wait_until  # noqa: E402

TOOLS = {"claude": "claude-code", "codex": "codex", "gemini": "gemini", "pi": "pi"}


class Clock:
    """When each token first reached the model server."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def script(self, request: ModelRequest) -> Say:
        with self.lock:
            for token in [t for t in request.last_user_text.split() if t.startswith("tok-")]:
                self.seen.setdefault(token.strip(".)"), time.perf_counter())
        return Say("idle-again")


@contextlib.contextmanager
def agent(name: str, root: Path) -> Iterator[tuple[MeshProject, Terminal, Clock]]:
    home = root / "mesh-home"
    env = {**os.environ, "MESH_HOME": str(home), "MESH_WAKE_BUDGET": "100000"}
    broker = BrokerProcess(home, env)
    broker.start()
    clock = Clock()
    try:
        with ModelServer(clock.script) as model:
            project = MeshProject(program(name), TOOLS[name], Sandbox.create(root), broker, model)
            try:
                with start(project) as terminal:
                    answer_first_run(name, terminal, project.program.prompt_ready)
                    terminal.type("get ready")
                    terminal.wait_for_screen("get ready")
                    terminal.send_keys("Enter")
                    terminal.wait_for_screen("idle-again")
                    yield project, terminal, clock
            finally:
                project.close()
                end_processes_of(project.sandbox.home)
    finally:
        broker.stop()


def idle(project: MeshProject) -> bool:
    return any(p["name"] == AGENT and p.get("activity") == "idle" for p in project.peer.peers())


def wake_samples(name: str, wakes: int) -> dict[str, dict[str, float]]:
    out: dict[str, list[float]] = {"urgent": [], "normal": []}
    with (
        tempfile.TemporaryDirectory(prefix=f"meshbench-wake-{name}-") as tmp,
        agent(name, Path(tmp)) as (project, _terminal, clock),
    ):
        for i in range(2 * wakes):
            kind = "urgent" if i % 2 == 0 else "normal"
            wait_until(lambda: idle(project), timeout=60, what="the agent idle")
            token = f"tok-{i}-{kind}"
            sent = time.perf_counter()
            msg = project.send(f"please note {token}", urgent=kind == "urgent")
            arrived = wait_until(
                lambda t=token: clock.seen.get(t), timeout=60, what=f"the request with {token}"
            )
            out[kind].append(arrived - sent)
            wait_until(lambda m=msg: project.receipt(m) == "read", timeout=60, what="the woken turn's end")
    return {
        kind: {**c.summary_ms(xs), "p95_ms": round(c.pct([x * 1000 for x in xs], 95), 1)}
        for kind, xs in out.items()
    }


def broker_idle_cpu(waiters: int, seconds: float, rounds: int) -> dict[str, float]:
    """Broker CPU seconds per second with ``waiters`` open wake requests, and with none."""
    from sessionmesh.client import discovery
    from sessionmesh.client.sync import SyncClient
    from sessionmesh.hooks import BrokerCall

    with c.broker() as b:
        settings = b.settings()
        token = discovery.read_token(settings)
        calls = []
        for i in range(waiters):
            with SyncClient(settings, f"idle-{i}"):
                pass  # registered: its secret is saved in the home
            secret = discovery.load_secret(settings, f"idle-{i}") or ""
            calls.append(BrokerCall(b.url, token, f"idle-{i}", secret, 3600))
        none, some = [], []
        for _ in range(rounds):
            t0 = c.cpu_seconds(b.pid)
            time.sleep(seconds)  # sleep-ok: measuring idle CPU over a wall interval
            none.append((c.cpu_seconds(b.pid) - t0) / seconds)
            socks = [_open_wake(call) for call in calls]
            time.sleep(1.0)  # sleep-ok: let the waits settle before measuring
            t0 = c.cpu_seconds(b.pid)
            time.sleep(seconds)  # sleep-ok: measuring idle CPU over a wall interval
            some.append((c.cpu_seconds(b.pid) - t0) / seconds)
            for sock in socks:
                sock.close()
    return {
        "no_waiters_cpu_per_s": round(c.median(none), 5),
        f"{waiters}_waiters_cpu_per_s": round(c.median(some), 5),
        "per_waiter_cpu_us_per_s": round((c.median(some) - c.median(none)) / max(waiters, 1) * 1e6, 2),
    }


def _open_wake(call: object) -> socket.socket:
    """An open ``wake`` request (600 s) on a socket left waiting."""
    import json

    body = json.dumps({"timeout": 600}).encode()
    head = f"POST /v1/wake HTTP/1.1\r\n{call.headers}Content-Length: {len(body)}\r\n\r\n"  # type: ignore[attr-defined]
    sock = socket.create_connection((call.host, call.port))  # type: ignore[attr-defined]
    sock.sendall(head.encode() + body)
    return sock


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--wakes", type=int, default=20)
    p.add_argument("--programs", default=",".join(TOOLS))
    p.add_argument("--waiters", type=int, default=100)
    p.add_argument("--idle-seconds", type=float, default=5.0)
    args = p.parse_args()
    result: dict[str, object] = {"wakes": args.wakes}
    lines = [f"{args.wakes} wakes per kind per program; send -> the model request carrying the message"]
    for name in args.programs.split(","):
        summary = wake_samples(name, args.wakes)
        result[name] = summary
        for kind in ("urgent", "normal"):
            s = summary[kind]
            lines.append(f"  {name:<7} {kind:<7} p50 {s['p50_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms")
    cpu = broker_idle_cpu(args.waiters, args.idle_seconds, 3)
    result["broker_idle"] = cpu
    lines.append(f"broker CPU while idle: {cpu}")
    c.emit(args, "wake", result, lines)


if __name__ == "__main__":
    main()
