"""Secrets in a body: detect-secrets' rules and entropy measure, run on RE2, plus our
own rules for the kinds it lacks; and redacting them."""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any, NamedTuple

from .common import ENTROPY_MAX, ENTROPY_MIN, SecretFinding, re2_options, readable

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
def secret_rules() -> _SecretRules:
    import importlib
    import re

    import re2

    options = re2_options(case_sensitive=True)
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

    return re2.compile(_QUOTED, options=re2_options(case_sensitive=True)), Base64HighEntropyString()


@lru_cache(maxsize=1)
def _join_breaks() -> Any:
    import re

    # Python's re is safe here: fixed-width lookarounds, and the one repeat stops at the
    # first character that is not a blank, so each line break is read once.
    token = f"[{_TOKEN_CHARS}]"
    return re.compile(rf"(?<={token})(?:\r?\n|\\r\\n|\\n)[ \t]*(?={token})")


def findings(text: str, *, whole: bool) -> list[SecretFinding]:
    text = readable(text)
    found = _rule_findings(text) + _entropy_findings(text, whole=whole)
    # A secret split over lines ("AKIA…\nEXAMPLE") is found in a copy with the line
    # breaks inside token runs removed, and mapped back to the original text.
    joined = _join_breaks().sub("", text) if "\n" in text or "\\n" in text else text
    if joined != text:
        split = _rule_findings(joined) + _entropy_findings(joined, whole=whole)
        if split:
            found += _map_back(text, split)
    return _merge(found)


def _rule_findings(text: str) -> list[SecretFinding]:
    rules = secret_rules()
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
    if '"' in text or "'" in text:  # every span the regex finds is quoted (one RE2 pass less)
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


def redact_text(text: str, *, whole: bool) -> str:
    found = findings(text, whole=whole)
    if not found:
        return text
    pieces, at = [], 0
    for finding in found:
        pieces.append(text[at : finding.start])
        pieces.append(f"[redacted {finding.kind}]")
        at = finding.end
    pieces.append(text[at:])
    return "".join(pieces)


def redact_json(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value, whole=True)
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = redact_text(key, whole=True) if isinstance(key, str) else key
            redacted, n = new_key, 2
            while new_key in out:  # two keys redacted alike must not overwrite each other
                new_key = f"{redacted} ({n})"
                n += 1
            out[new_key] = redact_json(item)
        return out
    return value
