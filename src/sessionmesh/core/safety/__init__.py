"""What a message body may carry: destructive requests are held, secrets refused.

Pure, thread-safe functions over a body (a string or a JSON value):

- `hold_reason` names the destructive thing a body asks for; the message is then held
  until a person approves it. Built in: shell commands judged on their parsed words (``rm``
  recursive and forced in any spelling, ``git`` after its global options doing ``push
  --force``, ``reset --hard``, ``clean -f``, ``checkout .``, ``branch -D``; ``find -delete``,
  ``dd of=/dev/…``, ``mkfs``, ``chmod -R 777``, ``chown -R /``, a fork bomb; a JSON list of
  strings is judged as a command's words) and SQL statements (``DROP TABLE/DATABASE/SCHEMA``,
  ``TRUNCATE``, ``DELETE`` without a ``WHERE`` that names a column, ``ALTER TABLE … DROP
  COLUMN``). ``hold_patterns`` in the settings add RE2 patterns on top.
- `find_secrets` / `redact`: secret-looking spans, found with detect-secrets' rules and its
  entropy measure plus our own rules for kinds it lacks.
- `screen_text`: both screens for a short peer-controlled value (a lock reason, a status).

Libraries, and why:

- Shell: tree-sitter with its bash grammar (``tree-sitter``, ``tree-sitter-bash``). Its
  parsers are built for half-typed editor buffers, so they recover from errors instead of
  failing: a command followed by prose ("rm -rf build/ then don't …") still comes out as a
  command, with ``$(…)``, backticks, quoting, ``$'…'`` and functions understood. Both are
  maintained by the tree-sitter project, MIT, and ship as wheels. bashlex raises on the
  first syntax error (prose always has one), has had no release since 2023 and is GPL-3.0;
  ``shlex`` only splits words and raises on an unbalanced quote.
- SQL: sqlglot, the maintained pure-Python SQL parser; a statement it cannot parse is judged
  on sqlglot's tokens (comments such as ``/**/`` are dropped by its tokenizer).
- Secrets: Yelp's detect-secrets supplies the rules (AWS, private keys, GitHub, GitLab,
  Slack, Stripe, JWT, …) and the Shannon-entropy measure with its limit. Its rule patterns
  are run on RE2, not through its scanner: its scanner uses Python's backtracking ``re``,
  reads global settings and may call out to verify a secret over the network.

Linear time, bounded work, whatever the body: with Python's ``re`` one 261 kB body of
``"dd "`` kept the broker busy for 204 s (issue #15). No parser is handed a whole body. One
RE2 pass (linear whatever the text) finds the places a command or statement may start;
each is read from a window of at most `WINDOW_CHARS` (`SQL_WINDOW_CHARS`), a substring test
skips windows that cannot be destructive, and the candidates, the windows, the characters
handed to each parser and the time spent parsing are capped (tree-sitter's error recovery
and sqlglot are not linear on hostile text). A body with more than the caps allow is held
("too many commands to screen"), never passed unscreened. Secret rules run on RE2 too.

The heavy libraries (re2, tree-sitter, sqlglot, detect-secrets) are imported inside the
functions that use them: the hook path loads the settings, which import this module, and
screens nothing.

What screening cannot catch (encodings, ``r''m``, ``$X -rf``, …) is in docs/screening.md.

The package: this module is the API and the walk over a body; `common` holds the limits,
the RE2 helpers and the budget; `shell`, `sql` and `secrets` each read one kind of thing.
"""

from __future__ import annotations

import enum
import json
from functools import lru_cache
from typing import Any, NamedTuple

from ...errors import UnsafeText
from .common import (
    COSTLY_BYTES,
    TOO_MANY,
    BadPattern,
    Budget,
    OverBudget,
    SecretFinding,
    candidates,
    compile_extra,
    extra_regex,
    readable,
)
from .secrets import findings, redact_json, redact_text, secret_rules
from .shell import argv_candidate, bash, function_candidate, judge_argv, shell_candidate
from .sql import sql_candidate, sqlglot_module


class SecretAction(enum.StrEnum):
    """What the broker does with a body that carries a secret."""

    REFUSE = "refuse"
    REDACT = "redact"
    ALLOW = "allow"


def body_text(body: Any) -> str:
    """The text a body is screened as: a string itself, any other JSON value as JSON."""
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)


# -- public API -------------------------------------------------------------------------


def hold_reason(body: Any, extra_patterns: tuple[str, ...] = ()) -> str | None:
    """The destructive thing a body asks for, in a few words (``"rm -r -f /"``,
    ``"DROP TABLE users"``), or None when it can go straight through.

    The built-in checks run first, then `extra_patterns` (RE2, case-insensitive) against
    the body's text; for a pattern the reason is the text it matched. A body with more
    candidate commands than the limits allow gets the reason ``"too many commands to
    screen"``. Raises `BadPattern` for an extra pattern RE2 cannot compile (settings
    validation refuses those first)."""
    reason = _destructive(body)
    if reason is None and extra_patterns:
        match = extra_regex(tuple(extra_patterns)).search(readable(body_text(body)))
        reason = match.group(0).strip() if match else None
    return reason


