"""In each program's terminal UI, a session takes several prompts; a message that
arrives between two of them reaches the model with the second (Claude Code and Codex
``UserPromptSubmit``, Gemini CLI ``BeforeAgent``, Pi ``before_agent_start``), once,
and ends ``read``.

Each program runs in tmux after ``mesh install`` alone. The dialogs a person answers
on a first run are answered here the way a person would, from the screen:

- Claude Code: "New MCP server found in this project: sessionmesh": *Use this MCP
  server* (the default is to continue without it).
- Codex: "Hooks need review": *Trust all and continue* (the project itself is
  trusted in the sandbox's ``~/.codex/config.toml``, as after a first run).
- Gemini CLI and Pi ask nothing here (folder trust is off in the sandbox's Gemini
  settings; Pi loads project extensions without asking).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.agents.conftest import installed
from tests.agents.mesh import WAIT, MeshProject, framed, script
from tests.agents.modelserver import ModelRequest, ModelServer, Say
from tests.agents.programs import Sandbox, Terminal, start_interactive
from tests.conftest import BrokerProcess, wait_until

pytestmark = pytest.mark.agents

TOOLS = {"claude": "claude-code", "codex": "codex", "gemini": "gemini", "pi": "pi"}


def press_until(terminal: Terminal, key: str, shown: str, *, attempts: int = 10) -> None:
    """Press ``key`` until ``shown`` is on screen: a dialog drawn a moment before it
    takes keys drops the first ones, as it would a person's."""
    for _ in range(attempts):
        terminal.send_keys(key)
        try:
            terminal.wait_for_screen(shown, timeout=1.0)
            return
        except TimeoutError:
            continue
    terminal.wait_for_screen(shown, timeout=1.0)  # fails, showing the screen


def answer_first_run(name: str, terminal: Terminal, ready: Callable[[str], bool]) -> None:
    """Answer the first-run dialogs of ``name`` as a person would, until its prompt."""
    if name == "claude":
        terminal.wait_for_screen("New MCP server found in this project: sessionmesh")
        press_until(terminal, "Up", "❯ Use this MCP server")
        terminal.send_keys("Enter")
    elif name == "codex":
        terminal.wait_for_screen("Hooks need review")
        press_until(terminal, "Down", "› 2. Trust all and continue")
        terminal.send_keys("Enter")
    elif name == "pi":
        terminal.wait_for_screen("sessionmesh.ts")  # its extension list: typing before it is lost
    terminal.wait_for_screen(ready)


@pytest.fixture(params=list(TOOLS))
def project(
    request: pytest.FixtureRequest, sandbox: Sandbox, broker_proc: BrokerProcess, model_server: ModelServer
) -> Iterator[MeshProject]:
    with installed(request, TOOLS, sandbox, broker_proc, model_server) as p:
        yield p


def test_a_message_between_two_prompts_reaches_the_second_prompts_request(project: MeshProject) -> None:
    def step(request: ModelRequest) -> Say:
        return Say("answer-two-7d" if "second prompt" in request.text else "answer-one-3c")

    project.model.script = script(step)
    agent = project.program
    with start_interactive(
        agent,
        cwd=project.sandbox.workspace,
        home=project.sandbox.home,
        model_url=project.model.url,
        env_extra=project.env,
    ) as terminal:
        answer_first_run(agent.name, terminal, agent.prompt_ready)
        terminal.type("first prompt")
        terminal.wait_for_screen("first prompt")
        terminal.send_keys("Enter")
        terminal.wait_for_screen("answer-one-3c")
        terminal.wait_for_screen(agent.prompt_ready)

        msg = project.send("the build is green again (i42)")
        terminal.type("second prompt")
        terminal.wait_for_screen("second prompt")
        terminal.send_keys("Enter")
        second = project.model.wait_for(lambda r: r.main and "second prompt" in r.text, timeout=WAIT * 3)
        terminal.wait_for_screen("answer-two-7d")
        wait_until(lambda: project.receipt(msg) == "read", timeout=WAIT, what="the read receipt")

    assert framed("the build is green again (i42)") in second.text
    assert second.text.count("the build is green again (i42)") == 1
    first = next(r for r in project.model.requests if r.main)
    assert "the build is green again" not in first.text
