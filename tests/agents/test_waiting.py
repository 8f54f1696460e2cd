"""#17 item 2, ``waiting``: in the terminal UI, an agent whose program shows its user a
permission dialog is ``waiting`` to its peers (Claude Code's ``Notification`` of type
``permission_prompt``, Gemini CLI's of type ``ToolPermission``), ``working`` again
once the user answered and the tool ran, and ``idle`` when its turn ends. Codex and
Pi tell their hooks nothing of a dialog (docs/protocol.md §7.18)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.agents.conftest import installed
from tests.agents.mesh import AGENT, MeshProject, script
from tests.agents.modelserver import ModelRequest, ModelServer, Say, ToolCall
from tests.agents.programs import Sandbox, start_interactive
from tests.agents.test_interactive import answer_first_run
from tests.conftest import BrokerProcess, wait_until

pytestmark = pytest.mark.agents

TOOLS = {"claude": "claude-code", "gemini": "gemini"}
DIALOG = {"claude": "Do you want to proceed?", "gemini": "Allow"}


@pytest.fixture(params=list(TOOLS))
def project(
    request: pytest.FixtureRequest, sandbox: Sandbox, broker_proc: BrokerProcess, model_server: ModelServer
) -> Iterator[MeshProject]:
    with installed(request, TOOLS, sandbox, broker_proc, model_server) as p:
        yield p


def activity(project: MeshProject) -> str | None:
    peers = {p["name"]: p for p in project.peer.peers()}
    return peers[AGENT].get("activity")


def test_a_permission_dialog_makes_the_agent_waiting_until_its_user_answers(project: MeshProject) -> None:
    shell = project.program.shell_tool

    def step(request: ModelRequest) -> ToolCall | Say:
        if request.result_of(shell) is None:
            return project.program.shell_call("touch waited.txt")
        return Say("made-the-file-5e")

    project.model.script = script(step)
    agent = project.program
    if agent.name == "claude":  # a person who approves each tool call (the sandbox's default is auto)
        settings = project.sandbox.home / ".claude" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"permissions": {"defaultMode": "default"}}))
    with start_interactive(
        agent,
        cwd=project.sandbox.workspace,
        home=project.sandbox.home,
        model_url=project.model.url,
        env_extra=project.env,
        argv=[str(agent.bin)],  # no --yolo: Gemini CLI asks before a shell command
    ) as terminal:
        answer_first_run(agent.name, terminal, agent.prompt_ready)
        terminal.type("make the file")
        terminal.wait_for_screen("make the file")
        terminal.send_keys("Enter")
        terminal.wait_for_screen(DIALOG[agent.name])
        wait_until(lambda: activity(project) == "waiting", timeout=20, what="activity waiting")
        assert not (project.sandbox.workspace / "waited.txt").exists()
        terminal.send_keys("Enter")  # the dialog's first choice: allow it once
        terminal.wait_for_screen("made-the-file-5e")
        wait_until(lambda: activity(project) == "idle", timeout=20, what="activity idle")
    assert (project.sandbox.workspace / "waited.txt").exists()
