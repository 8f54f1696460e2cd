"""Inbound policies: what happens to a message on its way to a peer.

``accept`` (the default) delivers it, ``hold`` keeps every incoming copy ``held`` until
the person approves it (as a destructive request is held), ``refuse`` denies it.
A policy applies to every sender, or to one. Two parties set them, and the stricter
wins:

- the person, in the settings (``inbound``: rules ``RECIPIENT=POLICY`` and
  ``RECIPIENT<SENDER=POLICY``, ``*`` for every recipient). This is the strong control:
  no agent can change it through the broker;
- the peer itself, with the ``policy`` op. It may make itself stricter than the
  settings say, never looser: a peer steered by a message cannot open a door the
  person closed.

A reply to the recipient's own message is never refused (it asked for it), though it
is held like any message under ``hold``. Messages from the person are never held.
"""

from __future__ import annotations

import enum
from functools import lru_cache
from typing import Any

from ..envelope import check_name


class Policy(enum.StrEnum):
    ACCEPT = "accept"
    HOLD = "hold"
    REFUSE = "refuse"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Policy.ACCEPT: 0, Policy.HOLD: 1, Policy.REFUSE: 2}
EVERYONE = "*"


def stricter(a: Policy, b: Policy) -> Policy:
    return a if a.rank >= b.rank else b


def policy(value: Any, what: str = "policy") -> Policy:
    try:
        return Policy(value)
    except ValueError:
        raise ValueError(f"{what} must be one of accept, hold, refuse; got {value!r}") from None


def parse_rule(text: str) -> tuple[str, str | None, Policy]:
    """``RECIPIENT=POLICY`` or ``RECIPIENT<SENDER=POLICY`` (``*`` for every recipient);
    raises `ValueError` with what is wrong."""
    who, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"inbound rule {text!r} needs '=': RECIPIENT=POLICY or RECIPIENT<SENDER=POLICY")
    recipient, angle, named = who.strip().partition("<")
    recipient, sender = recipient.strip(), named.strip() or None
    if angle and sender is None:
        raise ValueError(f"inbound rule {text!r} names no sender after '<'")
    if recipient != EVERYONE:
        check_name(recipient, what="recipient in an inbound rule", claim=True)
    if sender is not None:
        check_name(sender, what="sender in an inbound rule", claim=True, remote=True)
    return recipient, sender, policy(value.strip(), f"inbound rule {text!r}")


@lru_cache(maxsize=4)
def _rules(rules: tuple[str, ...]) -> dict[tuple[str, str | None], Policy]:
    table: dict[tuple[str, str | None], Policy] = {}
    for text in rules:
        recipient, sender, value = parse_rule(text)
        key = (recipient, sender)
        table[key] = stricter(table.get(key, Policy.ACCEPT), value)
    return table


def configured(rules: tuple[str, ...], recipient: str, sender: str) -> Policy:
    """What the settings say for ``sender`` → ``recipient``: the strictest rule that
    names them (by name or ``*``)."""
    table = _rules(rules)
    found = Policy.ACCEPT
    for key in ((recipient, sender), (recipient, None), (EVERYONE, sender), (EVERYONE, None)):
        if key in table:
            found = stricter(found, table[key])
    return found


def own(meta: dict[str, Any], sender: str) -> Policy:
    """What a peer set for itself (kept in its private metadata, ``policy``)."""
    mine = meta.get("policy") or {}
    found = Policy(mine.get("default", "accept"))
    by_sender = (mine.get("from") or {}).get(sender)
    return stricter(found, Policy(by_sender)) if by_sender else found


def check_own(args: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """A peer's new policy from the ``policy`` op's ``default`` and ``from`` (a sender
    mapped to ``null`` drops its rule); raises `ValueError`."""
    mine: dict[str, Any] = {"default": "accept", "from": {}, **(current or {})}
    mine["from"] = dict(mine["from"])
    if args.get("default") is not None:
        mine["default"] = policy(args["default"], "'default'").value
    senders = args.get("from")
    if senders is not None:
        if not isinstance(senders, dict):
            raise ValueError("'from' must map sender names to accept, hold, refuse or null")
        for sender, value in senders.items():
            check_name(sender, what="sender", claim=True, remote=True)
            if value is None:
                mine["from"].pop(sender, None)
            else:
                mine["from"][sender] = policy(value, f"the policy for {sender!r}").value
    return mine
