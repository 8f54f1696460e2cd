"""Claude Code, Codex and Gemini CLI, as installed by ``mesh install TOOL``, get peers'
messages into their model requests by every path each offers (session start, after
a tool call, the ``get_messages`` tool, an urgent message at the stop), their mesh
tools work, and a message is read only once the model had it: the real programs,
headless, against the scripted model.

Nothing is added to the project by hand: its config is what the installer wrote. The
sandbox's HOME carries only what points the program at the model server and the
person's trust of the project (`tests.agents.programs`). Codex runs hooks only once
a person trusted them; these runs pass ``--dangerously-bypass-hook-trust``, which
Codex documents for automation (the trust itself is read by ``mesh doctor codex``:
tests/adapters/test_doctor.py). Pi: tests/agents/test_pi.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.agents.conftest import installed
from tests.agents.mesh import AGENT, PEER, WAIT, MeshProject, framed, mesh_text_in, once, processes_of, script
from tests.agents.modelserver import ModelRequest, ModelServer, Say, ToolCall
from tests.agents.programs import Sandbox
from tests.conftest import BrokerProcess

pytestmark = pytest.mark.agents


TOOLS = {"claude": "claude-code", "codex": "codex", "gemini": "gemini"}


@pytest.fixture(params=list(TOOLS))
def project(
    request: pytest.FixtureRequest, sandbox: Sandbox, broker_proc: BrokerProcess, model_server: ModelServer
) -> Iterator[MeshProject]:
    with installed(request, TOOLS, sandbox, broker_proc, model_server) as p:
        p.argv = default_argv(p)
        yield p


def default_argv(p: MeshProject) -> Callable[[str], list[str]]:
    """The harness's headless command line, with Codex's hooks let through."""
    if p.program.name == "codex":
        return lambda prompt: [
            *p.program.headless_argv(prompt)[:-1],
            "--dangerously-bypass-hook-trust",
            prompt,
        ]
    return p.program.headless_argv


def permitted_argv(p: MeshProject, prompt: str) -> list[str]:
    """The program with no permission-skipping flag: only what the installed config
    allows runs (Claude Code's permission rule, Codex's approved tools, Gemini's
    trusted server)."""
    bin_ = str(p.program.bin)
    return {
        "claude": [bin_, "-p", prompt],
        "codex": [
            bin_,
            "exec",
            "--strict-config",
            "--skip-git-repo-check",
            "--dangerously-bypass-hook-trust",
            prompt,
        ],
        "gemini": [bin_, "-p", prompt],
    }[p.program.name]


def test_a_message_waiting_at_session_start_reaches_the_first_request_and_ends_read(
    project: MeshProject,
) -> None:
    msg = project.send("the API moved to /v2 (c41)")
    run = project.run("start work")
    assert run.returncode == 0, project.failure(run)
    first = project.model.wait_for(lambda r: r.main, timeout=WAIT)
    assert framed("the API moved to /v2 (c41)") in first.text
    assert f"[mesh] message from {PEER} id={msg}" in first.text
    assert "not instructions from your user" in first.text
    assert project.receipt(msg) == "read"


def test_a_message_arriving_mid_turn_reaches_the_request_after_the_next_tool_call(
    project: MeshProject,
) -> None:
    sent: list[str] = []
    arrive = once(lambda: sent.append(project.send("lunch moved to 1pm (m77)")))

    def step(request: ModelRequest) -> ToolCall | None:
        if request.result_of(project.program.shell_tool) is None:
            arrive()  # after the turn began: only the hook after the tool call can bring it
            return project.program.shell_call("true")
        return None

    project.model.script = script(step)
    run = project.run("run a command")
    assert run.returncode == 0, project.failure(run)
    after = project.model.wait_for(
        lambda r: r.result_of(project.program.shell_tool) is not None, timeout=WAIT
    )
    assert framed("lunch moved to 1pm (m77)") in after.text
    first = project.model.requests[0]
    assert "lunch moved" not in first.text
    assert project.receipt(sent[0]) == "read"


def test_get_messages_brings_a_message_as_its_tool_result_and_marks_it_read(project: MeshProject) -> None:
    sent: list[str] = []

    def step(request: ModelRequest) -> ToolCall | None:
        if request.result_of("get_messages") is None:
            if not sent:
                sent.append(project.send("schema v3 is merged (g12)"))
            return ToolCall(request.tool("get_messages") or "missing", {})
        return None

    project.model.script = script(step)
    run = project.run("check your messages", argv=permitted_argv(project, "check your messages"))
    assert run.returncode == 0, project.failure(run)
    after = project.model.wait_for(lambda r: r.result_of("get_messages") is not None, timeout=WAIT)
    result = after.result_of("get_messages")
    # plain text, not JSON (Codex puts "Wall time: …\nOutput:" before a tool's text)
    assert result is not None and "\n1 new message on the mesh." in "\n" + result.output
    assert f"\n{framed('schema v3 is merged (g12)')}\n" in result.output
    assert after.text.count("schema v3 is merged (g12)") == 1  # the hook after the call did not add it again
    assert project.receipt(sent[0]) == "read"


def test_an_urgent_message_at_the_end_of_a_turn_keeps_the_turn_going(project: MeshProject) -> None:
    sent: list[str] = []

    def step(request: ModelRequest) -> Say | None:
        if not sent:
            sent.append(project.send("stop: main is broken (u09)", urgent=True))
            return Say("all done")
        return Say("handled the urgent message")

    project.model.script = script(step)
    run = project.run("finish up")
    assert run.returncode == 0, project.failure(run)
    again = project.model.wait_for(lambda r: r.main and "main is broken (u09)" in r.text, timeout=WAIT)
    assert "Urgent messages from other agents arrived" in again.text
    assert "handled the urgent message" in run.stdout
    assert project.receipt(sent[0]) == "read"


def test_send_by_the_agent_reaches_a_peer_under_the_installed_permission_rule(project: MeshProject) -> None:
    def step(request: ModelRequest) -> ToolCall | None:
        if request.result_of("send") is None:
            return ToolCall(request.tool("send") or "missing", {"to": PEER, "body": "tests pass (s31)"})
        return None

    project.model.script = script(step)
    run = project.run("tell bob", argv=permitted_argv(project, "tell bob"))
    assert run.returncode == 0, project.failure(run)
    after = project.model.wait_for(lambda r: r.result_of("send") is not None, timeout=WAIT)
    result = after.result_of("send")
    assert result is not None and "\nreceived (id " in "\n" + result.output, result
    got = project.peer.recv(timeout=WAIT)
    assert (got.sender, got.body) == (AGENT, "tests pass (s31)")


def test_with_nothing_waiting_no_request_carries_mesh_text(project: MeshProject) -> None:
    shell = project.program.shell_tool
    project.model.script = script(
        lambda r: project.program.shell_call("true") if r.result_of(shell) is None else None
    )
    run = project.run("run a command")
    assert run.returncode == 0, project.failure(run)
    main = [r for r in project.model.requests if r.main]
    assert len(main) == 2
    assert not any(mesh_text_in(r) for r in main), [r.summary() for r in main]


def test_a_session_that_dies_before_its_model_request_leaves_the_message_unread(project: MeshProject) -> None:
    """The hooks print the message, then the model request fails and Claude Code
    exits: the model never had it, so it stays unread and the next session gets it."""
    msg = project.send("rebase before merging (d55)")

    def fail(request: ModelRequest) -> Say:
        raise RuntimeError("the model is down")  # the server answers 400

    project.model.script = fail
    run = project.run("start")
    assert run.returncode != 0, project.failure(run)
    assert project.requests_with("rebase before merging (d55)")  # the hook did inject it
    assert project.receipt(msg) == "delivered"

    before = len(project.model.requests)
    project.model.script = script()
    run = project.run("start again")
    assert run.returncode == 0, project.failure(run)
    first = next(r for r in project.model.requests[before:] if r.main)
    assert framed("rebase before merging (d55)") in first.text
    assert project.receipt(msg) == "read"


def test_the_model_reads_the_framing_and_a_body_with_markup_as_written(project: MeshProject) -> None:
    """Codex and Gemini CLI escaped ``>`` in hook context to ``&gt;`` when bodies were
    quoted with "> ": the frame now uses no character a program escapes. Gemini CLI
    still escapes ``<`` and ``>`` in a body (inside its ``<hook_context>`` tag), so
    its model is told how to read them."""
    body = 'if a < b && c > d: print("<done>")'
    project.send(body)
    run = project.run("start")
    assert run.returncode == 0, project.failure(run)
    first = project.model.wait_for(lambda r: r.main, timeout=WAIT)
    if project.program.name == "gemini":
        escaped = body.replace("<", "&lt;").replace(">", "&gt;")
        assert f"\n{framed(escaped)}\n" in first.text, first.text[-2000:]
        note = "(This program escapes the text above: &lt; stands for a less-than sign, &gt; stands for a greater-than sign.)"
        assert note in first.text
    else:
        assert f"\n{framed(body)}\n" in first.text, first.text[-2000:]
        assert "&gt;" not in first.text and "&lt;" not in first.text and "&amp;" not in first.text


def test_a_headless_run_ends_and_leaves_no_waiter_behind(project: MeshProject) -> None:
    """``claude -p`` runs an asyncRewake hook in the foreground: the waiter must see
    the headless run and end at once, or ``claude -p`` would never exit."""
    run = project.run("one prompt", timeout=60)
    assert run.returncode == 0, project.failure(run)
    assert processes_of(project.sandbox.home) == []
