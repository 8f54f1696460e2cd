"""Finding the broker (``MESH_URL``, else ``$MESH_HOME/broker.json``), starting one
when none answers, and keeping this machine's name secrets (0600 files).

Only the standard library, so that one-shot commands and hooks start fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from ..config import Settings
from ..errors import Unavailable
from ..plainjson import loads
from ..quiet import git_root
from ..record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:
    import subprocess
    from typing import Any

# http.client, subprocess, socket and fcntl are imported where used: a hook that
# only reads broker.json and makes one request should not pay for them.

SPAWN_TIMEOUT = 15.0
# Brokers this process started: kept so their Popen objects are never collected
# while the broker runs (it outlives us, by design).
_spawned: list[subprocess.Popen[bytes]] = []


@record
class BrokerAddress:
    url: str
    token: str

    @property
    def host_port(self) -> tuple[str, int]:
        import urllib.parse

        parsed = urllib.parse.urlsplit(self.url)
        return parsed.hostname or "127.0.0.1", parsed.port or 80

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/ws"


def health(url: str, *, timeout: float = 1.0) -> dict[str, Any] | None:
    """GET /health; None when nothing healthy answers."""
    from .plainhttp import Endpoint

    try:
        status, payload = Endpoint(url).request("GET", "/health", b"", {}, timeout)
        if status != 200:
            return None
        data = loads(payload)
        return data if isinstance(data, dict) and data.get("ok") else None
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its parent counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc")


def read_broker_file(settings: Settings) -> dict[str, Any] | None:
    try:
        with open(settings.broker_file) as fh:
            data = loads(fh.read())
    except (FileNotFoundError, ValueError, OSError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("url"), str) else None


def running_broker(settings: Settings) -> dict[str, Any] | None:
    """The health of the broker this home's broker.json names, if it answers."""
    info = read_broker_file(settings)
    if info is None:
        return None
    status = health(info["url"])
    if status is None or status.get("pid") != info.get("pid"):
        return None
    return status


def read_token(settings: Settings) -> str:
    if settings.token:
        return settings.token
    try:
        with open(settings.token_path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        raise Unavailable(
            f"no broker token at {settings.token_path}",
            hint="start a broker for this MESH_HOME ('mesh up') or set MESH_TOKEN",
        ) from None


def locate(settings: Settings, *, autostart: bool | None = None) -> BrokerAddress:
    """The broker to talk to, starting one in the background if allowed and needed.

    Raises `Unavailable` when no broker answers and none may be started.
    """
    if settings.url:
        return BrokerAddress(settings.url.rstrip("/"), read_token(settings))
    status = running_broker(settings)
    if status is None:
        if not (settings.autostart if autostart is None else autostart):
            raise Unavailable(
                f"no broker is running for {settings.home}",
                hint="start one with 'mesh up' (autostart is off: MESH_AUTOSTART=0)",
            )
        status = start_background(settings)
    return BrokerAddress(status["url"], read_token(settings))


def start_background(
    settings: Settings, *, autostarted: bool = True, any_port: bool = True
) -> dict[str, Any]:
    """Start ``mesh serve`` detached and wait until it answers. With ``any_port`` a
    taken port is no failure: the broker takes a free one and records it in broker.json.

    A flock on ``$MESH_HOME/spawn.lock`` serialises racing clients: the first starts
    the broker, the rest find it running when they get the lock.
    """
    import fcntl
    import subprocess

    os.makedirs(settings.home, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(settings.home, "spawn.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        status = running_broker(settings)
        if status is not None:
            return status
        cmd = [
            sys.executable,
            "-m",
            "sessionmesh",
            "serve",
            "--home",
            settings.home,
            "--host",
            settings.host,
            "--port",
            str(settings.port),
        ]
        if autostarted:
            cmd.append("--autostarted")
        if any_port:
            cmd.append("--any-port")
        log_path = os.path.join(settings.home, "broker.log")
        rotate(log_path)
        logged = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={**os.environ, "MESH_HOME": settings.home},
            )
        _spawned.append(proc)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline:
            info = read_broker_file(settings)
            if info is not None and info.get("pid") == proc.pid:
                status = health(info["url"])
                if status is not None:
                    return status
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        raise Unavailable(f"the broker did not start: {_why(log_path, logged)}", hint=f"more in {log_path}")
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _why(log_path: str, offset: int) -> str:
    """The error a broker that failed to start wrote last (``mesh: CODE: …``)."""
    with contextlib.suppress(OSError), open(log_path, errors="replace") as fh:
        fh.seek(offset)
        said = [line.strip() for line in fh if line.startswith("mesh: ")]
        if said:
            return said[-1].removeprefix("mesh: ")
    return "it exited at once"


LOG_KEEP_BYTES = 5 * 1024 * 1024  # a broker.log past this is rotated when a broker starts
LOG_KEEP_FILES = 3


def rotate(path: str) -> None:
    """``broker.log`` → ``broker.log.1`` → … (``LOG_KEEP_FILES`` kept) once it is over
    ``LOG_KEEP_BYTES``; the broker about to start writes a fresh one."""
    try:
        if os.path.getsize(path) < LOG_KEEP_BYTES:
            return
    except OSError:
        return
    for n in range(LOG_KEEP_FILES - 1, 0, -1):
        with contextlib.suppress(OSError):
            os.replace(f"{path}.{n}", f"{path}.{n + 1}")
    with contextlib.suppress(OSError):
        os.replace(path, f"{path}.1")


# -- name secrets ----------------------------------------------------------------
def _secret_path(settings: Settings, name: str) -> str:
    return os.path.join(settings.secrets_dir, name)


def load_secret(settings: Settings, name: str) -> str | None:
    with contextlib.suppress(FileNotFoundError):
        with open(_secret_path(settings, name)) as fh:
            return fh.read().strip() or None
    return None


def save_secret(settings: Settings, name: str, secret: str) -> None:
    os.makedirs(settings.secrets_dir, mode=0o700, exist_ok=True)
    path = _secret_path(settings, name)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.replace(tmp, path)


def forget_secret(settings: Settings, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(_secret_path(settings, name))


def peer_meta(client: str, role: str | None = None) -> dict[str, Any]:
    """What a peer says about itself when it joins."""
    cwd = os.getcwd()
    root = git_root(cwd)
    import socket

    meta: dict[str, Any] = {"machine": socket.gethostname(), "cwd": cwd, "client": client}
    if root:
        meta["git_root"] = root
    if role:
        meta["role"] = role
    return meta
