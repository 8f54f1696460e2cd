"""`mesh hook TOOL EVENT`: pending messages, in the JSON a coding agent's hook expects.

A hook runs on every tool call, so this path is standard library only, never starts
a broker, never registers a name, and prints nothing (exit 0) when it has nothing
to say or anything goes wrong: a hook must not break the agent's turn. Messages are
marked ``read`` only once the session has gone on past them: the session's next hook
event that follows a model response (after a tool call, or the stop) acks what the
earlier ones printed (`shown`), so a program that dies before its model request
leaves its messages unread, to be offered again.

Formats, from each tool's hooks reference:

- Claude Code and Codex (same shape): ``{"hookSpecificOutput": {"hookEventName": E,
  "additionalContext": text}}`` for SessionStart, UserPromptSubmit and PostToolUse;
  on Stop ``{"decision": "block", "reason": text}``, which keeps the agent working
  on the reason. The Stop input's ``stop_hook_active`` is true when the agent is
  already continuing because of a Stop hook; then nothing is blocked again.
- Gemini CLI: ``hookSpecificOutput.additionalContext`` for SessionStart,
  BeforeAgent and AfterTool; on AfterAgent ``{"decision": "deny", "reason": text}``
  sends the reason to the agent as a new prompt (its ``stop_hook_active`` guards
  the retry loop the same way).

On the stop event only unread *urgent* messages block; normal ones wait for the
next turn's context.

Before each tool call (Claude Code and Codex ``PreToolUse``, Gemini CLI
``BeforeTool``, Pi's ``tool_call``) the hook only looks for a guard's stop on this
agent (pair mode, `sessionmesh.marks`): with one, it refuses the call with the
guard's reason (``permissionDecision: deny``; Gemini's ``decision: deny``), except
the call that acknowledges it (`acknowledges`). It asks the broker nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from . import injection, programs, quiet
from .plainjson import dumps, loads

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:
    from typing import Any

    from .config import Settings
    from .programs import HookFormat

    Output = dict[str, Any]


def hook_format(tool: str) -> HookFormat:
    """The hook events of program ``tool`` (its module in `sessionmesh.programs`)."""
    import importlib

    return importlib.import_module(f"{programs.__name__}.{tool.replace('-', '_')}").HOOKS  # type: ignore[no-any-return]


WAKE_EVENT = "Wake"  # not a program's event: the waiter an asyncRewake hook runs (wake.py)
STOP_PREAMBLE = "Urgent messages from other agents arrived before you finished. Read them and act on them if they concern your work."


def read_input(stream: Any) -> dict[str, Any]:
    """The hook's JSON on stdin; anything unreadable counts as no input."""
    try:
        data = loads(stream.read() or "{}")
    except (ValueError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def decide(
    tool: str, event: str, hook_input: dict[str, Any], messages: list[dict[str, Any]]
) -> Output | None:
    """What to print for these unread messages, or None to stay silent."""
    fmt = hook_format(tool)
    if not messages:
        return None
    if event == fmt.stop_event:
        if hook_input.get("stop_hook_active") or not any(m.get("priority") == "urgent" for m in messages):
            return None
        return fmt.render(event, f"{STOP_PREAMBLE}\n\n{injection.frame_all(messages)}")
    if event in fmt.context_events:
        return fmt.render(event, injection.frame_all(messages))
    return None


def session_of(hook_input: dict[str, Any]) -> str:
    """The session a hook runs in: the program's ``session_id``, else the hook's parent
    process (the program that ran it), so a program without session ids still counts
    as one session for as long as it lives."""
    session = hook_input.get("session_id")
    return session if isinstance(session, str) and session else f"pid:{os.getppid()}"


def run_hook(settings: Settings, tool: str, event: str, name: str | None, *, stdin: Any = None) -> int:
    """Print pending messages for ``event`` in ``tool``'s format; always exits 0.

    What an earlier event of the same session printed is acked ``read`` first when
    this event comes after a model response (``after_model``: the model had it; see
    `shown`), and is not printed again before that. What this event prints is only
    recorded as shown, for such a later event to confirm.
    """
    hook_input = read_input(stdin or sys.stdin)
    fmt = hook_format(tool)
    if event == fmt.pre_tool:
        return _pre_tool(settings, fmt, event, name, hook_input)
    if event == fmt.notice_event:
        if hook_input.get("notification_type") in fmt.waiting_notices:
            _waiting(settings, name, hook_input)
        return 0
    if event not in fmt.context_events and event != fmt.stop_event:
        return 0  # an event this hook has nothing to add to
    try:
        shot = _connect(settings, name, hook_input)
        if shot is None:
            return 0
        from . import shown

        session = session_of(hook_input)
        with shown.ledger(settings.home, shot.name) as ledger:
            earlier = ledger.shown_to(session)
            if event == fmt.start_event:
                ledger.forget(session)  # a new or resumed session: show it all again
                earlier = []
            elif earlier and event in fmt.after_model:
                shot.call("ack", ids=earlier, state="read")
                ledger.forget(session)
                earlier = []
            fetched = time.time_ns()
            messages = [m for m in shot.call("inbox", limit=200)["messages"] if m["id"] not in earlier]
            output = decide(tool, event, hook_input, messages)
            if output is not None:
                sys.stdout.write(dumps(output) + "\n")
                sys.stdout.flush()
                ledger.record(session, earlier + [m["id"] for m in messages])
                if event == fmt.start_event:
                    ledger.hand_over(session, [m["id"] for m in messages])
            if shot.local and (output is not None or not messages):
                _checked(settings.home, shot.name, fetched)  # all it fetched was shown
        _report_activity(shot, fmt, event, blocking=output is not None, home=settings.home)
        if event == fmt.start_event and fmt.waiter:
            _start_waiter(settings, tool, shot.name, session)
    except Exception as exc:  # noqa: BLE001 - a hook must never break the agent's turn
        print(f"mesh hook: {exc}", file=sys.stderr)
    return 0


def _pre_tool(
    settings: Settings, fmt: HookFormat, event: str, name: str | None, hook_input: dict[str, Any]
) -> int:
    """Refuse this tool call while a guard's stop stands on this agent; always exits 0."""
    from . import marks

    try:
        name = name or settings.name or quiet.default_name(_cwd(hook_input))
        block = marks.read_block(settings.home, name)
        if block is None or acknowledges(hook_input):
            return 0
        sys.stdout.write(dumps(fmt.deny(event, injection.stop_reason(block, name))) + "\n")
        sys.stdout.flush()
    except Exception as exc:  # noqa: BLE001 - a hook must never break the agent's turn
        print(f"mesh hook: {exc}", file=sys.stderr)
    return 0


SHELL_SPECIALS = frozenset(";&|`$<>()\n")


def acknowledges(hook_input: dict[str, Any]) -> bool:
    """Whether a stopped grip's tool call is its way out, so the stop lets it through:
    the mesh tool ``pair`` (however the program prefixes an MCP tool's name), or a
    shell command that is one plain ``mesh pair …`` / ``mesh unpair`` (or ``python -m
    sessionmesh …``) with nothing chained to it."""
    import shlex

    tool = str(hook_input.get("tool_name") or "")
    if tool == "pair" or tool.endswith("__pair") or (tool.startswith("mcp_") and tool.endswith("_pair")):
        return True
    args = hook_input.get("tool_input")
    command = args.get("command") if isinstance(args, dict) else None
    if isinstance(command, list):
        command = " ".join(shlex.quote(str(word)) for word in command)
    if not isinstance(command, str) or SHELL_SPECIALS & set(command):
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    if len(words) == 3 and os.path.basename(words[0]) in ("bash", "sh", "zsh") and words[1] in ("-c", "-lc"):
        return acknowledges({"tool_input": {"command": words[2]}})  # a shell the program wraps it in
    if words and os.path.basename(words[0]) == "mesh":
        rest = words[1:]
    elif (
        len(words) > 2
        and os.path.basename(words[0]).startswith("python")
        and words[1:3] == ["-m", "sessionmesh"]
    ):
        rest = words[3:]
    else:
        return False
    return rest[:1] == ["pair"] or rest[:1] == ["unpair"]


def _report_activity(shot: BrokerCall, fmt: HookFormat, event: str, *, blocking: bool, home: str) -> None:
    """Tell the broker a turn began (working) or the agent waits at its prompt (idle:
    a session start, or a stop that does not keep it going), so a waiter wakes it only
    when idle. Not on tool events, which run on every tool call, except the first
    after the agent waited for its user (a file says so: `_waiting`)."""
    marker = os.path.join(home, WAITING_DIR, shot.name)
    if event in fmt.turn_start:
        shot.call("activity", state="working")
    elif event == fmt.start_event or (event == fmt.stop_event and not blocking):
        shot.call("activity", state="idle")
    elif not os.path.exists(marker):
        return
    elif event in fmt.context_events:
        shot.call("activity", state="working")  # the user answered its dialog, the tool ran
    else:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker)


