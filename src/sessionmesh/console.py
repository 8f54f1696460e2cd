"""The `mesh` console script: hooks go straight to `hooks`, the rest to `cli`.

A hook runs on every tool call of an agent, so `mesh hook …` must not pay for
importing (or, without a bytecode cache, compiling) the whole command-line parser.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["hook"] and "-h" not in sys.argv and "--help" not in sys.argv:
        from .hooks import main as hook_main

        sys.exit(hook_main(sys.argv[2:]))
    from .cli import entry

    entry()
