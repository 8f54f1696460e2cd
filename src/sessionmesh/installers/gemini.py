"""Gemini CLI: ``settings.json`` MCP server and hooks, a skill.

Formats, as documented by Google (google-gemini/gemini-cli ``docs/``):

- Settings files (https://geminicli.com/docs/cli/configuration): ``.gemini/settings.json``
  in the project, ``~/.gemini/settings.json`` for the user.
- MCP servers (https://geminicli.com/docs/tools/mcp-server): ``{"mcpServers":
  {name: {"command", "args", "env", "cwd", "timeout", "trust"}}}`` in settings.json.
- Hooks (https://geminicli.com/docs/hooks, https://geminicli.com/docs/hooks/reference):
  ``{"hooks": {Event: [{"matcher", "hooks": [{"name", "type": "command",
  "command", "timeout"}]}]}}`` in settings.json, ``timeout`` in milliseconds,
  ``"*"`` matches every tool. ``SessionStart``, ``BeforeAgent`` and ``AfterTool``
  can add ``additionalContext`` to the turn; ``AfterAgent`` can reject the answer and
  send a reason back as a new prompt. Some releases run hooks only after the hooks
  system is switched on (``/settings``, "Enable Hooks System").
- Skills (https://geminicli.com/docs/cli/using-agent-skills): ``.gemini/skills/<name>/SKILL.md``
  in the workspace, ``~/.gemini/skills/<name>/SKILL.md`` for the user. Gemini also
  reads ``.agents/skills``, where Codex's copy goes; the two copies are the same
  skill under the same name, so Gemini uses one.
"""

from __future__ import annotations

from . import jsonconfig, skill
from .changes import FileChange
from .target import Target

TITLE = "Gemini CLI"
SERVER = "sessionmesh"
EVENTS: dict[str, str | None] = {
    "SessionStart": None,
    "BeforeAgent": None,
    "AfterTool": "*",
    "AfterAgent": None,
}
HOOK_TIMEOUT_MS = 10_000


def plan(target: Target, *, install: bool) -> list[FileChange | None]:
    """The changes that install (or remove) sessionmesh for Gemini CLI at ``target``."""
    root = target.root
    settings = root / ".gemini" / "settings.json"
    label = target.label(settings)
    argv = target.mcp_argv()
    entry = {"command": argv[0], "args": argv[1:]}
    hooks = {event: _group(target, event, matcher) for event, matcher in EVENTS.items()}

    def put(doc: jsonconfig.Doc) -> None:
        jsonconfig.put_server(doc, SERVER, entry, label)
        jsonconfig.put_hooks(doc, hooks, label)

    def drop(doc: jsonconfig.Doc) -> None:
        jsonconfig.drop_server(doc, SERVER)
        jsonconfig.drop_hooks(doc)

    return [
        jsonconfig.edit(settings, label, put if install else drop, removing=not install),
        skill.edit(root / ".gemini" / "skills", target.label(root / ".gemini" / "skills"), install=install),
    ]


def notes(target: Target) -> list[str]:
    """What the user should know after installing."""
    return [
        "restart Gemini CLI to load the server and hooks; if /hooks panel shows the hooks"
        " system disabled, enable it in /settings (Advanced, 'Enable Hooks System')"
    ]


def _group(target: Target, event: str, matcher: str | None) -> dict[str, object]:
    handler = {
        "name": f"sessionmesh-{event}",
        "type": "command",
        "command": target.hook_command(event),
        "timeout": HOOK_TIMEOUT_MS,
    }
    return {"matcher": matcher, "hooks": [handler]} if matcher is not None else {"hooks": [handler]}
