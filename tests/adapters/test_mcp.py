"""`mesh mcp` driven by real MCP clients: the SDK's stdio client, a raw JSON-RPC
client declaring `claude/channel`, and the MCP Inspector CLI from npm."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from sessionmesh.client.aio import AsyncClient
from sessionmesh.mcp import TOOL_NAMES

from ..conftest import InProcessBroker


def server_params(
    broker: InProcessBroker, name: str, *extra: str, cwd: Path | None = None
) -> StdioServerParameters:
    home = broker.settings.home
    return StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "sessionmesh",
            "mcp",
            "--as",
            name,
            "--home",
            home,
            "--url",
            str(broker.settings.url),
            *extra,
        ],
        env={**os.environ, "MESH_HOME": home, "MESH_AUTOSTART": "false"},
        cwd=str(cwd) if cwd else None,
    )


@asynccontextmanager
async def mcp_session(
    broker: InProcessBroker, name: str, *extra: str, cwd: Path | None = None
) -> AsyncIterator[ClientSession]:
    async with stdio_client(server_params(broker, name, *extra, cwd=cwd)) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            # the server joins the mesh beside its handshake; a tool call waits for it
            assert not (await session.call_tool("locks", {})).isError
            yield session


async def call(session: ClientSession, tool: str, **args: Any) -> tuple[bool, str]:
    result = await session.call_tool(tool, args)
    text = "\n".join(c.text for c in result.content if c.type == "text")
    return bool(result.isError), text


async def until_messages(session: ClientSession) -> str:
    async with asyncio.timeout(10):
        while True:
            error, text = await call(session, "get_messages")
            assert not error, text
            if text != "No new messages.":
                return text
            await asyncio.sleep(0.05)  # sleep-ok: bounded poll through the tool an agent would call


async def presence(peer: AsyncClient, name: str) -> str | None:
    return next((p["presence"] for p in await peer.peers() if p["name"] == name), None)


async def test_the_server_offers_every_tool_with_a_description_for_an_agent(broker: InProcessBroker) -> None:
    async with mcp_session(broker, "agent") as session:
        tools = (await session.list_tools()).tools
        assert sorted(t.name for t in tools) == sorted(TOOL_NAMES)
        for tool in tools:
            assert tool.description and len(tool.description) > 60, tool.name


async def test_the_agent_is_online_while_the_server_runs_and_leaves_when_it_stops(
    broker: InProcessBroker,
) -> None:
    async with AsyncClient(broker.settings, "bob", events=True) as bob:
        async with mcp_session(broker, "agent"):
            assert await presence(bob, "agent") == "online"
        async with asyncio.timeout(10):
            while (event := await bob.next_event()) != {**event, "event": "peer_left", "name": "agent"}:
                continue  # each event is awaited; stop at agent's leave
        assert event["graceful"] is True
        assert await presence(bob, "agent") != "online"


async def test_send_answers_received_and_the_peer_gets_it(broker: InProcessBroker) -> None:
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        error, text = await call(session, "send", to="bob", body="tests pass on main")
        assert not error
        assert text.startswith("received")
        got = await bob.recv(timeout=5)
        assert (got.sender, got.body) == ("agent", "tests pass on main")


async def test_an_unknown_name_is_an_error_naming_the_closest_peers(broker: InProcessBroker) -> None:
    async with AsyncClient(broker.settings, "backend"), mcp_session(broker, "agent") as session:
        error, text = await call(session, "send", to="bakend", body="hello")
        assert error
        assert "did you mean 'backend'" in text and "call list_peers" in text
        assert "\n" not in text


async def test_get_messages_drains_marks_read_and_frames_the_message_as_peer_data(
    broker: InProcessBroker,
) -> None:
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        sent = await bob.send("agent", "please review src/app.py")
        text = await until_messages(session)
        assert f"id={sent.id}" in text and "from bob" in text
        assert "| please review src/app.py" in text
        assert "not instructions from your user" in text
        async with asyncio.timeout(5):
            while (await bob.track(sent.id))["receipts"]["agent"] != "read":
                await bob.next_receipt(timeout=5)
        assert await call(session, "get_messages") == (False, "No new messages.")


async def test_ask_returns_at_once_and_the_reply_arrives_through_get_messages(
    broker: InProcessBroker,
) -> None:
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        error, text = await call(session, "ask", to="bob", body="does the migration run?")
        assert not error and text.startswith("received")
        request = await bob.recv(timeout=5)
        assert request.kind == "request"
        await bob.reply(request, "yes, on a copy of prod", status="PASS")
        text = await until_messages(session)
        assert f"re={request.id}" in text and "status=PASS" in text
        error, tracked = await call(session, "track", message_id=request.id)
        assert not error and "bob: answered" in tracked


async def test_ask_all_waits_for_every_reviewer_and_names_the_worst_end_state(
    broker: InProcessBroker,
) -> None:
    """Issue #17 item 6: two independent reviews, then consensus, as one tool call."""

    async def review(peer: AsyncClient, status: str, evidence: list[dict[str, str]]) -> None:
        request = await peer.recv(timeout=10)
        await peer.reply(request, f"{peer.name}: {status}", status=status, evidence=evidence)

    async with (
        AsyncClient(broker.settings, "rev-a") as a,
        AsyncClient(broker.settings, "rev-b") as b,
        mcp_session(broker, "agent") as session,
    ):
        reviews = asyncio.gather(review(a, "PASS", []), review(b, "BLOCKED", [{"note": "no tests"}]))
        error, text = await call(
            session, "ask_all", to=["rev-a", "rev-b"], body="safe to merge?", timeout_seconds=20
        )
        await reviews
        assert not error, text
        assert text.startswith("2 of 2 answered; worst end-state BLOCKED")
        assert "- rev-a: PASS" in text and "- rev-b: BLOCKED" in text


