"""The person's commands: ``person`` (the passphrase), ``held``, ``approve`` and
``reject``, ``forget``, and ``dashboard``. Each that decides something asks for the
passphrase on a terminal (`sessionmesh.person`): what no agent holds."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from .cli import EXIT_ERROR, EXIT_OK, _message_id, _oneshot, _out, _settings


def register(add: Callable[..., argparse.ArgumentParser], common: Any) -> None:
    """Add the commands to the parser (``add`` is `cli.build_parser`'s)."""
    p = add(
        "person",
        cmd_person,
        "set the person's passphrase (asked on a terminal), or check it is set",
        [common],
    )
    p.add_argument("action", choices=["init", "status"])
    person = argparse.ArgumentParser(add_help=False, parents=[common])
    person.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        default="human",
        help="the person (default: human; asks the passphrase)",
    )
    p = add("held", cmd_held, "messages held until a person approves them", [person])
    p.add_argument("--limit", type=int, default=100)
    p = add(
        "forget", cmd_forget, "remove an offline peer and its unread mail (the person's command)", [person]
    )
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask to confirm (the passphrase is still asked)")
    for name, verb in (("approve", "deliver"), ("reject", "drop")):
        p = add(name, cmd_decide, f"{verb} held messages (a person's decision)", [person])
        p.add_argument("message_ids", nargs="+", metavar="ID")
    p = add("dashboard", cmd_dashboard, "open the live dashboard (prints a one-time login link)", [common])
    p.add_argument("--no-open", action="store_true", help="only print the link, do not open a browser")


def cmd_held(args: argparse.Namespace) -> int:
    from .render import message_line

    messages = _oneshot(args).call("held", limit=args.limit)["messages"]
    if args.json:
        _out(args, messages)
    elif not messages:
        print("nothing is held")
    for env in [] if args.json else messages:
        print(f"{message_line(env)}\n  for {', '.join(env['held_for'])}; asks for {env['match']!r}")
    return EXIT_OK


def cmd_decide(args: argparse.Namespace) -> int:
    op = args.command  # approve | reject
    shot = _oneshot(args)
    result = shot.call(op, ids=[_message_id(shot, value) for value in args.message_ids])
    if args.json:
        _out(args, result)
    else:
        key, done = (
            ("approved", "delivered to its recipients")
            if op == "approve"
            else ("rejected", "never delivered")
        )
        for msg_id in result[key]:
            print(f"{msg_id} {key}: {done}")
    return EXIT_OK


def cmd_forget(args: argparse.Namespace) -> int:
    from .client import discovery
    from .person import ask

    shot = _oneshot(args)
    counts = shot.call("forget", name=args.name, dry_run=True)
    going = (
        f"{counts['unread']} unread and {counts['held']} held message(s) to it, "
        f"and {counts['leases']} lease(s) it holds"
    )
    if not args.yes:
        prompt = f"forget {args.name}? {going} go with it (their senders see 'rejected'). [y/N] "
        if ask(prompt, echo=True).strip().lower() not in ("y", "yes"):
            print("nothing changed", file=sys.stderr)
            return EXIT_ERROR
    result = shot.call("forget", name=args.name)
    discovery.forget_secret(shot.settings, args.name)
    if args.json:
        _out(args, result)
    else:
        print(f"{args.name} is forgotten: {going} went with it")
    return EXIT_OK


def cmd_person(args: argparse.Namespace) -> int:
    from .errors import BadPassphrase
    from .person import MIN_LENGTH, ask, credential_path, read_credential, verify, write_credential

    settings = _settings(args)
    existing = read_credential(settings)
    if args.action == "status":
        if args.json:
            _out(args, {"set": existing is not None, "path": credential_path(settings)})
        elif existing is not None:
            print(f"the person's passphrase is set ({credential_path(settings)})")
        else:
            print("no person passphrase yet: run 'mesh person init' in a terminal")
        return EXIT_OK if existing is not None else EXIT_ERROR
    if existing is not None and not verify(existing, ask("current passphrase: ")):
        raise BadPassphrase("wrong passphrase; nothing changed")
    first = ask(f"new passphrase ({MIN_LENGTH} characters or more): ")
    if ask("the same again: ") != first:
        raise BadPassphrase("the two passphrases differ; nothing changed")
    write_credential(settings, first)
    print(
        f"the person's passphrase is set ({credential_path(settings)}, a slow hash).\n"
        "approve, reject, sending as human and the dashboard now ask for it; agents do not have it."
    )
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .client.http import OneShot
    from .person import ask

    shot = OneShot(_settings(args))
    login = shot.dashboard_login(ask("the person's passphrase (the dashboard acts as you): "))
    if args.json:
        _out(args, login)
    else:
        print(login["url"])
        print(f"a one-time login link: it works once, within {login['ttl']:.0f}s", file=sys.stderr)
    gui = sys.platform == "darwin" or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if gui and not args.no_open:
        import webbrowser

        webbrowser.open(login["url"])
    return EXIT_OK
