"""The person: a principal no agent holds.

Every agent on this machine reads the broker token and its own name's secret, so
neither can stand for the person. The person's credential is a passphrase set on a
terminal (``mesh person init``) and kept only as a slow hash (scrypt) in
``$MESH_HOME/person.json``; nothing derives it from the token, the secrets folder or
any API, and no API sets it. Whoever proves it gets a *person session* from the
broker (`PersonGate`), and only a person session may act as ``human``: approve or
reject held messages, send as the person, read the dashboard.

The passphrase is read from the controlling terminal (``/dev/tty``), never from an
argument, the environment or stdin, so an agent's tool shell, which has no terminal
of its own, cannot be made to pass it. The broker checks one guess at a time and at
most one wrong guess a second, and writes each wrong guess into the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from .config import Settings
from .errors import BadPassphrase, NeedsTerminal, NoPerson, RateLimited

MIN_LENGTH = 10
SESSION_TTL = 12 * 3600.0
WRONG_GUESS_PAUSE = 1.0  # after a wrong guess, the next is refused for this long
SCRYPT = {"n": 2**15, "r": 8, "p": 1}  # about 60 ms and 32 MiB a guess
_SCRYPT_MAXMEM = 64 * 1024 * 1024


# -- the credential file ----------------------------------------------------------
def credential_path(settings: Settings) -> str:
    return os.path.join(settings.home, "person.json")


def _derive(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    return hashlib.scrypt(
        passphrase.encode(),
        salt=salt,
        n=params["n"],
        r=params["r"],
        p=params["p"],
        maxmem=_SCRYPT_MAXMEM,
        dklen=32,
    )


def write_credential(settings: Settings, passphrase: str) -> None:
    """Keep the scrypt hash of ``passphrase`` (0600, replaced atomically)."""
    if len(passphrase) < MIN_LENGTH:
        raise BadPassphrase(f"a passphrase needs at least {MIN_LENGTH} characters")
    salt = secrets.token_bytes(16)
    record = {
        "kdf": "scrypt",
        **SCRYPT,
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(_derive(passphrase, salt, SCRYPT)).decode(),
        "created_at": time.time(),
    }
    os.makedirs(settings.home, mode=0o700, exist_ok=True)
    path = credential_path(settings)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
        fh.write("\n")
    os.replace(tmp, path)


def read_credential(settings: Settings) -> dict[str, Any] | None:
    try:
        with open(credential_path(settings)) as fh:
            record = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise NoPerson(
            f"{credential_path(settings)} cannot be read", hint="run 'mesh person init' again"
        ) from None
    return record if isinstance(record, dict) else None


def verify(record: dict[str, Any], passphrase: str) -> bool:
    """Whether ``passphrase`` is the one ``record`` was made from (constant time)."""
    try:
        params = {k: int(record[k]) for k in ("n", "r", "p")}
        salt = base64.b64decode(record["salt"])
        expected = base64.b64decode(record["hash"])
    except (KeyError, TypeError, ValueError):
        return False
    return hmac.compare_digest(_derive(passphrase, salt, params), expected)


# -- asking on the terminal ---------------------------------------------------------
def ask(prompt: str, *, echo: bool = False) -> str:
    """Read a passphrase (or, with ``echo``, a confirmation) from the controlling
    terminal; `NeedsTerminal` when this process has none (an agent's tool shell, a
    pipe, cron)."""
    import getpass

    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise NeedsTerminal(
            "the person is asked on a terminal, and this process has none",
            hint="run the command yourself in a terminal; agents cannot act as the person",
        ) from None
    if not echo:
        os.close(fd)
        return getpass.getpass(prompt)
    try:
        os.write(fd, prompt.encode())
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            line += chunk
        return line.decode(errors="replace")
    finally:
        os.close(fd)


# -- the broker's side ----------------------------------------------------------------
class PersonGate:
    """Checks passphrases, one at a time and off the event loop, and keeps the
    person sessions they open (in memory: a broker restart ends them)."""

    def __init__(self, settings: Settings, audit: Callable[[str, dict[str, Any]], None]) -> None:
        self.settings = settings
        self._audit = audit
        self._sessions: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._next_guess = 0.0

    async def login(self, passphrase: Any) -> tuple[str, float]:
        """A new person session and its expiry, for the right passphrase. Raises
        `NoPerson`, `BadPassphrase` or `RateLimited` (after a wrong guess)."""
        if not isinstance(passphrase, str) or not passphrase:
            raise BadPassphrase("'passphrase' must be a non-empty string")
        if time.monotonic() < self._next_guess or self._lock.locked():
            raise RateLimited(
                "one guess at a time, and one wrong guess a second", hint="try again in a second"
            )
        async with self._lock:
            record = read_credential(self.settings)
            if record is None:
                raise NoPerson(
                    "no person credential is set on this machine",
                    hint="the person runs 'mesh person init' in a terminal",
                )
            if not await asyncio.to_thread(verify, record, passphrase):
                self._next_guess = time.monotonic() + WRONG_GUESS_PAUSE
                self._audit("person_denied", {})
                raise BadPassphrase("wrong passphrase")
        now = time.time()
        self._sessions = {s: t for s, t in self._sessions.items() if t > now}
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + SESSION_TTL
        self._audit("person_session", {})
        return session, now + SESSION_TTL

    def valid(self, session: Any) -> bool:
        return isinstance(session, str) and self._sessions.get(session, 0.0) > time.time()

    def end(self, session: Any) -> None:
        if isinstance(session, str):
            self._sessions.pop(session, None)
