"""The `mesh` console script: hooks go straight to `hooks`, the rest to `cli`.

A hook runs on every tool call of an agent, so `mesh hook …` must not pay for
importing (or, without a bytecode cache, compiling) the whole command-line parser;
and most of the time `quiet` sees from a few files that it has nothing to do.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["hook"] and "-h" not in sys.argv and "--help" not in sys.argv:
        from .quiet import main as quiet

        if quiet(sys.argv[2:]) == 0:
            sys.exit(0)  # nothing to do, decided from files alone
        from .hooks import main as hook_main

        sys.exit(hook_main(sys.argv[2:]))
    from .cli import entry

    entry()
