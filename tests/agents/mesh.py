"""A project with sessionmesh installed for a real agent program, on a real broker.

`MeshProject` is what a person has after ``git init`` and ``mesh install TOOL --as
agent`` in a folder, with the program pointed at the scripted model server: the
program runs there with ``MESH_HOME`` set in its environment (as a person's shell
would), and a peer ``bob`` writes to it and reads from it through the real client.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionmesh.client.sync import SyncClient
from tests.agents.modelserver import Action, ModelRequest, ModelServer, Say
from tests.agents.programs import CompletedRun, Program, Sandbox, program_env, run_headless
from tests.conftest import BrokerProcess

AGENT = "agent"
PEER = "bob"
MESH_TEXT = ("[mesh]", "on the mesh", "Peer messages are data")  # any of these: mesh text reached the model
WAIT = 10.0  # seconds: a request that has not arrived by then, after the run ended, never will


@dataclass
class MeshProject:
    """One program installed in one project, one broker, one peer."""

    program: Program
    tool: str  # the name `mesh install` knows it by
    sandbox: Sandbox
    broker: BrokerProcess
    model: ModelServer
    peer: SyncClient = field(init=False)
    install_output: str = ""
    argv: Callable[[str], list[str]] | None = None  # the headless command line (default: the harness's)

    def __post_init__(self) -> None:
        subprocess.run(["git", "init", "-q", str(self.sandbox.workspace)], check=True)
        done = self.mesh("install", self.tool, "--as", AGENT, "--dir", str(self.sandbox.workspace))
        assert done.returncode == 0, done.stderr
        self.install_output = done.stdout
        self.env = {"MESH_HOME": str(self.broker.home), "MESH_AUTOSTART": "0"}
        with SyncClient(self.settings, AGENT):
            pass  # the agent's name exists, as after its first session: peers can write to it
        self.peer = SyncClient(self.settings, PEER)
        self.peer.__enter__()

    def close(self) -> None:
        self.peer.__exit__(None, None, None)

    @property
    def settings(self) -> Any:
        return self.broker.settings()

    def mesh(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real ``mesh`` CLI, with this sandbox's HOME and the broker's MESH_HOME."""
        env = {
            **program_env(self.program, self.sandbox, self.model.url, None),
            "MESH_HOME": str(self.broker.home),
        }
        return subprocess.run(
            [sys.executable, "-m", "sessionmesh", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.sandbox.workspace,
            timeout=60,
        )

    def run(
        self,
        prompt: str,
        *,
        argv: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> CompletedRun:
        """Run the program headless on ``prompt`` in the project."""
        return run_headless(
            self.program,
            prompt,
            cwd=self.sandbox.workspace,
            home=self.sandbox.home,
            model_url=self.model.url,
            env_extra={**self.env, **(env or {})},
            timeout=timeout,
            argv=argv or (self.argv(prompt) if self.argv else None),
        )

    def send(self, body: str, *, urgent: bool = False) -> str:
        """``bob`` writes to the agent; returns the message id."""
        result = self.peer.send(AGENT, body, priority="urgent" if urgent else "normal")
        assert result.status in ("queued", "received"), result
        return str(result.id)

    def receipt(self, msg_id: str) -> str:
        return str(self.peer.track(msg_id)["receipts"][AGENT])

    def requests_with(self, text: str) -> list[ModelRequest]:
        return [r for r in self.model.requests if text in r.text]

    def failure(self, run: CompletedRun) -> str:
        return run.describe() + "\n" + self.model.describe()


def once(action: Callable[[], object]) -> Callable[[], None]:
    """``action``, run the first time only (a script's side effect at one request)."""
    done: list[bool] = []

    def run() -> None:
        if not done:
            done.append(True)
            action()

    return run


def script(*steps: Callable[[ModelRequest], Action | None]) -> Callable[[ModelRequest], Action]:
    """A script from steps tried in order; side requests (no tools offered) get "ok"."""

    def answer(request: ModelRequest) -> Action:
        if not request.main:
            return Say("ok")
        for step in steps:
            action = step(request)
            if action is not None:
                return action
        return Say("done")

    return answer


def framed(text: str) -> str:
    """How a body line reaches the model: quoted by the mesh framing."""
    return f"| {text}"


def mesh_text_in(request: ModelRequest) -> bool:
    return any(marker in request.text for marker in MESH_TEXT)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def processes_of(home: Path) -> list[int]:
    """Processes whose environment names ``home``: what a test's programs left running."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if str(home).encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def command_lines(pids: list[int]) -> dict[int, str]:
    """What each process runs, for a failure's message (a process that ended is left out)."""
    lines = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            lines[pid] = (
                (Path("/proc") / str(pid) / "cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
    return lines


def end_processes_of(home: Path) -> None:
    """SIGKILL what ``processes_of(home)`` finds (Codex's daemon outlives its UI)."""
    for pid in processes_of(home):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
