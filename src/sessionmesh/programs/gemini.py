"""Gemini CLI: ``settings.json`` MCP server and hooks, a skill, and folder trust.

Formats, as documented by Google (google-gemini/gemini-cli ``docs/``) and checked on
the real program (0.61.0):

- Settings files (https://geminicli.com/docs/cli/configuration): ``.gemini/settings.json``
  in the project, ``~/.gemini/settings.json`` for the user.
- MCP servers (https://geminicli.com/docs/tools/mcp-server): ``{"mcpServers":
  {name: {"command", "args", "env", "cwd", "timeout", "trust"}}}`` in settings.json.
  ``"trust": true`` runs the server's tools without a confirmation each time.
- Hooks (https://geminicli.com/docs/hooks, https://geminicli.com/docs/hooks/reference):
  ``{"hooks": {Event: [{"matcher", "hooks": [{"name", "type": "command",
  "command", "timeout"}]}]}}`` in settings.json, ``timeout`` in milliseconds,
  ``"*"`` matches every tool. ``SessionStart``, ``BeforeAgent`` and ``AfterTool``
  can add ``additionalContext`` to the turn; ``AfterAgent`` can reject the answer and
  send a reason back as a new prompt. ``hooksConfig.enabled`` (default true) is the
  switch for all of them.
- Folder trust (https://geminicli.com/docs/cli/trusted-folders): with
  ``security.folderTrust.enabled`` (the default), Gemini loads a project's
  ``.gemini/settings.json`` (its servers and hooks) only in a trusted folder:
  ``~/.gemini/trustedFolders.json`` (or ``$GEMINI_CLI_TRUSTED_FOLDERS_PATH``) maps
  paths to ``TRUST_FOLDER``, ``TRUST_PARENT`` (the path's parent) or
  ``DO_NOT_TRUST``, the longest matching path deciding; ``GEMINI_CLI_TRUST_WORKSPACE``
  overrides it. In an untrusted folder the server shows "Disabled" and nothing says
  why, so the installer and ``mesh doctor gemini`` do.
- Skills (https://geminicli.com/docs/cli/using-agent-skills): ``.gemini/skills/<name>/SKILL.md``
  in the workspace, ``~/.gemini/skills/<name>/SKILL.md`` for the user. Gemini also
  reads ``.agents/skills``, where Codex's copy goes; the two copies are the same
  skill under the same name, so Gemini uses one.
"""

from __future__ import annotations

import os

from ..plainjson import loads
from . import Finding, HookFormat, Launch, Server, command_argvs, command_findings, json_server

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:  # pathlib only where a function needs it: a hook imports this module
    from pathlib import Path

    from ..installers.changes import FileChange
    from ..installers.target import Target

TITLE = "Gemini CLI"
LAUNCH = Launch("gemini", (), ("-p",), bridge=True)  # it cannot wake itself
SERVER = "sessionmesh"
HOOKS = HookFormat(
    frozenset({"SessionStart", "BeforeAgent", "AfterTool"}),
    "AfterAgent",
    "deny",
    "SessionStart",
    frozenset({"AfterTool", "AfterAgent"}),
    turn_start=frozenset({"BeforeAgent"}),
    escapes="<>",  # hook context is wrapped in <hook_context>, with < and > escaped inside
    pre_tool="BeforeTool",
    deny_decision="deny",
    notice_event="Notification",
    waiting_notices=frozenset({"ToolPermission"}),
)
EVENTS: dict[str, str | None] = {
    "SessionStart": None,
    "BeforeAgent": None,
    "BeforeTool": "*",
    "Notification": None,
    "AfterTool": "*",
    "AfterAgent": None,
}
HOOK_TIMEOUT_MS = 10_000


def plan(target: Target, *, install: bool) -> list[FileChange | None]:
    """The changes that install (or remove) sessionmesh for Gemini CLI at ``target``."""
    from ..installers import jsonconfig, skill

    settings = target.root / ".gemini" / "settings.json"
    label = target.label(settings)
    argv = target.mcp_argv()
    entry = {"command": argv[0], "args": argv[1:], "trust": True}
    hooks = {event: _group(target, event, matcher) for event, matcher in EVENTS.items()}

    def put(doc: jsonconfig.Doc) -> None:
        jsonconfig.put_server(doc, SERVER, entry, label)
        jsonconfig.put_hooks(doc, hooks, label)

    def drop(doc: jsonconfig.Doc) -> None:
        jsonconfig.drop_server(doc, SERVER)
        jsonconfig.drop_hooks(doc)

    skills = target.root / ".gemini" / "skills"
    return [
        jsonconfig.edit(settings, label, put if install else drop, removing=not install),
        skill.edit(skills, target.label(skills), install=install),
    ]


