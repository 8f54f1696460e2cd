"""Messages a hook showed to an agent's session that the session has not yet gone past.

A hook prints a message into a program's turn, but printing is not reading: the
program may die before the model ever sees the text (an argument error, a failed
model request, a killed terminal). So a hook does not mark what it printed ``read``.
It records the ids here, under the session that was shown them, and a later hook
event of that same session that only comes after a model response (after a tool
call, or the stop: the program's ``after_model`` events) proves the model had them:
that event acks them ``read`` first. Until then the session is not shown them again.
A session that ends before such an event never confirms them; the messages stay
unread at the broker and the next session is offered them again.

One small JSON file per name, ``$MESH_HOME/shown/<name>.json``::

    {"<session id>": {"ids": ["01a2…", …], "at": 1795316780.4}}

guarded by an advisory lock on ``<name>.lock`` (a program may run several hooks at
once). Entries older than `KEEP` are dropped: their session is long gone.
Standard library only: a hook imports this on every tool call.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from .plainjson import dumps, loads

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:
    from typing import Any

KEEP = 7 * 24 * 3600.0  # seconds an unconfirmed entry is kept


class Ledger:
    """The shown-but-unconfirmed ids of one name, loaded under its lock."""

    def __init__(self, path: str, entries: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.entries = entries
        self.changed = False

    def shown_to(self, session: str) -> list[str]:
        """The ids shown to ``session`` and not yet confirmed."""
        entry = self.entries.get(session)
        return list(entry.get("ids") or []) if isinstance(entry, dict) else []

    def every_id(self) -> list[str]:
        """Every unconfirmed id, whatever session it was shown to."""
        return [i for s in list(self.entries) for i in self.shown_to(s)]

    def forget(self, session: str | None = None) -> None:
        """Forget what ``session`` (None: every session) was shown: it was acked read,
        or is to be shown again."""
        for key in [session] if session is not None else list(self.entries):
            if self.entries.pop(key, None) is not None:
                self.changed = True

    def hand_over(self, session: str, ids: list[str]) -> None:
        """``session`` was shown ``ids`` again: other sessions (most likely gone, or they
        would not be shown again) no longer wait to confirm them; this one does. An
        entry left with nothing is dropped, so a dead session does not keep the name's
        hooks from being quiet (`sessionmesh.quiet`) for the week it is kept."""
        given = set(ids)
        for key in [k for k in self.entries if k != session]:
            kept = [i for i in self.shown_to(key) if i not in given]
            if len(kept) != len(self.shown_to(key)):
                self.changed = True
                if kept:
                    self.entries[key]["ids"] = kept
                else:
                    del self.entries[key]

    def record(self, session: str, ids: list[str], *, now: float | None = None) -> None:
        """Remember that ``ids`` were shown to ``session`` (replacing what it had)."""
        self.entries[session] = {"ids": list(ids), "at": time.time() if now is None else now}
        self.changed = True


def _paths(home: str, name: str) -> tuple[str, str]:
    folder = os.path.join(home, "shown")
    return os.path.join(folder, f"{name}.json"), os.path.join(folder, f"{name}.lock")


@contextlib.contextmanager
def ledger(home: str, name: str, *, now: float | None = None) -> Iterator[Ledger]:
    """The ledger of ``name``, locked for the block and written back if it changed.

    With no file yet (the quiet case) it costs one failed ``stat``: the lock and the
    folder are only made once something is recorded.
    """
    path, lock_path = _paths(home, name)
    if not os.path.exists(path):
        book = Ledger(path, {})
        yield book
        if book.changed and book.entries:
            with _locked(lock_path):
                merged = _load(path)
                merged.update(book.entries)
                _save(path, merged)
        return
    with _locked(lock_path):
        book = Ledger(path, _load(path))
        cutoff = (time.time() if now is None else now) - KEEP
        for key in [k for k, v in book.entries.items() if float(v.get("at") or 0) < cutoff]:
            book.forget(key)
        yield book
        if book.changed:
            _save(path, book.entries)


@contextlib.contextmanager
def _locked(lock_path: str) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.dirname(lock_path), mode=0o700, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _load(path: str) -> dict[str, dict[str, Any]]:
    try:
        with open(path) as fh:
            data = loads(fh.read())
    except (FileNotFoundError, ValueError, OSError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("ids"), list)}


def _save(path: str, entries: dict[str, dict[str, Any]]) -> None:
    if not entries:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(dumps(entries, ascii_only=True))  # whatever the locale's encoding
    os.replace(tmp, path)