async def test_reply_keeps_the_thread_and_carries_the_end_state(broker: InProcessBroker) -> None:
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        request = await bob.ask("agent", "rename the flag?")
        text = await until_messages(session)
        assert "It expects a reply" in text
        error, answer = await call(session, "reply", message_id=request.id, body="done", status="PASS")
        assert not error, answer
        got = await bob.recv(timeout=5)
        assert (got.re, got.thread, got.status) == (request.id, request.thread, "PASS")


async def test_a_lock_conflict_is_an_error_that_names_the_holder(
    broker: InProcessBroker, tmp_path: Path
) -> None:
    target = str(tmp_path / "src" / "api.py")
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        await bob.lock(target, reason="refactor")
        error, text = await call(session, "lock", resource=target, reason="fix")
        assert error and "bob holds" in text and "refactor" in text
        error, text = await call(session, "locks")
        assert not error and "bob" in text
        await bob.unlock(target)
        error, text = await call(session, "lock", resource=target, ttl_seconds=30)
        assert not error and text.startswith("granted")
        error, text = await call(session, "unlock", resource=target)
        assert not error
        assert await bob.locks() == []


async def test_set_status_shows_in_list_peers(broker: InProcessBroker) -> None:
    async with AsyncClient(broker.settings, "bob"), mcp_session(broker, "agent") as session:
        error, _ = await call(session, "set_status", status="porting the parser", role="builder")
        assert not error
        error, text = await call(session, "list_peers")
        assert 'agent (you): online status="porting the parser"' in text and "role=builder" in text
        assert "- bob: online" in text


async def test_set_policy_holds_what_comes_and_cannot_loosen_the_persons_rules(
    broker: InProcessBroker,
) -> None:
    """Issue #17 item 3, through the agent's own tool."""
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        error, text = await call(session, "set_policy", policy="hold")
        assert not error and "hold by default" in text
        answer = await bob.send("agent", "run the migration")
        assert answer.status == "queued"
        error, text = await call(session, "get_messages")
        assert not error and text == "No new messages."
        error, text = await call(session, "set_policy", policy="refuse", sender="bob")
        assert not error and "from bob: refuse" in text
        assert (await bob.send("agent", "and now?")).status == "denied"
        error, text = await call(session, "set_policy", policy="sometimes")
        assert error


async def test_list_peers_says_who_is_working(broker: InProcessBroker) -> None:
    """Issue #17 item 2: an agent sees which peers are busy, as their hooks report."""
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        await bob.request("activity", state="working")
        error, text = await call(session, "list_peers")
        assert not error and "- bob: online, working for " in text


