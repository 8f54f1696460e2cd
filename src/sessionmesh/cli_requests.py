"""Asking and answering: ``reply``, ``ask`` (one peer, or several with ``--all``),
``await``, ``await-idle``, ``track`` and ``thread``. An ask exits by the reply's
end-state (README's exit codes)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from .cli import (
    EXIT_BY_END_STATE,
    EXIT_BY_SEND_STATUS,
    EXIT_OK,
    EXIT_TIMEOUT,
    _message_id,
    _oneshot,
    _out,
    _print_send,
    _send_args,
    _to,
)


def register(add: Callable[..., argparse.ArgumentParser], peer: Any, sending: Any) -> None:
    """Add the commands to the parser (``add`` is `cli.build_parser`'s)."""
    p = add("await-idle", cmd_await_idle, "wait until a peer's agent is idle (its hooks say)", [peer])
    p.add_argument("name")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    p = add("reply", cmd_reply, "reply to a message", [peer, sending])
    p.add_argument(
        "--evidence", action="append", metavar="PATH[=NOTE]", help="what backs the reply (repeatable)"
    )
    p.add_argument("--note", action="append", metavar="TEXT", help="evidence without a path (repeatable)")
    p.add_argument("message_id")
    p.add_argument("body", nargs="*")
    p.add_argument("--status", choices=list(EXIT_BY_END_STATE), help="end-state (for requests)")
    p = add("ask", cmd_ask, "send a request and wait for the reply; exits by its end-state", [peer, sending])
    p.add_argument("to", help="a name, or names (a,b,c)")
    p.add_argument("body", nargs="*")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument(
        "--all", action="store_true", help="wait for every recipient's reply; exit by the worst end-state"
    )
    p = add("await", cmd_await, "wait for a reply to a message", [peer])
    p.add_argument("message_id")
    p.add_argument("--timeout", type=float, default=300.0)
    p = add("track", cmd_track, "receipts of a message you sent", [peer])
    p.add_argument("message_id")
    p = add("thread", cmd_thread, "a thread's state, turns and messages", [peer])
    p.add_argument("thread_id")
    p.add_argument("--close", action="store_true", help="close the thread")


def wait_idle(shot: Any, name: str, timeout: float) -> dict[str, Any]:
    return dict(shot.call("await_idle", answer_timeout=timeout + 5, name=name, timeout=timeout))


def cmd_await_idle(args: argparse.Namespace) -> int:
    from .errors import Timeout

    try:
        result = wait_idle(_oneshot(args), args.name, args.timeout)
    except Timeout:
        _out(args, {"name": args.name, "activity": None, "status": "timeout"}) if args.json else print(
            f"{args.name} did not go idle within {args.timeout:g}s", file=sys.stderr
        )
        return EXIT_TIMEOUT
    _out(args, result) if args.json else print(f"{args.name} is idle")
    return EXIT_OK


def cmd_reply(args: argparse.Namespace) -> int:
    shot = _oneshot(args)
    extra: dict[str, Any] = {"re": _message_id(shot, args.message_id), "kind": "reply"}
    if args.status:
        extra["status"] = args.status
    return _print_send(args, shot.call("send", **_send_args(args, **extra)))


def cmd_ask(args: argparse.Namespace) -> int:
    shot = _oneshot(args)
    result = shot.call("send", to=_to(args.to), kind="request", **_send_args(args))
    code = _print_send(args, result) if not args.json else EXIT_BY_SEND_STATUS.get(result["status"], 1)
    if code != EXIT_OK:
        if args.json:
            _out(args, {"request": result})
        return code
    if args.all:
        return _await_all(args, shot, result)
    return _await(args, shot, result["id"], request=result)


def _await_all(args: argparse.Namespace, shot: Any, request: dict[str, Any]) -> int:
    """Wait for a reply from every recipient of ``request`` (or the timeout); print
    each end-state; exit by the worst (all PASS or ANSWERED: 0)."""
    from .envelope import end_states
    from .errors import Timeout
    from .render import message_line

    waiting = {name for name, status in (request.get("statuses") or {}).items() if status != "denied"}
    replies: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + args.timeout
    while waiting - set(replies) and (left := deadline - time.monotonic()) > 0:
        try:
            reply = shot.call(
                "await",
                answer_timeout=left + 5,
                id=request["id"],
                timeout=left,
                exclude=[r["id"] for r in replies.values()],
            )["reply"]
        except Timeout:
            break
        replies[reply["from"]] = reply
    states, worst = end_states(waiting, replies, "timeout")
    if args.json:
        _out(args, {"request": request, "replies": replies, "states": states, "worst": worst})
    else:
        for name in sorted(waiting):
            print(
                message_line(replies[name])
                if name in replies
                else f"{name}: no reply within {args.timeout:g}s"
            )
        print(f"{len(replies)} of {len(waiting)} answered; worst end-state {worst}")
    return EXIT_TIMEOUT if worst == "timeout" else EXIT_BY_END_STATE.get(worst, EXIT_OK)


def _await(args: argparse.Namespace, shot: Any, msg_id: str, request: dict[str, Any] | None = None) -> int:
    from .errors import Timeout
    from .render import message_line

    try:
        # the HTTP call outlives the broker-side wait, so the broker's Timeout comes back
        reply = shot.call("await", answer_timeout=args.timeout + 5, id=msg_id, timeout=args.timeout)["reply"]
    except Timeout:
        if args.json:
            _out(
                args,
                {"request": request, "reply": None, "status": "timeout"}
                if request
                else {"id": msg_id, "reply": None, "status": "timeout"},
            )
        else:
            print(f"no reply to {msg_id} within {args.timeout:g}s", file=sys.stderr)
        return EXIT_TIMEOUT
    if args.json:
        _out(args, {"request": request, "reply": reply} if request else reply)
    else:
        print(message_line(reply))
    return EXIT_BY_END_STATE.get(reply.get("status") or "ANSWERED", EXIT_OK)


def cmd_await(args: argparse.Namespace) -> int:
    shot = _oneshot(args)
    return _await(args, shot, _message_id(shot, args.message_id))


def cmd_track(args: argparse.Namespace) -> int:
    from .render import clock, table

    shot = _oneshot(args)
    result = shot.call("track", register=False, id=_message_id(shot, args.message_id, register=False))
    if args.json:
        _out(args, result)
        return EXIT_OK
    print(f"message {result['id']}  from {result['from']}  to {result['to']}  {result['status']}")
    table(
        ["recipient", "state", "since"],
        [
            [name, state, clock(result["updated"].get(name))]
            for name, state in sorted(result["receipts"].items())
        ],
    )
    for reply_id in result["replies"]:
        print(f"reply {reply_id}")
    return EXIT_OK


def cmd_thread(args: argparse.Namespace) -> int:
    from .render import message_line, paint

    shot = _oneshot(args)
    result = shot.call(
        "thread", register=False, id=_message_id(shot, args.thread_id, register=False), close=args.close
    )
    if args.json:
        _out(args, result)
        return EXIT_OK
    print(
        f"thread {result['id']}  {paint(result['state'])}  {result['turns']} turn(s)  "
        f"{', '.join(result['participants'])}"
    )
    for env in result["messages"]:
        print("  " + message_line(env))
    return EXIT_OK
