"""Editing a tool's JSON config: the ``mcpServers`` map and the ``hooks`` map.

Claude Code, Codex (``hooks.json``) and Gemini CLI share one hooks shape::

    {"hooks": {"EventName": [{"matcher": "...", "hooks": [{"type": "command", "command": "..."}]}]}}

and Claude Code and Gemini CLI share one MCP shape: ``{"mcpServers": {"name": {"command", "args"}}}``.
The functions here change a parsed document in place and touch nothing that is not
sessionmesh's: the server named ``sessionmesh``, and hook handlers whose command runs
``mesh hook`` (see `is_our_command`). Containers they empty are removed again, and
`edit` writes the change into the file's own text (`jsontext`), so install then
uninstall gives back the file byte for byte.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadRequest
from . import jsontext
from .changes import FileChange, read_text

Doc = dict[str, Any]

_OUR_HOOK = re.compile(r"(?:^|[\s/\\'\"])mesh(?:\.exe)?['\"]?\s+hook\s|-m\s+sessionmesh\s+hook\s")


def is_our_command(command: Any) -> bool:
    """Whether a hook command is one sessionmesh installed (``mesh hook …`` or
    ``python -m sessionmesh hook …``), whatever tool, event or ``--as`` it names."""
    return isinstance(command, str) and bool(_OUR_HOOK.search(command + " "))


def edit(
    path: Path, label: str, change: Callable[[Doc], None], *, removing: bool = False
) -> FileChange | None:
    """Plan ``change`` applied to the JSON object in ``path`` (absent: ``{}``).

    Returns ``None`` when the document means the same afterwards. Formatting is not
    compared: a file whose content already holds our entries is left byte for byte.
    Otherwise only what changes is rewritten, in the file's own layout. When
    ``removing`` empties a document that was not empty, the file is removed (without
    a backup: all it held was ours).
    Raises `BadRequest` when the file is not a JSON object.
    """
    before = read_text(path)
    doc = parse(before, label)
    after = copy.deepcopy(doc)
    change(after)
    if after == doc:
        return None
    if removing and not after and doc:
        # everything in it was ours: nothing of the user's to back up
        return FileChange(path, label, before, None, backup=False)
    return FileChange(path, label, before, _text(before, after))


def _text(before: str | None, after: Doc) -> str:
    """``after`` as the file's new text: ``before`` edited where they differ, or (a new
    file, or should an edit not read back as ``after``) the whole document written out."""
    if before is not None and before.strip():
        patched = jsontext.patch(before, after)
        if json.loads(patched) == after:
            return patched
    return render(after, _indent(before))


def parse(text: str | None, label: str) -> Doc:
    """The JSON object in ``text`` (``None`` or blank: an empty one). Raises `BadRequest`."""
    if text is None or not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BadRequest(
            f"{label} is not valid JSON ({exc}); nothing was changed",
            hint=f"fix {label} (comments and trailing commas are not JSON), then run again",
        ) from None
    if not isinstance(doc, dict):
        raise BadRequest(f"{label} holds a JSON {type(doc).__name__}, not an object; nothing was changed")
    return doc


def render(doc: Doc, indent: int | str = 2) -> str:
    return json.dumps(doc, indent=indent, ensure_ascii=False) + "\n"


def _indent(text: str | None) -> int | str:
    """The indent the file already uses, so a diff shows our lines, not a reformat."""
    for line in (text or "").splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and len(stripped) < len(line):
            lead = line[: len(line) - len(stripped)]
            return "\t" if lead.startswith("\t") else len(lead)
    return 2


def _object(parent: Doc, key: str, label: str) -> Doc:
    value = parent.setdefault(key, {})
    if not isinstance(value, dict):
        raise BadRequest(f"{label}: '{key}' is a JSON {type(value).__name__}, expected an object")
    return value


# -- MCP servers -------------------------------------------------------------------
def put_server(doc: Doc, name: str, entry: dict[str, Any], label: str) -> None:
    """Set the keys of ``entry`` in ``mcpServers[name]``, keeping every other server and
    any key the user added to ours (``env``, a timeout)."""
    servers = _object(doc, "mcpServers", label)
    current = servers.get(name)
    servers[name] = {**current, **entry} if isinstance(current, dict) else dict(entry)


def drop_server(doc: Doc, name: str) -> None:
    """Remove ``mcpServers[name]``; remove ``mcpServers`` too if that empties it."""
    servers = doc.get("mcpServers")
    if isinstance(servers, dict) and name in servers:
        del servers[name]
        if not servers:
            del doc["mcpServers"]


# -- hooks ---------------------------------------------------------------------------
def put_hooks(doc: Doc, wanted: dict[str, dict[str, Any]], label: str) -> None:
    """Make our handlers exactly the matcher groups in ``wanted`` (event → group).

    An event whose group is already there, once, is left alone; otherwise our old
    handlers for it are removed and the group appended after the user's own. Our
    handlers under events no longer wanted are removed.
    """
    hooks = _object(doc, "hooks", label)
    for event, group in wanted.items():
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise BadRequest(f"{label}: hooks.{event} is a JSON {type(groups).__name__}, expected a list")
        if group in groups and _count_ours(groups) == len(group["hooks"]):
            continue
        _strip(groups)
        groups.append(copy.deepcopy(group))
    for event in [e for e in hooks if e not in wanted]:
        _strip_event(hooks, event)


def drop_hooks(doc: Doc) -> None:
    """Remove every handler of ours; remove groups, events and ``hooks`` we emptied."""
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        return
    for event in list(hooks):
        _strip_event(hooks, event)
    if not hooks:
        del doc["hooks"]


def _handlers(group: Any) -> list[Any]:
    handlers = group.get("hooks") if isinstance(group, dict) else None
    return handlers if isinstance(handlers, list) else []


def _count_ours(groups: list[Any]) -> int:
    return sum(
        1 for g in groups for h in _handlers(g) if isinstance(h, dict) and is_our_command(h.get("command"))
    )


def _strip(groups: list[Any]) -> bool:
    """Remove our handlers from ``groups``; drop groups that had only ours. True if any."""
    removed = False
    for group in list(groups):
        handlers = _handlers(group)
        keep = [h for h in handlers if not (isinstance(h, dict) and is_our_command(h.get("command")))]
        if len(keep) != len(handlers):
            removed = True
            if keep:
                group["hooks"] = keep
            else:
                groups.remove(group)
    return removed


def _strip_event(hooks: Doc, event: str) -> None:
    # Gemini keeps non-event keys here too ("disabled": [names], "enabled": true)
    groups = hooks[event]
    if isinstance(groups, list) and _strip(groups) and not groups:
        del hooks[event]


# -- list entries (a permission rule, a trusted name) -------------------------------
def put_item(doc: Doc, path: tuple[str, ...], item: str, label: str) -> None:
    """Add ``item`` to the list at ``path`` (objects made as needed), once."""
    parent = doc
    for key in path[:-1]:
        parent = _object(parent, key, label)
    items = parent.setdefault(path[-1], [])
    if not isinstance(items, list):
        raise BadRequest(f"{label}: '{'.'.join(path)}' is a JSON {type(items).__name__}, expected a list")
    if item not in items:
        items.append(item)


def drop_item(doc: Doc, path: tuple[str, ...], item: str) -> None:
    """Remove ``item`` from the list at ``path``; remove the containers it empties."""
    chain: list[Doc] = [doc]
    for key in path[:-1]:
        nxt = chain[-1].get(key)
        if not isinstance(nxt, dict):
            return
        chain.append(nxt)
    items = chain[-1].get(path[-1])
    if not isinstance(items, list) or item not in items:
        return
    items.remove(item)
    if items:
        return
    del chain[-1][path[-1]]
    for parent, key in zip(reversed(chain[:-1]), reversed(path[:-1]), strict=True):
        if parent[key]:
            break
        del parent[key]


# -- reading back what is installed (mesh doctor) ------------------------------------
def read_server(path: Path, label: str, name: str) -> dict[str, Any] | None:
    """``mcpServers[name]`` of the JSON file at ``path`` when it has a ``command``, else
    None. Raises `BadRequest` when the file is not a JSON object."""
    entry = (parse(read_text(path), label).get("mcpServers") or {}).get(name)
    return entry if isinstance(entry, dict) and isinstance(entry.get("command"), str) else None


def our_commands(doc: Doc) -> list[str]:
    """The command of every hook handler of ours, under any event."""
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        return []
    return [
        h["command"]
        for groups in hooks.values()
        if isinstance(groups, list)
        for g in groups
        for h in _handlers(g)
        if isinstance(h, dict) and is_our_command(h.get("command"))
    ]


def has_our_hook(doc: Doc, event: str) -> bool:
    """Whether ``hooks[event]`` holds a handler of ours."""
    groups = (doc.get("hooks") or {}).get(event)
    return isinstance(groups, list) and _count_ours(groups) > 0