def notes(target: Target) -> list[str]:
    """What the user should know after installing."""
    from ..installers.target import Scope

    out = [
        "restart Gemini CLI to load the server and hooks",
        "Gemini CLI cannot be woken by a message on its own: run it in tmux with"
        f" 'mesh bridge tmux --wake --pane PANE{' ' + ' '.join(target.extra) if target.extra else ''}' beside it",
    ]
    if target.scope is Scope.PROJECT and trusted(target.root) is not True:
        out.append(
            f"Gemini CLI does not trust {target.root}, so it ignores .gemini/settings.json there"
            " (the server shows 'Disabled'): trust the folder when Gemini asks, or with /permissions"
        )
    return out


def gemini_home() -> Path:
    from pathlib import Path

    return Path(os.environ.get("GEMINI_CLI_HOME") or Path.home()) / ".gemini"


def trusted(folder: Path) -> bool | None:
    """Whether Gemini CLI trusts ``folder`` (None: it has not been asked; it then
    treats the folder as untrusted and asks in its terminal UI)."""
    flag = os.environ.get("GEMINI_CLI_TRUST_WORKSPACE")
    if os.environ.get("GEMINI_RESTRICTED_MODE") == "true" or flag == "false":
        return False
    if flag == "true":
        return True
    user = _json(gemini_home() / "settings.json")
    if ((user.get("security") or {}).get("folderTrust") or {}).get("enabled") is False:
        return True
    from pathlib import Path

    rules = _json(
        Path(os.environ.get("GEMINI_CLI_TRUSTED_FOLDERS_PATH") or gemini_home() / "trustedFolders.json")
    )
    here = os.path.realpath(folder)
    best, level = -1, None
    for rule, value in rules.items():
        base = os.path.dirname(rule) if value == "TRUST_PARENT" else rule
        real = os.path.realpath(base)
        if (here == real or here.startswith(real.rstrip("/") + "/")) and len(rule) > best:
            best, level = len(rule), value
    if level == "DO_NOT_TRUST":
        return False
    return True if level in ("TRUST_FOLDER", "TRUST_PARENT") else None


def server(target: Target) -> Server:
    """The sessionmesh server entry of settings.json, with Gemini CLI's environment
    (all of it)."""
    path = target.root / ".gemini" / "settings.json"
    return json_server(path, target.label(path), SERVER, dict(os.environ))


def checks(target: Target) -> list[Finding]:
    """Folder trust, hooks present and switched on."""
    from ..installers import jsonconfig
    from ..installers.target import Scope

    found: list[Finding] = []
    if target.scope is Scope.PROJECT:
        trust = trusted(target.root)
        if trust:
            found.append(Finding("ok", f"Gemini CLI trusts {target.root}"))
        else:
            why = "marks it untrusted" if trust is False else "has not been told to trust it"
            found.append(
                Finding(
                    "fail",
                    f"Gemini CLI {why}: it ignores {target.root}/.gemini/settings.json (server 'Disabled', no hooks)",
                    "start gemini in the folder and trust it, or use /permissions; or install with --user",
                )
            )
    path = target.root / ".gemini" / "settings.json"
    label = target.label(path)
    doc = jsonconfig.parse(jsonconfig.read_text(path), label)
    missing = [e for e in EVENTS if not jsonconfig.has_our_hook(doc, e)]
    if missing:
        found.append(
            Finding("fail", f"{label} has no sessionmesh hook on {', '.join(missing)}", target.reinstall())
        )
    else:
        found.append(Finding("ok", f"{label} runs the sessionmesh hooks on {', '.join(EVENTS)}"))
        found += command_findings(
            f"{label} (hooks)",
            command_argvs(jsonconfig.our_commands(doc)),
            os.environ.get("PATH"),
            target.reinstall(),
        )
    for settings in (gemini_home() / "settings.json", path):
        if ((_json(settings).get("hooksConfig") or {}).get("enabled")) is False:
            found.append(
                Finding(
                    "fail",
                    f"hooks are switched off in {settings} (hooksConfig.enabled)",
                    "set hooksConfig.enabled to true, or use /settings",
                )
            )
    return found


def _json(path: Path) -> dict[str, object]:
    try:
        data = loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _group(target: Target, event: str, matcher: str | None) -> dict[str, object]:
    handler = {
        "name": f"sessionmesh-{event}",
        "type": "command",
        "command": target.hook_command(event),
        "timeout": HOOK_TIMEOUT_MS,
    }
    return {"matcher": matcher, "hooks": [handler]} if matcher is not None else {"hooks": [handler]}
