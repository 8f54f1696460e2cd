"""How agents work together (#17 items 2, 3, 4 and 6), on the real programs against the
scripted model: Claude Code, Codex, Gemini CLI and Pi, each installed the way
``mesh install`` does it.

- Who is busy: during a turn the agent's peers see it ``working``; ``mesh await-idle``
  returns once the turn ends, and ``mesh send --when-idle`` sends only then.
- Inbound policy: an agent that holds its mail gets nothing until the person approves
  it, and a sender it refuses reaches nothing at all.
- A handoff's paths and gate reach the model under the request, and the model's
  ``reply`` carries the evidence behind its end-state back to the sender.
- ``ask_all``, called by the model, waits for both peers' replies and gives each
  end-state and the worst.

Pair mode on the real programs: tests/agents/test_pair.py; ``mesh ask --all`` to a
peer that a headless ``mesh spawn`` answers: tests/agents/test_spawn.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sessionmesh.client.sync import SyncClient
from sessionmesh.config import Settings
from tests.agents.conftest import installed
from tests.agents.mesh import AGENT, PEER, WAIT, MeshProject, framed, script
from tests.agents.modelserver import ModelRequest, ModelServer, Say, ToolCall, use_tool
from tests.agents.programs import CompletedRun, Program, Sandbox
from tests.agents.test_delivery import TOOLS, default_argv, permitted_argv
from tests.agents.test_pi import AGENT as PI_AGENT
from tests.agents.test_pi import Pi, install_extension
from tests.conftest import PASSPHRASE, BrokerProcess, mesh_cmd, person_cmd

pytestmark = pytest.mark.agents

OTHER = "carol"  # a second peer


@dataclass
class Agent:
    """One real program on the mesh as ``name``, and a way to run it headless."""

    name: str
    program: Program
    broker: BrokerProcess
    model: ModelServer
    bob: SyncClient  # the peer PEER, online
    project: MeshProject | None = None  # Claude Code, Codex, Gemini CLI
    pi: Pi | None = None

    def run(self, prompt: str, *, permitted: bool = False) -> CompletedRun:
        """One headless turn on ``prompt``; ``permitted``: with no permission-skipping
        flag, so only what the installed config allows runs (Pi asks nothing)."""
        if self.pi is not None:
            return self.pi.run(prompt)
        assert self.project is not None
        argv = permitted_argv(self.project, prompt) if permitted else None
        run = self.project.run(prompt, argv=argv)
        assert run.returncode == 0, self.project.failure(run)
        return run

    def mesh(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return mesh_cmd(*args, env=self.broker.env, timeout=timeout)

    def mesh_later(self, *args: str) -> subprocess.Popen[str]:
        """The real ``mesh`` CLI, started and left running."""
        return subprocess.Popen(
            [sys.executable, "-m", "sessionmesh", *args],
            env=self.broker.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def peers(self) -> list[dict[str, Any]]:
        done = self.mesh("peers", "--json")  # registers no one
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))

    def activity(self) -> str | None:
        return next((p.get("activity") for p in self.peers() if p["name"] == self.name), None)

    @property
    def settings(self) -> Settings:
        return self.broker.settings()

    def requests_with(self, text: str) -> list[ModelRequest]:
        return [r for r in self.model.requests if text in r.text]


@pytest.fixture(params=[*TOOLS, "pi"])
def agent(
    request: pytest.FixtureRequest, sandbox: Sandbox, broker_proc: BrokerProcess, model_server: ModelServer
) -> Iterator[Agent]:
    if request.param == "pi":
        for name in (PI_AGENT, PEER, OTHER):
            assert mesh_cmd("join", name, env=broker_proc.env).returncode == 0
        install_extension(sandbox.workspace, home=broker_proc.home)
        pi = Pi(sandbox, model_server, broker_proc)
        with SyncClient(broker_proc.settings(), PEER) as bob:
            yield Agent(PI_AGENT, pi.program, broker_proc, model_server, bob, pi=pi)
        return
    assert mesh_cmd("join", OTHER, env=broker_proc.env).returncode == 0
    with installed(request, TOOLS, sandbox, broker_proc, model_server) as p:
        p.argv = default_argv(p)
        yield Agent(AGENT, p.program, broker_proc, model_server, p.peer, project=p)


def test_peers_see_the_agent_working_and_await_idle_and_when_idle_wait_for_its_turn_to_end(
    agent: Agent,
) -> None:
    shell = agent.program.shell_tool
    seen: dict[str, Any] = {}
    started: list[subprocess.Popen[str]] = []

    def step(request: ModelRequest) -> ToolCall | None:
        if request.result_of(shell) is None and not seen:
            seen["before"] = agent.activity()
            return agent.program.shell_call("true")
        if request.result_of(shell) is not None and "during" not in seen:
            seen["during"] = agent.activity()  # the turn is still on: its model is asked again
            waiter = agent.mesh_later("await-idle", agent.name, "--as", PEER, "--timeout", "120", "--json")
            sender = agent.mesh_later("send", agent.name, "--when-idle", "after your turn (w5)", "--as", PEER)
            started.extend((waiter, sender))
            assert sender.stderr is not None
            seen["parked"] = sender.stderr.readline()  # it says so before it waits
            seen["last_request_at"] = time.time()  # the turn ends after this request's answer
        return None

    agent.model.script = script(step)
    agent.run("run a command")

    assert seen["before"] == "working" and seen["during"] == "working", seen
    assert f"waiting until {agent.name} is idle" in seen["parked"]
    waiter, sender = started
    out, err = waiter.communicate(timeout=WAIT)
    assert waiter.returncode == 0, err
    idle = json.loads(out)
    assert idle["activity"] == "idle" and idle["since"] >= seen["last_request_at"], idle
    assert agent.activity() == "idle"
    out, err = sender.communicate(timeout=WAIT)
    assert sender.returncode == 0, err
    inbox = agent.mesh("inbox", "--as", agent.name, "--json")
    assert inbox.returncode == 0, inbox.stderr
    (late,) = [m for m in json.loads(inbox.stdout) if "(w5)" in str(m["body"])]
    assert late["ts"] >= idle["since"]  # sent only once the turn had ended
    assert agent.requests_with("(w5)") == []


def test_a_held_message_reaches_the_model_only_once_the_person_approves_and_a_refused_one_never(
    agent: Agent,
) -> None:
    for policy in (("hold",), ("refuse", "--from", OTHER)):
        done = agent.mesh("policy", *policy, "--as", agent.name)
        assert done.returncode == 0, done.stderr
    held = agent.bob.send(agent.name, "rotate the staging keys (h21)")
    with SyncClient(agent.settings, OTHER) as carol:
        refused = carol.send(agent.name, "delete the release branch (r40)")
    assert held.held is not None and held.held["recipients"] == [agent.name], held
    assert refused.status == "denied" and refused.reasons[agent.name]["code"] == "forbidden", refused

    agent.run("start work")
    assert agent.requests_with("h21") == [] and agent.requests_with("r40") == []

    assert person_cmd("person", "init", answers=[PASSPHRASE, PASSPHRASE], env=agent.broker.env).status == 0
    approved = person_cmd("approve", str(held.id), answers=[PASSPHRASE], env=agent.broker.env)
    assert approved.status == 0, approved.output
    before = len(agent.model.requests)

    agent.run("carry on")
    later = [r for r in agent.model.requests[before:] if r.main]
    assert later and framed("rotate the staging keys (h21)") in later[0].text
    assert agent.requests_with("r40") == []
    assert agent.bob.track(str(held.id))["receipts"][agent.name] == "read"


def test_a_handoff_s_paths_and_gate_reach_the_model_and_its_reply_carries_the_evidence(agent: Agent) -> None:
    bob = agent.bob
    handoff = bob.send(
        agent.name,
        "make the retry loop idempotent (e55)",
        kind="request",
        paths=["src/net/retry.py", "tests/test_retry.py"],
        ack_required=True,
    )

    def step(request: ModelRequest) -> ToolCall | Say | None:
        if request.result_of("reply") is not None:
            return Say("replied")
        if "(e55)" in request.text:
            return ToolCall(
                request.tool("reply") or "missing",
                {
                    "message_id": str(handoff.id),
                    "body": "retries only GETs now (e55 done)",
                    "status": "PASS",
                    "evidence": ["tests/test_retry.py: 12 passed", "src/net/retry.py"],
                },
            )
        return None

    agent.model.script = script(step)
    agent.run("start work", permitted=True)
    first = agent.model.wait_for(lambda r: r.main and "(e55)" in r.text, timeout=WAIT)
    assert framed("paths: src/net/retry.py, tests/test_retry.py") in first.text
    assert "acknowledge" in first.text.split("(e55)", 1)[1][:600]
    answered = agent.model.wait_for(lambda r: r.result_of("reply") is not None, timeout=WAIT)
    result = answered.result_of("reply")
    assert result is not None and "error" not in result.output.lower(), result.output
    reply = bob.await_reply(str(handoff.id), timeout=WAIT).to_wire()
    assert (reply["from"], reply["status"]) == (agent.name, "PASS")
    assert reply["evidence"] == [
        {"path": "tests/test_retry.py", "note": "12 passed"},
        {"path": "src/net/retry.py"},
    ]
    thread = agent.mesh("thread", str(handoff.id), "--as", PEER)
    assert thread.returncode == 0, thread.stderr
    assert "tests/test_retry.py" in thread.stdout and "12 passed" in thread.stdout


def test_ask_all_called_by_the_model_gives_each_end_state_and_the_worst(agent: Agent) -> None:
    answers = {PEER: ("PASS", "looks right to me"), OTHER: ("BLOCKED", "the migration is missing")}
    failures: list[BaseException] = []

    def review(peer: SyncClient) -> None:
        try:
            asked = peer.recv(timeout=60)
            status, body = answers[peer.name]
            peer.reply(str(asked.id), body, status=status)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    with SyncClient(agent.settings, OTHER) as carol:
        reviewers = [threading.Thread(target=review, args=(p,), daemon=True) for p in (agent.bob, carol)]
        for t in reviewers:
            t.start()

        def step(request: ModelRequest) -> ToolCall | Say | None:
            if request.result_of("ask_all") is not None:
                return Say("reviews are in")
            return ToolCall(
                request.tool("ask_all") or "missing",
                {"to": [PEER, OTHER], "body": "is it safe to merge? (q8)", "timeout_seconds": 60},
            )

        agent.model.script = script(step)
        agent.run("get two reviews", permitted=True)
        for t in reviewers:
            t.join(timeout=WAIT)
    assert failures == []
    done = agent.model.wait_for(lambda r: r.result_of("ask_all") is not None, timeout=WAIT)
    result = done.result_of("ask_all")
    assert result is not None
    assert "2 of 2 answered; worst end-state BLOCKED" in result.output, result.output
    assert f"- {PEER}: PASS: looks right to me" in result.output
    assert f"- {OTHER}: BLOCKED: the migration is missing" in result.output


def test_a_handoff_the_model_sends_with_ask_carries_its_paths_and_gate(agent: Agent) -> None:
    """The other way round: the model hands work over with the mesh tool ``ask``."""
    agent.model.script = use_tool(
        "ask",
        {
            "to": PEER,
            "body": "review the retry change (k71)",
            "paths": ["src/net/retry.py"],
            "ack_required": True,
        },
        then="handed over",
    )
    agent.run("hand the review to bob", permitted=True)
    got = agent.bob.recv(timeout=WAIT).to_wire()
    assert (got["from"], got["kind"], got["body"]) == (agent.name, "request", "review the retry change (k71)")
    assert got["paths"] == ["src/net/retry.py"]
    assert got["ack_required"] is True
