"""The commands that connect the agent programs to the mesh: ``install`` and
``uninstall``, ``hook``, ``mcp``, ``wake``, ``bridge``, ``channel``, ``spawn`` and
``despawn``, and ``doctor`` (what each program gets is in `sessionmesh.programs`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from . import programs
from .cli import EXIT_BY_END_STATE, EXIT_BY_SEND_STATUS, EXIT_ERROR, EXIT_OK, EXIT_USAGE, _out, _settings


def register(add: Callable[..., argparse.ArgumentParser], sub: Any, peer: Any, common: Any) -> None:
    """Add the commands to the parser (``add`` and ``sub`` are `cli.build_parser`'s)."""
    p = add("mcp", cmd_mcp, "run the stdio MCP server for an agent", [peer])
    p.add_argument(
        "--exclusive-cwd",
        action="store_true",
        help="hold the working folder so no second agent joins from it",
    )
    p.add_argument(
        "--channel",
        action="store_true",
        help="push messages as claude/channel notifications even if not declared",
    )
    p.add_argument(
        "--client", default="mcp", help="client kind shown to peers (claude-code, codex, gemini, …)"
    )
    p = add("hook", cmd_hook, "print pending messages in a coding agent's hook format", [peer])
    p.add_argument("tool", choices=list(programs.NAMES))
    p.add_argument("event", help="the hook event name, e.g. UserPromptSubmit, PostToolUse, Stop")
    for name, fn, verb in (("install", cmd_install, "write"), ("uninstall", cmd_uninstall, "remove")):
        p = add(name, fn, f"{verb} sessionmesh's MCP server, hooks and skill in a tool's config", [peer])
        p.add_argument("tool", choices=list(programs.NAMES))
        scope = p.add_mutually_exclusive_group()
        scope.add_argument("--project", action="store_true", help="this project's config (the default)")
        scope.add_argument("--user", action="store_true", help="your user-wide config")
        p.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
        p.add_argument("--dir", help="project folder (default: the git top-level, else the current folder)")
    p = add(
        "wake", cmd_wake, "wake an idle agent when mail arrives (started by its hooks or extension)", [peer]
    )
    p.add_argument("tool", choices=list(programs.NAMES))
    p.add_argument("--session", required=True, help="the program's session id")
    p.add_argument(
        "--pid", type=int, required=True, help="the agent program's process: the waiter ends with it"
    )
    p = add("spawn", cmd_spawn, "start an agent program as peer NAME in a tmux window (or headless)", [peer])
    p.add_argument("tool", choices=list(programs.NAMES))
    p.add_argument(
        "--prompt", metavar="TEXT", help="the first prompt (headless: what to do besides the request)"
    )
    p.add_argument("--cwd", metavar="DIR", help="the folder it works in (default: the current folder)")
    p.add_argument(
        "--headless",
        action="store_true",
        help="one-shot mode: answer the oldest unread request to NAME, and reply with the final answer",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to come online (headless: to finish, a request included; default 120)",
    )
    p.add_argument("--program", metavar="PATH", help="the program's executable (default: found on PATH)")
    p.add_argument(
        "--socket", metavar="PATH", help="tmux server socket (tmux -S); default: the one tmux finds"
    )
    p = add("despawn", cmd_despawn, "end a peer that mesh spawn started", [common])
    p.add_argument("name")
    p = add("doctor", cmd_doctor, "check each installed agent program end to end and say what to fix", [peer])
    p.add_argument(
        "tool", nargs="?", choices=list(programs.NAMES), help="one program (default: every installed one)"
    )
    p.add_argument("--dir", help="project folder (default: the git top-level, else the current folder)")
    bridge = sub.add_parser("bridge", help="connect an agent without hooks").add_subparsers(
        dest="bridge", metavar="KIND", required=True
    )
    p = bridge.add_parser("tmux", help="type messages into a tmux pane when it is idle", parents=[peer])
    p.set_defaults(fn=cmd_bridge_tmux)
    p.add_argument("--pane", required=True, help="tmux target pane, e.g. work:0.1 or %%3")
    p.add_argument(
        "--wake",
        action="store_true",
        help="only wake the agent (one line when mail arrives): its installed hooks bring the messages;"
        " runs beside its MCP server (Gemini CLI)",
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="tmux server socket (tmux -S); default: the server tmux itself finds ($TMUX, $TMUX_TMPDIR)",
    )
    p.add_argument(
        "--idle-prompt",
        action="append",
        metavar="REGEX",
        help="also treat a line matching REGEX as an idle prompt (repeatable)",
    )
    p.add_argument(
        "--idle-interval", type=float, metavar="SECONDS", help="seconds between screen polls (default 0.2)"
    )
    p.add_argument(
        "--verify-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a typed line may take to show before it is erased and retried (default 3)",
    )
    p.add_argument(
        "--max-chars",
        type=int,
        metavar="N",
        help="longest line typed; longer bodies are cut (default 480, minimum 200)",
    )
    channel = sub.add_parser("channel", help="JSONL file channels").add_subparsers(
        dest="channel", metavar="ACTION", required=True
    )
    p = channel.add_parser("bridge", help="link a JSONL file channel to a #topic both ways", parents=[peer])
    p.set_defaults(fn=cmd_channel_bridge)
    p.add_argument("file")
    p.add_argument("topic")
    p.add_argument(
        "--from-start",
        action="store_true",
        help="first run only: forward the file's existing lines and catch up on the topic",
    )
    p.add_argument(
        "--poll-interval", type=float, default=0.1, help="seconds between looks at the file (default 0.1)"
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run

    return run(_settings(args), args.tool, folder=args.dir, as_json=args.json)


def cmd_wake(args: argparse.Namespace) -> int:
    from .wake import run_waiter

    return run_waiter(_settings(args), args.tool, args.as_name, args.session, args.pid)


def cmd_mcp(args: argparse.Namespace) -> int:
    from .mcp_front import run

    return run(
        _settings(args),
        args.as_name,
        exclusive_cwd=args.exclusive_cwd,
        channel=args.channel,
        client=args.client,
    )


def cmd_hook(args: argparse.Namespace) -> int:
    from .hooks import run_hook

    return run_hook(_settings(args), args.tool, args.event, args.as_name)


def cmd_install(args: argparse.Namespace) -> int:
    from .installers import run_install

    return run_install(args, _settings(args))


def cmd_uninstall(args: argparse.Namespace) -> int:
    from .installers import run_uninstall

    return run_uninstall(args, _settings(args))


def cmd_bridge_tmux(args: argparse.Namespace) -> int:
    from .bridges.tmux import run_bridge

    return run_bridge(_settings(args), args)


def cmd_channel_bridge(args: argparse.Namespace) -> int:
    from .bridges.channel import run_bridge

    return run_bridge(_settings(args), args)


def cmd_spawn(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from . import spawn
    from .errors import BadRequest

    if not args.as_name:
        print("mesh spawn: the peer's name is needed: --as NAME", file=sys.stderr)
        return EXIT_USAGE
    cwd = os.path.abspath(os.path.expanduser(args.cwd or os.getcwd()))
    if not os.path.isdir(cwd):
        raise BadRequest(f"--cwd {args.cwd}: no such folder")
    settings = _settings(args)
    common: dict[str, Any] = {
        "cwd": Path(cwd),
        "timeout": args.timeout,
        "prompt": args.prompt,
        "program": args.program,
        "home": args.home,
        "url": args.url,
    }
    if not args.headless:
        started = spawn.spawn(settings, args.tool, args.as_name, socket=args.socket, **common)
        if args.json:
            _out(args, asdict(started))
        else:
            where = f"tmux window {spawn.SESSION}:{args.as_name}" + (
                f" (tmux -S {started.socket})" if started.socket else ""
            )
            woken = f", woken by bridge pid {started.bridge_pid}" if started.bridge_pid else ""
            print(
                f"{args.as_name} ({args.tool}) is online in {where}{woken}; end it: mesh despawn {args.as_name}"
            )
        return EXIT_OK
    answer = spawn.run_headless(settings, args.tool, args.as_name, **common)
    sent = (answer.reply or {}).get("status")
    if args.json:
        _out(args, asdict(answer))
    else:
        print(answer.output)
        if answer.request is not None:
            print(f"replied {answer.status} to {answer.request['from']}: {sent}", file=sys.stderr)
    if answer.reply is not None and sent not in ("received", "queued", "sent"):
        return EXIT_BY_SEND_STATUS.get(str(sent), EXIT_ERROR)
    if answer.request is None:
        return EXIT_OK if answer.returncode == 0 else EXIT_ERROR
    return EXIT_BY_END_STATE[answer.status]


def cmd_despawn(args: argparse.Namespace) -> int:
    from .spawn import despawn

    ended = despawn(_settings(args), args.name)
    if args.json:
        _out(args, {"name": args.name, "ended": ended})
    else:
        print(
            f"{args.name} is ended" + (f": {', '.join(ended)}" if ended else " (nothing of it was running)")
        )
    return EXIT_OK
