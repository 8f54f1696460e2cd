"""Pi with the sessionmesh extension (``assets/pi/sessionmesh.ts``), run for real: the
extension is installed into a project the way ``mesh install pi`` does, Pi runs
headless (``pi -p``) or in its terminal UI against the scripted model server, and a
real broker carries the messages.

What reaches the model is read off the model server's requests; what reaches peers
and the receipts are read back with the ``mesh`` command, as a peer would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionmesh.injection import NOTICE
from tests.agents.conftest import require
from tests.agents.modelserver import Action, ModelRequest, ModelServer, Say, ToolCall, use_tool
from tests.agents.programs import REPO, CompletedRun, Sandbox, run_headless, start_interactive
from tests.conftest import BrokerProcess, mesh_cmd, wait_until

pytestmark = pytest.mark.agents

EXTENSION = REPO / "src" / "sessionmesh" / "assets" / "pi" / "sessionmesh.ts"
AGENT = "pi-agent"  # the name Pi has on the mesh
PEER = "bob"
TURN_TIMEOUT = 30.0  # a request Pi makes comes within seconds; this only bounds a failure
MESH_TEXT = ("[mesh] ", NOTICE)  # every text the hooks put in front of a model has both


def install_extension(project: Path, *, home: Path, name: str = AGENT) -> Path:
    """``mesh install pi --as NAME`` in ``project``, as a person runs it."""
    done = mesh_cmd("install", "pi", "--dir", str(project), "--as", name, "--home", str(home))
    assert done.returncode == 0, done.stderr
    target = project / ".pi" / "extensions" / "sessionmesh.ts"
    assert f"created {target}" in done.stdout
    return target


def send(to: str, body: str, *flags: str, sender: str = PEER) -> str:
    done = mesh_cmd("send", "--json", "--as", sender, *flags, to, body)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def receipt(msg_id: str, recipient: str = AGENT, sender: str = PEER) -> str:
    done = mesh_cmd("track", "--json", "--as", sender, msg_id)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["receipts"][recipient])


def has_mesh_text(request: ModelRequest) -> bool:
    return any(marker in request.text for marker in MESH_TEXT)


def main_requests(server: ModelServer) -> list[ModelRequest]:
    return [r for r in server.requests if r.main]


@pytest.fixture
def mesh(broker_proc: BrokerProcess) -> BrokerProcess:
    """The broker, with Pi's name and the peer's known to it (so a message to Pi
    queues before Pi ever starts)."""
    for name in (AGENT, PEER):
        assert mesh_cmd("join", name).returncode == 0
    return broker_proc


@pytest.fixture
def project(sandbox: Sandbox, mesh: BrokerProcess) -> Sandbox:
    """The sandbox with the extension installed in its workspace, acting as `AGENT`."""
    install_extension(sandbox.workspace, home=mesh.home)
    return sandbox


class Pi:
    """Runs Pi in the test's project against the model server and the broker."""

    def __init__(self, project: Sandbox, server: ModelServer, broker: BrokerProcess) -> None:
        self.program = require("pi")
        self.project = project
        self.server = server
        self.env = {"MESH_HOME": str(broker.home), "MESH_URL": broker.url}

    def run(self, prompt: str = "carry on with the task", **env: str) -> CompletedRun:
        run = run_headless(
            self.program,
            prompt,
            cwd=self.project.workspace,
            home=self.project.home,
            model_url=self.server.url,
            env_extra={**self.env, **env},
        )
        assert run.returncode == 0, run.describe() + "\n" + self.server.describe()
        assert self.server.errors == [], self.server.describe()
        return run


@pytest.fixture
def pi(project: Sandbox, model_server: ModelServer, mesh: BrokerProcess) -> Pi:
    return Pi(project, model_server, mesh)


def test_the_mesh_tools_are_offered_and_get_messages_is_not(pi: Pi) -> None:
    pi.run()

    (turn,) = main_requests(pi.server)
    offered = set(turn.tools)
    assert {
        *("list_peers", "send", "reply", "ask", "ask_all", "track", "lock", "unlock", "locks"),
        *("set_status", "set_policy", "pair", "await_idle"),
    } <= offered
    assert "get_messages" not in offered
    assert {"read", "bash"} <= offered  # Pi's own tools are still there


