"""The blocks a guard put on its grip (pair mode), as files the grip's hook reads.

A grip's pre-tool hook runs before every tool call, so it must not ask the broker:
the broker writes ``$MESH_HOME/blocks/NAME.json`` when a guard stops NAME and removes
it when NAME acknowledges (or the pair ends), and the hook only looks for the file.
The broker's state is the truth; at start it writes these files again from it.

Every agent runs as the same OS user, so an agent could delete its own file: the
block is a guard's stop for a model that reads its hooks, not a sandbox (see
docs/security.md). Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

DIR = "blocks"


def path(home: str | os.PathLike[str], name: str) -> Path:
    return Path(home) / DIR / f"{name}.json"


def read(home: str | os.PathLike[str], name: str) -> dict[str, Any] | None:
    """NAME's block, or None (no file, or one that is not a block)."""
    try:
        with open(path(home, name), "rb") as fh:
            block = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return block if isinstance(block, dict) else None


def write(home: str | os.PathLike[str], name: str, block: dict[str, Any] | None) -> None:
    """Mark NAME blocked (atomically), or clear its mark with ``None``."""
    target = path(home, name)
    if block is None:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        return
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(block, ensure_ascii=False))
    os.replace(tmp, target)


def sync(home: str | os.PathLike[str], blocks: dict[str, dict[str, Any]]) -> None:
    """Make the folder say exactly ``blocks`` (the broker's state, at its start)."""
    folder = Path(home) / DIR
    if folder.is_dir():
        for stale in folder.glob("*.json"):
            if stale.stem not in blocks:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
    for name, block in blocks.items():
        write(home, name, block)
