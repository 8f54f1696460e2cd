"""A planned change to one file: its diff, its backup, and carrying it out.

Planning is separate from writing so an installer can check every file it will touch
(and refuse on the first unreadable one) before it changes any of them, and so
``--dry-run`` shows exactly what a real run would write.

Backups go under ``$MESH_HOME/backups/``, never beside the config (a project would
collect them, and commit them): one folder per run, named by its time and what it
did, holding each file it changed under that file's absolute path
(``backups/20260510-142233-install-codex/home/me/app/.codex/config.toml``), so a
``cp`` puts one back.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileChange:
    """``path`` goes from ``before`` to ``after`` (``None``: the file is absent).

    ``label`` names the file in diffs and messages. ``backup`` says whether the old
    content is worth keeping: a user's config always is; a skill file that holds
    exactly the text sessionmesh wrote is not.
    """

    path: Path
    label: str
    before: str | None
    after: str | None
    backup: bool = True

    def diff(self) -> str:
        """The unified diff of this change (``/dev/null`` for a created or removed file)."""
        lines = difflib.unified_diff(
            (self.before or "").splitlines(keepends=True),
            (self.after or "").splitlines(keepends=True),
            fromfile="/dev/null" if self.before is None else self.label,
            tofile="/dev/null" if self.after is None else self.label,
        )
        return "".join(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
        )


def read_text(path: Path) -> str | None:
    """The file's text as it is (CRLF line ends kept), or ``None`` when it does not exist."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


class Backups:
    """The backup folder of one run, ``<root>/<time>-<what>/``, made on first use."""

    def __init__(self, root: Path, what: str) -> None:
        self.root = root
        self.what = what
        self._folder: Path | None = None

    def keep(self, path: Path, source: Path) -> Path:
        """Copy ``source`` (the file behind ``path``) into the folder, under ``path``'s
        absolute path, keeping its mode. Returns the copy. Raises ``OSError``."""
        folder = self._folder or self._make()
        copy = folder.joinpath(*path.absolute().parts[1:])
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(source.read_bytes())
        os.chmod(copy, source.stat().st_mode & 0o7777)
        return copy

    def _make(self) -> Path:
        # private: a config can hold tokens (an MCP server's env)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 1
        while True:
            folder = self.root / (f"{stamp}-{self.what}" + (f"-{n}" if n > 1 else ""))
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:
                n += 1
                continue
            self._folder = folder
            return folder


def apply(change: FileChange, *, stop: Path, backups: Backups) -> Path | None:
    """Carry out ``change``: back up the old file into ``backups``, then write or remove it.

    Writes go to a temporary file that replaces the target, keeping the old file's
    mode, and follow a symlinked config file (dotfile managers) to write through it.
    After a removal, folders left empty are removed up to (not including) ``stop``.
    Returns the backup's path, if one was made. Raises ``OSError``.
    """
    target = change.path.resolve() if change.path.is_symlink() else change.path
    backup = backups.keep(change.path, target) if change.backup and change.before is not None else None
    if change.after is None:
        target.unlink(missing_ok=True)
        _prune(change.path.parent, stop)
    else:
        _write(target, change.after)
    return backup


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _prune(folder: Path, stop: Path) -> None:
    stop = stop.resolve()
    folder = folder.resolve()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            return
        folder = folder.parent