def screen_text(value: Any) -> str | None:
    """Why a short peer-controlled value (a lock reason, a resource, a status, a role,
    metadata) should not be accepted as it is, or None when it is clean: the destructive
    command or statement it carries, or ``"a secret (<kinds>)"``."""
    reason = _destructive(value)
    if reason is not None:
        return reason
    found = find_secrets(value)
    return f"a secret ({', '.join(sorted({f.kind for f in found}))})" if found else None


def screen_field(name: str, value: str) -> None:
    """Raise `UnsafeText` when a field every peer sees carries a destructive command or
    a secret (`screen_text`): no held message may be read there instead."""
    if not value:
        return
    found = screen_text(value)
    if found is not None:
        raise UnsafeText(
            f"'{name}' carries {found!r}, which a message body would be held or refused for",
            hint="say it in a message (a person approves what is held), or leave it out",
        )


def find_secrets(body: Any) -> list[SecretFinding]:
    """Every secret-looking span in the body's text (`body_text`), in order, without
    overlaps."""
    return findings(body_text(body), whole=False)


def redact(body: Any) -> Any:
    """The body with each secret replaced by ``[redacted <kind>]``. A JSON body is
    redacted string by string, keys included, so it keeps its shape; each of its strings
    is measured for entropy as a quoted string, as `find_secrets` sees it in the JSON text."""
    if isinstance(body, str):
        return redact_text(body, whole=False)
    return redact_json(body)


SCREENED = "\x00screened"  # the send argument a `Screen` travels in (no JSON client can make one)


class Screen(NamedTuple):
    """A body's whole screening, done ahead (off the event loop, `screen`): the secrets
    found, the body with them redacted (when the action is ``redact``), and why the
    (redacted) body is held."""

    body: Any
    secrets: list[SecretFinding]
    redacted: Any
    hold: str | None


def screen(body: Any, action: SecretAction, extra_patterns: tuple[str, ...] = ()) -> Screen:
    """Everything the core asks of a body's screen, in one call a worker thread can make."""
    found = [] if action is SecretAction.ALLOW else find_secrets(body)
    redacted = redact(body) if found and action is SecretAction.REDACT else body
    return Screen(body, found, redacted, hold_reason(redacted, extra_patterns))


def costly(body: Any, size: int) -> bool:
    """Whether screening ``body`` may take long enough to belong off the event loop: a
    large body, or one with a place where a command or statement may start (the parsers
    then run). An ordinary small message is screened in microseconds where it is."""
    return size > COSTLY_BYTES or candidates().search(body_text(body)) is not None


@lru_cache(maxsize=1)
def warm() -> None:
    """Load the screening libraries (a broker does it at start, not on its first body)."""
    candidates()
    bash()
    sqlglot_module()
    secret_rules()


def check_patterns(patterns: tuple[str, ...]) -> None:
    """Raise `BadPattern` for a pattern RE2 does not compile (settings validation)."""
    for pattern in patterns:
        compile_extra(pattern)


# -- destructive requests ---------------------------------------------------------------


def _destructive(body: Any) -> str | None:
    warm()  # loading the parsers is not the body's time
    budget = Budget()
    try:
        if isinstance(body, str):
            decoded = _json_container(body)
            if decoded is None:
                return _screen_commands(body, budget)
            body = decoded
        strings, argvs = _strings_and_lists(body)
        for argv in argvs:
            found = judge_argv(argv)
            if found is not None:
                return found
        # a blank line between strings ends a SQL statement and a shell command alike
        return _screen_commands("\n\n".join(strings), budget)
    except OverBudget as exc:
        return str(exc)


def _json_container(text: str) -> Any:
    """The JSON list or object a string body holds, or None when it is plain text."""
    if not text.lstrip().startswith(("[", "{")):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, list | dict) else None


def _strings_and_lists(value: Any) -> tuple[list[str], list[list[str]]]:
    """Every string in a JSON value (keys too), and every list made only of strings."""
    strings: list[str] = []
    argvs: list[list[str]] = []
    stack = [value]  # no recursion: a body may nest deeper than Python's stack
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            strings.extend(k for k in item if isinstance(k, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            if item and all(isinstance(v, str) for v in item):
                argvs.append(item)
            stack.extend(item)
    return strings, argvs


def _screen_commands(text: str, budget: Budget) -> str | None:
    """The first destructive command or statement in prose-with-commands text."""
    text = readable(text)
    for match in candidates().finditer(text):
        budget.candidate()
        group = match.lastgroup
        start = match.start()
        if group == "shell":
            found = shell_candidate(text, start, match.group("shell").lower(), budget)
        elif group == "sql":
            found = sql_candidate(text, start, match.group("sql").lower(), budget)
        elif group == "function":
            found = function_candidate(text, start, budget)
        else:
            found = argv_candidate(text, start, budget)
        if found is not None:
            return found
    return None


__all__ = [
    "COSTLY_BYTES",
    "SCREENED",
    "TOO_MANY",
    "BadPattern",
    "Screen",
    "SecretAction",
    "SecretFinding",
    "body_text",
    "check_patterns",
    "costly",
    "find_secrets",
    "hold_reason",
    "redact",
    "screen",
    "screen_field",
    "screen_text",
    "warm",
]
