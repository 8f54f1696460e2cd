"""Editing Codex's ``config.toml``: the ``[mcp_servers.sessionmesh]`` table.

`tomlkit` keeps the user's comments, order and spacing, so the diff shows only our
table and uninstalling gives back the file as it was. Only this module imports it.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
import tomlkit.items

from ..errors import BadRequest
from .changes import FileChange, read_text


def edit_server(path: Path, label: str, name: str, entry: dict[str, Any] | None) -> FileChange | None:
    """Plan setting the keys of ``entry`` in ``mcp_servers.<name>`` (``None``: removing
    the table). Keys the user added to the table (``env``, timeouts) are kept.

    Returns ``None`` when the configuration means the same afterwards. A file left
    empty by the removal is removed. Raises `BadRequest` when the file is not TOML or
    ``mcp_servers`` is not a table.
    """
    before = read_text(path)
    doc = _parse(before or "", label)
    meaning = doc.unwrap()
    servers = doc.get("mcp_servers")
    if servers is not None and not isinstance(servers, MutableMapping):
        raise BadRequest(f"{label}: mcp_servers is a {type(servers).__name__}, expected a table")
    if entry is None:
        if servers is None or name not in servers:
            return None
        del servers[name]
        if not servers:
            del doc["mcp_servers"]
    else:
        if servers is None:
            servers = tomlkit.table(is_super_table=True)
            doc["mcp_servers"] = servers
        current = servers.get(name)
        if isinstance(current, MutableMapping):  # keep the user's own keys and comments in it
            for key, value in entry.items():
                if current.get(key) != value:
                    current[key] = value
        else:
            servers[name] = _table(entry, inline=isinstance(servers, tomlkit.items.InlineTable))
    if doc.unwrap() == meaning:
        return None
    after = tomlkit.dumps(doc).rstrip("\n")
    if not after.strip():
        return FileChange(path, label, before, None, backup=False)  # all it held was ours
    return FileChange(path, label, before, after + "\n")


def _parse(text: str, label: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise BadRequest(
            f"{label} is not valid TOML ({exc}); nothing was changed", hint=f"fix {label}, then run again"
        ) from None


def _table(entry: dict[str, Any], *, inline: bool) -> Any:
    if inline:
        table: Any = tomlkit.inline_table()
        table.update(entry)
        return table
    table = tomlkit.table()
    for key, value in entry.items():
        table[key] = value
    table.add(tomlkit.nl())  # a blank line between our table and the next one
    return table


def read(path: Path, label: str) -> dict[str, Any]:
    """The TOML file at ``path`` as plain data (absent: empty). Raises `BadRequest`."""
    return _parse(read_text(path) or "", label).unwrap()


def read_server(path: Path, label: str, name: str) -> dict[str, Any] | None:
    """``mcp_servers.<name>`` of the file at ``path`` when it has a ``command``, else None."""
    entry = (read(path, label).get("mcp_servers") or {}).get(name)
    return entry if isinstance(entry, dict) and isinstance(entry.get("command"), str) else None
