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
"""

from __future__ import annotations

import enum
import json
import string
import threading
import time
from functools import lru_cache
from typing import Any, NamedTuple

from ..errors import UnsafeText

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


class SecretAction(enum.StrEnum):
    """What the broker does with a body that carries a secret."""

    REFUSE = "refuse"
    REDACT = "redact"
    ALLOW = "allow"


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
        match = _extra_regex(tuple(extra_patterns)).search(_readable(body_text(body)))
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
    return _findings(body_text(body), whole=False)


def redact(body: Any) -> Any:
    """The body with each secret replaced by ``[redacted <kind>]``. A JSON body is
    redacted string by string, keys included, so it keeps its shape; each of its strings
    is measured for entropy as a quoted string, as `find_secrets` sees it in the JSON text."""
    if isinstance(body, str):
        return _redact_text(body, whole=False)
    return _redact_json(body)


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
    return size > COSTLY_BYTES or _candidates().search(body_text(body)) is not None


@lru_cache(maxsize=1)
def warm() -> None:
    """Load the screening libraries (a broker does it at start, not on its first body)."""
    _candidates()
    _bash()
    _sqlglot()
    _secret_rules()


def check_patterns(patterns: tuple[str, ...]) -> None:
    """Raise `BadPattern` for a pattern RE2 does not compile (settings validation)."""
    for pattern in patterns:
        _compile_extra(pattern)


# -- RE2 ------------------------------------------------------------------------------


def _re2_options(*, case_sensitive: bool) -> Any:
    import re2

    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False
    return options


def _compile_extra(pattern: str) -> Any:
    import re2

    try:
        return re2.compile(pattern, options=_re2_options(case_sensitive=False))
    except re2.error as exc:
        reason = (
            exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        )
        raise BadPattern(pattern, reason) from None


@lru_cache(maxsize=8)
def _extra_regex(patterns: tuple[str, ...]) -> Any:
    import re2

    for pattern in patterns:
        _compile_extra(pattern)
    joined = "|".join(f"(?:{p})" for p in patterns)
    return re2.compile(joined, options=_re2_options(case_sensitive=False))


def _readable(text: str) -> str:
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
def _candidates() -> Any:
    import re2

    return re2.compile(_CANDIDATES, options=_re2_options(case_sensitive=False))


# -- destructive requests ---------------------------------------------------------------


class _OverBudget(Exception):
    """More to screen than the limits allow: the body is held, never passed unscreened."""


class _Budget:
    """The work one body may cost; one per call, so calls share nothing.

    The deadline makes the verdict on a hostile body depend on the machine's speed, but
    only between two holds: whatever runs out, the body is held. An ordinary body parses
    in microseconds a window and never comes near it."""

    def __init__(self) -> None:
        warm()  # loading the parsers is not the body's time
        self.deadline = time.perf_counter() + SCREEN_TIMEOUT
        self.candidates = 0
        self.windows = 0
        self.shell_chars = 0
        self.sql_chars = 0

    def candidate(self) -> None:
        self.candidates += 1
        if self.candidates > MAX_CANDIDATES:
            raise _OverBudget(TOO_MANY)

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
            raise _OverBudget(TOO_MANY)


def _destructive(body: Any) -> str | None:
    budget = _Budget()
    try:
        if isinstance(body, str):
            decoded = _json_container(body)
            if decoded is None:
                return _screen_commands(body, budget)
            body = decoded
        strings, argvs = _strings_and_lists(body)
        for argv in argvs:
            found = _judge_argv(argv)
            if found is not None:
                return found
        # a blank line between strings ends a SQL statement and a shell command alike
        return _screen_commands("\n\n".join(strings), budget)
    except _OverBudget as exc:
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


def _screen_commands(text: str, budget: _Budget) -> str | None:
    """The first destructive command or statement in prose-with-commands text."""
    text = _readable(text)
    for match in _candidates().finditer(text):
        budget.candidate()
        group = match.lastgroup
        start = match.start()
        if group == "shell":
            found = _shell_candidate(text, start, match.group("shell").lower(), budget)
        elif group == "sql":
            found = _sql_candidate(text, start, match.group("sql").lower(), budget)
        elif group == "function":
            found = _function_candidate(text, start, budget)
        else:
            found = _argv_candidate(text, start, budget)
        if found is not None:
            return found
    return None


# -- shell ------------------------------------------------------------------------------

# Text a window must contain for the command to be destructive; a window with none is not
# parsed. Quoting and escapes can hide these, so a window with any of `_QUOTING` is parsed
# whatever it contains.
_SHELL_HINTS: dict[str, tuple[str, ...]] = {
    "rm": ("-",),
    "git": ("push", "reset", "clean", "checkout", "restore", "branch"),
    "find": ("-delete", "-exec", "-ok"),
    "dd": ("of=",),
    "chmod": ("777", "rwx"),
    "chown": ("/",),
    "mkfs": ("",),
}
_QUOTING = ("'", '"', "\\", "$", "`")
_PATH_CHARS = "_./~-"

_local = threading.local()  # a tree-sitter parser is not to be shared between threads


@lru_cache(maxsize=1)
def _bash() -> Any:
    import tree_sitter
    import tree_sitter_bash

    return tree_sitter.Language(tree_sitter_bash.language())


def _parse_shell(source: bytes) -> Any:
    parser = getattr(_local, "parser", None)
    if parser is None:
        import tree_sitter

        parser = _local.parser = tree_sitter.Parser(_bash())
    return parser.parse(source).root_node


def _line_end(text: str, start: int, cap: int) -> int:
    """Where the line from `start` ends (a backslash-newline continues it), at most `cap`."""
    at = start
    while True:
        newline = text.find("\n", at, cap)
        if newline == -1:
            return cap
        before = text[max(start, newline - 2) : newline]
        if not before.endswith(("\\", "\\\r")):
            return newline
        at = newline + 1


def _shell_candidate(text: str, at: int, name: str, budget: _Budget) -> str | None:
    # Read the whole word the name ends: /bin/rm, and "rm" or "/bin/rm" in quotes; but not
    # the quote that opens `bash -c "rm -rf /"`, whose command starts inside it.
    start = at
    while start > max(0, at - 64) and (text[start - 1].isalnum() or text[start - 1] in _PATH_CHARS):
        start -= 1
    after = at + len(name)
    if start > 0 and text[start - 1] in "\"'" and text[after : after + 1] == text[start - 1]:
        start -= 1
    cap = min(len(text), start + WINDOW_CHARS)
    end = _line_end(text, start, cap)
    truncated = end == cap < len(text)
    if text[max(0, start - 8) : start].rstrip().endswith("`"):  # `rm -rf /` in inline code
        tick = text.find("`", start, end)
        if tick != -1:
            end, truncated = tick, False
    window = text[start:end]
    hints = _SHELL_HINTS["mkfs" if name.startswith("mkfs") else name]
    if not truncated and not _may_matter(text, start, end, hints):
        return None
    budget.window(shell=len(window))
    source = window.encode("utf-8", "replace")
    command = _first_command(_parse_shell(source))
    words = _words(command) if command is not None else window.split()
    if not words or _judge_of(_program(words[0])) is None:
        return None
    found = _judge_words(words)
    if found is None and truncated and (command is None or command.end_byte >= len(source) - 1):
        # The command runs on past the window. Its unseen words matter only if the rest
        # of the line could hold a flag that makes it destructive.
        rest_end = _line_end(text, cap, min(len(text), cap + REST_CHARS))
        if rest_end == cap + REST_CHARS or _may_matter(text, cap, rest_end, hints):
            return f"command too long to screen: {_show(words)}"
    return found


def _may_matter(text: str, start: int, end: int, hints: tuple[str, ...]) -> bool:
    """Whether text[start:end] holds a hint, or quoting that could hide one."""
    return any(text.find(h, start, end) != -1 for h in hints + _QUOTING)


def _first_command(root: Any) -> Any:
    """The simple command the window starts with (tree-sitter's ``command`` node)."""
    node = root
    while node is not None:
        if node.type == "command":
            return node
        node = next((c for c in node.named_children if c.start_byte == 0), None)
    return None


def _words(command: Any) -> list[str]:
    words = []
    for child in command.named_children:
        if child.type == "command_name":
            words.extend(_literal(c) for c in child.named_children[:1])
        elif child.type not in ("variable_assignment", "comment") and not child.type.endswith("redirect"):
            words.append(_literal(child))
    return words


def _literal(node: Any) -> str:
    """A word as the shell would pass it: quotes and escapes removed, expansions as written."""
    kind = node.type
    text = node.text.decode("utf-8", "replace")
    if kind == "raw_string":
        return text[1:-1]
    if kind == "string":
        return _unescape(text[1:-1])
    if kind == "ansi_c_string":
        try:
            return text[2:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            return text[2:-1]
    if kind == "concatenation":
        return "".join(_literal(c) for c in node.children)
    if kind in ("word", "number"):
        return _unescape(text)
    return text


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out = []
    chars = iter(text)
    for char in chars:
        out.append(next(chars, "") if char == "\\" else char)
    return "".join(out)


def _function_candidate(text: str, start: int, budget: _Budget) -> str | None:
    newline = text.rfind("\n", max(0, start - 256), start)
    line_start = newline + 1 if newline != -1 else max(0, start - 256)
    window = text[line_start : _line_end(text, start, min(len(text), start + 256))]
    budget.window(shell=len(window))
    return "fork bomb" if _fork_bomb(_parse_shell(window.encode("utf-8", "replace"))) else None


def _fork_bomb(root: Any) -> bool:
    """A function that runs itself in a pipeline or twice in the background."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            name, body = node.child_by_field_name("name"), node.child_by_field_name("body")
            if name is not None and body is not None and _calls_itself(body, name.text):
                return True
        stack.extend(node.named_children)
    return False


def _calls_itself(body: Any, name: bytes) -> bool:
    calls = 0
    stack = [body]
    while stack:
        node = stack.pop()
        if node.type == "pipeline" and any(_command_named(c, name) for c in node.named_children):
            return True
        if _command_named(node, name):
            calls += 1
        stack.extend(node.named_children)
    return calls >= 2 and b"&" in body.text


def _command_named(node: Any, name: bytes) -> bool:
    if node.type != "command":
        return False
    command_name = node.child_by_field_name("name")
    return command_name is not None and command_name.text == name


def _argv_candidate(text: str, start: int, budget: _Budget) -> str | None:
    budget.window()
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start : start + WINDOW_CHARS])
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return _judge_argv(value)
    return None


# -- judging a command's words ------------------------------------------------------------


def _show(words: list[str]) -> str:
    shown = " ".join(words[:8])
    return shown if len(shown) <= 80 else shown[:79] + "…"


def _program(word: str) -> str:
    return word.rsplit("/", 1)[-1].lower()


def _judge_argv(argv: list[str]) -> str | None:
    """A JSON list of strings, judged as a command's words (``sudo`` and the like first)."""
    judged = 0
    for at, word in enumerate(argv):
        if _judge_of(_program(word)) is None:
            continue
        judged += 1
        if judged > MAX_ARGV_COMMANDS or len(argv) - at > MAX_ARGV_WORDS:
            raise _OverBudget(TOO_MANY)
        found = _judge_words(argv[at:])
        if found is not None:
            return found
    return None


def _judge_words(words: list[str]) -> str | None:
    """The command `words` (a program and its arguments) as shown in a hold reason when it
    destroys work, else None."""
    judge = _judge_of(_program(words[0]))
    return _show(words) if judge is not None and judge(words[1:]) else None


def _judge_of(program: str) -> Any:
    return _JUDGES.get("mkfs" if program.startswith("mkfs") else program)


def _short(word: str) -> str:
    """The letters of a short-option cluster (``-rf`` → ``rf``), else ``""``."""
    return word[1:] if len(word) > 1 and word[0] == "-" and word[1:].isalpha() else ""


def _long(word: str) -> str:
    """The name of a long option (``--force=x`` → ``force``), else ``""``."""
    return word[2:].split("=", 1)[0] if word.startswith("--") and len(word) > 2 else ""


def _abbreviates(option: str, full: str) -> bool:
    """GNU and git option parsers accept any unambiguous prefix (``--rec`` for ``--recursive``)."""
    return bool(option) and full.startswith(option)


def _options(args: list[str]) -> tuple[str, set[str]]:
    """The short letters and long names among the arguments before ``--``."""
    letters, names = [], set()
    for arg in args:
        if arg == "--":
            break
        letters.append(_short(arg))
        names.add(_long(arg))
    return "".join(letters), names - {""}


def _any_long(names: set[str], *full: str) -> bool:
    return any(_abbreviates(n, f) for n in names for f in full)


def _rm(args: list[str]) -> bool:
    letters, names = _options(args)
    recursive = "r" in letters or "R" in letters or _any_long(names, "recursive")
    return recursive and ("f" in letters or _any_long(names, "force"))


# git's global options that take the next word as their value (``git -C repo push``)
_GIT_VALUE_OPTIONS = {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--config-env", "--super-prefix"}
_EVERYTHING = {".", "./", ":/", ":/.", "*", ":(top)"}  # pathspecs that mean the whole tree


def _git(args: list[str]) -> bool:
    at = 0
    while at < len(args) and args[at].startswith("-"):
        at += 2 if args[at] in _GIT_VALUE_OPTIONS else 1
    if at >= len(args):
        return False
    check = _GIT_SUBCOMMANDS.get(args[at])
    return check is not None and check(args[at + 1 :])


def _git_push(args: list[str]) -> bool:
    letters, names = _options(args)
    forced_refspec = any(a.startswith("+") and len(a) > 1 for a in args)
    return "f" in letters or _any_long(names, "force", "force-with-lease") or forced_refspec


def _git_reset(args: list[str]) -> bool:
    return _any_long(_options(args)[1], "hard")


def _git_clean(args: list[str]) -> bool:
    letters, names = _options(args)
    dry_run = "n" in letters or _any_long(names, "dry-run")
    return ("f" in letters or _any_long(names, "force")) and not dry_run


def _git_discard(args: list[str]) -> bool:  # checkout . / restore .
    return any(a in _EVERYTHING for a in args)


def _git_branch(args: list[str]) -> bool:
    letters, names = _options(args)
    delete = "d" in letters or _any_long(names, "delete")
    force = "f" in letters or _any_long(names, "force")
    return "D" in letters or (delete and force)


_GIT_SUBCOMMANDS = {
    "push": _git_push,
    "reset": _git_reset,
    "clean": _git_clean,
    "checkout": _git_discard,
    "restore": _git_discard,
    "branch": _git_branch,
}


def _find(args: list[str]) -> bool:
    if "-delete" in args:
        return True
    end = len(args)
    for at in range(len(args) - 1, -1, -1):  # walking back, `end` is the next ";" or "+"
        if args[at] in (";", "+"):
            end = at
        elif args[at] in ("-exec", "-execdir", "-ok", "-okdir") and at + 1 < end:
            run = args[at + 1 : min(end, at + 1 + _EXEC_WORDS)]
            program = _program(run[0])
            if program in ("rm", "shred", "unlink") or (program != "find" and _judge_words(run)):
                return True
    return False


_EXEC_WORDS = 64  # words of a command find runs that are judged


_HARMLESS_DEVICES = {"/dev/null", "/dev/zero", "/dev/stdout", "/dev/stderr"}


def _dd(args: list[str]) -> bool:
    return any(
        a.startswith("of=/dev/") and a[3:] not in _HARMLESS_DEVICES and not a.startswith("of=/dev/fd/")
        for a in args
    )


def _mkfs(args: list[str]) -> bool:
    return bool(args)


def _recursive(args: list[str]) -> bool:
    letters, names = _options(args)
    return "R" in letters or _any_long(names, "recursive")


def _chmod(args: list[str]) -> bool:
    world_writable = {"777", "0777", "a+rwx", "a=rwx", "ugo+rwx", "ugo=rwx"}
    return _recursive(args) and any(a in world_writable for a in args)


def _chown(args: list[str]) -> bool:
    return _recursive(args) and any(a.rstrip("/*") == "" and a.startswith("/") for a in args)


_JUDGES = {"rm": _rm, "git": _git, "find": _find, "dd": _dd, "mkfs": _mkfs, "chmod": _chmod, "chown": _chown}


# -- SQL ------------------------------------------------------------------------------------

_SQL_HINTS: dict[str, tuple[str, ...]] = {
    "drop": ("table", "database", "schema"),
    "truncate": ("",),
    "delete": ("from",),
    "alter": ("drop",),
}
_SQL_KINDS = {"TABLE", "DATABASE", "SCHEMA"}
# "delete from the cache": prose, not a statement (a table is not named "the")
_DETERMINERS = {
    "the", "a", "an", "this", "that", "these", "those", "my", "your", "our", "their", "its",
    "all", "any", "each", "every", "some", "it", "them", "there", "here",
}  # fmt: skip
# ALTER TABLE … DROP of these removes no data
_SCHEMA_ONLY = {"CONSTRAINT", "INDEX", "KEY", "DEFAULT", "NOT", "PRIMARY", "FOREIGN", "CHECK", "IDENTITY"}


class _Token(NamedTuple):
    text: str  # as written, quotes removed
    upper: str
    line: int


@lru_cache(maxsize=1)
def _sqlglot() -> Any:
    import logging

    import sqlglot

    # sqlglot logs the statement text when it falls back to an opaque Command; bodies
    # must not reach the broker's log, and a Command is judged on its tokens anyway.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    return sqlglot


def _sql_candidate(text: str, start: int, keyword: str, budget: _Budget) -> str | None:
    cap = min(len(text), start + SQL_WINDOW_CHARS)
    end = cap
    for stop, keep in ((";", 1), ("\n\n", 0), ("```", 0)):
        at = text.find(stop, start, end)
        if at != -1:
            end = at + keep
    window = text[start:end]
    if not any(h in window.lower() for h in _SQL_HINTS[keyword]):
        return None
    return _judge_sql(window, budget)


def _judge_sql(window: str, budget: _Budget) -> str | None:
    tokens, sqlglot_tokens = _sql_tokens(window, budget)
    statement = []
    for token in tokens:
        if token.text == ";":
            break
        statement.append(token)
    if not statement:
        return None
    short = sqlglot_tokens and len(statement) <= SQL_PARSE_TOKENS
    tree = _sql_parse(sqlglot_tokens[: len(statement)], window) if short else None
    sqlglot = _sqlglot()
    if tree is not None and not isinstance(tree, sqlglot.exp.Command):
        return _judge_sql_tree(tree)
    return _judge_sql_tokens(statement)


def _sql_tokens(window: str, budget: _Budget) -> tuple[list[_Token], list[Any]]:
    """The window's tokens by sqlglot's tokenizer (comments dropped), cutting the window
    at a quote it cannot close; by whitespace if it still fails."""
    sqlglot = _sqlglot()
    text = window
    for _ in range(4):
        budget.window(sql=len(text))
        try:
            raw = sqlglot.tokens.Tokenizer().tokenize(text)
        except sqlglot.errors.TokenError:
            cut = max(text.rfind(q) for q in ("'", '"', "`", "/*", "$$"))
            if cut <= 0:
                break
            text = text[:cut]
            continue
        kept = [t for t in raw if t.text != "`"]  # MySQL's identifier quotes
        return [_Token(t.text, t.text.upper(), t.line) for t in kept], kept
    tokens = []
    for line_no, line in enumerate(window.split("\n"), start=1):
        for word in line.replace(";", " ; ").split():
            word = word.strip("`\"'")
            tokens.append(_Token(word, word.upper(), line_no))
    return tokens, []


def _sql_parse(tokens: list[Any], sql: str) -> Any:
    sqlglot = _sqlglot()
    try:
        trees = sqlglot.parser.Parser(error_level=sqlglot.ErrorLevel.RAISE).parse(tokens, sql)
    except Exception:  # noqa: BLE001 - a large parser fed hostile text: on any failure the tokens decide
        return None
    return trees[0] if trees else None


def _judge_sql_tree(tree: Any) -> str | None:
    exp = _sqlglot().exp
    qualified = (".".join(p for p in (t.catalog, t.db, t.name) if p) for t in tree.find_all(exp.Table))
    names = ", ".join(dict.fromkeys(qualified)) or "?"
    if isinstance(tree, exp.Drop):
        kind = str(tree.args.get("kind") or "").upper()
        return f"DROP {kind} {names}" if kind in _SQL_KINDS else None
    if isinstance(tree, exp.TruncateTable):
        return f"TRUNCATE TABLE {names}"
    if isinstance(tree, exp.Delete):
        if names.lower() in _DETERMINERS:
            return None
        where = tree.args.get("where")
        if where is None:
            return f"DELETE FROM {names} without WHERE"
        if where.find(exp.Column) is None:
            return f"DELETE FROM {names} {where.sql()}"  # WHERE 1=1 deletes every row
        return None
    if isinstance(tree, exp.Alter):
        for action in tree.args.get("actions") or []:
            if (
                isinstance(action, exp.Drop)
                and str(action.args.get("kind") or "").upper() not in _SCHEMA_ONLY
            ):
                return f"ALTER TABLE {names} {action.sql()}"
    return None


def _sql_name(tokens: list[_Token], at: int) -> tuple[str, int]:
    """The (possibly qualified) name starting at `at`, after IF EXISTS / ONLY."""
    while at < len(tokens) and tokens[at].upper in ("IF", "EXISTS", "ONLY", "TEMPORARY", "TEMP"):
        at += 1
    parts = []
    while at < len(tokens) and tokens[at].text.replace("_", "").replace("$", "").isalnum():
        parts.append(tokens[at].text)
        at += 1
        if at + 1 >= len(tokens) or tokens[at].text != ".":
            break
        at += 1  # schema.table
    return ".".join(parts), at


def _judge_sql_tokens(tokens: list[_Token]) -> str | None:
    """The verdict on a statement sqlglot could not parse, from its tokens."""
    head = [t.upper for t in tokens[:3]]
    second = head[1] if len(head) > 1 else ""
    if head[0] == "DROP":
        at = 2 if second in ("TEMPORARY", "TEMP") else 1
        kind = tokens[at].upper if at < len(tokens) else ""
        if kind in _SQL_KINDS:
            return f"DROP {kind} {_sql_name(tokens, at + 1)[0]}".rstrip()
        return None
    if head[0] == "TRUNCATE":
        if second == "TABLE":
            return f"TRUNCATE TABLE {_sql_name(tokens, 2)[0]}".rstrip()
        name, at = _sql_name(tokens, 1)
        # "TRUNCATE users" alone, not "we truncate bodies at 256 kB"
        if name and (at == len(tokens) or tokens[at].line != tokens[at - 1].line):
            return f"TRUNCATE {name}"
        return None
    if head[0] == "DELETE" and second == "FROM":
        name, at = _sql_name(tokens, 2)
        if not name or name.lower() in _DETERMINERS:
            return None
        if any(t.upper == "WHERE" for t in tokens[at:]):
            return None
        return f"DELETE FROM {name} without WHERE"
    if head[0] == "ALTER" and second == "TABLE":
        name, at = _sql_name(tokens, 2)
        for k in range(at, len(tokens) - 1):
            if tokens[k].upper == "DROP" and tokens[k + 1].upper not in _SCHEMA_ONLY:
                dropped = " ".join(t.text for t in tokens[k + 1 : k + 3])
                return f"ALTER TABLE {name} DROP {dropped}"
    return None


# -- secrets ----------------------------------------------------------------------------------

# Kinds detect-secrets has no rule for, or spells too narrowly (GitHub's fine-grained tokens,
# OpenAI's project keys). The first capture group of eight characters or more, when there is
# one, is the secret itself; the rest is context kept when redacting.
_OWN_SECRET_RULES: tuple[tuple[str, str], ...] = (
    ("private key", r"(?i:-----BEGIN[ \t]+(?:[A-Z0-9]+\s+)*PRIVATE\s+KEY(?:\s+BLOCK)?-----)"),
    ("GitHub token", r"github_pat_[A-Za-z0-9_]{60,}|gh[pousr]_[A-Za-z0-9]{36,}"),
    ("GitLab token", r"glpat-[A-Za-z0-9_-]{20,}"),
    ("Slack token", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("Anthropic API key", r"(?:^|[^A-Za-z0-9])(sk-ant-[A-Za-z0-9_-]{20,})"),
    ("OpenAI API key", r"(?:^|[^A-Za-z0-9])(sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,})"),
    ("JSON web token", r"eyJ[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_.+/=-]*"),  # with its signature
    ("Google API key", r"AIza[0-9A-Za-z_-]{35}"),
    ("npm token", r"npm_[A-Za-z0-9]{36}"),
    ("Stripe secret key", r"[rs]k_live_[0-9A-Za-z]{20,}"),
)

# detect-secrets' rule-based plugins used, and the kind each is reported as. Left out: its
# public-IP plugin (an address is no secret), its keyword plugin (flags `password = …` in
# ordinary code) and its hex-entropy plugin (flags every git SHA).
_DETECT_SECRETS_PLUGINS: tuple[tuple[str, str, str], ...] = (
    ("private_key", "PrivateKeyDetector", "private key"),
    ("aws", "AWSKeyDetector", "AWS key"),
    ("github_token", "GitHubTokenDetector", "GitHub token"),
    ("gitlab_token", "GitLabTokenDetector", "GitLab token"),
    ("slack", "SlackDetector", "Slack token"),
    ("stripe", "StripeDetector", "Stripe secret key"),
    ("openai", "OpenAIDetector", "OpenAI API key"),
    ("npm", "NpmDetector", "npm token"),
    ("pypi_token", "PypiTokenDetector", "PyPI token"),
    ("jwt", "JwtTokenDetector", "JSON web token"),
    ("basic_auth", "BasicAuthDetector", "password in a URL"),
    ("artifactory", "ArtifactoryDetector", "Artifactory token"),
    ("azure_storage_key", "AzureStorageKeyDetector", "Azure storage key"),
    ("cloudant", "CloudantDetector", "Cloudant credentials"),
    ("discord", "DiscordBotTokenDetector", "Discord bot token"),
    ("ibm_cloud_iam", "IbmCloudIamDetector", "IBM Cloud IAM key"),
    ("ibm_cos_hmac", "IbmCosHmacDetector", "IBM COS HMAC key"),
    ("mailchimp", "MailchimpDetector", "Mailchimp key"),
    ("sendgrid", "SendGridDetector", "SendGrid key"),
    ("softlayer", "SoftlayerDetector", "SoftLayer credentials"),
    ("square_oauth", "SquareOAuthDetector", "Square OAuth secret"),
    ("telegram_token", "TelegramBotTokenDetector", "Telegram bot token"),
    ("twilio", "TwilioKeyDetector", "Twilio key"),
)

_TOKEN_CHARS = r"A-Za-z0-9+/=_-"  # detect-secrets' base64 alphabet (less its backslash)
_TOKEN_SET = frozenset(string.ascii_letters + string.digits + "+/=_-")
_QUOTED = rf"\"([{_TOKEN_CHARS}]{{{ENTROPY_MIN},{ENTROPY_MAX}}})\"|'([{_TOKEN_CHARS}]{{{ENTROPY_MIN},{ENTROPY_MAX}}})'"
_ENTROPY_KIND = "high-entropy string"
# Shannon entropy is at most log2 of the number of distinct symbols: under 23 of them a
# string cannot pass detect-secrets' limit of 4.5 bits, and is not measured.
_FEWEST_SYMBOLS = 23
_PEM_BLOCK_CHARS = 16 * 1024  # how far a private key's END line is looked for


class _SecretRules(NamedTuple):
    gate: Any  # RE2: every rule at once, so a body with no secret costs one pass
    rules: tuple[tuple[str, Any], ...]  # (kind, RE2 regex), ours first
    skipped: tuple[str, ...]  # detect-secrets patterns RE2 could not run (a test keeps it empty)


def _for_re2(pattern: str) -> str:
    """A detect-secrets pattern as RE2 runs it: lookarounds dropped (they only narrow a
    match's edges, so a match is kept a little wider) and repeats over RE2's 1000 opened."""
    import re

    pattern = re.sub(r"\(\?<?[=!](?:\\.|\[(?:\\.|[^\]])*\]|[^()\\\[])*\)", "", pattern)
    return re.sub(r"\{(\d+),(\d{4,})\}", r"{\1,}", pattern)


@lru_cache(maxsize=1)
def _secret_rules() -> _SecretRules:
    import importlib
    import re

    import re2

    options = _re2_options(case_sensitive=True)
    patterns: list[tuple[str, str]] = list(_OWN_SECRET_RULES)
    skipped = []
    for module, name, kind in _DETECT_SECRETS_PLUGINS:
        plugin = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), name)
        for compiled in plugin.denylist:
            pattern = _for_re2(compiled.pattern)
            if compiled.flags & re.IGNORECASE:
                pattern = f"(?i:{pattern})"
            if compiled.flags & re.VERBOSE and any(c.isspace() or c == "#" for c in pattern):
                skipped.append(f"{name}: {compiled.pattern[:40]}")
            else:
                patterns.append((kind, pattern))
    rules = []
    for kind, pattern in patterns:
        try:
            rules.append((kind, re2.compile(pattern, options=options)))
        except re2.error:
            skipped.append(f"{kind}: {pattern[:40]}")
    gate = re2.compile("|".join(f"(?:{r.pattern})" for _, r in rules), options=options)
    return _SecretRules(gate, tuple(rules), tuple(skipped))


@lru_cache(maxsize=1)
def _entropy() -> tuple[Any, Any]:
    import re2
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

    return re2.compile(_QUOTED, options=_re2_options(case_sensitive=True)), Base64HighEntropyString()


@lru_cache(maxsize=1)
def _join_breaks() -> Any:
    import re

    # Python's re is safe here: fixed-width lookarounds, and the one repeat stops at the
    # first character that is not a blank, so each line break is read once.
    token = f"[{_TOKEN_CHARS}]"
    return re.compile(rf"(?<={token})(?:\r?\n|\\r\\n|\\n)[ \t]*(?={token})")


def _findings(text: str, *, whole: bool) -> list[SecretFinding]:
    text = _readable(text)
    found = _rule_findings(text) + _entropy_findings(text, whole=whole)
    # A secret split over lines ("AKIA…\nEXAMPLE") is found in a copy with the line
    # breaks inside token runs removed, and mapped back to the original text.
    joined = _join_breaks().sub("", text)
    if joined != text:
        split = _rule_findings(joined) + _entropy_findings(joined, whole=whole)
        if split:
            found += _map_back(text, split)
    return _merge(found)


def _rule_findings(text: str) -> list[SecretFinding]:
    rules = _secret_rules()
    if rules.gate.search(text) is None:
        return []
    found = []
    lower = None
    for kind, regex in rules.rules:
        footer = 0  # where the next "-----END" is (-1: there is none)
        for match in regex.finditer(text):
            start, end = match.span()
            # a capture group of eight characters or more is the secret itself (the
            # password in a URL); the rest is context, kept when redacting
            for group in range(1, regex.groups + 1):
                span = match.span(group)
                if span[0] != -1 and span[1] - span[0] >= 8:
                    start, end = span
                    break
            if kind == "private key":  # redact the key's whole block, not only its header
                lower = text.lower() if lower is None else lower
                if footer != -1 and footer < end:
                    footer = lower.find("-----end", end)
                if footer != -1 and footer - end <= _PEM_BLOCK_CHARS:
                    close = lower.find("-----", footer + 8, footer + 200)
                    end = close + 5 if close != -1 else end
            found.append(SecretFinding(kind, start, end))
    return found


def _entropy_findings(text: str, *, whole: bool) -> list[SecretFinding]:
    regex, plugin = _entropy()
    spans = []
    if whole and ENTROPY_MIN <= len(text) <= ENTROPY_MAX and set(text) <= _TOKEN_SET:
        spans.append((0, len(text)))  # a JSON string is a quoted string
    spans.extend(m.span(1) if m.group(1) is not None else m.span(2) for m in regex.finditer(text))
    found = []
    for start, end in spans:
        value = text[start:end]
        if len(set(value)) < _FEWEST_SYMBOLS or _ordinary(value):
            continue
        if plugin.calculate_shannon_entropy(value) > plugin.entropy_limit:
            found.append(SecretFinding(_ENTROPY_KIND, start, end))
    return found


_HEX = frozenset("0123456789abcdefABCDEF-")
_PATH_SEGMENT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _ordinary(value: str) -> bool:
    """Shapes that look random but are engineering's daily bread: hex (git SHAs, digests,
    UUIDs) and lower-case paths. Their entropy stays under the limit anyway; this says so."""
    if not value.strip("-_/=+") or set(value) <= _HEX:
        return True
    return "/" in value and all(set(part) <= _PATH_SEGMENT for part in value.split("/"))


def _map_back(text: str, split: list[SecretFinding]) -> list[SecretFinding]:
    """Findings in the joined copy as spans of `text` (each covers the line breaks in it)."""
    import bisect

    gaps, totals = [], []  # where each removed break sits in the joined copy; removed so far
    total = 0
    for match in _join_breaks().finditer(text):
        total += match.end() - match.start()
        gaps.append(match.end() - total)
        totals.append(total)

    def original(at: int, find: Any) -> int:
        index = find(gaps, at)
        return at + (totals[index - 1] if index else 0)

    # a start counts the breaks at or before it, an (exclusive) end only those before it
    return [
        SecretFinding(f.kind, original(f.start, bisect.bisect_right), original(f.end, bisect.bisect_left))
        for f in split
    ]


def _merge(found: list[SecretFinding]) -> list[SecretFinding]:
    """In order, without overlaps: of overlapping findings the first (then the longest) wins."""
    merged: list[SecretFinding] = []
    for finding in sorted(found, key=lambda f: (f.start, -f.end)):
        if merged and finding.start < merged[-1].end:
            continue
        merged.append(finding)
    return merged


def _redact_text(text: str, *, whole: bool) -> str:
    found = _findings(text, whole=whole)
    if not found:
        return text
    pieces, at = [], 0
    for finding in found:
        pieces.append(text[at : finding.start])
        pieces.append(f"[redacted {finding.kind}]")
        at = finding.end
    pieces.append(text[at:])
    return "".join(pieces)


def _redact_json(value: Any) -> Any:
    if isinstance(value, str):
        return _redact_text(value, whole=True)
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = _redact_text(key, whole=True) if isinstance(key, str) else key
            redacted, n = new_key, 2
            while new_key in out:  # two keys redacted alike must not overwrite each other
                new_key = f"{redacted} ({n})"
                n += 1
            out[new_key] = _redact_json(item)
        return out
    return value
