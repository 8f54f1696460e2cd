"""Shell commands in a body, read with tree-sitter's bash grammar and judged on their
parsed words (the package docstring says why tree-sitter)."""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any

from .common import MAX_ARGV_COMMANDS, MAX_ARGV_WORDS, REST_CHARS, TOO_MANY, WINDOW_CHARS, Budget, OverBudget

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
def bash() -> Any:
    import tree_sitter
    import tree_sitter_bash

    return tree_sitter.Language(tree_sitter_bash.language())


def _parse_shell(source: bytes) -> Any:
    parser = getattr(_local, "parser", None)
    if parser is None:
        import tree_sitter

        parser = _local.parser = tree_sitter.Parser(bash())
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


def shell_candidate(text: str, at: int, name: str, budget: Budget) -> str | None:
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


def function_candidate(text: str, start: int, budget: Budget) -> str | None:
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


def argv_candidate(text: str, start: int, budget: Budget) -> str | None:
    budget.window()
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start : start + WINDOW_CHARS])
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return judge_argv(value)
    return None


# -- judging a command's words ------------------------------------------------------------


def _show(words: list[str]) -> str:
    shown = " ".join(words[:8])
    return shown if len(shown) <= 80 else shown[:79] + "…"


def _program(word: str) -> str:
    return word.rsplit("/", 1)[-1].lower()


def judge_argv(argv: list[str]) -> str | None:
    """A JSON list of strings, judged as a command's words (``sudo`` and the like first)."""
    judged = 0
    for at, word in enumerate(argv):
        if _judge_of(_program(word)) is None:
            continue
        judged += 1
        if judged > MAX_ARGV_COMMANDS or len(argv) - at > MAX_ARGV_WORDS:
            raise OverBudget(TOO_MANY)
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
