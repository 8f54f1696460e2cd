"""What every part of screening shares: the limits, the RE2 helpers, the budget of
one body, and the types the API returns."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, NamedTuple

# -- limits ---------------------------------------------------------------------------
# The parsers are not cheap on hostile text: tree-sitter's error recovery spends up to
# 40 µs a character on error-dense input ("rm $| ~)$| ~)…": 28 ms for 800 characters) and
# grows worse than linearly (8 kB of "a=( a=( …": 115 ms); sqlglot takes up to 30 ms for
# 1 kB of hostile SQL. Hence small windows, budgets of characters, and a deadline.
SCREEN_TIMEOUT = 1.0  # seconds of parsing one body may take (libraries loaded); past it the body is held
WINDOW_CHARS = 1024  # a shell command is read from at most this much text
REST_CHARS = 256 * 1024  # how far past a window a long command is searched for flags
SQL_WINDOW_CHARS = 1024  # a SQL statement is read from at most this much text
SQL_PARSE_TOKENS = 64  # longer statements are judged on their tokens alone
MAX_CANDIDATES = 8192  # places in one body where a command or statement may start
MAX_WINDOWS = 1024  # windows read for one body
MAX_SHELL_CHARS = 128 * 1024  # characters handed to tree-sitter for one body
MAX_SQL_CHARS = 64 * 1024  # characters handed to sqlglot's tokenizer for one body
MAX_ARGV_COMMANDS = 16  # command names judged within one JSON argv list
MAX_ARGV_WORDS = 1024  # words of one such command
ENTROPY_MIN, ENTROPY_MAX = 20, 256  # lengths of a quoted string measured for entropy
TOO_MANY = "too many commands to screen"
COSTLY_BYTES = 16 * 1024  # bodies larger than this are screened off the event loop


class SecretFinding(NamedTuple):
    """A secret-looking span of a body's text (`body_text`)."""

    kind: str
    start: int
    end: int


class BadPattern(ValueError):
    """A hold pattern RE2 cannot compile."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"{pattern!r}: {reason}")
        self.pattern = pattern


# -- RE2 ------------------------------------------------------------------------------


def re2_options(*, case_sensitive: bool) -> Any:
    import re2

    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False
    return options


def compile_extra(pattern: str) -> Any:
    import re2

    try:
        return re2.compile(pattern, options=re2_options(case_sensitive=False))
    except re2.error as exc:
        reason = (
            exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        )
        raise BadPattern(pattern, reason) from None


@lru_cache(maxsize=8)
def extra_regex(patterns: tuple[str, ...]) -> Any:
    import re2

    for pattern in patterns:
        compile_extra(pattern)
    joined = "|".join(f"(?:{p})" for p in patterns)
    return re2.compile(joined, options=re2_options(case_sensitive=False))


def readable(text: str) -> str:
    """`text` as RE2 can read it (as UTF-8): a lone surrogate becomes "?", one character
    for one, so offsets into it hold for `text`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


# Where a command or statement may start. Names are matched case-insensitively: a
# case-insensitive file system runs ``RM`` too.
_CANDIDATES = (
    r"(?P<shell>\b(?:rm|git|find|dd|chmod|chown|mkfs(?:\.\w+)?)\b)"
    r"|(?P<sql>\b(?:drop|truncate|delete|alter)\b)"
    r"|(?P<function>\(\s*\)\s*\{)"  # a shell function definition: the fork bomb's shape
    r'|(?P<argv>\[\s*")'  # a JSON list of strings inside text
)


@lru_cache(maxsize=1)
def candidates() -> Any:
    import re2

    return re2.compile(_CANDIDATES, options=re2_options(case_sensitive=False))


class OverBudget(Exception):
    """More to screen than the limits allow: the body is held, never passed unscreened."""


class Budget:
    """The work one body may cost; one per call, so calls share nothing.

    The deadline makes the verdict on a hostile body depend on the machine's speed, but
    only between two holds: whatever runs out, the body is held. An ordinary body parses
    in microseconds a window and never comes near it."""

    def __init__(self) -> None:
        self.deadline = time.perf_counter() + SCREEN_TIMEOUT
        self.candidates = 0
        self.windows = 0
        self.shell_chars = 0
        self.sql_chars = 0

    def candidate(self) -> None:
        self.candidates += 1
        if self.candidates > MAX_CANDIDATES:
            raise OverBudget(TOO_MANY)

    def window(self, *, shell: int = 0, sql: int = 0) -> None:
        self.windows += 1
        self.shell_chars += shell
        self.sql_chars += sql
        if (
            self.windows > MAX_WINDOWS
            or self.shell_chars > MAX_SHELL_CHARS
            or self.sql_chars > MAX_SQL_CHARS
            or time.perf_counter() > self.deadline
        ):
            raise OverBudget(TOO_MANY)
