"""The harness works with each real agent program: a prompt reaches the scripted model
server and the scripted answer comes back out; a tool call makes the round trip; an
MCP tool is found by its suffix whatever the program's naming; Claude Code's terminal
UI shows a scripted answer. And the server's own behaviour, without a program.

Headless permission flags these need (see `tests.agents.programs`): Claude Code
``--dangerously-skip-permissions`` with ``IS_SANDBOX=1`` (it refuses as root
otherwise); Codex ``--dangerously-bypass-approvals-and-sandbox``; Gemini CLI
``--yolo`` (without it the shell and MCP tools are not offered at all); Pi none.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.agents.conftest import require
from tests.agents.modelserver import Api, ModelRequest, ModelServer, Say, ToolCall, reply, use_tool
from tests.agents.probe_mcp import PROBE_ANSWER, SERVER, TOOL
from tests.agents.programs import REPO, McpServer, Sandbox, run_headless, start_interactive

ALL = ["claude", "codex", "gemini", "pi"]
WITH_MCP = ["claude", "codex", "gemini"]
REQUEST_TIMEOUT = 5.0  # the run has ended by then: the request either came or never will

# -- with the real programs ---------------------------------------------------------------


@pytest.mark.agents
@pytest.mark.parametrize("name", ALL)
def test_prompt_reaches_the_model_and_the_scripted_answer_is_printed(
    name: str, model_server: ModelServer, sandbox: Sandbox
) -> None:
    agent = require(name)
    model_server.script = reply("scripted-answer-5c1e")

    run = run_headless(
        agent,
        "hello from the test 9d27",
        cwd=sandbox.workspace,
        home=sandbox.home,
        model_url=model_server.url,
    )

    assert run.returncode == 0, run.describe() + "\n" + model_server.describe()
    assert "scripted-answer-5c1e" in run.stdout, run.describe()
    turn = model_server.wait_for(lambda r: r.main, timeout=REQUEST_TIMEOUT)
    assert turn.api is agent.api
    assert "hello from the test 9d27" in turn.text
    assert "hello from the test 9d27" in turn.last_user_text
    assert model_server.outbound == [], model_server.describe()
    assert model_server.errors == []


@pytest.mark.agents
@pytest.mark.parametrize("name", ALL)
def test_shell_tool_output_reaches_the_next_model_request(
    name: str, model_server: ModelServer, sandbox: Sandbox
) -> None:
    agent = require(name)
    # The output (mesh-probe-42) is not in the command, which the model sees too; no
    # $(...) either, which Gemini CLI refuses to run.
    call = agent.shell_call("printf 'mesh-%s-%d\\n' probe 42")
    model_server.script = use_tool(call.name, call.arguments, then="finished-after-tool")

    run = run_headless(
        agent, "run the probe", cwd=sandbox.workspace, home=sandbox.home, model_url=model_server.url
    )

    assert run.returncode == 0, run.describe() + "\n" + model_server.describe()
    assert "finished-after-tool" in run.stdout, run.describe()
    first = model_server.wait_for(lambda r: r.main, timeout=REQUEST_TIMEOUT)
    assert agent.shell_tool in first.tools
    assert first.tool_results == ()
    assert "mesh-probe-42" not in first.text
    after = model_server.wait_for(
        lambda r: r.result_of(agent.shell_tool) is not None, timeout=REQUEST_TIMEOUT
    )
    result = after.result_of(agent.shell_tool)
    assert result is not None and "mesh-probe-42" in result.output
    assert "mesh-probe-42" in after.text
    assert after.index > first.index
    assert model_server.answer_to(after) == Say("finished-after-tool")


@pytest.mark.agents
@pytest.mark.parametrize(
    ("name", "offered_as"),
    [
        ("claude", f"mcp__{SERVER}__{TOOL}"),
        ("codex", f"mcp__{SERVER}__{TOOL}"),
        ("gemini", f"mcp_{SERVER}_{TOOL}"),
    ],
)
def test_mcp_tool_is_called_by_its_suffix_under_each_programs_naming(
    name: str, offered_as: str, model_server: ModelServer, sandbox: Sandbox
) -> None:
    agent = require(name)
    probe = McpServer(sys.executable, ("-m", "tests.agents.probe_mcp"), {"PYTHONPATH": str(REPO)}, str(REPO))
    agent.add_mcp_server(sandbox, SERVER, probe)
    model_server.script = use_tool(TOOL, {"word": "zebra"})

    run = run_headless(
        agent, "call the probe", cwd=sandbox.workspace, home=sandbox.home, model_url=model_server.url
    )

    assert run.returncode == 0, run.describe() + "\n" + model_server.describe()
    first = model_server.wait_for(lambda r: r.main, timeout=REQUEST_TIMEOUT)
    assert offered_as in first.tools
    assert model_server.answer_to(first) == ToolCall(offered_as, {"word": "zebra"})
    after = model_server.wait_for(lambda r: r.result_of(TOOL) is not None, timeout=REQUEST_TIMEOUT)
    result = after.result_of(TOOL)
    assert result is not None and f"{PROBE_ANSWER} zebra" in result.output
    assert result.name == offered_as


@pytest.mark.agents
def test_claude_code_terminal_shows_the_scripted_answer(model_server: ModelServer, sandbox: Sandbox) -> None:
    agent = require("claude")
    model_server.script = reply("scripted-on-screen-3b8f")

    with start_interactive(
        agent, cwd=sandbox.workspace, home=sandbox.home, model_url=model_server.url
    ) as terminal:
        terminal.wait_for_screen(agent.prompt_ready)
        terminal.type("typed in the terminal 41c0")
        terminal.wait_for_screen("typed in the terminal 41c0")
        terminal.send_keys("Enter")
        turn = model_server.wait_for(lambda r: r.main, timeout=30)
        screen = terminal.wait_for_screen("scripted-on-screen-3b8f")

    assert "typed in the terminal 41c0" in turn.last_user_text
    assert "● scripted-on-screen-3b8f" in screen
    assert model_server.outbound == [], model_server.describe()


# -- the server alone ------------------------------------------------------------------------


def post(server: ModelServer, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
    """POST ``body`` as JSON; the response's content type and bytes."""
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read()


