"""Per-name files the broker keeps in ``$MESH_HOME`` so that a hook, which runs on
every tool call, can decide from a ``stat`` alone that it has nothing to do.

- ``blocks/NAME.json``: a guard's stop on NAME (pair mode, core/pairs.py), written
  when the guard stops NAME, removed when NAME acknowledges or the pair ends, and
  written again from the broker's state at its start. The grip's pre-tool hook
  refuses tool calls while it is there.
- ``mail/NAME``: its modification time is when mail was last stored for NAME (the
  broker touches it after the commit). A hook that last asked the broker at T (its
  ``checked`` time, `sessionmesh.quiet`) has nothing new to fetch while this is older.

The broker's state is the truth; these are hints it keeps for the hooks. Every agent
runs as the same OS user, so an agent could delete its own block: a stop is a guard's
word to a model that reads its hooks, not a sandbox (see docs/security.md). Standard
library only, and nothing is imported until it is needed.
"""

from __future__ import annotations

import os

from .plainjson import dumps, loads

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:
    from typing import Any

BLOCKS = "blocks"
MAIL = "mail"


def block_path(home: str, name: str) -> str:
    return os.path.join(home, BLOCKS, f"{name}.json")


def mail_path(home: str, name: str) -> str:
    return os.path.join(home, MAIL, name)


def read_block(home: str, name: str) -> dict[str, Any] | None:
    """NAME's block, or None (no file, or one that is not a block)."""
    try:
        with open(block_path(home, name), "rb") as fh:
            block = loads(fh.read())
    except (OSError, ValueError):
        return None
    return block if isinstance(block, dict) else None


def write_block(home: str, name: str, block: dict[str, Any] | None) -> None:
    """Mark NAME blocked (atomically), or clear its mark with ``None``."""
    target = block_path(home, name)
    if block is None:
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        return
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(dumps(block))
    os.replace(tmp, target)


def sync_blocks(home: str, blocks: dict[str, dict[str, Any]]) -> None:
    """Make the folder say exactly ``blocks`` (the broker's state, at its start)."""
    folder = os.path.join(home, BLOCKS)
    if os.path.isdir(folder):
        for entry in os.listdir(folder):
            if entry.endswith(".json") and entry[: -len(".json")] not in blocks:
                write_block(home, entry[: -len(".json")], None)
    for name, block in blocks.items():
        write_block(home, name, block)


class MailMarks:
    """The broker's side of ``mail/NAME``: touched once per name per batch of effects."""

    def __init__(self, home: str) -> None:
        self.folder = os.path.join(home, MAIL)
        self.made: set[str] = set()

    def touch(self, names: set[str]) -> None:
        for name in names:
            path = os.path.join(self.folder, name)
            if name in self.made:
                try:
                    os.utime(path)
                    continue
                except FileNotFoundError:
                    pass  # removed by hand: make it again
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            with open(path, "ab"):
                pass
            os.utime(path)
            self.made.add(name)
