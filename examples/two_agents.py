"""Two agents coordinating through `mesh mcp`, with a script in place of each model.

Each agent is a real `mesh mcp` server driven by the MCP SDK's stdio client, exactly
as Claude Code or Codex would drive it; the script decides which tool to call where
a model would. A third step shows what a hook injects into an agent's turn.
Prints the transcript shown in README's "Connect your agents".

    python examples/two_agents.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from contextlib import AsyncExitStack
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def show(agent: str, tool: str, args: dict[str, Any], result: str, error: bool) -> None:
    call = ", ".join(f"{k}={v!r}" for k, v in args.items())
    print(f"{agent} ▸ {tool}({call})")
    print(textwrap.indent(("ERROR " if error else "") + result, "    "))
    print()


async def main() -> None:
    home = tempfile.mkdtemp(prefix="mesh-two-agents-")
    env = {**os.environ, "MESH_HOME": home}
    repo = os.path.join(home, "shop")
    os.makedirs(os.path.join(repo, "src", "api"))
    async with AsyncExitStack() as stack:
        sessions: dict[str, ClientSession] = {}
        for name in ("backend", "frontend"):
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "sessionmesh", "mcp", "--as", name], env=env, cwd=repo
            )
            read, write = await stack.enter_async_context(stdio_client(params))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            sessions[name] = session

        async def call(agent: str, tool: str, **args: Any) -> str:
            result = await sessions[agent].call_tool(tool, args)
            text = "\n".join(c.text for c in result.content if c.type == "text")
            show(agent, tool, args, text, bool(result.isError))
            return text

        async def wait_messages(agent: str) -> str:
            for _ in range(100):
                result = await sessions[agent].call_tool("get_messages", {})
                text = result.content[0].text
                if text != "No new messages.":
                    show(agent, "get_messages", {}, text, False)
                    return text
                await asyncio.sleep(0.05)
            raise SystemExit(f"{agent}: no message arrived")

        api = os.path.join(repo, "src", "api", "**")
        await call("backend", "set_status", status="moving the users API to /v2", role="builder")
        await call("backend", "lock", resource=api, reason="renaming /v1/users to /v2/users")
        await call("frontend", "list_peers")
        await call("frontend", "lock", resource=os.path.join(repo, "src", "api", "client.ts"))
        text = await call("frontend", "ask", to="backend", body="Is /v2/users stable enough to switch the UI to it?")
        request_id = text.split("id ", 1)[1].split(")", 1)[0]
        await wait_messages("backend")
        await call("backend", "reply", message_id=request_id, body="Yes: same fields, plus 'avatar'. Switch now.", status="PASS")
        await call("backend", "unlock", resource=api)
        await wait_messages("frontend")
        await call("frontend", "track", message_id=request_id)

        # An agent connected by hooks instead: what Claude Code adds to its next turn.
        subprocess.run([sys.executable, "-m", "sessionmesh", "peers", "--as", "reviewer"], env=env, capture_output=True)
        await call("frontend", "send", to="reviewer", body="UI switched to /v2/users; please review src/ui/users.tsx", urgent=True)
        hook = subprocess.run(
            [sys.executable, "-m", "sessionmesh", "hook", "claude-code", "UserPromptSubmit", "--as", "reviewer"],
            input=json.dumps({"hook_event_name": "UserPromptSubmit", "cwd": repo}),
            env=env,
            capture_output=True,
            text=True,
        )
        print("reviewer's UserPromptSubmit hook prints:")
        print(textwrap.indent(json.dumps(json.loads(hook.stdout), indent=2), "    "))
    subprocess.run([sys.executable, "-m", "sessionmesh", "down"], env=env, capture_output=True)


if __name__ == "__main__":
    asyncio.run(main())
