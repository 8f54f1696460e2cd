"""Pair mode through the real CLI and the real pre-tool hook (`mesh hook TOOL EVENT`
as each program runs it), against a real broker: a guard's stop refuses the grip's
tool calls in each program's format, lets through the call that acknowledges it, and
lifts when acknowledged; the steering note reaches the grip's next context framed
as its guard's. The real programs: tests/agents/test_pair.py."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from sessionmesh import marks
from sessionmesh.hooks import acknowledges

from ..conftest import BrokerProcess, mesh_cmd
from .test_hooks import hook

PRE_TOOL = {"claude-code": "PreToolUse", "codex": "PreToolUse", "gemini": "BeforeTool", "pi": "tool_call"}
SHELL = {"claude-code": "Bash", "codex": "Bash", "gemini": "run_shell_command", "pi": "bash"}


def pair_cmd(*args: str, name: str) -> dict[str, Any]:
    done = mesh_cmd(*args, "--json", "--as", name)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def paired(broker_proc: BrokerProcess) -> BrokerProcess:
    for name in ("agent", "bob"):
        assert mesh_cmd("join", name).returncode == 0
    pair_cmd("pair", "bob", "--role", "grip", name="agent")
    status = pair_cmd("pair", "accept", name="bob")
    assert status["pair"] == {"with": "agent", "role": "guard", "since": status["pair"]["since"]}
    return broker_proc


def tool_call(tool: str, command: str) -> dict[str, Any]:
    return {"session_id": "s1", "tool_name": SHELL[tool], "tool_input": {"command": command}}


@pytest.mark.parametrize("tool", list(PRE_TOOL))
def test_a_stop_refuses_the_grip_s_tool_calls_in_each_program_s_format_until_acknowledged(
    paired: BrokerProcess, tool: str
) -> None:
    event = PRE_TOOL[tool]
    assert hook(tool, event, tool_call(tool, "make deploy")) == (0, "")  # no stop: silent
    pair_cmd("intercept!", "the deploy targets production", name="bob")
    assert marks.read_block(paired.home, "agent") is not None
    code, out = hook(tool, event, tool_call(tool, "make deploy"))
    assert code == 0
    output = json.loads(out)
    if tool == "gemini":
        assert output["decision"] == "deny"
        reason = output["reason"]
    else:
        specific = output["hookSpecificOutput"]
        assert specific["hookEventName"] == event and specific["permissionDecision"] == "deny"
        reason = specific["permissionDecisionReason"]
    assert "Your guard bob stopped your tool calls" in reason
    assert "| the deploy targets production" in reason
    assert "mesh pair ack --as agent" in reason
    # the acknowledgement itself goes through, and afterwards everything does
    assert hook(tool, event, tool_call(tool, "mesh pair ack --as agent")) == (0, "")
    status = pair_cmd("pair", "ack", "stopping the deploy", name="agent")
    assert status["block"] is None and marks.read_block(paired.home, "agent") is None
    assert hook(tool, event, tool_call(tool, "make deploy")) == (0, "")


def test_the_guard_is_told_of_the_acknowledgement_and_the_grip_of_the_stop(paired: BrokerProcess) -> None:
    pair_cmd("intercept!", "stop: wrong branch", name="bob")
    inbox = json.loads(mesh_cmd("inbox", "--json", "--as", "agent").stdout)
    [stop] = [m for m in inbox if m.get("pair") == "intercept!"]
    assert stop["priority"] == "urgent" and stop["body"] == "stop: wrong branch"
    pair_cmd("pair", "ack", name="agent")
    inbox = json.loads(mesh_cmd("inbox", "--json", "--as", "bob").stdout)
    [ack] = [m for m in inbox if m.get("pair") == "ack"]
    assert ack["re"] == stop["id"]


def test_a_steering_note_reaches_the_grip_s_next_context_framed_as_its_guard_s(paired: BrokerProcess) -> None:
    pair_cmd("steer", "keep", "the", "v2", "endpoint", name="bob")
    code, out = hook("claude-code", "PostToolUse", {"session_id": "s1"})
    context = json.loads(out)["hookSpecificOutput"]["additionalContext"]
    assert "[mesh] steering note from your guard bob id=" in context
    assert "| keep the v2 endpoint" in context
    assert "weigh the note and go on" in context


def test_the_stop_outlives_a_broker_restart(paired: BrokerProcess) -> None:
    pair_cmd("intercept!", "hold everything", name="bob")
    # lost, or removed by hand: the broker's state wins
    os.unlink(marks.block_path(str(paired.home), "agent"))
    paired.stop()
    paired.start()
    assert marks.read_block(paired.home, "agent") is not None
    code, out = hook("claude-code", "PreToolUse", tool_call("claude-code", "ls"))
    assert "hold everything" in out


def test_only_the_roles_that_may_act_do_and_errors_change_nothing(paired: BrokerProcess) -> None:
    done = mesh_cmd("steer", "x", "--as", "agent")
    assert done.returncode != 0 and "wrong_role" in done.stderr
    done = mesh_cmd("pair", "ack", "--as", "agent")
    assert done.returncode == 7 and "pair_state" in done.stderr  # nothing to acknowledge: a conflict
    assert marks.read_block(paired.home, "agent") is None
    assert pair_cmd("pair", name="agent")["pair"]["role"] == "grip"


@pytest.mark.parametrize(
    ("hook_input", "through"),
    [
        ({"tool_name": "mcp__mesh__pair", "tool_input": {"action": "ack"}}, True),
        ({"tool_name": "pair", "tool_input": {}}, True),
        ({"tool_name": "Bash", "tool_input": {"command": "mesh pair ack --as agent"}}, True),
        ({"tool_name": "Bash", "tool_input": {"command": "/usr/bin/python3 -m sessionmesh pair ack"}}, True),
        ({"tool_name": "shell", "tool_input": {"command": ["bash", "-lc", "mesh pair ack"]}}, True),
        ({"tool_name": "Bash", "tool_input": {"command": "mesh unpair"}}, True),
        ({"tool_name": "Bash", "tool_input": {"command": "mesh pair ack; rm -rf build"}}, False),
        ({"tool_name": "Bash", "tool_input": {"command": "mesh pair ack && make deploy"}}, False),
        ({"tool_name": "Bash", "tool_input": {"command": "mesh pair ack $(make deploy)"}}, False),
        ({"tool_name": "Bash", "tool_input": {"command": "mesh send bob hi"}}, False),
        ({"tool_name": "Bash", "tool_input": {"command": "echo mesh pair ack"}}, False),
        ({"tool_name": "Write", "tool_input": {"file_path": "pair"}}, False),
        ({"tool_name": "Bash", "tool_input": {"command": "mesh pair 'unterminated"}}, False),
    ],
)
def test_only_a_plain_pair_command_or_the_pair_tool_passes_a_stop(
    hook_input: dict[str, Any], through: bool
) -> None:
    assert acknowledges(hook_input) is through