def sse_data(raw: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of a server-sent-event stream, in order."""
    return [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]


def test_anthropic_tool_result_is_named_from_its_call_and_answered_by_use_tool(
    model_server: ModelServer,
) -> None:
    model_server.script = use_tool("get_messages", {"limit": 1})
    tools = [{"name": "Bash"}, {"name": "mcp__sessionmesh__get_messages"}]
    post(
        model_server,
        "/v1/messages",
        {"model": "m", "tools": tools, "messages": [{"role": "user", "content": "hi"}]},
    )
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "mcp__sessionmesh__get_messages", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "hello from bob"}]}]},
    ]  # fmt: skip
    kind, raw = post(
        model_server, "/v1/messages", {"model": "m", "stream": True, "tools": tools, "messages": history}
    )

    first, second = model_server.requests
    assert model_server.answer_to(first) == ToolCall("mcp__sessionmesh__get_messages", {"limit": 1})
    assert second.result_of("get_messages") is not None
    assert second.tool_results[0].name == "mcp__sessionmesh__get_messages"
    assert "hello from bob" in second.text
    assert kind.startswith("text/event-stream")
    deltas = [event["delta"] for event in sse_data(raw) if event["type"] == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": "done"}]


def test_openai_namespaced_tool_is_listed_flat_and_called_in_its_namespace(model_server: ModelServer) -> None:
    model_server.script = use_tool("get_messages")
    tools = [
        {
            "type": "namespace",
            "name": "mcp__sessionmesh",
            "tools": [{"type": "function", "name": "get_messages"}],
        }
    ]
    _, raw = post(
        model_server, "/v1/responses", {"model": "m", "stream": True, "tools": tools, "input": "hi"}
    )

    (request,) = model_server.requests
    assert request.api is Api.OPENAI
    assert request.tools == ("mcp__sessionmesh__get_messages",)
    done = [event["item"] for event in sse_data(raw) if event["type"] == "response.output_item.done"]
    assert done[0]["namespace"] == "mcp__sessionmesh"
    assert done[0]["name"] == "get_messages"


def test_side_request_demanding_json_gets_the_smallest_answer_of_its_schema(
    model_server: ModelServer,
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "next_speaker": {"type": "string", "enum": ["user", "model"]},
        },
    }
    body = {
        "contents": [{"role": "user", "parts": [{"text": "who speaks next?"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema},
    }
    _, raw = post(model_server, "/v1beta/models/flash:generateContent", body)

    (request,) = model_server.requests
    assert not request.main
    answer = json.loads(raw)["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(answer) == {"reasoning": "", "next_speaker": "user"}


def test_wait_for_times_out_naming_what_did_arrive(model_server: ModelServer) -> None:
    post(model_server, "/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "only this"}]})
    post(model_server, "/elsewhere", {})

    with pytest.raises(TimeoutError) as caught:
        model_server.wait_for(lambda r: "never" in r.text, timeout=0.2)

    assert "only this" in str(caught.value)
    assert "/elsewhere" in str(caught.value)
    assert model_server.unhandled == ["POST /elsewhere"]


def test_failing_script_is_answered_with_an_error_and_reported(model_server: ModelServer) -> None:
    def script(request: ModelRequest) -> Say:
        raise ValueError("scripted failure")

    model_server.script = script
    with pytest.raises(urllib.error.HTTPError) as caught:
        post(model_server, "/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "x"}]})

    assert caught.value.code == 400
    caught.value.close()
    assert "scripted failure" in model_server.errors[0]
