"""Claude Code: ``.mcp.json`` / ``~/.claude.json``, ``settings.json`` hooks, a skill.

Formats, as documented by Anthropic:

- MCP servers (https://docs.claude.com/en/docs/claude-code/mcp, "MCP installation
  scopes"): project scope is ``.mcp.json`` at the project root, user scope the
  top-level ``mcpServers`` of ``~/.claude.json``; each server is
  ``{"type": "stdio", "command", "args", "env"}``. Claude Code asks once before it
  starts a server from a project's ``.mcp.json``.
- Hooks (https://docs.claude.com/en/docs/claude-code/hooks, "Configuration"):
  ``.claude/settings.json`` (project) or ``~/.claude/settings.json`` (user), as
  ``{"hooks": {Event: [{"matcher", "hooks": [{"type": "command", "command",
  "timeout"}]}]}}``; ``timeout`` is in seconds; ``matcher`` applies to tool events
  only and ``"*"`` matches every tool.
- Skills (https://docs.claude.com/en/docs/claude-code/skills): ``.claude/skills/<name>/SKILL.md``
  in a project, ``~/.claude/skills/<name>/SKILL.md`` for the user.
"""

from __future__ import annotations

from . import jsonconfig, skill
from .changes import FileChange
from .target import Scope, Target

TITLE = "Claude Code"
SERVER = "sessionmesh"
# event → matcher (None: the event takes no matcher)
EVENTS: dict[str, str | None] = {
    "SessionStart": None,
    "UserPromptSubmit": None,
    "PostToolUse": "*",
    "Stop": None,
}
HOOK_TIMEOUT = 10  # seconds; a hook with nothing to say returns at once


def plan(target: Target, *, install: bool) -> list[FileChange | None]:
    """The changes that install (or remove) sessionmesh for Claude Code at ``target``."""
    root = target.root
    mcp = root / (".mcp.json" if target.scope is Scope.PROJECT else ".claude.json")
    settings = root / ".claude" / "settings.json"
    argv = target.mcp_argv()
    entry = {"type": "stdio", "command": argv[0], "args": argv[1:]}
    hooks = {event: _group(target, event, matcher) for event, matcher in EVENTS.items()}
    mcp_label, settings_label = target.label(mcp), target.label(settings)
    if install:
        return [
            jsonconfig.edit(mcp, mcp_label, lambda d: jsonconfig.put_server(d, SERVER, entry, mcp_label)),
            jsonconfig.edit(
                settings, settings_label, lambda d: jsonconfig.put_hooks(d, hooks, settings_label)
            ),
            skill.edit(root / ".claude" / "skills", target.label(root / ".claude" / "skills"), install=True),
        ]
    return [
        jsonconfig.edit(mcp, mcp_label, lambda d: jsonconfig.drop_server(d, SERVER), removing=True),
        jsonconfig.edit(settings, settings_label, jsonconfig.drop_hooks, removing=True),
        skill.edit(root / ".claude" / "skills", target.label(root / ".claude" / "skills"), install=False),
    ]


def notes(target: Target) -> list[str]:
    """What the user should know after installing."""
    out = ["restart Claude Code to load the server and hooks"]
    if target.scope is Scope.USER:
        out.append(
            "a running Claude Code may write ~/.claude.json over this change; if `claude mcp list`"
            " does not show sessionmesh after the restart, run the install again with Claude Code closed"
        )
    else:
        out.append(
            "Claude Code asks once before it starts the project's .mcp.json server: approve 'sessionmesh'"
        )
    return out


def _group(target: Target, event: str, matcher: str | None) -> dict[str, object]:
    handler = {"type": "command", "command": target.hook_command(event), "timeout": HOOK_TIMEOUT}
    return {"matcher": matcher, "hooks": [handler]} if matcher is not None else {"hooks": [handler]}
