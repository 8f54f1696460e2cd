"""The waiter: what wakes an agent that finished its turn and waits at its prompt.

A waiter runs beside one session of an agent program. It makes the broker's ``wake``
long wait (docs/protocol.md §7.19: it answers only while the agent is idle, once a
burst is over, within the agent's wake budget), hands the mail to the program by the
program's own mechanism, and records it as shown to that session, so the session's
hooks neither show it again nor call it read before the model had it (`shown`):

- Claude Code: an ``asyncRewake`` hook (`run_rewake`) whose exit code 2 wakes the
  model with what it wrote on stderr. It ends with that one wake; the session's next
  Stop arms the next one.
- Codex: a detached process started by the SessionStart hook (`run_waiter`) that
  hands each wake to ``codex queue --thread SESSION``, for as long as the session's
  Codex process lives.
- Pi: its extension runs `run_waiter` as a child and starts a turn with each line.

While it waits it costs one idle HTTP request at the broker and nothing here: it
sleeps in ``select`` on the socket and on the agent process (a pidfd), so it ends the
moment its agent does. One waiter per session: a new one ends the one before.
Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import sys
from collections.abc import Iterator
from typing import Any

from . import injection, shown
from .config import Settings
from .hooks import BrokerCall, _connect, read_input, session_of

WOKE = "sessionmesh woke you: new messages from other agents arrived while you were idle."
WAIT_TIMEOUT = 600.0  # seconds one wake request waits at the broker before it is made again
RETRY_INTERVAL = 5.0  # after a failed request (the broker restarting), while the agent lives
SHELLS = {"sh", "bash", "dash", "zsh", "fish", "ksh", "env", "timeout"}


def agent_process(start: int | None = None) -> int:
    """The agent program's process: the nearest ancestor that is not a shell (a hook
    runs under ``sh -c`` or straight from the program)."""
    pid = os.getppid() if start is None else start
    for _ in range(16):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
        except OSError:
            return pid
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm not in SHELLS:
            return pid
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent <= 1:
            return pid
        pid = parent
    return pid


class Gone(Exception):
    """The agent process ended."""


class AgentWatch:
    """Readable when the agent process ends (a pidfd), so a wait needs no polling."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise Gone from None
        except (OSError, AttributeError):
            pass  # no pidfd here: checked every RETRY_INTERVAL instead

    def alive(self) -> bool:
        from .client.discovery import pid_alive

        return pid_alive(self.pid)

    def fds(self) -> list[int]:
        return [self.fd] if self.fd is not None else []

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; raises `Gone` as soon as the agent ends."""
        ready, _, _ = select.select(self.fds(), [], [], seconds)
        if ready or not self.alive():
            raise Gone


def wait_for_mail(shot: BrokerCall, watch: AgentWatch, exclude: list[str]) -> list[dict[str, Any]]:
    """One ``wake`` request: the mail it answers with ([] when it timed out). Raises
    `Gone` when the agent ends first, `OSError`/`ValueError` when the broker fails."""
    from .client.plainhttp import answer

    body = json.dumps({"timeout": WAIT_TIMEOUT, "exclude": exclude}).encode()
    with contextlib.closing(shot.endpoint.connect(shot.timeout)) as sock:
        sock.sendall(shot.endpoint.encode("POST", "/v1/wake", body, shot.headers))
        chunks = []
        while True:
            ready, _, _ = select.select(
                [sock, *watch.fds()], [], [], RETRY_INTERVAL if watch.fd is None else None
            )
            if watch.fd is not None and watch.fd in ready:
                raise Gone
            if not ready:
                if not watch.alive():
                    raise Gone
                continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    status, payload = answer(b"".join(chunks))
    if status != 200:
        raise ValueError(f"wake failed: {payload[:200]!r}")
    return list(json.loads(payload)["messages"])


@contextlib.contextmanager
def only_waiter(home: str, name: str, session: str) -> Iterator[None]:
    """This process as the one waiter of ``session``: an older one is ended."""
    folder = os.path.join(home, "wake")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    key = hashlib.sha256(session.encode()).hexdigest()[:16]
    path = os.path.join(folder, f"{name}.{key}.pid")
    with contextlib.suppress(OSError, ValueError):
        with open(path) as fh:
            old = int(fh.read().strip())
        if old != os.getpid() and _is_waiter(old):
            os.kill(old, signal.SIGTERM)
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            with open(path) as fh:
                if int(fh.read().strip()) == os.getpid():
                    os.unlink(path)


def _is_waiter(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return any(b"mesh" in a or b"sessionmesh" in a for a in argv) and (b"Wake" in argv or b"wake" in argv)


def wakes(
    settings: Settings, shot: BrokerCall, session: str, watch: AgentWatch
) -> Iterator[tuple[str, list[str]]]:
    """Each wake as (framed text, ids), recorded as shown to ``session``, until the
    agent ends. A failed request is retried after `RETRY_INTERVAL` while it lives."""
    while True:
        with shown.ledger(settings.home, shot.name) as ledger:
            exclude = ledger.shown_to(session)
        try:
            mail = wait_for_mail(shot, watch, exclude)
        except Gone:
            return
        except (OSError, ValueError, IndexError) as exc:
            print(f"mesh wake: {exc}; retrying", file=sys.stderr)
            try:
                watch.sleep(RETRY_INTERVAL)
            except Gone:
                return
            continue
        if not mail:
            continue
        ids = [m["id"] for m in mail]
        with shown.ledger(settings.home, shot.name) as ledger:
            ledger.record(session, [*ledger.shown_to(session), *ids])
        with contextlib.suppress(Exception):
            shot.call("activity", state="working")  # the wake starts a turn
        yield injection.frame_all(mail), ids


def serve(settings: Settings, shot: BrokerCall, key: str, session: str, agent_pid: int) -> Iterator[str]:
    """The framed text of each wake, as the one waiter of ``key`` (a newer one ends
    this one with SIGTERM), until the agent process ends."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        watch = AgentWatch(agent_pid)
    except Gone:
        return
    with only_waiter(settings.home, shot.name, key):
        for text, _ids in wakes(settings, shot, session, watch):
            yield text


