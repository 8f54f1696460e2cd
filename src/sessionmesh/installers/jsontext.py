"""Changing a JSON document's text in place: only what changes is rewritten.

`patch` takes a file's text and the document it should hold afterwards and edits the
text where the two differ. A member or item that goes is cut out with the separator
before it; a new one is written after the last one kept, in the indentation around
it; a changed scalar is replaced where it stands. Everything else (indentation, key
order, objects kept on one line, the final newline, CRLF line ends) stays byte for
byte, so a diff shows only what changed, and taking out what an earlier patch put in
gives back the text it was put into.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

_SPACE = " \t\r\n"
_DECODER = json.JSONDecoder()


@dataclass
class _Node:
    """One value of the text: where it is, what it means, and (for an object or an
    array) its members or items in order."""

    start: int
    end: int
    value: Any
    entries: list[_Entry] = field(default_factory=list)


@dataclass
class _Entry:
    start: int  # where the member's key (or the item) starts
    key: str | None  # None: an array item
    node: _Node


Edit = tuple[int, int, str]  # replace text[start:end] with the string


def patch(text: str, new: Any) -> str:
    """``text`` (valid JSON) edited to hold ``new``. Raises ``ValueError`` when ``text``
    is not JSON."""
    root = _parse(text, _skip(text, 0))
    edits: list[Edit] = []
    _Style(text).change(root, new, edits)
    # applied from the end, so each edit's offsets still hold; at one offset a removal
    # goes before an insertion, which then lands where the removed text was
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


# -- reading the text ----------------------------------------------------------------
def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _parse(text: str, i: int) -> _Node:
    opener = text[i : i + 1]
    if opener not in ("{", "["):
        value, end = _DECODER.raw_decode(text, i)
        return _Node(i, end, value)
    closer = "}" if opener == "{" else "]"
    node = _Node(i, 0, None)
    j = _skip(text, i + 1)
    while text[j] != closer:
        key = None
        start = j
        if opener == "{":
            key, j = _DECODER.raw_decode(text, j)  # the key's string
            j = _skip(text, _skip(text, j) + 1)  # past the colon
        child = _parse(text, j)
        node.entries.append(_Entry(start, key, child))
        j = _skip(text, child.end)
        if text[j] == ",":
            j = _skip(text, j + 1)
        elif text[j] != closer:
            raise ValueError(f"expected ',' or '{closer}' at offset {j}")
    node.end = j + 1
    if opener == "{":
        node.value = {e.key: e.node.value for e in node.entries}  # the last of a repeated key wins
    else:
        node.value = [e.node.value for e in node.entries]
    return node


# -- writing the edits ---------------------------------------------------------------
class _Style:
    """How the text is laid out: its line end, its indent step, and the text itself."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.step = _step(text)

    def change(self, node: _Node, new: Any, edits: list[Edit]) -> None:
        if node.value == new and type(node.value) is type(new):
            return
        if isinstance(node.value, dict) and isinstance(new, dict):
            self._object(node, new, edits)
        elif isinstance(node.value, list) and isinstance(new, list):
            self._array(node, new, edits)
        else:
            multiline = "\n" in self.text
            edits.append(
                (node.start, node.end, self.render(new, self.indent_at(node.start) if multiline else None))
            )

    def _object(self, node: _Node, new: dict[str, Any], edits: list[Edit]) -> None:
        last = {e.key: i for i, e in enumerate(node.entries)}
        keep = []
        for i, entry in enumerate(node.entries):
            keep.append(entry.key in new)
            if entry.key in new and last[entry.key] == i:
                self.change(entry.node, new[entry.key], edits)
        added: list[tuple[str | None, Any]] = [(k, v) for k, v in new.items() if k not in last]
        self._rewrite(node, keep, {len(node.entries): added} if added else {}, edits)

    def _array(self, node: _Node, new: list[Any], edits: list[Edit]) -> None:
        def key(value: Any) -> str:
            return json.dumps(value, sort_keys=True)

        old = [key(e.node.value) for e in node.entries]
        matcher = difflib.SequenceMatcher(None, old, [key(v) for v in new], autojunk=False)
        keep = [True] * len(old)
        inserts: dict[int, list[tuple[str | None, Any]]] = {}
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            if tag == "replace" and i2 - i1 == j2 - j1:  # changed in place (our hook group)
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                    self.change(node.entries[i].node, new[j], edits)
                continue
            for i in range(i1, i2):
                keep[i] = False
            inserts.setdefault(i2, []).extend((None, new[j]) for j in range(j1, j2))
        self._rewrite(node, keep, inserts, edits)

    def _rewrite(
        self,
        node: _Node,
        keep: list[bool],
        inserts: dict[int, list[tuple[str | None, Any]]],
        edits: list[Edit],
    ) -> None:
        """Remove the entries not kept; put in ``inserts`` (old entry index → what goes
        before it, ``len(entries)``: at the end)."""
        entries = node.entries
        kept = [i for i, k in enumerate(keep) if k]
        if not kept:
            self._refill(node, [item for at in sorted(inserts) for item in inserts[at]], edits)
            return
        first = kept[0]
        if first > 0:  # the leading entries, each with the separator after it
            edits.append((entries[0].start, entries[first].start, ""))
        for i in range(first + 1, len(entries)):
            if not keep[i]:  # each with the separator before it
                edits.append((entries[i - 1].node.end, entries[i].node.end, ""))
        multiline = "\n" in self.text[node.start : entries[0].start]
        indent = self.indent_at(entries[first].start) if multiline else None
        separator = f",{self.newline}{indent}" if indent is not None else ", "
        by_offset: dict[int, str] = {}
        for at in sorted(inserts):
            texts = [self.entry(k, v, indent) for k, v in inserts[at]]
            if at <= first:
                offset = entries[first].start
                by_offset[offset] = by_offset.get(offset, "") + "".join(t + separator for t in texts)
            else:
                offset = entries[at - 1].node.end
                by_offset[offset] = by_offset.get(offset, "") + "".join(separator + t for t in texts)
        edits.extend((offset, offset, text) for offset, text in by_offset.items())

    def _refill(self, node: _Node, items: list[tuple[str | None, Any]], edits: list[Edit]) -> None:
        """Replace everything between the brackets (nothing kept) with ``items``."""
        inner_start, inner_end = node.start + 1, node.end - 1
        if not items:
            if node.entries:
                edits.append((inner_start, inner_end, ""))
            return
        if node.entries:
            multiline = "\n" in self.text[node.start : node.entries[0].start]
        else:
            multiline = "\n" in self.text
        if not multiline:
            edits.append((inner_start, inner_end, ", ".join(self.entry(k, v, None) for k, v in items)))
            return
        outer = self.indent_at(node.start)
        indent = outer + self.step
        body = f",{self.newline}{indent}".join(self.entry(k, v, indent) for k, v in items)
        edits.append((inner_start, inner_end, f"{self.newline}{indent}{body}{self.newline}{outer}"))

    def entry(self, key: str | None, value: Any, indent: str | None) -> str:
        text = self.render(value, indent)
        return text if key is None else f"{json.dumps(key, ensure_ascii=False)}: {text}"

    def render(self, value: Any, indent: str | None) -> str:
        """``value`` on one line (``indent`` None), or over lines that start at ``indent``."""
        if indent is None:
            return json.dumps(value, ensure_ascii=False)
        text = json.dumps(value, indent=self.step, ensure_ascii=False)
        return text.replace("\n", self.newline + indent)

    def indent_at(self, offset: int) -> str:
        """The spaces and tabs that begin the line holding ``offset``."""
        line = self.text.rfind("\n", 0, offset) + 1
        end = line
        while end < offset and self.text[end] in " \t":
            end += 1
        return self.text[line:end]


def _step(text: str) -> str:
    """The indent of the first indented line: the file's step (two spaces if none)."""
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and len(stripped) < len(line):
            return line[: len(line) - len(stripped)]
    return "  "
