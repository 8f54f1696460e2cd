"""``mesh spawn`` starts a real agent program as a named peer and ``mesh despawn``
ends it; ``mesh spawn --headless`` answers a request sent before the agent ran.

Each program, against the scripted model server, with the sandbox's HOME (first-run
screens answered there, `tests.agents.programs`); Codex asks once to trust the hooks
the install wrote, answered on its screen as a person attached to it would. ``mesh spawn`` itself installs
sessionmesh in the workspace; the interactive run goes to a tmux server on a private
socket, which the spawn creates with its own environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from sessionmesh.client.sync import SyncClient
from tests.agents.conftest import require
from tests.agents.mesh import end_processes_of, script
from tests.agents.modelserver import Action, ModelRequest, ModelServer, Say
from tests.agents.programs import Program, Sandbox, program_env
from tests.conftest import BrokerProcess, wait_until

pytestmark = pytest.mark.agents

NAME = "reviewer"
ONLINE_TIMEOUT = 90.0  # seconds: each program starts its MCP server (Pi its extension) within a few


@dataclass
class Spawner:
    """Runs the real ``mesh`` CLI with Claude Code's sandboxed environment."""

    program: Program
    tool: str  # the name `mesh spawn` knows it by
    sandbox: Sandbox
    broker: BrokerProcess
    model: ModelServer
    socket: str

    def env(self) -> dict[str, str]:
        return {
            **program_env(self.program, self.sandbox, self.model.url),
            "MESH_HOME": str(self.broker.home),
            "MESH_AUTOSTART": "0",
            # the sessionmesh under test, for `mesh` and for what the agent starts
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        }

    def mesh(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sessionmesh", *args],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.sandbox.workspace,
            timeout=timeout,
        )

    def mesh_later(self, *args: str) -> subprocess.Popen[str]:
        """The real ``mesh`` CLI, started and left running."""
        return subprocess.Popen(
            [sys.executable, "-m", "sessionmesh", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            cwd=self.sandbox.workspace,
        )

    def spawn(self, *extra: str, timeout: float = ONLINE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self.mesh(
            "spawn", self.tool, "--as", NAME, "--cwd", str(self.sandbox.workspace),
            "--program", str(self.program.bin), "--socket", self.socket,
            "--timeout", str(timeout), "--json", *extra,
            timeout=timeout + 60,
        )  # fmt: skip

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout

    def wait_for_screen(self, text: str, timeout: float = ONLINE_TIMEOUT) -> None:
        """Until the spawned window shows ``text``; raises `TimeoutError` with its screen."""
        deadline = time.monotonic() + timeout
        while text not in (screen := self.tmux("capture-pane", "-p", "-t", f"=mesh:{NAME}")):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the window did not show {text!r} within {timeout}s:\n{screen}")
            time.sleep(0.1)  # sleep-ok: bounded poll of a screen another process draws

    def answer_first_run(self) -> None:
        """As a person attached to the window would: Codex asks once to trust the
        hooks the install wrote (the others ask nothing in the sandbox)."""
        if self.tool != "codex":
            return
        self.wait_for_screen("Hooks need review")
        for _ in range(10):
            self.tmux("send-keys", "-t", f"=mesh:{NAME}", "Down")
            try:
                self.wait_for_screen("› 2. Trust all and continue", timeout=1.0)
                break
            except TimeoutError:
                continue
        self.tmux("send-keys", "-t", f"=mesh:{NAME}", "Enter")

    def presence(self, name: str) -> str | None:
        peers = json.loads(self.mesh("peers", "--json").stdout)
        return next((p["presence"] for p in peers if p["name"] == name), None)


TOOLS = {"claude": "claude-code", "codex": "codex", "gemini": "gemini", "pi": "pi"}


def make_spawner(name: str, sandbox: Sandbox, broker: BrokerProcess, model: ModelServer) -> Iterator[Spawner]:
    folder = tempfile.mkdtemp(prefix="mesh-spawn-")  # short: a socket path has a length limit
    s = Spawner(require(name), TOOLS[name], sandbox, broker, model, f"{folder}/tmux.sock")
    yield s
    subprocess.run(["tmux", "-S", s.socket, "kill-server"], capture_output=True, timeout=10, check=False)
    end_processes_of(sandbox.home)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=list(TOOLS))
def any_spawner(
    request: pytest.FixtureRequest, sandbox: Sandbox, broker_proc: BrokerProcess, model_server: ModelServer
) -> Iterator[Spawner]:
    """Each program."""
    yield from make_spawner(request.param, sandbox, broker_proc, model_server)


def test_spawn_starts_the_program_online_under_its_name_and_despawn_ends_it(any_spawner: Spawner) -> None:
    spawner = any_spawner
    with ThreadPoolExecutor(1) as pool:
        spawning = pool.submit(spawner.spawn)  # it returns once the program is online
        spawner.answer_first_run()
        done = spawning.result()
    assert done.returncode == 0, done.stderr + done.stdout
    spawned = json.loads(done.stdout)
    assert spawned["name"] == NAME and spawned["pane"].startswith("%")
    assert spawner.presence(NAME) == "online"
    # only Gemini CLI cannot wake itself: it gets `mesh bridge tmux --wake` beside it
    assert (spawned["bridge_pid"] is not None) == (spawner.tool == "gemini")
    record = spawner.broker.home / "spawned" / f"{NAME}.json"
    assert json.loads(record.read_text())["pane_pid"] == spawned["pane_pid"]

    again = spawner.spawn()
    assert again.returncode == 7, again.stderr
    assert "name_taken" in again.stderr

    ended = spawner.mesh("despawn", NAME, "--json")
    assert ended.returncode == 0, ended.stderr
    assert spawner.presence(NAME) != "online"
    assert not record.exists()
    panes = subprocess.run(
        ["tmux", "-S", spawner.socket, "list-panes", "-a", "-F", "#{pane_id}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert spawned["pane"] not in panes.stdout
    if spawned["bridge_pid"]:
        wait_until(lambda: not Path(f"/proc/{spawned['bridge_pid']}").exists(), what="the bridge to end")


def answering(question: str, answer: str) -> Callable[[ModelRequest], Action]:
    """A model that says ``answer`` to a request that carries ``question``."""

    def step(request: ModelRequest) -> Say | None:
        return Say(answer) if question in request.text else None

    return script(step)


def test_headless_spawn_answers_a_request_sent_before_the_agent_ran(any_spawner: Spawner) -> None:
    spawner = any_spawner
    spawner.model.script = answering("which port does the API use", "port 8443 (from the spawned agent)")
    asker = SyncClient(spawner.broker.settings(), "lead")
    with asker:
        assert spawner.mesh("join", NAME).returncode == 0
        request = asker.send(NAME, "which port does the API use?", kind="request")
        done = spawner.spawn("--headless", timeout=120.0)
        assert done.returncode == 0, done.stderr + done.stdout
        answer = json.loads(done.stdout)
        assert answer["request"]["id"] == request.id
        assert answer["status"] == "PASS"
        reply = asker.await_reply(request.id, timeout=10).to_wire()
    assert reply["status"] == "PASS"
    assert "port 8443" in reply["body"]
    assert reply["from"] == NAME


def test_ask_all_waits_for_a_headless_spawn_and_a_peer_and_exits_by_the_worst(any_spawner: Spawner) -> None:
    """Two reviews, then consensus, in one command: one reviewer is a program that
    does not run yet (a headless spawn answers), the other a peer that is blocked."""
    spawner = any_spawner
    spawner.model.script = answering(
        "is it safe to merge", "safe: the migration is reversible (from the spawned agent)"
    )
    assert spawner.mesh("join", NAME).returncode == 0
    with SyncClient(spawner.broker.settings(), "carol") as carol:
        asking = spawner.mesh_later(
            "ask",
            f"{NAME},carol",
            "is it safe to merge?",
            "--all",
            "--as",
            "lead",
            "--timeout",
            "180",
            "--json",
        )
        asked = carol.recv(timeout=30)
        carol.reply(asked.id, "not until the backfill has run", status="BLOCKED")
        done = spawner.spawn("--headless", timeout=120.0)
        assert done.returncode == 0, done.stderr + done.stdout
        out, err = asking.communicate(timeout=30)
    assert asking.returncode == 11, err  # BLOCKED, the worst of the two
    answer = json.loads(out)
    assert answer["states"] == {NAME: "PASS", "carol": "BLOCKED"}
    assert answer["worst"] == "BLOCKED"
    assert "the migration is reversible" in answer["replies"][NAME]["body"]
    assert answer["replies"]["carol"]["body"] == "not until the backfill has run"
