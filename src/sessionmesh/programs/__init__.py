"""The agent programs sessionmesh supports: one module each, behind one interface.

Everything sessionmesh knows about a program lives in its module, so adding a program
is one new file (and its tests):

- ``TITLE``: its name for people;
- ``HOOKS``: a `HookFormat`, its hook events and the output each expects (read by
  ``mesh hook`` on every tool call, so the modules import nothing heavy at the top);
- ``plan(target, *, install)``: the file changes that install or remove sessionmesh
  (``mesh install`` / ``uninstall``);
- ``notes(target)``: what a person must still do after installing;
- ``server(target)``: the MCP server entry as the program would read it back from
  its config, with the environment the program would give it (``mesh doctor``);
- ``checks(target)``: the program's own findings for ``mesh doctor`` (trust,
  permissions, hooks switched on, the hooks' commands: `command_findings`);
- for a program woken by a waiter (`sessionmesh.wake`): ``headless(agent_pid)``
  (a run with no prompt to wake at) and ``hand_over(text, session, agent_pid)``;
- ``LAUNCH``: a `Launch`, how ``mesh spawn`` starts it (`sessionmesh.spawn`).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from ..record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:
    from typing import Any

NAMES = ("claude-code", "codex", "gemini", "pi")


@record
class HookFormat:
    """One program's hook events: which add context, which one is the stop, and which
    come only after a model response (and so prove the model had what an earlier
    event of the session printed; see `sessionmesh.shown`)."""

    context_events: frozenset[str]
    stop_event: str
    stop_decision: str  # the decision value that makes the agent go on
    start_event: str  # a session (re)starts: what it was shown before is shown again
    after_model: frozenset[str]  # events that follow a model response in the same session
    turn_start: frozenset[str] = frozenset()  # events that begin a turn (the agent is working)
    waiter: bool = False  # the start event starts a detached waiter (`mesh wake TOOL`)
    escapes: str = ""  # characters the program turns into HTML entities on their way to the model
    pre_tool: str = ""  # the event before each tool call, which can refuse the call (pair mode's stop)
    deny_decision: str = ""  # that refusal as a top-level decision; "" for permissionDecision deny
    notice_event: str = ""  # the program tells its user something (a notification)
    waiting_notices: frozenset[str] = frozenset()  # its ``notification_type``s that wait for the user

    def note(self, text: str) -> str:
        """``text`` with a line telling the model how to read what the program escaped."""
        hit = [c for c in self.escapes if c in text]
        if not hit:
            return text
        # in words: the note must survive the same escaping
        names = {
            "<": ("&lt;", "a less-than sign"),
            ">": ("&gt;", "a greater-than sign"),
            "&": ("&amp;", "an ampersand"),
        }
        pairs = ", ".join(f"{names[c][0]} stands for {names[c][1]}" for c in hit)
        return f"{text}\n(This program escapes the text above: {pairs}.)"

    def deny(self, event: str, reason: str) -> dict[str, Any]:
        """Refuse the tool call of ``event`` (the pre-tool event); the model reads ``reason``."""
        reason = self.note(reason)
        if self.deny_decision:
            return {"decision": self.deny_decision, "reason": reason}
        return {
            "hookSpecificOutput": {
                "hookEventName": event,
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }

    def render(self, event: str, text: str) -> dict[str, Any]:
        text = self.note(text)
        if event == self.stop_event:
            return {"decision": self.stop_decision, "reason": text}
        return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}


@record
class Launch:
    """How ``mesh spawn`` starts a program: its executable's name, the arguments of its
    terminal UI, those of a one-shot run on a prompt, and whether it needs ``mesh
    bridge tmux --wake`` beside it to be woken when idle."""

    executable: str
    interactive: tuple[str, ...]
    headless: tuple[str, ...]  # the prompt follows them
    bridge: bool = False


@record
class Server:
    """The MCP server a program would start: its command line and environment, or
    ``None`` in ``argv`` when the program's config has no sessionmesh entry."""

    argv: list[str] | None
    env: dict[str, str]
    source: str  # the config file it was read from, as shown to people


@record
class Finding:
    """One line of ``mesh doctor``: ``ok``, ``warn`` or ``fail``, what was seen, and
    (unless ok) what to do about it."""

    level: str
    what: str
    fix: str = ""


def process_argv(pid: int) -> list[str]:
    """The command line of process ``pid`` ([] when it is gone): how a program's
    module tells a headless run from its terminal UI."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def command_findings(where: str, argvs: list[list[str]], path: str | None, fix: str) -> list[Finding]:
    """Whether the program each command line starts (its first word) exists and can be
    run, one finding per program. A bare name is looked up on ``path`` (the ``PATH``
    the agent program passes on), and even when found it is a warning: from a shell
    with another ``PATH`` the agent gets no server and no hooks, and nothing says so."""
    import shutil

    found = []
    for program in dict.fromkeys(argv[0] for argv in argvs if argv):
        if os.sep not in program:
            hit = shutil.which(program, path=path)
            if hit is None:
                found.append(
                    Finding("fail", f"{where} runs '{program}', which is not on PATH: it does not start", fix)
                )
            else:
                found.append(
                    Finding(
                        "warn",
                        f"{where} runs '{program}' by name (here {hit}): started from a shell"
                        " without it on PATH, the agent gets no server and no hooks",
                        fix,
                    )
                )
        elif not os.path.isfile(program):
            found.append(Finding("fail", f"{where} runs {program}, which does not exist", fix))
        elif not os.access(program, os.X_OK):
            found.append(Finding("fail", f"{where} runs {program}, which is not executable", fix))
        else:
            found.append(Finding("ok", f"{where} runs {program}, which exists and is executable"))
    return found


def command_argvs(commands: list[str]) -> list[list[str]]:
    """Shell command lines (hooks) split into words; one that does not split is left out."""
    import shlex

    argvs = []
    for command in commands:
        try:
            argvs.append(shlex.split(command))
        except ValueError:
            continue
    return argvs


def json_server(path: Any, label: str, name: str, env: dict[str, str]) -> Server:
    """The server ``name`` of a JSON MCP config (``mcpServers``), started with ``env``
    plus the entry's own ``env``: how Claude Code and Gemini CLI start it."""
    from ..installers import jsonconfig

    entry = jsonconfig.read_server(path, label, name)
    if entry is None:
        return Server(None, {}, label)
    full = {**env, **{k: str(v) for k, v in (entry.get("env") or {}).items()}}
    return Server([entry["command"], *entry.get("args", [])], full, label)


def get(name: str) -> ModuleType:
    """The module of program ``name`` (one of `NAMES`). Raises `BadRequest`."""
    if name not in NAMES:
        from ..errors import BadRequest

        raise BadRequest(f"no agent program named {name!r}", hint="programs are: " + ", ".join(NAMES))
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