WAITING_DIR = "waiting"  # names whose agent waits for its user, until their next tool event


def _checked(home: str, name: str, fetched_ns: int) -> None:
    """Date ``shown/NAME.checked`` to just before this hook fetched NAME's mail: until
    mail newer than that is stored, the next tool events are quiet (`sessionmesh.quiet`)."""
    path = os.path.join(home, "shown", name + quiet.CHECKED)
    try:
        os.utime(path, ns=(fetched_ns, fetched_ns))
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "ab"):
            pass
        os.utime(path, ns=(fetched_ns, fetched_ns))


def _waiting(settings: Settings, name: str | None, hook_input: dict[str, Any]) -> None:
    """The program shows its user a dialog (a permission prompt): the agent is
    ``waiting`` until a tool event or its stop says otherwise."""
    try:
        shot = _connect(settings, name, hook_input)
        if shot is None:
            return
        shot.call("activity", state="waiting")
        folder = os.path.join(settings.home, WAITING_DIR)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(os.path.join(folder, shot.name), "w"):
            pass
    except Exception as exc:  # noqa: BLE001 - a hook must never break the agent's turn
        print(f"mesh hook: {exc}", file=sys.stderr)


def _start_waiter(settings: Settings, tool: str, name: str, session: str) -> None:
    """Start the program's waiter (`wake`), detached: ``mesh wake TOOL``."""
    import importlib
    import subprocess

    from .wake import agent_process

    agent = agent_process()
    if importlib.import_module(f"{programs.__name__}.{tool.replace('-', '_')}").headless(agent):
        return  # a headless run has no prompt to be woken at
    argv = [
        sys.executable,
        "-m",
        "sessionmesh",
        "wake",
        tool,
        "--as",
        name,
        "--session",
        session,
        "--pid",
        str(agent),
        "--home",
        settings.home,
    ]
    if settings.url:
        argv += ["--url", settings.url]
    log = open(os.path.join(settings.home, "wake.log"), "ab")  # noqa: SIM115 - handed to the child
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()


