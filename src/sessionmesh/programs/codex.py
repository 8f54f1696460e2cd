"""Codex CLI: ``config.toml`` MCP server, ``hooks.json`` hooks, a skill.

Formats, as documented by OpenAI and checked on the real program (0.171.0):

- MCP servers (https://developers.openai.com/codex/mcp; config layers in
  https://developers.openai.com/codex/config-basic): a ``[mcp_servers.<name>]`` table
  in ``$CODEX_HOME/config.toml`` (``~/.codex``), or in a project's
  ``.codex/config.toml``, which Codex loads only when the project is trusted.
  - Codex starts a server with a filtered environment (`PASSED_THROUGH` plus the
    table's ``env`` and ``env_vars``): without ``env_vars`` the server would not see
    ``MESH_HOME``, and would join another broker than the agent's shell uses.
  - ``default_tools_approval_mode = "approve"`` lets the mesh tools run without a
    prompt; without it ``codex exec`` fails every call ("requires approval, but
    approval policy is never").
- Hooks (https://developers.openai.com/codex/hooks): ``$CODEX_HOME/hooks.json`` or
  ``<repo>/.codex/hooks.json``, the same shape as Claude Code's. ``SessionStart``,
  ``UserPromptSubmit`` and ``PostToolUse`` add ``additionalContext``; ``Stop`` can
  block the stop with a reason. Codex runs a hook only once a person has trusted it
  (the ``/hooks`` screen records ``[hooks.state."<key>"] trusted_hash`` in
  ``$CODEX_HOME/config.toml``); until then ``codex exec`` skips it without a word.
- Waking an idle session: the SessionStart hook starts a waiter (`sessionmesh.wake`)
  beside the process that ran it, which hands each burst of mail to ``codex queue
  --thread SESSION``; Codex's app-server then starts the turn. The terminal UI's
  app-server (a daemon) outlives the UI, and the waiter lives as long as it does;
  a new session of the same agent ends the waiter of the old one.
- Skills (https://developers.openai.com/codex/skills): ``.agents/skills/<name>/SKILL.md``
  in a repository, ``~/.agents/skills/<name>/SKILL.md`` for the user.
"""

from __future__ import annotations

import os

from . import Finding, HookFormat, Launch, Server, command_argvs, command_findings, process_argv

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:  # pathlib only where a function needs it: a hook imports this module
    from pathlib import Path
    from typing import Any

    from ..installers.changes import FileChange
    from ..installers.target import Target