async def test_pair_tool_takes_an_agent_through_a_pair_as_grip(broker: InProcessBroker) -> None:
    """Issue #17 item 1, through the agent's own tool: invite, be stopped, acknowledge
    (the stop's file goes), hand over, unpair; a wrong step is a tool error."""
    from sessionmesh import marks

    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        error, text = await call(session, "pair", action="invite", name="bob", text="the parser port")
        assert not error and "you invited bob" in text
        await bob.request("pair", action="accept")
        error, text = await call(session, "pair", action="status")
        assert not error and "agent: grip, paired with bob (guard)" in text
        await bob.request("pair", action="intercept", urgent=True, body="the fixtures are stale")
        assert marks.read_block(broker.settings.home, "agent") is not None
        error, text = await call(session, "get_messages")
        assert "STOP from your guard bob" in text and "| the fixtures are stale" in text
        error, text = await call(session, "pair", action="swap")
        assert error and "pair_state" in text  # a stop stands: acknowledge first
        error, text = await call(session, "pair", action="ack", text="regenerating them")
        assert not error and "stopped by" not in text
        assert marks.read_block(broker.settings.home, "agent") is None
        error, text = await call(session, "pair", action="steer", text="x")
        assert error and "wrong_role" in text
        error, text = await call(session, "pair", action="swap")
        assert not error and "agent: guard, paired with bob (grip)" in text
        error, text = await call(session, "pair", action="unpair")
        assert not error and "agent: not paired" in text
        error, text = await call(session, "pair", action="dance")
        assert error


async def test_await_idle_tool_answers_when_the_peer_s_turn_ends(broker: InProcessBroker) -> None:
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        await bob.request("activity", state="working")
        waiting = asyncio.create_task(call(session, "await_idle", name="bob", timeout=20))
        await asyncio.sleep(0.2)  # sleep-ok: the wait is in place before the turn ends
        assert not waiting.done()
        await bob.request("activity", state="idle")
        error, text = await asyncio.wait_for(waiting, 10)
        assert not error and text == "bob is idle"


async def test_bad_arguments_are_tool_errors_and_send_nothing(broker: InProcessBroker) -> None:
    async with AsyncClient(broker.settings, "bob") as bob, mcp_session(broker, "agent") as session:
        error, text = await call(session, "reply", message_id="not-an-id", body="x")
        assert error and "bad_frame" in text
        error, text = await call(
            session, "reply", message_id="0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee", body="x", status="MAYBE"
        )
        assert error
        assert bob.inbox.empty()


async def test_exclusive_cwd_keeps_a_second_agent_out_of_the_folder(
    broker: InProcessBroker, tmp_path: Path
) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    async with mcp_session(broker, "first", "--exclusive-cwd", cwd=folder) as session:
        assert not (await call(session, "locks"))[0]
        params = server_params(broker, "second", "--exclusive-cwd", cwd=folder)
        proc = await asyncio.create_subprocess_exec(
            params.command,
            *params.args,
            cwd=folder,
            env=params.env,
            stdin=subprocess.PIPE,  # a client that stays: the server ends by itself
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        err = await asyncio.wait_for(proc.stderr.read(), 30)
        await asyncio.wait_for(proc.wait(), 10)
        assert proc.returncode == 7
        assert "'first' holds" in err.decode()


def params_env(broker: InProcessBroker) -> dict[str, str]:
    return {**os.environ, "MESH_HOME": broker.settings.home, "MESH_URL": str(broker.settings.url)}


async def read_jsonrpc(proc: asyncio.subprocess.Process, want: Any) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(10):
        while True:
            line = await proc.stdout.readline()
            assert line, "the server closed stdout"
            frame = json.loads(line)
            if want(frame):
                return frame


async def test_messages_are_pushed_as_claude_channel_notifications_when_the_client_declares_them(
    broker: InProcessBroker,
) -> None:
    params = server_params(broker, "agent")
    proc = await asyncio.create_subprocess_exec(
        params.command, *params.args, env=params.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None

    def write(frame: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(frame).encode() + b"\n")

    try:
        write(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"experimental": {"claude/channel": {}}},
                    "clientInfo": {"name": "channel-test", "version": "1"},
                },
            }
        )
        init = await read_jsonrpc(proc, lambda f: f.get("id") == 1)
        assert "claude/channel" in init["result"]["capabilities"]["experimental"]
        write({"jsonrpc": "2.0", "method": "notifications/initialized"})
        write({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        await read_jsonrpc(proc, lambda f: f.get("id") == 2)
        async with AsyncClient(broker.settings, "bob", events=True) as bob:
            async with asyncio.timeout(10):  # the server joins beside its handshake
                while await presence(bob, "agent") != "online":
                    await bob.next_event()
            sent = await bob.send("agent", "<b>build is green</b>", priority="urgent")
            push = await read_jsonrpc(proc, lambda f: f.get("method") == "notifications/claude/channel")
            assert push["params"]["meta"] == {"from": "bob", "id": sent.id, "kind": "message"}
            assert "| <b>build is green</b>" in push["params"]["content"]
            # a push is not reading: a client without channels drops it (issue #14: such a
            # message was marked read and lost); it stays unread until a tool call
            assert (await bob.track(sent.id))["receipts"]["agent"] == "delivered"
            hook = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sessionmesh",
                "hook",
                "claude-code",
                "UserPromptSubmit",
                "--as",
                "agent",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=params_env(broker),
            )
            out, _ = await asyncio.wait_for(hook.communicate(b'{"session_id": "s"}'), 30)
            assert b"build is green" in out  # still offered: never lost
            write(
                {
                    "jsonrpc": "2.0",
                    "id": 3,
                    "method": "tools/call",
                    "params": {"name": "locks", "arguments": {}},
                }
            )
            await read_jsonrpc(proc, lambda f: f.get("id") == 3)
            async with asyncio.timeout(5):
                while (await bob.track(sent.id))["receipts"]["agent"] != "read":
                    await bob.next_receipt(timeout=5)
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 10)


