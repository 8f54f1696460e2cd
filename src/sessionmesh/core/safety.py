"""What a message body may carry: destructive requests are held, secrets refused.

Pure functions over the body text. The patterns are regular expressions matched
case-insensitively against the body (a JSON body is matched as its JSON text);
``hold_patterns`` in the settings replaces `DEFAULT_HOLD_PATTERNS`.

The patterns run on RE2 (``google-re2``), which matches in time linear in the body
whatever the pattern: with Python's backtracking ``re`` one 261 kB body of ``"dd "``
kept the broker busy for 204 s (issue #15). RE2 has no lookaround or backreferences;
a configured pattern that needs them is refused when the settings load.
"""

from __future__ import annotations

import enum
import json
from functools import lru_cache
from typing import Any, NamedTuple

# re2 is imported where a pattern is compiled: the hook path loads the settings, which
# imports this module, and has no pattern to compile.

# Commands and statements that destroy work or history. A body matching one is held
# until a person approves it (`mesh approve ID`).
DEFAULT_HOLD_PATTERNS: tuple[str, ...] = (
    r"\brm\s+(-[a-z]*\s+)*-[a-z]*(r[a-z]*f|f[a-z]*r)\b",  # rm -rf, rm -fr, rm -v -rf …
    r"\brm\s+--recursive\b.*--force\b|\brm\s+--force\b.*--recursive\b",
    r"\bgit\s+push\b[^\n]*(\s--force\b|\s-f\b|\s--force-with-lease\b|\s\+\S)",
    r"\bgit\s+reset\s+--hard\b",
    r"\bgit\s+clean\s+-[a-z]*f",
    r"\bgit\s+checkout\s+(--\s+)?\.(\s|$)",
    r"\bgit\s+branch\s+-D\b",
    r"\bdrop\s+(table|database|schema)\b",
    r"\btruncate\s+table\b",
    r"\bdelete\s+from\s+\w+\s*(;|$)",  # a DELETE with no WHERE
    r"\bmkfs(\.\w+)?\b",
    r"\bdd\s+[^\n]*\bof=/dev/",
    r"\bchmod\s+-R\s+777\b",
    r":\(\)\s*\{\s*:\|:&\s*\};:",  # fork bomb
)

# Secrets that must never travel through the mesh (or sit in its store).
SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    ("private key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    ("AWS access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})\b"),
    ("GitLab token", r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
    ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    ("Anthropic API key", r"\bsk-ant-[A-Za-z0-9_-]{20,}\b"),
    ("OpenAI API key", r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{32,}\b"),
    ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("Stripe secret key", r"\b[rs]k_live_[0-9A-Za-z]{20,}\b"),
    ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
)


class SecretAction(enum.StrEnum):
    """What the broker does with a body that carries a secret."""

    REFUSE = "refuse"
    REDACT = "redact"
    ALLOW = "allow"


class SecretFinding(NamedTuple):
    kind: str
    start: int
    end: int


def body_text(body: Any) -> str:
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)


class BadPattern(ValueError):
    """A hold pattern RE2 cannot compile."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"{pattern!r}: {reason}")
        self.pattern = pattern


def _options(*, case_sensitive: bool) -> Any:
    import re2

    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False
    return options


@lru_cache(maxsize=8)
def _hold_regex(patterns: tuple[str, ...]) -> Any:
    if not patterns:
        return None
    import re2

    return re2.compile("|".join(f"(?:{p})" for p in patterns), options=_options(case_sensitive=False))


@lru_cache(maxsize=1)
def _secrets() -> Any:
    import re2

    joined = "|".join(f"(?P<s{i}>{p})" for i, (_, p) in enumerate(SECRET_PATTERNS))
    return re2.compile(joined, options=_options(case_sensitive=True))


def hold_reason(body: Any, patterns: tuple[str, ...]) -> str | None:
    """The destructive text a body asks for, or None when it can go straight through."""
    regex = _hold_regex(patterns)
    match = regex.search(body_text(body)) if regex is not None else None
    return match.group(0).strip() if match else None


def find_secrets(body: Any) -> list[SecretFinding]:
    """Every secret-looking span in the body's text, in order."""
    return [SecretFinding(_kind(m), m.start(), m.end()) for m in _secrets().finditer(body_text(body))]


def redact(body: Any) -> Any:
    """The body with each secret replaced by ``[redacted <kind>]``; JSON bodies are
    redacted string by string so they stay the same shape."""
    if isinstance(body, str):
        return _secrets().sub(lambda m: f"[redacted {_kind(m)}]", body)
    if isinstance(body, dict):
        return {k: redact(v) for k, v in body.items()}
    if isinstance(body, list):
        return [redact(v) for v in body]
    return body


def _kind(match: Any) -> str:
    index = int(next(k for k, v in match.groupdict().items() if v is not None)[1:])
    return SECRET_PATTERNS[index][0]


def check_patterns(patterns: tuple[str, ...]) -> None:
    """Raise `BadPattern` for a pattern RE2 does not compile (settings validation)."""
    if not patterns:
        return
    import re2

    for p in patterns:
        try:
            re2.compile(p, options=_options(case_sensitive=False))
        except re2.error as exc:
            reason = (
                exc.args[0].decode(errors="replace")
                if exc.args and isinstance(exc.args[0], bytes)
                else str(exc)
            )
            raise BadPattern(p, reason) from None
