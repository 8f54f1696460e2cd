"""Claude Code: ``.mcp.json`` / ``~/.claude.json``, ``settings.json`` hooks and
permissions, a skill.

Formats, as documented by Anthropic and checked on the real program (2.1.332):

- MCP servers (https://docs.claude.com/en/docs/claude-code/mcp, "MCP installation
  scopes"): project scope is ``.mcp.json`` at the project root, user scope the
  top-level ``mcpServers`` of ``~/.claude.json``; each server is
  ``{"type": "stdio", "command", "args", "env"}``. The server gets Claude Code's
  whole environment. Claude Code asks once before it starts a server from a
  project's ``.mcp.json``.
- Hooks (https://docs.claude.com/en/docs/claude-code/hooks, "Configuration"):
  ``.claude/settings.json`` (project) or ``~/.claude/settings.json`` (user), as
  ``{"hooks": {Event: [{"matcher", "hooks": [{"type": "command", "command",
  "timeout"}]}]}}``; ``timeout`` is in seconds; ``matcher`` applies to tool events
  only and ``"*"`` matches every tool.
- Permissions (https://docs.claude.com/en/docs/claude-code/iam, "Tool-specific
  permission rules"): ``permissions.allow`` in the same settings file; the rule
  ``mcp__sessionmesh`` allows every tool of the server, so neither a headless run
  (``claude -p``, which denies what is not allowed) nor a person is stopped at
  each mesh tool.
- Skills (https://docs.claude.com/en/docs/claude-code/skills): ``.claude/skills/<name>/SKILL.md``
  in a project, ``~/.claude/skills/<name>/SKILL.md`` for the user.
"""

from __future__ import annotations

import os

from . import Finding, HookFormat, Launch, Server, command_argvs, command_findings, json_server, process_argv

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:  # pathlib only where a function needs it: a hook imports this module
    from pathlib import Path

    from ..installers.changes import FileChange
    from ..installers.target import Target

TITLE = "Claude Code"
# The project's .mcp.json server is approved by the person who spawns it (Claude Code
# otherwise asks in its UI first); --settings adds to the settings files.
LAUNCH = Launch("claude", ("--settings", '{"enabledMcpjsonServers": ["sessionmesh"]}'), ("-p",))
SERVER = "sessionmesh"
PERMISSION = f"mcp__{SERVER}"  # every tool of the server
HOOKS = HookFormat(
    frozenset({"SessionStart", "UserPromptSubmit", "PostToolUse"}),
    "Stop",
    "block",
    "SessionStart",
    frozenset({"PostToolUse", "Stop"}),
    turn_start=frozenset({"UserPromptSubmit"}),
    pre_tool="PreToolUse",
    notice_event="Notification",
    waiting_notices=frozenset({"permission_prompt", "elicitation_dialog"}),
)
# event → matcher (None: the event takes no matcher)
EVENTS: dict[str, str | None] = {
    "SessionStart": None,
    "UserPromptSubmit": None,
    "PreToolUse": "*",
    "PostToolUse": "*",
    "Notification": "permission_prompt|elicitation_dialog",
    "Stop": None,
}
HOOK_TIMEOUT = 10  # seconds; a hook with nothing to say returns at once
# The waiter (wake.py) runs as an asyncRewake hook, armed when a session starts and
# after each turn; exit 2 wakes the model with what it wrote. Claude Code kills a hook
# at its timeout, so this one outlasts any idle time (a day), and ends by itself when
# its session's process does.
WAKE_EVENTS = ("SessionStart", "Stop")
WAKE_TIMEOUT = 86_400
REWAKE_MESSAGE = (
    "sessionmesh woke you: new messages from other agents arrived while you were idle."  # = wake.WOKE
)
REWAKE_SUMMARY = "sessionmesh: new messages from peers"


def headless(agent_pid: int) -> bool:
    """Whether the session runs headless (``claude -p``): there an ``asyncRewake`` hook
    runs in the foreground and would keep ``claude -p`` from exiting, and nobody waits
    at a prompt to be woken."""
    argv = process_argv(agent_pid)
    return any(a in ("-p", "--print") or a.startswith("--print=") for a in argv[1:])


