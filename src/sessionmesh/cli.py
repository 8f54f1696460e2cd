"""The ``mesh`` command: parse, call the client or the server, print.

Imports are lazy so one-shot commands start fast. Exit codes (see README):

    0  ok / reply PASS or ANSWERED      5  timeout
    1  error                            6  no broker reachable
    2  usage                            7  lock conflict
    3  denied                           10 reply PARTIAL
    4  refused                          11 reply BLOCKED, 12 reply DECLINED
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

from . import cli_fast

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import argparse
    from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DENIED, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_TIMEOUT, EXIT_UNAVAILABLE, EXIT_CONFLICT = 5, 6, 7
EXIT_BY_END_STATE = {"PASS": 0, "ANSWERED": 0, "PARTIAL": 10, "BLOCKED": 11, "DECLINED": 12}
EXIT_BY_SEND_STATUS = {
    "received": 0,
    "queued": 0,
    "sent": 0,
    "denied": EXIT_DENIED,
    "refused": EXIT_REFUSED,
    "timeout": EXIT_TIMEOUT,
}


def _out(args: argparse.Namespace, data: Any) -> None:
    import json

    print(json.dumps(data, ensure_ascii=False), flush=True)


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from .config import load

    return load(overrides={"home": getattr(args, "home", None), "url": getattr(args, "url", None), **extra})


def _oneshot(args: argparse.Namespace) -> Any:
    from .client.http import OneShot

    return OneShot(_settings(args), getattr(args, "as_name", None))


def _read_only(args: argparse.Namespace, op: str, **call: Any) -> dict[str, Any]:
    """A read-only op: as ``--as NAME`` (or MESH_NAME) when one is given, never
    registering it; as an observer, with no name at all, otherwise."""
    shot = _oneshot(args)
    if getattr(args, "as_name", None) is None and shot.settings.name is None:
        return dict(shot.observe(op, **call))
    return dict(shot.call(op, register=False, **call))


def _message_id(shot: Any, value: str, *, register: bool = True) -> str:
    """A full message id for ``value``: an id, or a unique prefix of one (at least 8
    characters, as the CLI prints them) among the messages this peer sent or received."""
    from .envelope import check_id
    from .errors import AmbiguousId, BadFrame, UnknownMessage

    try:
        return check_id(value)
    except BadFrame:
        pass
    if len(value) < 8:
        raise AmbiguousId(
            f"{value!r} is too short to name a message", hint="give at least 8 characters of its id"
        )
    ids = shot.call("resolve", register=register, prefix=value)["ids"]
    if not ids:
        raise UnknownMessage(f"no message you sent or received has an id starting {value}")
    if len(ids) > 1:
        raise AmbiguousId(
            f"{value} starts the ids of {len(ids)} messages: " + ", ".join(ids),
            hint="give more characters of the one you mean",
        )
    return str(ids[0])


def _resource(value: str) -> str:
    """Paths (anything with a '/', or that exists here) become absolute; names stay."""
    if value.startswith(("/", "./", "../", "~")) or "/" in value or os.path.exists(value):
        return os.path.abspath(os.path.expanduser(value))
    return value


def _body(args: argparse.Namespace) -> Any:
    text = " ".join(args.body) if args.body else ""
    if text == "-" or (not args.body and not sys.stdin.isatty()):
        text = sys.stdin.read()
    if getattr(args, "json_body", False):
        import json

        try:
            return json.loads(text)
        except ValueError as exc:
            from .errors import BadFrame

            raise BadFrame(f"--json-body: {exc}") from None
    return text


def _to(value: str) -> Any:
    if "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _print_send(args: argparse.Namespace, result: dict[str, Any]) -> int:
    from .render import paint

    status = result.get("status", "refused")
    if args.json:
        _out(args, result)
    else:
        if result.get("statuses") and len(result["statuses"]) > 1 or status == "sent":
            print(f"{paint(status)} to {result.get('recipients', 0)} recipient(s)  id {result.get('id')}")
            for name, st in sorted((result.get("statuses") or {}).items()):
                print(f"  {name}: {paint(st)}")
        else:
            print(f"{paint(status)}  id {result.get('id')}")
        if result.get("held"):
            print(f"  {paint('held')}: {result['held']['message']} (mesh approve {result.get('id')})")
        reasons = (
            [result.get("reason")] if result.get("reason") else list((result.get("reasons") or {}).values())
        )
        for reason in reasons:
            hint = f" ({reason['hint']})" if reason.get("hint") else ""
            print(f"  {reason.get('message')}{hint}", file=sys.stderr)
    return EXIT_BY_SEND_STATUS.get(status, EXIT_ERROR)


def _send_args(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    from .ids import new_id

    out: dict[str, Any] = {
        "id": args.id or new_id(),
        "body": _body(args),
        "priority": "urgent" if args.urgent else "normal",
        **extra,
    }
    if args.ttl:
        out["ttl"] = args.ttl
    if getattr(args, "path", None):
        out["paths"] = [_resource(p) for p in args.path]
    if getattr(args, "ack_required", False):
        out["ack_required"] = True
    evidence = [_evidence(e) for e in getattr(args, "evidence", None) or ()]
    evidence += [{"note": n} for n in getattr(args, "note", None) or ()]
    if evidence:
        out["evidence"] = evidence
    return out


def _evidence(value: str) -> dict[str, str]:
    """``PATH`` or ``PATH=NOTE`` from --evidence."""
    path, _, note = value.partition("=")
    item = {"path": _resource(path.strip())}
    if note.strip():
        item["note"] = note.strip()
    return item


# `mesh serve` flags that set the settings of the same name (SPEC §8)
NATS_FLAGS = {
    "backend": "where state lives: sqlite (one machine, default) or nats",
    "nats_url": "NATS server(s), comma-separated (nats://host:4222, tls://...)",
    "machine": "this machine's label; peers elsewhere see LABEL:name (default: hostname)",
    "nats_namespace": "prefix of every stream, bucket and subject (default mesh)",
    "nats_replicas": "replicas of each stream and bucket (3 on a three-node cluster)",
    "nats_domain": "JetStream domain that holds the streams (a leaf node's hub)",
    "nats_credentials": "this machine's credentials file (mesh cluster init, mesh join-hub)",
    "nats_creds": "NATS credentials file (JWT and nkey seed)",
    "nats_nkey_seed": "NATS nkey seed file",
    "nats_user": "NATS user",
    "nats_password": "NATS password",
    "nats_token": "NATS token",
    "nats_tls_ca": "CA file to verify the NATS servers",
    "nats_tls_cert": "client certificate for NATS (mutual TLS)",
    "nats_tls_key": "client key for NATS (mutual TLS)",
}


# -- commands ----------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from .server import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    nats = {key: getattr(args, key) for key in NATS_FLAGS}
    settings = _settings(args, host=args.host, port=args.port, **nats)
    run(settings, autostarted=args.autostarted, any_port=args.any_port)
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from .client import discovery

    settings = _settings(args, host=args.host, port=args.port)
    status = discovery.running_broker(settings) or discovery.start_background(
        settings, autostarted=args.idle_exit, any_port=args.port is None
    )
    if args.json:
        _out(args, status)
        return EXIT_OK
    if not status["url"].endswith(f":{settings.port}"):
        print(f"port {settings.port} is taken; the broker listens on a free one (recorded in broker.json)")
    print(f"broker up at {status['url']} (pid {status['pid']}, home {settings.home})")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from .client import discovery
    from .client.http import OneShot

    settings = _settings(args)
    status = discovery.running_broker(settings)
    if status is None:
        _out(args, {"stopped": None}) if args.json else print("no broker is running", file=sys.stderr)
        return EXIT_OK
    OneShot(settings.with_(autostart=False)).shutdown()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not discovery.pid_alive(status["pid"]):
            break
        time.sleep(0.05)
    else:
        print(f"broker pid {status['pid']} did not stop in time", file=sys.stderr)
        return EXIT_TIMEOUT
    print(f"broker stopped (pid {status['pid']})") if not args.json else _out(
        args, {"stopped": status["pid"]}
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from .client import discovery

    settings = _settings(args)
    status = discovery.health(settings.url) if settings.url else discovery.running_broker(settings)
    if status is None:
        if args.json:
            _out(args, {"ok": False, "home": settings.home})
        else:
            print(f"no broker is running for {settings.home}")
        return EXIT_UNAVAILABLE
    if args.json:
        _out(args, {**status, "home": settings.home})  # the home is ours: /health names no path
    else:
        print(
            f"broker {status['url']}  pid {status['pid']}  version {status['version']}  "
            f"online {status['online']}  up {status['uptime']:.0f}s  home {settings.home}"
        )
    return EXIT_OK


def cmd_peers(args: argparse.Namespace) -> int:
    from .render import ago, table

    peers = _read_only(args, "peers")["peers"]
    if args.json:
        _out(args, peers)
        return EXIT_OK
    now = time.time()
    table(
        ["name", "presence", "activity", "client", "role", "pair", "status", "unread", "last seen", "cwd"],
        [
            [
                p["name"],
                p["presence"],
                f"{p['activity']} {ago(p['activity_since'], now).removesuffix(' ago')}"
                if p.get("activity")
                else "-",
                p["meta"].get("client", "-"),
                p["meta"].get("role") or "-",
                f"{p['meta']['pair']['role']} with {p['meta']['pair']['with']}"
                if p["meta"].get("pair")
                else "-",
                p["meta"].get("status") or "-",
                p["unread"],
                ago(p["last_seen"], now),
                p["meta"].get("cwd", "-"),
            ]
            for p in peers
        ],
    )
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    shot = _oneshot(args)
    if args.when_idle:  # for an agent with no hooks to bring mail into a turn
        print(
            f"waiting until {args.to} is idle (at most {args.idle_timeout:g} s)", file=sys.stderr, flush=True
        )
        from .cli_requests import wait_idle

        wait_idle(shot, args.to, args.idle_timeout)
    return _print_send(args, shot.call("send", to=_to(args.to), **_send_args(args)))


def cmd_broadcast(args: argparse.Namespace) -> int:
    shot = _oneshot(args)
    return _print_send(args, shot.call("send", to="broadcast", **_send_args(args)))


def cmd_inbox(args: argparse.Namespace) -> int:
    from .render import message_line

    shot = _oneshot(args)
    messages = shot.call("inbox", limit=args.limit)["messages"]
    if args.json:
        _out(args, messages)
    elif not messages:
        print("no new messages")
    else:
        for env in messages:
            print(message_line(env))
    sys.stdout.flush()
    if messages and not args.peek:
        shot.call("ack", ids=[m["id"] for m in messages], state="read")
    return EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    import json

    from .render import clock

    entries = _read_only(args, "log", after=args.after, limit=args.limit)["entries"]
    for entry in entries:
        if args.json:
            print(json.dumps(entry, ensure_ascii=False))
        else:
            detail = {k: v for k, v in entry.items() if k not in ("seq", "ts", "event")}
            print(
                f"{entry['seq']:>6} {clock(entry['ts'])} {entry['event']:<16} {json.dumps(detail, ensure_ascii=False)}"
            )
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from .watch import run_watch

    return run_watch(_settings(args), args)


def cmd_policy(args: argparse.Namespace) -> int:
    call: dict[str, Any] = {}
    if args.value is not None:
        value = None if args.value == "clear" else args.value
        if args.sender:
            call["from"] = {args.sender: value}
        elif value is None:
            from .errors import BadFrame

            raise BadFrame("'clear' drops the rule for one sender: give --from NAME")
        else:
            call["default"] = value
    result = _oneshot(args).call("policy", **call)
    if args.json:
        _out(args, result)
        return EXIT_OK
    mine = result["policy"]
    print(f"{result['name']}: {mine['default']} by default")
    for sender, value in sorted(mine["from"].items()):
        print(f"  from {sender}: {value}")
    for rule in result["configured"]:
        print(f"  set by the person (config): {rule}")
    return EXIT_OK


def cmd_join(args: argparse.Namespace) -> int:
    from .client.http import OneShot

    settings = _settings(args)
    new = OneShot(settings, args.name).join()
    where = f"its secret is in {settings.secrets_dir}/{args.name}"
    if args.json:
        _out(args, {"name": args.name, "registered": new})
    elif new:
        print(f"{args.name} joined the mesh; {where}")
    else:
        print(f"{args.name} was already on the mesh; {where}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(json_output=args.json)


# -- parser ------------------------------------------------------------------------
def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """``mesh``'s parser: every command's, or with ``only`` that command's alone (a
    parser without it when no command has that name)."""
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--home", help="state dir (MESH_HOME)")
    common.add_argument("--url", help="broker address (MESH_URL)")
    peer = argparse.ArgumentParser(add_help=False, parents=[common])
    peer.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="act as this peer (default: MESH_NAME, else the git top-level's name)",
    )
    sending = argparse.ArgumentParser(add_help=False)
    sending.add_argument("--urgent", action="store_true", help="deliver ahead of normal messages")
    sending.add_argument("--ttl", type=float, help="seconds before an undelivered message expires")
    sending.add_argument("--id", help="message id (UUIDv7); resending the same id is safe")
    sending.add_argument("--json-body", action="store_true", help="parse the body as JSON")
    sending.add_argument(
        "--path", action="append", metavar="PATH", help="a file the work is about (repeatable)"
    )
    sending.add_argument(
        "--ack-required", action="store_true", help="the recipient acknowledges (replies) before it starts"
    )

    parser = argparse.ArgumentParser(prog="mesh", description="sessionmesh: a message bus for coding agents")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"sessionmesh {__version__}")
    sub = cli_fast.Commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), only)

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help: str, parents: list[Any]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=parents)
        p.set_defaults(fn=fn)
        return p

    p = add("serve", cmd_serve, "run the broker in the foreground", [common])
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 9474; 0 picks a free one)")
    p.add_argument("--autostarted", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--any-port", action="store_true", help="if the port is taken, listen on a free one")
    for key, text in NATS_FLAGS.items():
        flag = "--" + key.replace("_", "-")
        if key == "backend":
            p.add_argument(flag, choices=["sqlite", "nats"], help=text)
        else:
            p.add_argument(flag, type=int if key == "nats_replicas" else str, help=text)
    from . import cli_cluster

    cli_cluster.register(add, common)
    p = add("up", cmd_up, "start the broker in the background", [common])
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, help="port (default 9474, or a free one when that is taken; 0 picks a free one)"
    )
    p.add_argument("--idle-exit", action="store_true", help="stop after idle_timeout with no peers")
    add("down", cmd_down, "stop the broker gracefully", [common])
    add("status", cmd_status, "is a broker running, and where", [common])
    add("peers", cmd_peers, "who is on the mesh", [peer])
    p = add("send", cmd_send, "send a message to a name, names (a,b) or #topic", [peer, sending])
    p.add_argument("to")
    p.add_argument("body", nargs="*", help="text ('-' or nothing: read stdin)")
    p.add_argument("--when-idle", action="store_true", help="first wait until the recipient's agent is idle")
    p.add_argument(
        "--idle-timeout", type=float, default=600.0, help="how long --when-idle waits (default 600 s)"
    )
    from . import cli_pair

    cli_pair.register(add, peer)
    from . import cli_requests

    cli_requests.register(add, peer, sending)
    p = add("broadcast", cmd_broadcast, "send to every known peer", [peer, sending])
    p.add_argument("body", nargs="*")
    p = add("inbox", cmd_inbox, "print unread messages and mark them read", [peer])
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--peek", action="store_true", help="do not mark them read")
    p = add("watch", cmd_watch, "stay online and print each message as it arrives", [peer])
    p.add_argument("--events", action="store_true", help="also print joins, leaves, receipts, locks")
    p.add_argument("--topic", action="append", help="subscribe to #topic (repeatable)")
    p.add_argument("--from-start", action="store_true", help="with --topic: catch up from the start")
    p.add_argument(
        "--exclusive-cwd",
        action="store_true",
        help="hold the working folder so no second agent joins from it",
    )
    from . import cli_locks

    cli_locks.register(add, peer)
    p = add("log", cmd_log, "the audit log (JSONL with --json)", [peer])
    p.add_argument("--after", type=int, default=0, help="entries after this sequence number")
    p.add_argument("--limit", type=int, default=1000)
    add("demo", cmd_demo, "run scripted agents on an embedded broker and show the traffic", [common])

    from . import cli_person

    cli_person.register(add, common)
    p = add(
        "policy",
        cmd_policy,
        "what happens to messages sent to you: accept, hold for a person, refuse",
        [peer],
    )
    p.add_argument("value", nargs="?", choices=["accept", "hold", "refuse", "clear"], help="omit to show")
    p.add_argument("--from", dest="sender", metavar="NAME", help="for this sender only")
    p = add("join", cmd_join, "register a name on the mesh (its secret is saved here)", [common])
    p.add_argument("name")

    from . import cli_programs

    cli_programs.register(add, sub, peer, common)
    return parser


def _exit_codes() -> list[tuple[type, int]]:
    """README's exit codes for errors raised before any send answers (the broker's or
    the client's own): the first class that fits wins."""
    from . import errors

    return [
        (errors.AmbiguousId, EXIT_USAGE),
        (errors.Unavailable, EXIT_UNAVAILABLE),
        (errors.Timeout, EXIT_TIMEOUT),
        (errors.Conflict, EXIT_CONFLICT),
        # what a send would answer 'refused' for, met earlier (an own name, a frame too large)
        ((errors.TooLarge, errors.InvalidName, errors.SelfSend, errors.RateLimited), EXIT_REFUSED),
        ((errors.SecretInBody, errors.EmptyBody, errors.UnsafeText), EXIT_REFUSED),
        ((errors.UnknownPeer,), EXIT_DENIED),
    ]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a command line; a command's options may stand anywhere, even between its
    positionals (``mesh send reviewer --urgent "x"``)."""
    import argparse

    command = _commands(parser).get(argv[0]) if argv else None
    if command is not None and not any(isinstance(a, argparse._SubParsersAction) for a in command._actions):
        args = command.parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)  # no command yet, or one with commands of its own (bridge, channel)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    import argparse

    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def parse_line(argv: list[str]) -> argparse.Namespace | SimpleNamespace:
    """The arguments of a ``mesh`` command line: `quick_args`, else argparse's, which
    exits with usage for a line that is wrong."""
    quick = cli_fast.quick_args(argv)
    if quick is not None:
        return quick
    parser = build_parser(only=argv[0]) if argv and not argv[0].startswith("-") else None
    if parser is None or not _commands(parser):
        parser = build_parser()  # no command, or none by that name: say which there are
    return parse(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_line(sys.argv[1:] if argv is None else argv)
    from .errors import MeshError

    try:
        return int(args.fn(args))
    except MeshError as exc:
        code = next((c for kind, c in _exit_codes() if isinstance(exc, kind)), EXIT_ERROR)
        if getattr(args, "json", False):
            _out(args, {"error": exc.to_wire()})
        print(f"mesh: {exc.code}: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


def entry() -> None:
    sys.exit(main())
