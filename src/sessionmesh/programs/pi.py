"""Pi (``@mariozechner/pi-coding-agent``): an extension shipped in this package, a skill.

Pi has no MCP by design; it loads TypeScript extensions (Pi's ``docs/extensions.md``):
``.pi/extensions/*.ts`` in a project, ``~/.pi/agent/extensions/*.ts`` for the user
(``$PI_CODING_AGENT_DIR`` moves ``~/.pi/agent``). The sessionmesh extension
(``assets/pi/sessionmesh.ts``) does, inside Pi:

- the tools: it runs ``mesh mcp --client pi`` and speaks MCP to it, offering its
  tools (list_peers, send, reply, ask, track, lock, unlock, locks, set_status) as
  Pi tools;
- delivery: on Pi's ``session_start``, ``before_agent_start``, ``tool_result`` and
  ``agent_end`` events it runs ``mesh hook pi EVENT`` (`HOOKS` below) and puts what
  it prints into Pi's turn: into the turn that starts, as a steer after a tool call
  (read before the model's next request), and at the stop an unread urgent message
  starts one more turn (``triggerTurn``); normal ones wait for the next prompt;
- waking: in Pi's terminal UI it runs ``mesh wake pi`` (`sessionmesh.wake`) as a
  child, and starts a turn (``triggerTurn``) with each burst of mail that arrives
  while Pi is idle.

The installer writes the extension with two lines filled in: the command that runs
``mesh`` (this installation by absolute path, `installers.target.program`, so Pi
started from any shell finds it) and the arguments every call carries (``--as NAME``,
``--home``, ``--url``). Every ``mesh`` the extension starts (the server, the hooks,
the waiter) is that command.
Skills (Pi's ``docs/skills.md``): ``.pi/skills/<name>/SKILL.md``, ``~/.pi/agent/skills/``.
"""

from __future__ import annotations

import os

from ..plainjson import dumps
from . import Finding, HookFormat, Launch, Server, process_argv

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:  # pathlib only where a function needs it: a hook imports this module
    from pathlib import Path

    from ..installers.changes import FileChange
    from ..installers.target import Target

TITLE = "Pi"
LAUNCH = Launch("pi", (), ("-p",))
EXTENSION = "sessionmesh.ts"
# Pi's own event names; the extension reads the Claude Code shapes back
HOOKS = HookFormat(
    frozenset({"session_start", "before_agent_start", "tool_result"}),
    "agent_end",
    "block",
    "session_start",
    frozenset({"tool_result", "agent_end"}),
    turn_start=frozenset({"before_agent_start"}),
    pre_tool="tool_call",
)
MESH_LINE = "const MESH: string[] = "
ARGS_LINE = "const INSTALLED_ARGS: string[] = "


def headless(agent_pid: int) -> bool:
    """Whether Pi runs in print mode (``pi -p``): nothing to wake there."""
    argv = process_argv(agent_pid)
    return any(a in ("-p", "--print") for a in argv[1:])


def hand_over(text: str, session: str, agent_pid: int) -> None:
    """The extension runs the waiter as its child and reads one JSON line per wake,
    ``{"wake": TEXT}``, which it sends into Pi with ``triggerTurn``."""
    import sys

    from ..wake import WOKE

    sys.stdout.write(dumps({"wake": f"{WOKE}\n\n{text}"}, ascii_only=True) + "\n")
    sys.stdout.flush()


def agent_dir() -> Path:
    from pathlib import Path

    return Path(os.environ.get("PI_CODING_AGENT_DIR") or Path.home() / ".pi" / "agent")


def extension_text(target: Target) -> str:
    """The shipped extension with the command and arguments of this install filled in."""
    import json
    from importlib import resources

    source = resources.files("sessionmesh").joinpath("assets", "pi", EXTENSION).read_text(encoding="utf-8")
    program, extra = target.program, target.extra
    lines = []
    for line in source.splitlines(keepends=True):
        if line.startswith(MESH_LINE):
            line = f"{MESH_LINE}{json.dumps(list(program))};  // written by mesh install\n"
        elif line.startswith(ARGS_LINE):
            line = f"{ARGS_LINE}{json.dumps(list(extra))};  // written by mesh install\n"
        lines.append(line)
    return "".join(lines)


def plan(target: Target, *, install: bool) -> list[FileChange | None]:
    """The changes that install (or remove) sessionmesh for Pi at ``target``."""
    from ..installers import skill
    from ..installers.changes import FileChange, read_text

    path = _extension(target)
    label = target.label(path)
    current = read_text(path)
    skills = _base(target) / "skills"
    if install:
        ours = extension_text(target)
        change = None if current == ours else FileChange(path, label, current, ours)
    else:
        change = None if current is None else FileChange(path, label, current, None, backup=False)
    return [change, skill.edit(skills, target.label(skills), install=install)]


def notes(target: Target) -> list[str]:
    """What the user should know after installing."""
    return ["restart Pi (or run /reload) to load the sessionmesh extension"]


def server(target: Target) -> Server:
    """The MCP server the extension starts (from the installed extension's two lines),
    with Pi's environment (the extension passes it on whole)."""
    import json

    path = _extension(target)
    try:
        text = path.read_text()
    except OSError:
        return Server(None, {}, target.label(path))
    program = extra = None
    for line in text.splitlines():
        if line.startswith(MESH_LINE):
            program = json.loads(line[len(MESH_LINE) :].split(";")[0])
        elif line.startswith(ARGS_LINE):
            extra = json.loads(line[len(ARGS_LINE) :].split(";")[0])
    if program is None or extra is None:
        return Server(None, {}, target.label(path))
    return Server([*program, "mcp", "--client", "pi", *extra], dict(os.environ), target.label(path))


def checks(target: Target) -> list[Finding]:
    """Whether the installed extension is the one this version ships."""
    path = _extension(target)
    try:
        current = path.read_text()
    except OSError:
        return []

    def body(text: str) -> list[str]:  # the extension without the two lines an install fills in
        return [line for line in text.splitlines() if not line.startswith((MESH_LINE, ARGS_LINE))]

    if body(current) == body(extension_text(target)):
        return [Finding("ok", f"{target.label(path)} is this version's extension")]
    return [
        Finding(
            "warn", f"{target.label(path)} differs from the extension this version ships", target.reinstall()
        )
    ]


def _base(target: Target) -> Path:
    from ..installers.target import Scope

    return target.root / ".pi" if target.scope is Scope.PROJECT else agent_dir()


def _extension(target: Target) -> Path:
    return _base(target) / "extensions" / EXTENSION
