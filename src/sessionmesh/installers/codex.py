"""Codex CLI: ``config.toml`` MCP server, ``hooks.json`` hooks, a skill.

Formats, as documented by OpenAI:

- MCP servers (https://developers.openai.com/codex/mcp; config layers in
  https://developers.openai.com/codex/config-basic): a ``[mcp_servers.<name>]`` table
  with ``command``, ``args``, ``env`` in ``~/.codex/config.toml``, or in a project's
  ``.codex/config.toml``, which Codex loads only when the project is trusted.
- Hooks (https://developers.openai.com/codex/hooks): ``~/.codex/hooks.json`` or
  ``<repo>/.codex/hooks.json``, the same shape as Claude Code's:
  ``{"hooks": {Event: [{"matcher", "hooks": [{"type": "command", "command",
  "timeout"}]}]}}`` with ``timeout`` in seconds. ``SessionStart``,
  ``UserPromptSubmit`` and ``PostToolUse`` can add ``additionalContext`` to the
  turn; ``Stop`` can block the stop with a reason. A group without ``matcher``
  matches everything. Hooks are on by default in current Codex; older releases need
  ``[features] codex_hooks = true``.
- Skills (https://developers.openai.com/codex/skills): ``.agents/skills/<name>/SKILL.md``
  in a repository, ``~/.agents/skills/<name>/SKILL.md`` for the user.
"""

from __future__ import annotations

from . import jsonconfig, skill, tomlconfig
from .changes import FileChange
from .target import Scope, Target

TITLE = "Codex"
SERVER = "sessionmesh"
EVENTS = ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop")
HOOK_TIMEOUT = 10  # seconds


def plan(target: Target, *, install: bool) -> list[FileChange | None]:
    """The changes that install (or remove) sessionmesh for Codex at ``target``."""
    root = target.root
    config = root / ".codex" / "config.toml"
    hooks_file = root / ".codex" / "hooks.json"
    argv = target.mcp_argv()
    entry = {"command": argv[0], "args": argv[1:]} if install else None
    hooks = {
        event: {
            "hooks": [{"type": "command", "command": target.hook_command(event), "timeout": HOOK_TIMEOUT}]
        }
        for event in EVENTS
    }
    hooks_label = target.label(hooks_file)

    def put_hooks(doc: jsonconfig.Doc) -> None:
        jsonconfig.put_hooks(doc, hooks, hooks_label)

    return [
        tomlconfig.edit_server(config, target.label(config), SERVER, entry),
        jsonconfig.edit(
            hooks_file, hooks_label, put_hooks if install else jsonconfig.drop_hooks, removing=not install
        ),
        skill.edit(root / ".agents" / "skills", target.label(root / ".agents" / "skills"), install=install),
    ]


def notes(target: Target) -> list[str]:
    """What the user should know after installing."""
    out = [
        "restart Codex to load the server and hooks; Codex releases before hooks were on by"
        " default need [features] codex_hooks = true in ~/.codex/config.toml"
    ]
    if target.scope is Scope.PROJECT:
        out.append(
            f"Codex reads {target.root}/.codex/ only in a trusted project: trust it when Codex asks,"
            " or install with --user"
        )
    return out
