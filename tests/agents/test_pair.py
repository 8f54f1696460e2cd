"""Pair mode on the real programs (#17 item 1), headless against the scripted model:
the program is the grip (``agent``), the peer ``bob`` its guard.

- A guard's stop refuses the grip's next tool call through the program's own pre-tool
  hook (Claude Code and Codex ``PreToolUse``, Gemini CLI ``BeforeTool``, Pi's
  ``tool_call`` in the extension), with the guard's reason in front of the model. The
  acknowledgement (``mesh pair ack``) goes through, and after it the tool runs.
- A steering note reaches the grip's next request after a tool call, framed as its
  guard's.

The side effects are real: a file the refused command would have made does not exist.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sessionmesh import marks
from tests.agents.conftest import installed
from tests.agents.mesh import AGENT, PEER, WAIT, MeshProject, script
from tests.agents.modelserver import ModelRequest, ModelServer, ToolCall
from tests.agents.programs import Sandbox
from tests.agents.test_delivery import TOOLS, default_argv
from tests.agents.test_pi import Pi, install_extension
from tests.conftest import BrokerProcess, mesh_cmd

pytestmark = pytest.mark.agents

REASON = "the deploy script targets production (p51)"
ACK = f"{sys.executable} -m sessionmesh pair ack --as {{name}}"


@pytest.fixture(params=list(TOOLS))
def project(
    request: pytest.FixtureRequest, sandbox: Sandbox, broker_proc: BrokerProcess, model_server: ModelServer
) -> Iterator[MeshProject]:
    with installed(request, TOOLS, sandbox, broker_proc, model_server) as p:
        p.argv = default_argv(p)
        yield p


def pair_up(grip: str, guard: str) -> None:
    """``grip`` invites ``guard`` with the real CLI, and the guard accepts."""
    for args, name in ((("pair", guard), grip), (("pair", "accept"), guard)):
        done = mesh_cmd(*args, "--as", name)
        assert done.returncode == 0, done.stderr


def stepper(
    calls: list[ToolCall], shell: str
) -> tuple[Callable[[ModelRequest], ToolCall | None], list[ModelRequest]]:
    """A script step that makes ``calls`` one after the other, each once the previous
    one's result came back; returns it and the requests that led to each call."""
    issued: list[ModelRequest] = []

    def step(request: ModelRequest) -> ToolCall | None:
        if len(issued) < len(calls) and (not issued or request.result_of(shell) is not None):
            issued.append(request)
            return calls[len(issued) - 1]
        return None

    return step, issued


def check_stop_then_ack(
    issued: list[ModelRequest], shell: str, workspace: Path, home: Path, name: str
) -> None:
    refused = issued[1].result_of(shell)
    assert refused is not None
    assert REASON in refused.output and "stopped your tool calls" in refused.output
    assert not (workspace / "blocked.txt").exists()  # the refused command never ran
    assert (workspace / "after.txt").exists()  # the call after the acknowledgement did
    assert marks.read_block(home, name) is None


def test_a_guard_s_stop_refuses_the_next_tool_call_until_the_grip_acknowledges(project: MeshProject) -> None:
    pair_up(AGENT, PEER)
    project.peer.request("pair", action="intercept", urgent=True, body=REASON)
    stop = marks.read_block(project.broker.home, AGENT)
    assert stop is not None
    shell = project.program.shell_tool
    step, issued = stepper(
        [
            project.program.shell_call("touch blocked.txt"),
            project.program.shell_call(ACK.format(name=AGENT)),
            project.program.shell_call("touch after.txt"),
        ],
        shell,
    )
    project.model.script = script(step)
    run = project.run("deploy the service")
    assert run.returncode == 0, project.failure(run)
    project.model.wait_for(lambda r: len(issued) == 3 and r.result_of(shell) is not None, timeout=WAIT)
    check_stop_then_ack(issued, shell, project.sandbox.workspace, project.broker.home, AGENT)
    assert project.receipt(stop["id"]) == "answered"  # by the acknowledgement, a reply to it


def test_a_steering_note_reaches_the_grip_s_next_request_framed_as_its_guard_s(project: MeshProject) -> None:
    pair_up(AGENT, PEER)
    shell = project.program.shell_tool
    steered: list[bool] = []

    def step(request: ModelRequest) -> ToolCall | None:
        if request.result_of(shell) is None and not steered:
            steered.append(True)  # the turn has begun: only the hook after the tool call can bring it
            project.peer.request(
                "pair", action="steer", body="keep the v2 endpoint until the clients move (s33)"
            )
            return project.program.shell_call("true")
        return None

    project.model.script = script(step)
    run = project.run("refactor the client")
    assert run.returncode == 0, project.failure(run)
    after = project.model.wait_for(lambda r: r.result_of(shell) is not None, timeout=WAIT)
    assert f"steering note from your guard {PEER}" in after.text
    assert "| keep the v2 endpoint until the clients move (s33)" in after.text


def test_pi_s_extension_refuses_a_stopped_grip_s_tool_call_until_it_acknowledges(
    sandbox: Sandbox, broker_proc: BrokerProcess, model_server: ModelServer
) -> None:
    name = "pi-agent"
    for who in (name, PEER):
        assert mesh_cmd("join", who).returncode == 0
    install_extension(sandbox.workspace, home=broker_proc.home, name=name)
    pi = Pi(sandbox, model_server, broker_proc)
    pair_up(name, PEER)
    done = mesh_cmd("intercept!", REASON, "--as", PEER)
    assert done.returncode == 0, done.stderr
    shell = pi.program.shell_tool
    step, issued = stepper(
        [
            pi.program.shell_call("touch blocked.txt"),
            pi.program.shell_call(ACK.format(name=name)),
            pi.program.shell_call("touch after.txt"),
        ],
        shell,
    )
    model_server.script = script(step)
    pi.run("deploy the service")
    model_server.wait_for(lambda r: len(issued) == 3 and r.result_of(shell) is not None, timeout=WAIT)
    check_stop_then_ack(issued, shell, sandbox.workspace, broker_proc.home, name)