def plan(target: Target, *, install: bool) -> list[FileChange | None]:
    """The changes that install (or remove) sessionmesh for Claude Code at ``target``."""
    from ..installers import jsonconfig, skill

    mcp, settings = _mcp_file(target), target.root / ".claude" / "settings.json"
    argv = target.mcp_argv()
    entry = {"type": "stdio", "command": argv[0], "args": argv[1:]}
    hooks = {event: _group(target, event, matcher) for event, matcher in EVENTS.items()}
    mcp_label, settings_label = target.label(mcp), target.label(settings)
    skills = target.root / ".claude" / "skills"

    def put_settings(doc: jsonconfig.Doc) -> None:
        jsonconfig.put_hooks(doc, hooks, settings_label)
        jsonconfig.put_item(doc, ("permissions", "allow"), PERMISSION, settings_label)

    def drop_settings(doc: jsonconfig.Doc) -> None:
        jsonconfig.drop_hooks(doc)
        jsonconfig.drop_item(doc, ("permissions", "allow"), PERMISSION)

    if install:
        return [
            jsonconfig.edit(mcp, mcp_label, lambda d: jsonconfig.put_server(d, SERVER, entry, mcp_label)),
            jsonconfig.edit(settings, settings_label, put_settings),
            skill.edit(skills, target.label(skills), install=True),
        ]
    return [
        jsonconfig.edit(mcp, mcp_label, lambda d: jsonconfig.drop_server(d, SERVER), removing=True),
        jsonconfig.edit(settings, settings_label, drop_settings, removing=True),
        skill.edit(skills, target.label(skills), install=False),
    ]


def notes(target: Target) -> list[str]:
    """What the user should know after installing."""
    from ..installers.target import Scope

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


def server(target: Target) -> Server:
    """The sessionmesh server entry in the MCP config, with Claude Code's environment
    (all of it)."""
    path = _mcp_file(target)
    return json_server(path, target.label(path), SERVER, dict(os.environ))


def checks(target: Target) -> list[Finding]:
    """Hooks and the permission rule in settings.json."""
    from ..installers import jsonconfig

    path = target.root / ".claude" / "settings.json"
    label = target.label(path)
    doc = jsonconfig.parse(jsonconfig.read_text(path), label)
    missing = [e for e in EVENTS if not jsonconfig.has_our_hook(doc, e)]
    found = [
        Finding("fail", f"{label} has no sessionmesh hook on {', '.join(missing)}", target.reinstall())
        if missing
        else Finding("ok", f"{label} runs the sessionmesh hooks on {', '.join(EVENTS)}")
    ]
    found += command_findings(
        f"{label} (hooks)",
        command_argvs(jsonconfig.our_commands(doc)),
        os.environ.get("PATH"),
        target.reinstall(),
    )
    allowed = (doc.get("permissions") or {}).get("allow") or []
    if PERMISSION in allowed or "mcp__sessionmesh__*" in allowed:
        found.append(Finding("ok", f"{label} allows the mesh tools ({PERMISSION})"))
    else:
        found.append(
            Finding(
                "fail",
                f"{label} does not allow the mesh tools: each call is denied or asked",
                target.reinstall(),
            )
        )
    return found


def _mcp_file(target: Target) -> Path:
    from ..installers.target import Scope

    return target.root / (".mcp.json" if target.scope is Scope.PROJECT else ".claude.json")


def _group(target: Target, event: str, matcher: str | None) -> dict[str, object]:
    handlers: list[dict[str, object]] = [
        {"type": "command", "command": target.hook_command(event), "timeout": HOOK_TIMEOUT}
    ]
    if event in WAKE_EVENTS:
        handlers.append(
            {
                "type": "command",
                "command": target.hook_command("Wake"),
                "asyncRewake": True,
                "timeout": WAKE_TIMEOUT,
                "rewakeMessage": REWAKE_MESSAGE,
                "rewakeSummary": REWAKE_SUMMARY,
            }
        )
    return {"matcher": matcher, "hooks": handlers} if matcher is not None else {"hooks": handlers}
