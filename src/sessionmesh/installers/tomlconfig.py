"""Editing Codex's ``config.toml``: the ``[mcp_servers.sessionmesh]`` table.

A new table is appended to the file's text, after a blank line, ending as the file
ended (with a newline or without), and uninstalling cuts out exactly that text, so
the file comes back byte for byte. Everything else goes through `tomlkit`, which
keeps the user's comments, order and spacing; so does every text edit, checked
against what tomlkit makes of the file. Only this module imports tomlkit.
"""

from __future__ import annotations

import json
import re
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
    original = read_text(path)
    before = original or ""
    doc = _parse(before, label)
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
        text = _cut(before, name)
    else:
        text = None
        if servers is None:
            servers = tomlkit.table(is_super_table=True)
            doc["mcp_servers"] = servers
        current = servers.get(name)
        if isinstance(current, MutableMapping):  # keep the user's own keys and comments in it
            for key, value in entry.items():
                if current.get(key) != value:
                    current[key] = value
        else:
            text = _append(before, name, entry)
            servers[name] = _table(entry, inline=isinstance(servers, tomlkit.items.InlineTable))
    wanted = doc.unwrap()
    if wanted == meaning:
        return None
    if text is None or _meaning(text) != wanted:  # a layout the text edit does not know
        text = tomlkit.dumps(doc)
    if not text.strip():
        return FileChange(path, label, original, None, backup=False)  # all it held was ours
    return FileChange(path, label, original, text)


def _append(text: str, name: str, entry: dict[str, Any]) -> str:
    """``text`` with a ``[mcp_servers.<name>]`` table after it: a blank line first,
    and a final newline only if ``text`` had one (so `_cut` can take it all back)."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = [f"[mcp_servers.{_key(name)}]"]
    lines += [f"{_key(key)} = {tomlkit.item(value).as_string()}" for key, value in entry.items()]
    block = newline.join(lines)
    if not text:
        return block + newline
    if text.endswith("\n"):
        return text + newline + block + newline
    return text + newline + newline + block


def _cut(text: str, name: str) -> str | None:
    """``text`` without the ``[mcp_servers.<name>]`` table (its header up to the next
    header), and at the end of the file without what `_append` put before it; None
    when the table is not written that way."""
    header = re.compile(
        rf"^[ \t]*\[[ \t]*mcp_servers[ \t]*\.[ \t]*(?:{re.escape(name)}|\"{re.escape(name)}\")[ \t]*\][ \t]*(?:#[^\r\n]*)?\r?$",
        re.M,
    )
    found = header.search(text)
    if found is None:
        return None
    start = found.start()
    following = re.compile(r"^[ \t]*\[", re.M).search(text, found.end())
    if following is not None:
        return text[:start] + text[following.start() :]
    head = text[:start]
    if text.endswith("\n"):  # _append put a blank line before the table
        for blank in ("\r\n", "\n"):
            if head.endswith(blank) and head[: -len(blank)].endswith("\n"):
                return head[: -len(blank)]
        return head
    for gap in ("\r\n\r\n", "\n\n"):  # the file had no final newline: _append gave it two
        if head.endswith(gap):
            return head[: -len(gap)]
    return head


def _meaning(text: str) -> dict[str, Any] | None:
    try:
        return tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.ParseError:
        return None


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


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