def test_a_message_waiting_before_the_session_starts_reaches_the_first_request_and_ends_read(pi: Pi) -> None:
    msg_id = send(AGENT, "the API moved to /v2")

    pi.run("start on the ticket")

    first = main_requests(pi.server)[0]
    assert f"[mesh] message from {PEER} id={msg_id}" in first.text
    assert "| the API moved to /v2" in first.text
    assert NOTICE in first.text
    assert first.text.index("start on the ticket") < first.text.index("the API moved to /v2")
    assert receipt(msg_id) == "read"


def test_send_called_by_the_model_reaches_the_peer_and_the_model_gets_its_receipt(pi: Pi) -> None:
    pi.server.script = use_tool("send", {"to": PEER, "body": "schema v3 is merged"}, then="told bob")

    run = pi.run()

    assert "told bob" in run.stdout
    result = pi.server.wait_for(lambda r: r.result_of("send") is not None, timeout=TURN_TIMEOUT)
    answer = result.result_of("send")
    assert answer is not None
    found = re.search(r"queued \(id ([0-9a-f-]{36})\)", answer.output)
    assert found, answer.output
    msg_id = found.group(1)
    inbox = mesh_cmd("inbox", "--json", "--as", PEER)
    assert inbox.returncode == 0, inbox.stderr
    (message,) = json.loads(inbox.stdout)
    assert (message["id"], message["from"], message["body"]) == (msg_id, AGENT, "schema v3 is merged")
    assert receipt(msg_id, recipient=PEER, sender=AGENT) == "read"


