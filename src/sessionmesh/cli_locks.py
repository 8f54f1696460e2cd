"""Who edits what: ``lock``, ``unlock`` and ``locks`` (advisory leases on paths,
globs and names), and ``guard``, the git pre-commit hook that refuses a commit of
files another peer holds."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .cli import EXIT_CONFLICT, EXIT_OK, _oneshot, _out, _read_only, _resource, _settings


def register(add: Callable[..., argparse.ArgumentParser], peer: Any) -> None:
    """Add the commands to the parser (``add`` is `cli.build_parser`'s)."""
    p = add("lock", cmd_lock, "take (or renew) an advisory lease on a path, glob or name", [peer])
    p.add_argument("resource")
    p.add_argument("--ttl", type=float, help="seconds (default 600)")
    p.add_argument("--shared", action="store_true", help="a shared lease (conflicts only with exclusive)")
    p.add_argument("--reason", help="why, shown to whoever conflicts")
    p = add("unlock", cmd_unlock, "release a lease", [peer])
    p.add_argument("resource")
    add("locks", cmd_locks, "all leases held", [peer])
    p = add("guard", cmd_guard, "git pre-commit guard for files other peers hold exclusively", [peer])
    p.add_argument("action", choices=["install", "uninstall", "check"])
    p.add_argument("--dir", help="the repository (default: the current folder)")


def cmd_lock(args: argparse.Namespace) -> int:
    from .render import clock, paint

    call: dict[str, Any] = {
        "resource": _resource(args.resource),
        "exclusive": not args.shared,
        "reason": args.reason or "",
    }
    if args.ttl:
        call["ttl"] = args.ttl
    result = _oneshot(args).call("lock", **call)
    if args.json:
        _out(args, result)
    elif result["outcome"] == "conflict":
        lease = result["lease"]
        print(
            f"{paint('conflict')}: {lease['resource']} is held by {lease['holder']} until "
            f"{clock(lease['expires_at'])}" + (f" ({lease['reason']})" if lease["reason"] else "")
        )
    else:
        lease = result["lease"]
        print(f"{paint(result['outcome'])}: {lease['resource']} until {clock(lease['expires_at'])}")
    return EXIT_CONFLICT if result["outcome"] == "conflict" else EXIT_OK


def cmd_unlock(args: argparse.Namespace) -> int:
    result = _oneshot(args).call("unlock", resource=_resource(args.resource))
    _out(args, result) if args.json else print(f"released {result['released']}")
    return EXIT_OK


def cmd_locks(args: argparse.Namespace) -> int:
    from .render import table

    locks = _read_only(args, "locks")["locks"]
    if args.json:
        _out(args, locks)
    elif not locks:
        print("no locks held")
    else:
        table(
            ["resource", "holder", "mode", "expires in", "reason"],
            [
                [
                    lease["resource"],
                    lease["holder"],
                    "exclusive" if lease["exclusive"] else "shared",
                    f"{lease['expires_in']:.0f}s",
                    lease["reason"] or "-",
                ]
                for lease in locks
            ],
        )
    return EXIT_OK


def cmd_guard(args: argparse.Namespace) -> int:
    from .guard import run_guard

    return run_guard(_settings(args), args)
