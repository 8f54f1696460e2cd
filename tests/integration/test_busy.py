"""Issue #17 item 2: who is busy. Hooks say when a turn starts and ends; peers see
`working`/`idle` with the time since, `mesh await-idle` returns when a peer next goes
idle, and `mesh send --when-idle` waits for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ..conftest import BrokerProcess, mesh_cmd, wait_until


def _hook(event: str, name: str = "agent") -> None:
    """What Claude Code runs at a turn's start (UserPromptSubmit) and end (Stop)."""
    payload = json.dumps({"hook_event_name": event, "session_id": "s1", "stop_hook_active": False})
    assert mesh_cmd("hook", "claude-code", event, "--as", name, input=payload).returncode == 0


def _peer(name: str) -> dict:
    return next(p for p in json.loads(mesh_cmd("peers", "--json").stdout) if p["name"] == name)


def test_peers_show_working_and_idle_and_await_idle_returns_when_the_turn_ends(
    broker_proc: BrokerProcess,
) -> None:
    for name in ("agent", "lead"):
        assert mesh_cmd("join", name).returncode == 0
    _hook("UserPromptSubmit")
    assert _peer("agent")["activity"] == "working"
    table = mesh_cmd("peers").stdout
    assert "working" in table.splitlines()[[line.split()[0] for line in table.splitlines()].index("agent")]
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sessionmesh",
            "await-idle",
            "agent",
            "--as",
            "lead",
            "--json",
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    sender = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sessionmesh",
            "send",
            "agent",
            "--when-idle",
            "--as",
            "lead",
            "--json",
            "next task",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)  # sleep-ok: both wait on the broker; neither may return while agent works
        assert waiter.poll() is None and sender.poll() is None
        assert json.loads(mesh_cmd("inbox", "--as", "agent", "--peek", "--json").stdout) == []
        _hook("Stop")
        out, _ = waiter.communicate(timeout=15)
        assert waiter.returncode == 0 and json.loads(out)["activity"] == "idle"
        out, _ = sender.communicate(timeout=15)
        assert sender.returncode == 0 and json.loads(out)["status"] == "queued"
    finally:
        for proc in (waiter, sender):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    wait_until(lambda: _peer("agent")["activity"] == "idle", 5, "idle")
    # already idle: await-idle returns at once; a peer that never goes idle times out (5)
    assert mesh_cmd("await-idle", "agent", "--as", "lead", "--timeout", "5").returncode == 0
    _hook("UserPromptSubmit")
    assert mesh_cmd("await-idle", "agent", "--as", "lead", "--timeout", "1").returncode == 5
    assert mesh_cmd("await-idle", "nobody", "--as", "lead").returncode == 3
