"""Issue #16: every hint names a flag that exists (one named `unique=true`, which no
command can pass)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from sessionmesh.cli import build_parser

SRC = Path(__file__).resolve().parents[2] / "src" / "sessionmesh"


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


def test_every_flag_a_hint_or_message_names_exists() -> None:
    options = _options(build_parser())
    named: dict[str, str] = {}
    for path in SRC.rglob("*.py"):
        for hint in re.findall(r"hint=(?:f?\"[^\"]*\"|f?'[^']*')", path.read_text()):
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", hint):
                named.setdefault(flag, f"{path.name}: {hint}")
    assert named, "no hint names a flag: the scan is broken"
    missing = {flag: where for flag, where in named.items() if flag not in options}
    assert missing == {}


def test_no_hint_names_a_wire_argument_as_if_it_were_a_flag() -> None:
    for path in SRC.rglob("*.py"):
        for hint in re.findall(r"hint=(?:f?\"[^\"]*\"|f?'[^']*')", path.read_text()):
            assert "unique=true" not in hint and "unique: true" not in hint, (path.name, hint)
