"""Whether a hook has nothing to do, decided from files alone, before anything is imported.

An agent runs ``mesh hook TOOL EVENT`` on every tool call, and almost always there is
nothing for it: no new mail, no stop. This module decides that from a few ``stat``
calls, with nothing but ``os`` and ``sys`` (no json, no argparse, no settings), so a
quiet hook costs little more than the interpreter's start. When it cannot be sure it
says so, and the full hook (`sessionmesh.hooks`) runs.

Quiet means, for the agent NAME:

- before a tool call (the program's pre-tool event): no ``blocks/NAME.json``;
- after a tool call (a tool event that follows a model response): nothing shown to
  a session still waits to be confirmed (``shown/NAME.json`` is absent or empty), the
  agent is not between a dialog and its next tool event (``waiting/NAME``), and no
  mail was stored for NAME since the full hook last fetched it: ``mail/NAME`` (which
  the broker touches after each commit that stores mail for NAME, `sessionmesh.marks`)
  is older than ``shown/NAME.checked`` (which the full hook dates to just before its
  fetch). Mail stored while a hook runs is newer than that, so the next hook fetches.

Every other event (a turn starting or ending, a session starting) runs the full hook:
they report the agent's activity. So does a hook given ``--url`` or ``MESH_URL`` (the
broker may be elsewhere, with its marks), or a ``config.toml`` that may name the agent
or the broker, or a name that cannot be told without parsing the hook's input.
"""

from __future__ import annotations

import os
import sys

# (pre-tool event, tool events after a model response) per program; tests check these
# against each program's HookFormat (sessionmesh.programs)
EVENTS = {
    "claude-code": ("PreToolUse", ("PostToolUse",)),
    "codex": ("PreToolUse", ("PostToolUse",)),
    "gemini": ("BeforeTool", ("AfterTool",)),
    "pi": ("tool_call", ("tool_result",)),
}
CHECKED = ".checked"  # beside shown/NAME.json


def default_home(env: dict[str, str] | os._Environ[str]) -> str:
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "sessionmesh")


def git_root(cwd: str) -> str | None:
    """The nearest folder at or above ``cwd`` that holds a ``.git``."""
    probe = os.path.abspath(cwd)
    while True:
        if os.path.exists(os.path.join(probe, ".git")):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent


NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def default_name(cwd: str | None = None) -> str:
    """The basename of the git top-level above ``cwd`` (else ``cwd``), as a valid name."""
    path = os.path.abspath(cwd or os.getcwd())
    return as_name(os.path.basename(git_root(path) or path))


def as_name(text: str) -> str:
    """``text`` as a valid name: lower case, each run of other characters one ``-``,
    no ``-``, ``.`` or ``_`` at either end, at most 64 characters (else ``peer``)."""
    out: list[str] = []
    for ch in text.lower():
        if ch in NAME_CHARS:
            out.append(ch)
        elif not out or out[-1] != "\0":
            out.append("\0")
    name = "".join(out).replace("\0", "-").strip("-._")
    return (name or "peer")[:64]


def is_quiet(argv: list[str], stdin: str, env: dict[str, str] | os._Environ[str]) -> bool:
    """Whether ``mesh hook`` with ``argv`` (after ``hook``) and the hook's input
    ``stdin`` has nothing to do. False whenever it cannot be sure."""
    if len(argv) < 2 or argv[0] not in EVENTS:
        return False
    tool, event, rest = argv[0], argv[1], argv[2:]
    pre_tool, tool_events = EVENTS[tool]
    if event != pre_tool and event not in tool_events:
        return False
    flags: dict[str, str] = {}
    while rest:
        if len(rest) < 2 or rest[0] not in ("--as", "--home", "--url"):
            return False
        flags[rest[0]] = rest[1]
        rest = rest[2:]
    if "--url" in flags or env.get("MESH_URL"):
        return False
    home = os.path.abspath(
        os.path.expanduser(flags.get("--home") or env.get("MESH_HOME") or default_home(env))
    )
    if _may_configure(os.path.join(home, "config.toml")):
        return False
    name = flags.get("--as") or env.get("MESH_NAME") or _name_from(stdin)
    if not name or "/" in name or name.startswith("."):
        return False
    if event == pre_tool:
        return not os.path.exists(os.path.join(home, "blocks", name + ".json"))
    shown = os.path.join(home, "shown", name)
    try:
        if os.stat(shown + ".json").st_size > 2:  # "{}": nothing waits to be confirmed
            return False
    except FileNotFoundError:
        pass
    if os.path.exists(os.path.join(home, "waiting", name)):
        return False
    try:
        checked = os.stat(shown + CHECKED).st_mtime_ns
    except FileNotFoundError:
        return False
    try:
        return os.stat(os.path.join(home, "mail", name)).st_mtime_ns < checked
    except FileNotFoundError:
        return True  # no mail was ever stored for NAME


def _may_configure(path: str) -> bool:
    """Whether a config file exists that might set the agent's name or the broker's
    address (read as bytes: parsing TOML would cost more than the whole check)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return b"name" in text or b"url" in text


def _name_from(stdin: str) -> str | None:
    """The default name for the folder the program runs in, when the hook's input says
    plainly that it is this process's folder (or names none); None otherwise."""
    cwd = os.getcwd()
    if '"cwd"' in stdin and f'"cwd":"{cwd}"' not in stdin and f'"cwd": "{cwd}"' not in stdin:
        return None
    return default_name(cwd)


def main(argv: list[str]) -> int | None:
    """``mesh hook …``: 0 when quiet (the input read, nothing printed), else None with
    the input kept in `sys.stdin` for the full hook."""
    try:
        stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
    except (OSError, ValueError):
        stdin = ""
    try:
        if is_quiet(argv, stdin, os.environ):
            return 0
    except OSError:
        pass
    import io

    sys.stdin = io.StringIO(stdin)
    return None