TITLE = "Codex"
LAUNCH = Launch("codex", (), ("exec", "--skip-git-repo-check"))
SERVER = "sessionmesh"
HOOKS = HookFormat(
    frozenset({"SessionStart", "UserPromptSubmit", "PostToolUse"}),
    "Stop",
    "block",
    "SessionStart",
    frozenset({"PostToolUse", "Stop"}),
    turn_start=frozenset({"UserPromptSubmit"}),
    waiter=True,
    pre_tool="PreToolUse",
)
EVENTS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop")
HOOK_TIMEOUT = 10  # seconds
# what Codex passes to an MCP server of its own accord (codex-rs rmcp-client)
PASSED_THROUGH = ("HOME", "LOGNAME", "PATH", "SHELL", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ")
# what the server needs from the agent's environment to reach the agent's broker
MESH_ENV = ("MESH_HOME", "MESH_URL", "MESH_TOKEN", "MESH_NAME", "XDG_STATE_HOME")


def headless(agent_pid: int) -> bool:
    """Whether the session is ``codex exec`` (no prompt to wake it at)."""
    argv = process_argv(agent_pid)
    return len(argv) > 1 and argv[1] in ("exec", "e")


ONE_WAITER_PER_NAME = True  # the daemon keeps old sessions' threads: only the newest is woken


def hand_over(text: str, session: str, agent_pid: int) -> None:
    """Wake the idle session with ``text``: ``codex queue`` gives it to the session's
    thread, and Codex's app-server (the process that ran the hooks) starts the turn.
    Runs the same Codex binary as that process."""
    import subprocess

    from ..wake import WOKE

    try:
        codex = os.readlink(f"/proc/{agent_pid}/exe")
    except OSError:
        codex = "codex"
    done = subprocess.run(
        [codex, "queue", "--thread", session, "--message", f"{WOKE}\n\n{text}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise OSError(f"codex queue failed ({done.returncode}): {done.stderr.strip()[-300:]}")


def codex_home() -> Path:
    from pathlib import Path

    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")


def plan(target: Target, *, install: bool) -> list[FileChange | None]:
    """The changes that install (or remove) sessionmesh for Codex at ``target``."""
    from ..installers import jsonconfig, skill, tomlconfig

    config, hooks_file = _config(target), target.root / ".codex" / "hooks.json"
    argv = target.mcp_argv()
    entry: dict[str, Any] | None = None
    if install:
        entry = {
            "command": argv[0],
            "args": argv[1:],
            "env_vars": list(MESH_ENV),
            "default_tools_approval_mode": "approve",
        }
    hooks = {
        event: {
            "hooks": [{"type": "command", "command": target.hook_command(event), "timeout": HOOK_TIMEOUT}]
        }
        for event in EVENTS
    }
    hooks_label = target.label(hooks_file)

    def put_hooks(doc: jsonconfig.Doc) -> None:
        jsonconfig.put_hooks(doc, hooks, hooks_label)

    skills = target.root / ".agents" / "skills"
    return [
        tomlconfig.edit_server(config, target.label(config), SERVER, entry),
        jsonconfig.edit(
            hooks_file, hooks_label, put_hooks if install else jsonconfig.drop_hooks, removing=not install
        ),
        skill.edit(skills, target.label(skills), install=install),
    ]


def notes(target: Target) -> list[str]:
    """What the user should know after installing."""
    from ..installers.target import Scope

    out = [
        "restart Codex, then trust the sessionmesh hooks once in Codex's /hooks screen:"
        " Codex skips untrusted hooks without a word ('mesh doctor codex' tells whether they are)",
        "the SessionStart hook starts a waiter that wakes the idle session (codex queue); it lives as long"
        " as Codex's app-server daemon, which outlives the terminal UI ('codex app-server daemon stop' ends both)",
    ]
    if target.scope is Scope.PROJECT:
        out.append(
            f"Codex reads {target.root}/.codex/ only in a trusted project: trust it when Codex asks,"
            " or install with --user"
        )
    return out


def server(target: Target) -> Server:
    """The sessionmesh server table, with the environment Codex would give it."""
    from ..installers import tomlconfig

    path = _config(target)
    entry = tomlconfig.read_server(path, target.label(path), SERVER)
    if entry is None:
        return Server(None, {}, target.label(path))
    names = [*PASSED_THROUGH, *(v for v in entry.get("env_vars") or [] if isinstance(v, str))]
    env = {k: os.environ[k] for k in names if k in os.environ}
    env.update({k: str(v) for k, v in (entry.get("env") or {}).items()})
    return Server([entry["command"], *entry.get("args", [])], env, target.label(path))


def checks(target: Target) -> list[Finding]:
    """Approval of the tools, project trust, and the person's trust of the hooks."""
    from ..installers import jsonconfig, tomlconfig
    from ..installers.target import Scope

    found: list[Finding] = []
    path = _config(target)
    entry = tomlconfig.read_server(path, target.label(path), SERVER) or {}
    if entry.get("default_tools_approval_mode") == "approve":
        found.append(Finding("ok", f"{target.label(path)} approves the mesh tools"))
    else:
        found.append(
            Finding(
                "fail",
                f"{target.label(path)} does not approve the mesh tools: codex exec fails each call",
                target.reinstall(),
            )
        )
    user = tomlconfig.read(codex_home() / "config.toml", "~/.codex/config.toml")
    if target.scope is Scope.PROJECT:
        trust = ((user.get("projects") or {}).get(str(target.root)) or {}).get("trust_level")
        if trust == "trusted":
            found.append(Finding("ok", f"Codex trusts the project {target.root}"))
        else:
            found.append(
                Finding(
                    "fail",
                    f"Codex does not trust {target.root}, so it ignores its .codex/ folder",
                    "start codex in the project and trust it, or run: codex exec --trust …",
                )
            )
    hooks_file = target.root / ".codex" / "hooks.json"
    doc = jsonconfig.parse(jsonconfig.read_text(hooks_file), target.label(hooks_file))
    missing = [e for e in EVENTS if not jsonconfig.has_our_hook(doc, e)]
    if missing:
        found.append(
            Finding(
                "fail",
                f"{target.label(hooks_file)} has no sessionmesh hook on {', '.join(missing)}",
                target.reinstall(),
            )
        )
        return found
    found += command_findings(
        f"{target.label(hooks_file)} (hooks)",
        command_argvs(jsonconfig.our_commands(doc)),
        os.environ.get("PATH"),
        target.reinstall(),
    )
    for pid in _daemons():
        found.append(
            Finding(
                "ok",
                f"Codex's app-server daemon runs (pid {pid}): it keeps the sessions' mesh waiter and"
                " mesh mcp alive after the terminal UI exits; 'codex app-server daemon stop' ends them",
            )
        )
    trusted = _trusted_hooks(user, hooks_file)
    if trusted >= len(EVENTS):
        found.append(
            Finding("ok", f"the sessionmesh hooks are trusted in Codex ({trusted} of {len(EVENTS)})")
        )
    else:
        found.append(
            Finding(
                "fail",
                f"Codex has trusted {trusted} of the {len(EVENTS)} sessionmesh hooks; it skips the rest",
                "start codex, open /hooks and trust the sessionmesh hooks",
            )
        )
    return found


def _daemons() -> list[int]:
    """Codex app-server daemons of this CODEX_HOME that are running."""
    from pathlib import Path

    home = str(codex_home())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"app-server" in argv
            and b"--managed-daemon" in argv
            and argv[0].decode(errors="replace").startswith(home)
        ):
            found.append(int(proc.name))
    return found


def _trusted_hooks(user_config: dict[str, Any], hooks_file: Path) -> int:
    """How many hooks of ``hooks_file`` the person trusted (``hooks.state`` keys name
    the file the hook is defined in)."""
    state = (user_config.get("hooks") or {}).get("state") or {}
    where = str(hooks_file)
    return sum(
        1 for key, v in state.items() if where in key and isinstance(v, dict) and v.get("trusted_hash")
    )


def _config(target: Target) -> Path:
    from ..installers.target import Scope

    return (
        (target.root / ".codex" / "config.toml")
        if target.scope is Scope.PROJECT
        else codex_home() / "config.toml"
    )