def test_a_mesh_tool_error_comes_back_to_the_model_as_a_tool_error(pi: Pi) -> None:
    pi.server.script = use_tool("send", {"to": "nobody-here", "body": "hello?"}, then="ok")

    pi.run()

    request = pi.server.wait_for(lambda r: r.result_of("send") is not None, timeout=TURN_TIMEOUT)
    answer = request.result_of("send")
    assert answer is not None and "denied" in answer.output
    (block,) = [
        block
        for message in request.body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert block["is_error"] is True


def test_a_mesh_mcp_that_died_is_started_again_for_the_next_tool_call(pi: Pi) -> None:
    # the shell's parent is Pi: its `mesh mcp` child is killed, and waited for ('[s]' keeps
    # the shell's own command line from matching)
    kill = (
        "pid=$(pgrep -P $PPID -f '[m]esh mcp') && kill $pid"
        " && timeout 10 tail --pid=$pid -f /dev/null && echo killed-mcp"
    )
    steps: Iterator[Action] = iter([pi.program.shell_call(kill), ToolCall("list_peers"), Say("done")])
    pi.server.script = lambda r: next(steps) if r.main else Say("ok")

    pi.run()

    after_kill = pi.server.wait_for(lambda r: r.result_of("bash") is not None, timeout=TURN_TIMEOUT)
    killed = after_kill.result_of("bash")
    assert killed is not None and "killed-mcp" in killed.output
    listed = pi.server.wait_for(lambda r: r.result_of("list_peers") is not None, timeout=TURN_TIMEOUT)
    peers = listed.result_of("list_peers")
    assert peers is not None
    assert f"- {AGENT} (you): online" in peers.output and "client=pi" in peers.output


def test_a_message_arriving_mid_turn_reaches_the_next_request_of_the_same_turn(pi: Pi) -> None:
    sent: dict[str, str] = {}
    shell = pi.program.shell_call("true")

    def script(request: ModelRequest) -> Action:
        if not request.main:
            return Say("ok")
        if not sent:  # the first request of the turn: a peer writes while it is answered
            sent["id"] = send(AGENT, "heads up: staging is down")
            return shell
        return Say("noted")

    pi.server.script = script

    pi.run("deploy the branch")

    first, second = main_requests(pi.server)
    assert not has_mesh_text(first)
    assert f"id={sent['id']}" in second.text and "| heads up: staging is down" in second.text
    # the same turn: the tool result, then the peer's message, and no new prompt
    *_, result, steer = second.body["messages"]
    assert [block["type"] for block in result["content"]] == ["tool_result"]
    assert steer["role"] == "user" and "heads up: staging is down" in json.dumps(steer["content"])
    assert second.text.count("deploy the branch") == 1
    assert receipt(sent["id"]) == "read"


def test_an_urgent_message_at_the_end_of_a_turn_makes_pi_take_another_turn(pi: Pi) -> None:
    sent: dict[str, str] = {}

    def script(request: ModelRequest) -> Action:
        if not request.main:
            return Say("ok")
        if not sent:
            sent["id"] = send(AGENT, "stop: main is broken", "--urgent")
            return Say("first answer")
        return Say("looking at main")

    pi.server.script = script

    pi.run("tidy the README")

    first, second = main_requests(pi.server)
    assert not has_mesh_text(first)
    assert f"[mesh] message from {PEER} URGENT id={sent['id']}" in second.text
    assert "| stop: main is broken" in second.text
    assert "Urgent messages from other agents arrived before you finished" in second.text
    assert "first answer" in second.text  # it goes on from where the turn ended
    assert receipt(sent["id"]) == "read"


def test_a_normal_message_at_the_end_of_a_turn_waits_for_the_next_prompt(pi: Pi) -> None:
    sent: dict[str, str] = {}

    def script(request: ModelRequest) -> Action:
        if not sent and request.main:
            sent["id"] = send(AGENT, "fyi: lunch at noon")
        return Say("done")

    pi.server.script = script

    pi.run()

    assert len(main_requests(pi.server)) == 1
    assert receipt(sent["id"]) != "read"
    pi.run("next task")
    later = main_requests(pi.server)[-1]
    assert "| fyi: lunch at noon" in later.text
    assert receipt(sent["id"]) == "read"


def test_with_nothing_waiting_no_request_carries_mesh_text(pi: Pi) -> None:
    shell = pi.program.shell_call("true")
    pi.server.script = lambda r: shell if r.main and not r.tool_results else Say("done")

    pi.run()

    requests = main_requests(pi.server)
    assert len(requests) == 2  # the hooks ran around a tool call too
    assert [r for r in requests if has_mesh_text(r)] == []


def test_in_the_terminal_an_urgent_message_is_shown_and_starts_a_turn_while_pi_is_idle(
    project: Sandbox, model_server: ModelServer, mesh: BrokerProcess
) -> None:
    agent = require("pi")
    sent: dict[str, str] = {}

    def script(request: ModelRequest) -> Action:
        if not request.main:
            return Say("ok")
        if not sent:
            sent["id"] = send(AGENT, "stop: the release is frozen", "--urgent")
            return Say("first answer")
        return Say("pausing the release work")

    model_server.script = script
    env = {"MESH_HOME": str(mesh.home), "MESH_URL": mesh.url}
    with start_interactive(
        agent, cwd=project.workspace, home=project.home, model_url=model_server.url, env_extra=env
    ) as terminal:
        # Pi lists its extensions once their session_start handlers ran; a prompt typed
        # before that is lost. No question is asked before the project's extension loads.
        screen = terminal.wait_for_screen(lambda s: agent.prompt_ready(s) and "sessionmesh.ts" in s)
        assert "[Extensions]" in screen
        terminal.type("prepare the release notes")
        terminal.send_keys("Enter")

        second = model_server.wait_for(lambda r: r.main and r.index > 0, timeout=TURN_TIMEOUT)
        assert "| stop: the release is frozen" in second.text
        screen = terminal.wait_for_screen("pausing the release work")
        assert "[sessionmesh]" in screen and "stop: the release is frozen" in screen
        wait_until(
            lambda: receipt(sent["id"]) == "read", timeout=TURN_TIMEOUT, what="the urgent message read"
        )
