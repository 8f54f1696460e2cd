"""A planned change to one file: its diff, its backup, and carrying it out.

Planning is separate from writing so an installer can check every file it will touch
(and refuse on the first unreadable one) before it changes any of them, and so
``--dry-run`` shows exactly what a real run would write.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BACKUP_MARK = ".mesh-backup-"


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
    """The file's text, or ``None`` when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def apply(change: FileChange, *, stop: Path) -> Path | None:
    """Carry out ``change``: back up the old file, then write or remove it.

    Writes go to a temporary file that replaces the target, keeping the old file's
    mode, and follow a symlinked config file (dotfile managers) to write through it.
    After a removal, folders left empty are removed up to (not including) ``stop``.
    Returns the backup's path, if one was made. Raises ``OSError``.
    """
    target = change.path.resolve() if change.path.is_symlink() else change.path
    backup = _backup(target) if change.backup and change.before is not None else None
    if change.after is None:
        target.unlink(missing_ok=True)
        _prune(change.path.parent, stop)
    else:
        _write(target, change.after)
    return backup


def _backup(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}{BACKUP_MARK}{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}{BACKUP_MARK}{stamp}-{n}")
    backup.write_bytes(path.read_bytes())
    os.chmod(backup, path.stat().st_mode & 0o7777)
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
