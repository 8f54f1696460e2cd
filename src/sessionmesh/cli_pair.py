"""The pair-mode commands: ``mesh pair``, ``unpair``, ``steer``, ``intercept`` and
``intercept!`` (docs/protocol.md, the ``pair`` op; the rules are in core/pairs.py).

``mesh pair`` shows where you stand; ``mesh pair NAME`` invites NAME; ``mesh pair
accept|decline|ack|swap`` answer and act. A peer named like one of those words is
invited with ``mesh pair --with NAME``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

ANSWERS = ("status", "accept", "decline", "ack", "swap")
DONE = {  # what each action did, in a line above the status
    "invite": "invitation sent",
    "accept": "paired",
    "decline": "invitation declined",
    "steer": "steering note sent to {other}",
    "intercept": "asked {other} to hand over; it decides when (mesh pair swap)",
    "stop": "stopped {other}: its tool calls are refused until it acknowledges",
    "ack": "acknowledged; {other} is told",
    "swap": "handed over: {other} builds now",
    "unpair": "pair ended",
}


def register(add: Callable[..., argparse.ArgumentParser], peer: Any) -> None:
    """Add the commands to the parser (``add`` is `cli.build_parser`'s)."""
    p = add(
        "pair",
        cmd_pair,
        "pair with a peer (one builds, one guards): invite, or accept, decline, ack, swap; alone: show",
        [peer],
    )
    p.add_argument("what", nargs="?", metavar="NAME|accept|decline|ack|swap|status")
    p.add_argument("rest", nargs="*", metavar="ARG", help="accept/decline: the inviter; ack: a note")
    p.add_argument("--with", dest="invitee", metavar="NAME", help="invite NAME (for a name like accept)")
    p.add_argument(
        "--role", choices=["grip", "guard"], default="grip", help="your role when you invite (default grip)"
    )
    p.add_argument("--note", metavar="TEXT", help="invite: what the work is; decline: why")
    add("unpair", cmd_unpair, "end your pair (or withdraw your invitation)", [peer])
    p = add("steer", cmd_steer, "guard: send your grip a steering note", [peer])
    p.add_argument("body", nargs="+")
    for name, urgent, text in (
        ("intercept", False, "guard: ask your grip to hand over (it decides when)"),
        ("intercept!", True, "guard: stop your grip now; its tool calls are refused until it acks"),
    ):
        p = add(name, cmd_intercept, text, [peer])
        p.add_argument("body", nargs="+", metavar="REASON")
        p.set_defaults(urgent=urgent)


def cmd_pair(args: argparse.Namespace) -> int:
    call: dict[str, Any]
    if args.invitee or (args.what is not None and args.what not in ANSWERS):
        to = args.invitee or args.what
        call = {"action": "invite", "to": to, "role": args.role}
        if args.note:
            call["body"] = args.note
    elif args.what in ("accept", "decline"):
        call = {"action": args.what}
        if args.rest:
            call["from"] = args.rest[0]
        if args.what == "decline" and args.note:
            call["body"] = args.note
    elif args.what == "ack":
        call = {"action": "ack"}
        if args.rest:
            call["body"] = " ".join(args.rest)
    else:
        call = {"action": args.what or "status"}
    return _act(args, **call)


def cmd_unpair(args: argparse.Namespace) -> int:
    return _act(args, action="unpair")


def cmd_steer(args: argparse.Namespace) -> int:
    return _act(args, action="steer", body=" ".join(args.body))


def cmd_intercept(args: argparse.Namespace) -> int:
    return _act(args, action="intercept", urgent=args.urgent, body=" ".join(args.body))


def _act(args: argparse.Namespace, **call: Any) -> int:
    """Run one action and print what it did, then where the caller stands."""
    from .cli import _oneshot

    status = dict(_oneshot(args).call("pair", **call))
    done = DONE.get("stop" if call.get("urgent") else call["action"])
    other = (status.get("pair") or {}).get("with") or call.get("to")  # the partner, after any action
    return _show(args, status, done.format(other=other) if done else None)


def _show(args: argparse.Namespace, status: dict[str, Any], done: str | None = None) -> int:
    from .cli import EXIT_OK, _out

    if args.json:
        _out(args, status)
        return EXIT_OK
    if done:
        print(done)
    for line in describe(status):
        print(line)
    return EXIT_OK


def describe(status: dict[str, Any]) -> list[str]:
    """The ``pair`` op's answer for a person: the pair, a standing stop, invitations."""
    me, pair, block = status["name"], status.get("pair"), status.get("block")
    lines = []
    if pair is None:
        lines.append(f"{me}: not paired")
    else:
        other = "guard" if pair["role"] == "grip" else "grip"
        since = time.strftime("%H:%M", time.localtime(pair["since"]))
        lines.append(f"{me}: {pair['role']}, paired with {pair['with']} ({other}) since {since}")
    if block:
        lines.append(f"  stopped by {block['by']}: {block['reason']}")
        lines.append("  no tool call runs until you acknowledge: mesh pair ack")
    for inviter, invite in sorted((status.get("invites") or {}).items()):
        lines.append(
            f"  {inviter} invites you (you would be {invite['role']}):"
            f" mesh pair accept {inviter} / mesh pair decline {inviter}"
        )
    for invitee in status.get("invited") or ():
        lines.append(f"  you invited {invitee}; waiting for an answer (mesh unpair withdraws it)")
    return lines