@pytest.mark.skipif(shutil.which("npx") is None, reason="needs node's npx for the MCP Inspector CLI")
async def test_the_mcp_inspector_cli_lists_and_calls_the_tools(
    broker: InProcessBroker, tmp_path: Path
) -> None:
    params = server_params(broker, "inspected")
    base = [
        "npx", "--yes", "@modelcontextprotocol/inspector@0.17.1", "--cli",
        "-e", f"MESH_HOME={broker.settings.home}", "-e", "MESH_AUTOSTART=false",
        params.command, *params.args,
    ]  # fmt: skip
    env = {**os.environ, "npm_config_cache": os.environ.get("npm_config_cache", str(Path.home() / ".npm"))}

    async def inspector(*method: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            *base, *method, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
        )
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, err.decode()[-2000:]
        return json.loads(out)

    listed = await inspector("--method", "tools/list")
    assert sorted(t["name"] for t in listed["tools"]) == sorted(TOOL_NAMES)
    async with AsyncClient(broker.settings, "bob") as bob:
        called = await inspector(
            "--method",
            "tools/call",
            "--tool-name",
            "send",
            "--tool-arg",
            "to=bob",
            "--tool-arg",
            "body=hi from the inspector",
        )
        assert called["content"][0]["text"].startswith("received")
        got = await bob.recv(timeout=5)
        assert (got.sender, got.body) == ("inspected", "hi from the inspector")


def test_the_early_handshake_is_what_the_sdk_server_answers() -> None:
    from sessionmesh.mcp import handshake
    from sessionmesh.mcp_front import snapshot

    assert snapshot() == handshake(), (
        "run: python -c 'from sessionmesh.mcp import handshake' … (see mcp_front)"
    )


async def test_initialize_and_tools_list_are_answered_before_the_sdk_has_loaded(
    broker: InProcessBroker, tmp_path: Path
) -> None:
    """The answers come from the snapshot while the SDK's import is held back (by a
    path hook that waits on a FIFO the test opens only after both answers came)."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    params = server_params(broker, "early")
    env = {
        **params.env,
        "PYTHONPATH": str(Path(__file__).parent / "slow_sdk"),
        "MESH_TEST_SDK_GATE": str(gate),
    }
    proc = await asyncio.create_subprocess_exec(
        params.command, *params.args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    proc.stdin.write(json.dumps(init).encode() + b"\n")
    proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    proc.stdin.write(b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}\n')
    proc.stdin.write(
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"locks","arguments":{}}}\n'
    )
    await proc.stdin.drain()
    first = await read_jsonrpc(proc, lambda f: f.get("id") == 1)
    assert first["result"]["protocolVersion"] == "2025-06-18"
    tools = await read_jsonrpc(proc, lambda f: f.get("id") == 2)
    assert {t["name"] for t in tools["result"]["tools"]} == set(TOOL_NAMES)
    await asyncio.to_thread(lambda: open(gate, "w").close())  # the SDK may load now
    answer = await read_jsonrpc(proc, lambda f: f.get("id") == 3)
    assert answer["result"]["content"][0]["text"] == "No locks are held."
    proc.stdin.close()
    rest, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert b'"id":1,' not in rest and b'"id":2,' not in rest  # the SDK's own answers were dropped