def run_rewake(settings: Settings, tool: str, name: str | None) -> int:
    """Claude Code's ``asyncRewake`` hook: wait for mail, then write it on stderr and
    exit 2, which starts a turn with it. Exit 0 when the session's process ended."""
    from . import programs

    hook_input = read_input(sys.stdin)
    agent = agent_process()
    if programs.get(tool).headless(agent):
        return 0  # a headless run: nobody waits at a prompt, and it would wait for this hook
    shot = _connect(settings, name, hook_input)
    if shot is None:
        return 0
    session = session_of(hook_input)
    with contextlib.closing(serve(settings, shot, session, session, agent)) as texts:
        for text in texts:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            return 2
    return 0


def run_waiter(settings: Settings, tool: str, name: str | None, session: str, agent_pid: int) -> int:
    """``mesh wake TOOL``: wake the agent with each burst of mail by its program's
    ``hand_over(text, session, agent_pid)`` until the process ``agent_pid`` ends
    (Codex, Pi). A program whose module sets ``ONE_WAITER_PER_NAME`` keeps one waiter
    per agent (Codex: its daemon keeps old sessions' threads)."""
    from . import programs

    program = programs.get(tool)
    shot = _connect(settings, name, {"cwd": os.getcwd()})
    if shot is None:
        print("mesh wake: no broker, or the name never joined here", file=sys.stderr)
        return 1
    key = tool if getattr(program, "ONE_WAITER_PER_NAME", False) else session
    for text in serve(settings, shot, key, session, agent_pid):
        try:
            program.hand_over(text, session, agent_pid)
        except OSError as exc:
            print(f"mesh wake: {exc}", file=sys.stderr)
    return 0
