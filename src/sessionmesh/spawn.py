"""``mesh spawn`` / ``mesh despawn``: start an agent program as a named peer, and end it.

Interactive (the default)::

    mesh spawn TOOL --as NAME [--cwd DIR] [--prompt TEXT]

1. refuses an invalid NAME (`InvalidName`), a NAME that is online or that a spawn
   from this ``MESH_HOME`` still runs (`NameTaken`), and a DIR already installed
   for TOOL under another name (`BadRequest`: the install would rename that agent);
2. installs sessionmesh for TOOL in DIR with ``--as NAME`` (`installers.execute`,
   the same as ``mesh install TOOL --as NAME --dir DIR``) and registers NAME; the
   install stays when the spawn then fails, as after ``mesh install``;
3. starts the program in a new window of the tmux session ``mesh`` (created if
   missing), in DIR, with the environment of ``mesh spawn`` itself;
4. for a program that cannot wake itself when mail arrives (Gemini CLI) starts
   ``mesh bridge tmux --wake`` for its pane;
5. returns once NAME is online (the program's MCP server, or Pi's extension, joined
   under it). When it is not within ``--timeout``, or the program exits first, it
   ends what it started and raises `Timeout` with the pane's last screen lines.
   A program that asks its person first waits there: Claude Code's question about
   the project's MCP server is answered by spawning (``--settings``), Codex's "Hooks
   need review" is not (a person attached to the window answers it once per folder).

What it started is recorded in ``$MESH_HOME/spawned/NAME.json``; ``mesh despawn
NAME`` ends the bridge, the program's process group and its window, and waits
(bounded) until NAME is no longer online.

Headless (``--headless``): the program's one-shot mode (``claude -p``, ``codex
exec``, ``gemini -p``, ``pi -p``) in DIR, after the same install. The request it
answers is the oldest unread request addressed to NAME (waited for up to
``--timeout`` when none is there yet); it is marked read and put into the prompt
(after ``--prompt``, if given). When the program ends, its final output goes back
to the request's sender as the reply, with the end-state PASS if it exited 0 and
BLOCKED otherwise. With ``--prompt`` and no request waiting, it runs on the prompt
alone and only prints the answer. So a request can be sent to a name before any
agent runs under it::

    mesh join reviewer
    mesh ask reviewer "review src/x.py" &
    mesh spawn claude-code --as reviewer --headless

How each program is started is its module's ``LAUNCH`` (`sessionmesh.programs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import programs
from .config import Settings
from .errors import BadRequest, NameTaken, NotFound, Timeout

SESSION = "mesh"  # the tmux session spawned programs get a window in
POLL_INTERVAL = 0.2  # seconds between looks at the mesh or the pane
SCREEN_LINES = 12  # lines of the pane shown when a program does not come online
DESPAWN_TIMEOUT = 10.0  # seconds despawn waits for the peer to go offline
MAX_ANSWER_CHARS = 60_000  # a longer final answer is cut (the broker caps a body's size)


@dataclass(frozen=True)
class Spawned:
    """What one interactive spawn started, as kept in ``$MESH_HOME/spawned/NAME.json``."""

    name: str
    tool: str
    cwd: str
    socket: str | None
    window: str  # tmux window id (@N)
    pane: str  # tmux pane id (%N)
    pane_pid: int  # the program: leader of the pane's process group
    bridge_pid: int | None
    started: float


# -- tmux ----------------------------------------------------------------------------
class Tmux:
    """The tmux server on ``socket`` (``tmux -S``), or the one tmux finds itself."""

    def __init__(self, socket: str | None) -> None:
        if shutil.which("tmux") is None:
            raise BadRequest("tmux is not installed: mesh spawn starts programs in tmux windows")
        self.socket = socket

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["tmux", *(["-S", self.socket] if self.socket else []), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        if check and done.returncode != 0:
            raise BadRequest(f"tmux {args[0]} failed: {done.stderr.strip() or done.returncode}")
        return done

    def has_session(self, session: str) -> bool:
        return self.run("has-session", "-t", f"={session}", check=False).returncode == 0

    def global_env(self) -> dict[str, str]:
        done = self.run("show-environment", "-g", check=False)
        env = {}
        for line in done.stdout.splitlines():
            key, eq, value = line.partition("=")
            if eq:
                env[key] = value
        return env

    def pane_alive(self, pane: str, pane_pid: int | None = None) -> bool:
        """Whether ``pane`` exists, its program has not exited, and (given) it is still
        the process ``pane_pid``."""
        done = self.run("display-message", "-p", "-t", pane, "#{pane_dead} #{pane_pid}", check=False)
        if done.returncode != 0 or not done.stdout.strip():
            return False
        dead, _, pid = done.stdout.strip().partition(" ")
        return dead != "1" and (pane_pid is None or pid == str(pane_pid))

    def screen(self, pane: str) -> str:
        # with the history: a dead pane's notice scrolls the screen it left away
        done = self.run("capture-pane", "-p", "-S", "-200", "-t", pane, check=False)
        rules = set("─━═-_ ")  # a line of box drawing says nothing
        lines = [line.rstrip() for line in done.stdout.splitlines() if set(line.strip()) - rules]
        return "\n".join(lines[-SCREEN_LINES:])


def _start_window(tmux: Tmux, name: str, cwd: Path, argv: list[str]) -> tuple[str, str, int]:
    """Start ``argv`` in a new window ``name`` of session `SESSION` (created, with the
    tmux server if need be, from this process's environment); a server that is
    already running gets the variables of this environment that it lacks or holds
    otherwise (``-e``). ``MESH_NAME`` is ``name`` there, so a ``mesh`` the agent runs
    acts as it. Returns the window id, pane id and pane pid.

    The window first holds a placeholder (``cat``, waiting on its terminal), is set to
    stay when its program exits, and then gets the program (``respawn-pane``): a
    program that exits at once still leaves its last screen to read."""
    fmt = "#{window_id} #{pane_id}"
    extra: list[str] = []
    if tmux.has_session(SESSION):
        server = tmux.global_env()
        extra = [
            f"{key}={value}"
            for key, value in os.environ.items()
            if key not in ("TMUX", "TMUX_PANE") and server.get(key) != value
        ]
        out = tmux.run(
            "new-window", "-d", "-P", "-F", fmt, "-t", f"={SESSION}:", "-n", name, "-c", str(cwd), "cat"
        ).stdout
    else:
        out = tmux.run(
            "new-session", "-d", "-P", "-F", fmt, "-s", SESSION, "-n", name, "-c", str(cwd),
            "-x", "200", "-y", "50", "cat",
        ).stdout  # fmt: skip
    window, pane = out.split()
    tmux.run("set-option", "-w", "-t", window, "remain-on-exit", "on")
    env_args = [arg for item in [*extra, f"MESH_NAME={name}"] for arg in ("-e", item)]
    tmux.run("respawn-pane", "-k", "-t", pane, "-c", str(cwd), *env_args, shlex.join(argv))
    pid = tmux.run("display-message", "-p", "-t", pane, "#{pane_pid}").stdout.strip()
    return window, pane, int(pid)


# -- the record ------------------------------------------------------------------------
def record_path(settings: Settings, name: str) -> Path:
    return Path(settings.home) / "spawned" / f"{name}.json"


def read_record(settings: Settings, name: str) -> Spawned | None:
    try:
        return Spawned(**json.loads(record_path(settings, name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_record(settings: Settings, spawned: Spawned) -> None:
    path = record_path(settings, spawned.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(spawned), indent=2) + "\n")
    tmp.replace(path)


# -- the mesh --------------------------------------------------------------------------
def presence(settings: Settings, name: str) -> str | None:
    """NAME's presence on the mesh (online, away, offline), or None if unknown."""
    from .client.http import OneShot

    for peer in OneShot(settings).observe("peers")["peers"]:
        if peer["name"] == name:
            return str(peer["presence"])
    return None


def check_free(settings: Settings, name: str) -> None:
    """Raise `InvalidName` for a bad NAME, `NameTaken` when it is online or a spawn
    from here still runs it."""
    from .envelope import check_name, is_person_name
    from .errors import ReservedName

    check_name(name)
    if is_person_name(name):
        raise ReservedName(f"{name!r} is the person's name", hint="spawn an agent under another name")
    if presence(settings, name) == "online":
        raise NameTaken(f"{name!r} is online already", hint="pick another name (--as), or mesh despawn it")
    record = read_record(settings, name)
    if record is not None:
        if Tmux(record.socket).pane_alive(record.pane, record.pane_pid):
            raise NameTaken(
                f"{name!r} was spawned here and still runs (tmux pane {record.pane})",
                hint=f"mesh despawn {name}",
            )
        record_path(settings, name).unlink(missing_ok=True)  # stale: its program is gone


def install(
    settings: Settings, tool: str, name: str, cwd: Path, *, home: str | None, url: str | None
) -> None:
    """Register ``name`` (its secret saved here) and install sessionmesh for ``tool`` in
    ``cwd`` under it: what ``mesh install TOOL --as NAME --dir CWD`` does. Raises
    `BadRequest` when ``cwd`` is installed for ``tool`` under another name (the install
    would rename that agent), `BadSecret` when another secret holds the name, before
    anything is written."""
    from . import installers
    from .client.http import OneShot
    from .installers.target import installed_extra, resolve

    target = resolve(tool, user=False, folder=str(cwd), as_name=name, home=home, url=url)
    current = programs.get(tool).server(target).argv
    if current is not None:
        extra = list(installed_extra(current))
        other = extra[extra.index("--as") + 1] if "--as" in extra[:-1] else None
        if other is not None and other != name:
            raise BadRequest(
                f"{cwd} has sessionmesh installed for {tool} as {other!r}; spawning {name!r} there"
                " would rename that agent",
                hint="spawn it in another folder (--cwd)",
            )
    OneShot(settings, name).join()  # raises here, rather than the program's server failing unseen
    installers.execute(target, install=True, backups=Path(settings.home) / "backups")


def _executable(tool: str, program: str | None) -> str:
    launch = programs.get(tool).LAUNCH
    found = shutil.which(program or launch.executable)
    if found is None:
        raise BadRequest(
            f"{program or launch.executable} is not found on PATH: {tool} cannot be started",
            hint="install it, or name its executable with --program PATH",
        )
    return found


def _bridge_argv(name: str, home: str | None, url: str | None) -> list[str]:
    from .installers.target import program

    return [
        *program(),
        "bridge",
        "tmux",
        "--wake",
        "--as",
        name,
        *(["--home", str(Path(home).expanduser().resolve())] if home else []),
        *(["--url", url] if url else []),
    ]


# -- spawn, interactive ----------------------------------------------------------------
def spawn(
    settings: Settings,
    tool: str,
    name: str,
    *,
    cwd: Path,
    timeout: float,
    prompt: str | None = None,
    program: str | None = None,
    socket: str | None = None,
    home: str | None = None,
    url: str | None = None,
) -> Spawned:
    """Start ``tool`` as peer ``name`` in a tmux window and return once it is online.

    Raises `InvalidName`, `ReservedName`, `NameTaken`, `BadRequest` (no tmux, no such
    folder or program, a folder installed under another name) before anything
    starts; `Timeout` when it is not online within ``timeout`` seconds or its program
    exits first, after ending what it started.
    """
    check_free(settings, name)
    tmux = Tmux(socket)
    executable = _executable(tool, program)
    install(settings, tool, name, cwd, home=home, url=url)
    launch = programs.get(tool).LAUNCH
    argv = [executable, *launch.interactive, *([prompt] if prompt else [])]
    window, pane, pane_pid = _start_window(tmux, name, cwd, argv)
    bridge_pid = None
    if launch.bridge:
        bridge_pid = _start_bridge(settings, name, pane, socket=tmux.socket, home=home, url=url)
    spawned = Spawned(name, tool, str(cwd), tmux.socket, window, pane, pane_pid, bridge_pid, time.time())
    _write_record(settings, spawned)
    deadline = time.monotonic() + timeout
    while presence(settings, name) != "online":
        exited = not tmux.pane_alive(pane)
        if exited or time.monotonic() >= deadline:
            screen = tmux.screen(pane)
            end(settings, spawned)
            why = "its program exited" if exited else f"it was not online within {timeout:g}s"
            raise Timeout(
                f"{name} ({tool}) did not join the mesh: {why}; its screen last showed:\n{screen}",
                hint="run the program in DIR by hand once to answer its first-run questions",
            )
        time.sleep(POLL_INTERVAL)  # sleep-ok: bounded poll of another process's progress
    return spawned


def _start_bridge(
    settings: Settings, name: str, pane: str, *, socket: str | None, home: str | None, url: str | None
) -> int:
    argv = [*_bridge_argv(name, home, url), "--pane", pane, *(["--socket", socket] if socket else [])]
    log = Path(settings.home) / "spawned" / f"{name}.bridge.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    return proc.pid


def end(settings: Settings, spawned: Spawned) -> list[str]:
    """End what ``spawned`` started: the bridge, the program's process group (Gemini
    CLI outlives the SIGHUP of a closed window) and the window; remove its record.
    Returns what it ended, as words for people."""
    ended = []
    if spawned.bridge_pid and _is_bridge(spawned.bridge_pid):
        with contextlib.suppress(OSError):
            os.kill(spawned.bridge_pid, signal.SIGTERM)
            ended.append(f"bridge pid {spawned.bridge_pid}")
    tmux = Tmux(spawned.socket)
    if tmux.pane_alive(spawned.pane, spawned.pane_pid):
        with contextlib.suppress(OSError):
            os.killpg(spawned.pane_pid, signal.SIGTERM)
            ended.append(f"program pid {spawned.pane_pid}")
    if tmux.run("kill-window", "-t", spawned.window, check=False).returncode == 0:
        ended.append(f"tmux window {spawned.window}")
    record_path(settings, spawned.name).unlink(missing_ok=True)
    return ended


def _is_bridge(pid: int) -> bool:
    from .programs import process_argv

    argv = process_argv(pid)
    return "bridge" in argv and "tmux" in argv


def despawn(settings: Settings, name: str, *, timeout: float = DESPAWN_TIMEOUT) -> list[str]:
    """End the peer ``name`` spawned from this ``MESH_HOME`` and wait (up to
    ``timeout``) until it is no longer online. Raises `NotFound` when no spawn of
    that name is recorded, `Timeout` when it stays online."""
    spawned = read_record(settings, name)
    if spawned is None:
        raise NotFound(f"no peer named {name!r} was spawned here", hint="see mesh peers")
    ended = end(settings, spawned)
    deadline = time.monotonic() + timeout
    while presence(settings, name) == "online":
        if time.monotonic() >= deadline:
            raise Timeout(f"{name} is still online {timeout:g}s after its program was ended")
        time.sleep(POLL_INTERVAL)  # sleep-ok: bounded wait for the broker to see it leave
    return ended


# -- spawn, headless ---------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """A headless run: the request it answered (None: --prompt alone), the program's
    exit code and final output, its end-state, and the reply sent."""

    request: dict[str, Any] | None
    returncode: int
    output: str
    status: str
    reply: dict[str, Any] | None


def oldest_request(settings: Settings, name: str, *, timeout: float) -> dict[str, Any] | None:
    """The oldest unread request to ``name``, waited for up to ``timeout`` seconds
    (0: only look). It is marked read: the prompt carries it."""
    from .client.http import OneShot

    shot = OneShot(settings, name)
    deadline = time.monotonic() + timeout
    while True:
        messages = shot.call("inbox", limit=1000)["messages"]
        request = next((m for m in messages if m.get("kind") == "request"), None)
        if request is not None:
            shot.call("ack", ids=[request["id"]], state="read")
            return dict(request)
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_INTERVAL * 2.5)  # sleep-ok: bounded poll for a request to arrive


def headless_prompt(prompt: str | None, request: dict[str, Any] | None) -> str:
    """What the one-shot run is asked: ``prompt``, then the request, framed as every
    peer message is, and how its answer goes back."""
    from .injection import frame

    parts = [prompt] if prompt else []
    if request is not None:
        parts.append(
            f"Answer this request from {request['from']} on the mesh. Your final answer is sent back to"
            f" {request['from']} as the reply when you finish: do not send that reply yourself.\n\n"
            + frame(request)
        )
    return "\n\n".join(parts)


def run_headless(
    settings: Settings,
    tool: str,
    name: str,
    *,
    cwd: Path,
    timeout: float,
    prompt: str | None = None,
    program: str | None = None,
    home: str | None = None,
    url: str | None = None,
) -> Answer:
    """Install ``tool`` in ``cwd`` as ``name``, run its one-shot mode on ``prompt`` and
    the oldest unread request to ``name`` (waited for when there is no ``prompt``),
    and reply to that request with the final output. Raises what `spawn` raises
    before starting, and `Timeout` when no request came within ``timeout``."""
    from .client.http import OneShot
    from .envelope import new_id

    check_free(settings, name)
    executable = _executable(tool, program)
    install(settings, tool, name, cwd, home=home, url=url)
    started = time.monotonic()
    request = oldest_request(settings, name, timeout=0 if prompt else timeout)
    if request is None and not prompt:
        raise Timeout(f"no request to {name} arrived within {timeout:g}s, and no --prompt was given")
    argv = [executable, *programs.get(tool).LAUNCH.headless, headless_prompt(prompt, request)]
    left = max(1.0, timeout - (time.monotonic() - started))
    env = {**os.environ, "MESH_NAME": name}
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=left)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        stdout, stderr = proc.communicate()
        returncode, stderr = -1, f"{stderr}\nmesh spawn: stopped after {left:.0f}s"
    except BaseException:  # Ctrl-C: its own session does not get the SIGINT
        _kill_group(proc.pid)
        raise
    _kill_group(proc.pid)  # MCP servers and helpers the run left behind
    status = "PASS" if returncode == 0 else "BLOCKED"
    output = stdout.strip()
    if returncode != 0:
        tail = stderr.strip()[-2000:]
        output = f"{output}\n\n{tool} exited {returncode}:\n{tail}".strip()
    if len(output) > MAX_ANSWER_CHARS:
        output = output[:MAX_ANSWER_CHARS] + "\n[cut by mesh spawn]"
    reply = None
    if request is not None:
        reply = OneShot(settings, name).call(
            "send",
            id=new_id(),
            kind="reply",
            re=request["id"],
            status=status,
            body=output or f"({tool} printed nothing)",
        )
    return Answer(request, returncode, output, status, reply)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
