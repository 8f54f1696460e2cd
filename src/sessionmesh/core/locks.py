"""Advisory leases: which resources overlap, and who may hold what.

A resource is a path, a glob or a plain name, compared segment by segment. A lease
on a resource covers everything below it (a lease on ``/repo/src`` covers
``/repo/src/app.py``), and a glob covers every path it matches and everything below
those. Two resources overlap when some path is covered by both; that is computed
from the patterns, never by comparing strings.
"""

from __future__ import annotations

import enum
import functools
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from ..errors import BadFrame

_GLOB_CHARS = re.compile(r"[*?\[]")


class LockOutcome(enum.StrEnum):
    GRANTED = "granted"
    RENEWED = "renewed"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Lease:
    resource: str
    holder: str
    exclusive: bool
    reason: str
    acquired_at: float
    expires_at: float

    def to_wire(self, now: float | None = None) -> dict[str, Any]:
        wire = {
            "resource": self.resource,
            "holder": self.holder,
            "exclusive": self.exclusive,
            "reason": self.reason,
            "acquired_at": self.acquired_at,
            "expires_at": self.expires_at,
        }
        if now is not None:
            wire["expires_in"] = max(0.0, round(self.expires_at - now, 3))
        return wire


def check_resource(resource: Any) -> str:
    """A valid resource, with paths normalised (``src/./a.py`` is ``src/a.py``); a
    trailing ``/`` is kept: it marks a folder."""
    if not isinstance(resource, str) or not resource.strip() or len(resource) > 4096:
        raise BadFrame("'resource' must be a non-empty string (a path, a glob or a name)")
    resource = resource.strip()
    if "/" in resource:
        folder = resource.endswith("/") and resource != "/"
        resource = posixpath.normpath(resource) + ("/" if folder else "")
        if resource.startswith("//"):
            resource = "/" + resource.lstrip("/")
    return resource


def _segments(resource: str) -> tuple[str, ...]:
    parts = resource.rstrip("/").split("/") if resource != "/" else [""]
    return tuple(p for i, p in enumerate(parts) if p or i == 0) or ("",)


def _is_file(resource: str, segments: tuple[str, ...]) -> bool:
    """A last segment with an extension ('app.py') names a file, so nothing lies below
    it; a trailing '/' ('v1.2/') says it is a folder after all."""
    last = segments[-1]
    return not resource.endswith("/") and "." in last[1:] and not _GLOB_CHARS.search(last)


def overlaps(a: str, b: str) -> bool:
    """True when some path is covered by both resources."""
    p, q = _segments(a), _segments(b)
    return _overlap_segments(p, q, _is_file(a, p), _is_file(b, q))


@functools.lru_cache(maxsize=65536)
def _overlap_segments(p: tuple[str, ...], q: tuple[str, ...], p_file: bool, q_file: bool) -> bool:
    # A lease covers its match and everything below it, so when one pattern runs
    # out, the rest of the other lies inside it, unless the one that ran out is a file.
    if not p and not q:
        return True
    if not p or not q:
        rest = p or q
        ended_file = q_file if not q else p_file
        return not ended_file or all(seg == "**" for seg in rest)
    if p[0] == "**":
        return _overlap_segments(p[1:], q, p_file, q_file) or _overlap_segments(p, q[1:], p_file, q_file)
    if q[0] == "**":
        return _overlap_segments(p, q[1:], p_file, q_file) or _overlap_segments(p[1:], q, p_file, q_file)
    return segment_overlaps(p[0], q[0]) and _overlap_segments(p[1:], q[1:], p_file, q_file)


def _tokens(segment: str) -> tuple[Any, ...]:
    """A glob segment as tokens: a literal char, '?' (any one), '*' (any run), or a set."""
    if not _GLOB_CHARS.search(segment):
        return tuple(segment)
    out: list[Any] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            if not out or out[-1] != "*":
                out.append("*")
        elif c == "?":
            out.append(("any",))
        elif c == "[":
            first = i + 2 if segment[i + 1 : i + 2] in ("!", "^") else i + 1
            end = segment.find("]", first + 1)  # a ']' first in the set is a member
            if end == -1:
                out.append("[")
            else:
                body = segment[i + 1 : end]
                negate = body[:1] in ("!", "^")
                out.append(("set", negate, _expand_set(body[1:] if negate else body)))
                i = end
        else:
            out.append(c)
        i += 1
    return tuple(out)


def _expand_set(body: str) -> frozenset[str]:
    chars: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            chars.update(chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1))
            i += 3
        else:
            chars.add(body[i])
            i += 1
    return frozenset(chars)


def _one_char_sets(t: Any) -> tuple[bool, frozenset[str]] | None:
    """A single-char token as (negated, chars); None for '*'."""
    if t == "*":
        return None
    if isinstance(t, str):
        return (False, frozenset(t))
    if t[0] == "any":
        return (True, frozenset())
    return (t[1], t[2])


def _chars_meet(a: tuple[bool, frozenset[str]], b: tuple[bool, frozenset[str]]) -> bool:
    (na, sa), (nb, sb) = a, b
    if not na and not nb:
        return bool(sa & sb)
    if na and nb:
        return True  # two complements of finite sets always share a char
    pos, neg = (sa, sb) if not na else (sb, sa)
    return bool(pos - neg)


def segment_overlaps(a: str, b: str) -> bool:
    """True when some single path segment matches both glob segments."""
    if a == b:
        return True
    ta, tb = _tokens(a), _tokens(b)

    @functools.cache
    def meet(i: int, j: int) -> bool:
        if i == len(ta) and j == len(tb):
            return True
        if i < len(ta) and ta[i] == "*":
            return meet(i + 1, j) or (j < len(tb) and meet(i, j + 1 if tb[j] != "*" else j + 1))
        if j < len(tb) and tb[j] == "*":
            return meet(i, j + 1) or (i < len(ta) and meet(i + 1, j))
        if i == len(ta) or j == len(tb):
            return False
        ca, cb = _one_char_sets(ta[i]), _one_char_sets(tb[j])
        assert ca is not None and cb is not None
        return _chars_meet(ca, cb) and meet(i + 1, j + 1)

    return meet(0, 0)


def conflicts(lease: Lease, resource: str, holder: str, exclusive: bool) -> bool:
    """Whether an existing lease blocks ``holder`` from taking ``resource``."""
    if lease.holder == holder:
        return False
    if not (exclusive or lease.exclusive):
        return False
    return overlaps(lease.resource, resource)
