"""A message wakes an idle agent: the real program, in its terminal UI after ``mesh
install`` alone, finishes its turn and waits at its prompt; a peer writes; a model
request carrying the message follows, without anyone typing, and the receipt ends
``read``. A burst is one wake; mail that arrives mid-turn is delivered in the turn
and wakes nothing; a session killed and started again in the folder wakes again.

First-run dialogs are answered from the screen as a person would
(`tests.agents.test_interactive.answer_first_run`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.agents.conftest import installed
from tests.agents.mesh import (
    AGENT,
    WAIT,
    MeshProject,
    command_lines,
    end_processes_of,
    framed,
    once,
    processes_of,
    script,
)
from tests.agents.modelserver import ModelRequest, ModelServer, Say, ToolCall
from tests.agents.programs import Sandbox, Terminal, _merge_toml, program_env
from tests.agents.test_interactive import answer_first_run
from tests.conftest import BrokerProcess, wait_until

pytestmark = pytest.mark.agents

# seconds for the program and its hooks to exit once its terminal closed (Claude Code runs its
# SessionEnd hook first); one loaded CI run left something of Claude Code's running past 10 s
EXIT_WAIT = 30.0
TOOLS = {"claude": "claude-code", "codex": "codex", "pi": "pi", "gemini": "gemini"}


@pytest.fixture(params=list(TOOLS))
def project(
    request: pytest.FixtureRequest, sandbox: Sandbox, broker_proc: BrokerProcess, model_server: ModelServer
) -> Iterator[MeshProject]:
    with installed(request, TOOLS, sandbox, broker_proc, model_server) as p:
        yield p
        if p.program.name == "codex":  # its app-server daemon (and the waiter beside it) outlive the UI
            env = program_env(p.program, p.sandbox, p.model.url, p.env)
            subprocess.run(
                [str(p.program.bin), "app-server", "daemon", "stop"], env=env, capture_output=True, timeout=60
            )
            end_processes_of(p.sandbox.home)  # its pid-update loop survives the stop
        else:  # the waiter ends with its agent: nothing is left
            try:
                wait_until(
                    lambda: processes_of(p.sandbox.home) == [], timeout=EXIT_WAIT, what="no process left"
                )
            except TimeoutError:
                left = command_lines(processes_of(p.sandbox.home))
                end_processes_of(p.sandbox.home)
                pytest.fail(f"left running {EXIT_WAIT}s after the agent ended: {left}")


@contextlib.contextmanager
def start(project: MeshProject) -> Iterator[Terminal]:
    """The program's terminal UI. Codex runs with its app-server daemon, as it does by
    default (the harness turns it off elsewhere): ``codex queue`` wakes a session
    through it. Gemini CLI, which has no way to be woken of its own, gets the tmux
    bridge in wake mode beside it, as README says to run it."""
    agent = project.program
    env = program_env(agent, project.sandbox, project.model.url, project.env)
    if agent.name == "codex":
        _merge_toml(
            project.sandbox.home / ".codex" / "config.toml", {"features": {"daemon_auto_start": True}}
        )
    with Terminal.start(agent.interactive_argv(), cwd=project.sandbox.workspace, env=env) as terminal:
        bridge = None
        if agent.name == "gemini":
            bridge = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sessionmesh",
                    "bridge",
                    "tmux",
                    "--wake",
                    "--as",
                    AGENT,
                    "--pane",
                    terminal.session,
                    "--socket",
                    terminal.socket_path,
                ],
                env={**os.environ, **project.env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            yield terminal
        finally:
            if bridge is not None:
                bridge.terminate()
                bridge.wait(10)


def idle_after_one_turn(project: MeshProject, terminal: Terminal, *, first_run: bool = True) -> None:
    """Answer the dialogs, run one prompt to its end, and wait until the agent is idle
    at its prompt (its Stop hook told the broker)."""
    agent = project.program
    if first_run:
        answer_first_run(agent.name, terminal, agent.prompt_ready)
    else:
        terminal.wait_for_screen(agent.prompt_ready)
    terminal.type("get ready")
    terminal.wait_for_screen("get ready")
    terminal.send_keys("Enter")
    terminal.wait_for_screen("ready-and-idle")
    wait_until(lambda: activity(project) == "idle", timeout=WAIT, what="the agent idle")


def activity(project: MeshProject) -> str | None:
    return next((p.get("activity") for p in project.peer.peers() if p["name"] == AGENT), None)


def wakes(project: MeshProject) -> int:
    return int(next(p["wakes"] for p in project.peer.peers() if p["name"] == AGENT))


def answers(request: ModelRequest) -> Say:
    woken = "sessionmesh woke you" in request.text or "arrived while you were idle" in request.last_user_text
    return Say("woke-and-answered" if woken else "ready-and-idle")


def test_a_message_to_an_idle_agent_starts_a_turn_with_it(project: MeshProject) -> None:
    project.model.script = script(answers)
    with start(project) as terminal:
        idle_after_one_turn(project, terminal)
        before = len(project.model.requests)
        msg = project.send("are you free to review? (w1)")
        woke = project.model.wait_for(
            lambda r: r.main and r.index >= before and "(w1)" in r.text, timeout=WAIT
        )
        terminal.wait_for_screen("woke-and-answered")
        wait_until(lambda: project.receipt(msg) == "read", timeout=WAIT, what="the read receipt")
        if project.program.name == "codex":  # mesh doctor says what Codex's daemon keeps running
            done = project.mesh("doctor", "codex", "--json", "--dir", str(project.sandbox.workspace))
            found = [f["what"] for f in json.loads(done.stdout)["findings"]]
            assert any("app-server daemon runs" in what for what in found), found
    assert framed("are you free to review? (w1)") in woke.text
    assert wakes(project) == 1


def test_a_burst_of_five_is_one_wake_with_all_five(project: MeshProject) -> None:
    project.model.script = script(answers)
    with start(project) as terminal:
        idle_after_one_turn(project, terminal)
        before = len(project.model.requests)
        ids = [project.send(f"burst message {n} (b5)") for n in range(5)]
        woke = project.model.wait_for(
            lambda r: r.main and r.index >= before and "(b5)" in r.text, timeout=WAIT
        )
        terminal.wait_for_screen("woke-and-answered")
        wait_until(lambda: all(project.receipt(i) == "read" for i in ids), timeout=WAIT, what="all read")
    for n in range(5):
        assert framed(f"burst message {n} (b5)") in woke.text
    assert [r for r in project.model.requests[before:] if r.main and "(b5)" in r.last_user_text] == [woke]
    assert wakes(project) == 1


def test_mail_that_arrives_mid_turn_is_delivered_in_the_turn_and_wakes_nothing(project: MeshProject) -> None:
    sent: list[str] = []
    arrive = once(lambda: sent.append(project.send("mid-turn note (t3)")))
    shell = project.program.shell_tool

    def step(request: ModelRequest) -> ToolCall | Say | None:
        if "run the check" in request.text and request.result_of(shell) is None and not sent:
            arrive()
            return project.program.shell_call("true")
        return answers(request) if "run the check" not in request.text else Say("checked")

    project.model.script = script(step)
    with start(project) as terminal:
        idle_after_one_turn(project, terminal)
        terminal.type("run the check")
        terminal.wait_for_screen("run the check")
        terminal.send_keys("Enter")
        # the request after the tool call (Pi steers the text in after the tool result)
        after = project.model.wait_for(lambda r: r.main and "mid-turn note (t3)" in r.text, timeout=WAIT)
        terminal.wait_for_screen("checked")
        wait_until(lambda: project.receipt(sent[0]) == "read", timeout=WAIT, what="the read receipt")
        wait_until(lambda: activity(project) == "idle", timeout=WAIT, what="the agent idle")
    assert framed("mid-turn note (t3)") in after.text
    assert wakes(project) == 0  # read inside the turn: no waiter can take it any more
    assert sum("mid-turn note (t3)" in r.last_user_text for r in project.model.requests if r.main) <= 1


def test_a_session_killed_and_started_again_in_the_folder_wakes_again(project: MeshProject) -> None:
    project.model.script = script(answers)
    with start(project) as terminal:
        idle_after_one_turn(project, terminal)
    with start(project) as terminal:
        idle_after_one_turn(project, terminal, first_run=False)
        before = len(project.model.requests)
        msg = project.send("after the restart (r2)")
        project.model.wait_for(lambda r: r.main and r.index >= before and "(r2)" in r.text, timeout=WAIT)
        terminal.wait_for_screen("woke-and-answered")
        wait_until(lambda: project.receipt(msg) == "read", timeout=WAIT, what="the read receipt")
