"""Write the table of every setting into docs/deployment.md, from `sessionmesh.config.Settings`.

Each field of `Settings` is one row: its ``MESH_*`` variable, its ``config.toml`` key,
its default, and what it means. The meaning is the field's comment in
``src/sessionmesh/config.py``, less any mention of its variable; `MEANINGS` below
gives one where that comment is missing or says too little (and wins over it). The
table sits between the `BEGIN` and `END` lines of the document.

    python docs/settings_table.py           # rewrite the table in docs/deployment.md
    python docs/settings_table.py --check   # exit 1 if the table there is out of date

``tests/test_docs.py`` fails when the document and this script disagree.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from pathlib import Path
from typing import Any

from sessionmesh import config
from sessionmesh.config import Settings

DOC = Path(__file__).resolve().parent / "deployment.md"
BEGIN = "<!-- settings table: written by `python docs/settings_table.py` from config.py; do not edit -->"
END = "<!-- end of settings table -->"

# Meanings for the fields whose comment in config.py is missing or says too little.
MEANINGS = {
    "home": "the state directory: broker token, database, secrets, logs, `config.toml`",
    "host": "the address the broker listens on",
    "port": "the port the broker listens on (0: any free port)",
    "name": "the peer name a command or MCP server acts as when it has no `--as` "
    "(else the name of the git top-level, or of the folder)",
    "token": "the broker token a client presents; else read from `$MESH_HOME/token`, "
    "which the broker writes (mode 0600) on its first start",
    "autostart": "a client that finds no broker starts one in the background",
    "max_body_bytes": "the largest message body; a larger send is refused",
    "default_ttl": "seconds an undelivered message waits before it expires, when its send gives no ttl",
    "away_window": "seconds a peer that went offline still shows as `away`",
    "lock_ttl": "seconds a lock lasts when `lock` gives no `--ttl`",
    "audit_bodies": "the audit log keeps message bodies too (else everything but the body)",
    "sqlite_synchronous": "SQLite's `synchronous`: `NORMAL` survives a crashed process, "
    "`FULL` (fsync every commit batch) a power loss too",
    "wake_budget_window": "seconds over which `wake_budget` is counted",
    "nats_user": "NATS user name (with `nats_password`)",
    "nats_password": "NATS password",
    "nats_token": "NATS token",
    "nats_tls_ca": "CA file to verify the NATS servers (`tls://` URLs)",
    "nats_tls_cert": "client certificate for NATS (mutual TLS)",
    "nats_tls_key": "client key for NATS (mutual TLS)",
    "nats_compact_batches": "the state log is compacted (a snapshot of the state written to JetStream, "
    "then the log before it purged) once it holds this many batches past the last snapshot, "
    "or `nats_compact_bytes`, and at least as many bytes as that snapshot; 0: not by count",
    "nats_compact_bytes": "the state log is compacted once it holds this many bytes past the last "
    "snapshot (or `nats_compact_batches`), and at least as many bytes as that snapshot; 0: not by size",
}

# Defaults that are not a constant in `Settings`.
COMPUTED_DEFAULTS = {
    "home": "`$XDG_STATE_HOME/sessionmesh`, else `~/.local/state/sessionmesh`",
    "url": "from `$MESH_HOME/broker.json`",
    "machine": "the host name's first part, lower-cased",
}

_DURATION_SUFFIXES = ("_ttl", "_timeout", "_window", "_interval")


def field_comments(source: str) -> dict[str, str]:
    """The trailing comment of each field of ``class Settings`` in ``source``."""
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    tree = ast.parse(source)
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings").body
    return {
        node.target.id: comments[node.end_lineno or node.lineno]
        for node in body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and (node.end_lineno or node.lineno) in comments
    }


def meaning(field: str, comment: str | None) -> str:
    """The field's meaning; raises `LookupError` when there is none."""
    variable = "MESH_" + field.upper()
    if comment is not None:
        comment = re.sub(rf"\s*\(?{variable}\)?", "", comment).strip(" ;,")
    text = MEANINGS.get(field) or comment
    if not text:
        raise LookupError(f"setting {field!r} has no meaning: comment it in config.py")
    return text


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size and value % size == 0:
            return f"{value:g} s ({value / size:g} {unit})"
    return f"{value:g} s"


def default(field: str, value: Any) -> str:
    """How the default of ``field`` reads in the table."""
    if field in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[field]
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and field.endswith(_DURATION_SUFFIXES):
        return _seconds(value)
    if field.endswith("_bytes") and value and value % (1024 * 1024) == 0:
        return f"{value} ({value // (1024 * 1024)} MiB)"
    if field.endswith("_bytes") and value % 1024 == 0:
        return f"{value} ({value // 1024} KiB)"
    if isinstance(value, tuple):
        return "`[]`" if not value else "`" + repr(list(value)) + "`"
    if isinstance(value, int | float):
        return f"{value:g}"
    return f"`{value}`"


def table() -> str:
    """The markdown table of every setting, in the order `Settings` declares them."""
    comments = field_comments(Path(config.__file__).read_text())
    unknown = set(MEANINGS) - set(Settings._fields)
    if unknown:
        raise LookupError(f"MEANINGS names no setting: {', '.join(sorted(unknown))}")
    rows = ["| environment | `config.toml` | default | meaning |", "|---|---|---|---|"]
    for field in Settings._fields:
        # config.toml lives in MESH_HOME, so it cannot move it
        key = "—" if field == "home" else f"`{field}`"
        value = Settings._field_defaults.get(field)
        text = meaning(field, comments.get(field)).replace("|", "\\|")
        rows.append(f"| `MESH_{field.upper()}` | {key} | {default(field, value)} | {text} |")
    return "\n".join(rows) + "\n"


def rewrite(document: str) -> str:
    """``document`` with the text between `BEGIN` and `END` replaced by `table`;
    raises `ValueError` when the markers are missing."""
    head, begin, rest = document.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{DOC} lacks the markers {BEGIN!r} and {END!r}")
    return head + begin + table() + end + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is out of date")
    args = parser.parse_args()
    current = DOC.read_text()
    wanted = rewrite(current)
    if args.check:
        if wanted != current:
            print(f"{DOC} is out of date: run python docs/settings_table.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        DOC.write_text(wanted)
        print(f"rewrote the settings table in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
