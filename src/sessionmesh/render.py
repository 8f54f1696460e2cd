"""Human output: aligned tables, colour only when a terminal is attached."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a one-shot command imports this)
if TYPE_CHECKING:
    from typing import Any, TextIO

_COLOURS = {
    "received": "32",
    "delivered": "32",
    "read": "32",
    "answered": "36",
    "sent": "32",
    "granted": "32",
    "renewed": "32",
    "online": "32",
    "PASS": "32",
    "ANSWERED": "36",
    "queued": "33",
    "held": "35",
    "away": "33",
    "PARTIAL": "33",
    "open": "33",
    "denied": "31",
    "refused": "31",
    "timeout": "31",
    "expired": "31",
    "rejected": "31",
    "conflict": "31",
    "BLOCKED": "31",
    "DECLINED": "31",
    "offline": "90",
    "closed": "90",
}


def use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def paint(text: str, stream: TextIO = sys.stdout) -> str:
    code = _COLOURS.get(text)
    return f"\033[{code}m{text}\033[0m" if code and use_colour(stream) else text


def clock(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    secs = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{secs}s ago"


def body_text(body: Any, width: int = 0) -> str:
    if not isinstance(body, str):
        import json

        body = json.dumps(body, ensure_ascii=False)
    text = body.replace("\n", " ⏎ ")
    return text if not width or len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], stream: TextIO = sys.stdout) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    bold = use_colour(stream)
    head = "  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip()
    print(f"\033[1m{head}\033[0m" if bold else head, file=stream)
    for row in cells:
        parts = []
        for i, c in enumerate(row):
            pad = " " * (widths[i] - len(c))
            parts.append(paint(c, stream) + pad)
        print("  ".join(parts).rstrip(), file=stream)


def message_line(env: dict[str, Any], stream: TextIO = sys.stdout) -> str:
    """One line for a message: time, sender, kind, body, id (what `watch` prints)."""
    kind = env.get("kind", "message")
    tag = kind if kind != "message" else ""
    if env.get("status"):
        tag = f"{tag} {env['status']}".strip()
    if env.get("pair"):  # pair mode's messages (core/pairs.py)
        tag = f"pair {env['pair']}"
    if env.get("priority") == "urgent":
        tag = f"URGENT {tag}".strip()
    to = env.get("to")
    where = f" {to}" if isinstance(to, str) and (to.startswith("#") or to == "broadcast") else ""
    reply = f" re {env['re'][:13]}" if env.get("re") else ""
    from .injection import handoff_lines

    extra = "".join(f" [{x}]" for x in handoff_lines(env))
    return (
        f"{clock(env.get('ts'))} {env.get('from')}{where}{reply}"
        f"{(' [' + tag + ']') if tag else ''}: {body_text(env.get('body'))}{extra}  (id {env.get('id')})"
    )