class BrokerCall:
    """One op per HTTP request (docs/protocol.md §6.2), over `client.plainhttp`."""

    def __init__(self, url: str, token: str, name: str, secret: str, timeout: float) -> None:
        from .client.plainhttp import Endpoint

        self.name, self.url, self.token, self.secret = name, url, token, secret
        self.endpoint = Endpoint(url)
        self.headers = {
            "Authorization": f"Bearer {token}",
            "X-Mesh-Name": name,
            "X-Mesh-Secret": secret,
            "Content-Type": "application/json",
        }
        self.timeout = timeout
        self.local = False

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one op; raises `MeshError` (the broker's, or `Unavailable`)."""
        from .errors import Unavailable, from_wire

        try:
            status, payload = self.endpoint.request(
                "POST", f"/v1/{op}", dumps(args, ascii_only=True).encode(), self.headers, self.timeout
            )
            data = loads(payload) if payload else {}
        except OSError as exc:
            raise Unavailable(f"cannot reach the broker at {self.endpoint.netloc}: {exc}") from None
        except ValueError:
            raise Unavailable(f"the broker's answer to {op} is not an HTTP JSON response") from None
        if status != 200:
            raise from_wire(data.get("error") or {"message": f"HTTP {status}"})
        return data


def main(argv: list[str]) -> int:
    """``mesh hook TOOL EVENT [--as NAME] [--home DIR] [--url URL]``: the usual line is
    read by hand (argparse costs a hook more than its request); anything else, and
    ``--help``, goes through argparse, which explains what is wrong."""
    args = _plain_args(argv) or _parsed_args(argv)
    from .config import load

    settings = load(overrides={"home": args["home"], "url": args["url"]})
    if args["event"] == WAKE_EVENT:
        from .wake import run_rewake

        return run_rewake(settings, args["tool"], args["as"])
    return run_hook(settings, args["tool"], args["event"], args["as"])


def _plain_args(argv: list[str]) -> dict[str, Any] | None:
    if len(argv) < 2 or argv[0] not in programs.NAMES or argv[1].startswith("-"):
        return None
    args: dict[str, Any] = {"tool": argv[0], "event": argv[1], "as": None, "home": None, "url": None}
    rest = argv[2:]
    while rest:
        if len(rest) < 2 or rest[0] not in ("--as", "--home", "--url"):
            return None
        args[rest[0][2:]] = rest[1]
        rest = rest[2:]
    return args


def _parsed_args(argv: list[str]) -> dict[str, Any]:
    import argparse

    parser = argparse.ArgumentParser(prog="mesh hook", add_help=True)
    parser.add_argument("tool", choices=programs.NAMES)
    parser.add_argument("event")
    parser.add_argument("--as", dest="as_name")
    parser.add_argument("--home")
    parser.add_argument("--url")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    return {"tool": ns.tool, "event": ns.event, "as": ns.as_name, "home": ns.home, "url": ns.url}


def _connect(settings: Settings, name: str | None, hook_input: dict[str, Any]) -> BrokerCall | None:
    """A caller for the running broker, or None when there is no broker or this name
    never joined here (then nothing can be waiting for it)."""
    from .client import discovery

    name = name or settings.name or quiet.default_name(_cwd(hook_input))
    secret = discovery.load_secret(settings, name)
    if secret is None:
        return None
    url = settings.url
    if not url:
        info = discovery.read_broker_file(settings)
        if info is None or not discovery.pid_alive(int(info.get("pid") or 0)):
            return None
        url = info["url"]
    call = BrokerCall(url.rstrip("/"), discovery.read_token(settings), name, secret, settings.request_timeout)
    call.local = not settings.url  # the broker of this home, which keeps its marks here
    return call


def _cwd(hook_input: dict[str, Any]) -> str:
    cwd = hook_input.get("cwd")
    return cwd if isinstance(cwd, str) else os.getcwd()
