"""SQL statements in a body, read with sqlglot (its tokens when it cannot parse)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from .common import SQL_PARSE_TOKENS, SQL_WINDOW_CHARS, Budget

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
def sqlglot_module() -> Any:
    import logging

    import sqlglot

    # sqlglot logs the statement text when it falls back to an opaque Command; bodies
    # must not reach the broker's log, and a Command is judged on its tokens anyway.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    return sqlglot


def sql_candidate(text: str, start: int, keyword: str, budget: Budget) -> str | None:
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


def _judge_sql(window: str, budget: Budget) -> str | None:
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
    sqlglot = sqlglot_module()
    if tree is not None and not isinstance(tree, sqlglot.exp.Command):
        return _judge_sql_tree(tree)
    return _judge_sql_tokens(statement)


def _sql_tokens(window: str, budget: Budget) -> tuple[list[_Token], list[Any]]:
    """The window's tokens by sqlglot's tokenizer (comments dropped), cutting the window
    at a quote it cannot close; by whitespace if it still fails."""
    sqlglot = sqlglot_module()
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
    sqlglot = sqlglot_module()
    try:
        trees = sqlglot.parser.Parser(error_level=sqlglot.ErrorLevel.RAISE).parse(tokens, sql)
    except Exception:  # noqa: BLE001 - a large parser fed hostile text: on any failure the tokens decide
        return None
    return trees[0] if trees else None


def _judge_sql_tree(tree: Any) -> str | None:
    exp = sqlglot_module().exp
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
