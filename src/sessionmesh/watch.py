"""`mesh watch`: stay online and print one line per message as it arrives.

The form a wake-up consumer reads (Claude Code's Monitor tool, a background wake
hook, a script): each line is flushed as soon as it is written; by default it is
the framed line of `injection.line`, with ``--json`` the envelope.

Nothing is skipped or repeated across restarts. The broker's receipts are the main
cursor: a message is acked ``read`` only after its line was written, so an unread
one is delivered again when the watcher comes back. The gap between writing a line
and the broker recording the ack is closed by a local cursor file
(``$MESH_HOME/watch/<name>.ids``): the id is appended there right after the line is
flushed, and a restarted watcher skips (and acks) any id it finds in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import OrderedDict
from typing import Any

from . import injection
from .client.aio import AsyncClient
from .config import Settings
from .envelope import is_person_name

CURSOR_KEEP = 2000  # ids remembered; far more than can be in flight unacked


class WatchCursor:
    """The ids this watcher has printed, kept in an append-only file."""

    def __init__(self, settings: Settings, name: str) -> None:
        folder = os.path.join(settings.home, "watch")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.path = os.path.join(folder, f"{name}.ids")
        self.seen: OrderedDict[str, None] = OrderedDict()
        with contextlib.suppress(FileNotFoundError):
            with open(self.path) as fh:
                for line in fh:
                    if line.strip():
                        self.seen[line.strip()] = None
        while len(self.seen) > CURSOR_KEEP:
            self.seen.popitem(last=False)
        self._rewrite()  # compact: the file never grows past twice CURSOR_KEEP
        self._fh = open(self.path, "a")  # noqa: SIM115 - held for the watcher's lifetime

    def _rewrite(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            fh.writelines(f"{i}\n" for i in self.seen)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self.seen

    def add(self, msg_id: str) -> None:
        self.seen[msg_id] = None
        self._fh.write(msg_id + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if len(self.seen) > 2 * CURSOR_KEEP:
            while len(self.seen) > CURSOR_KEEP:
                self.seen.popitem(last=False)
            self._fh.close()
            self._rewrite()
            self._fh = open(self.path, "a")  # noqa: SIM115

    def close(self) -> None:
        self._fh.close()


def _event_line(event: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(event, ensure_ascii=False)
    rest = {k: v for k, v in event.items() if k not in ("op", "event", "ts")}
    return f"· {event['event']} {json.dumps(rest, ensure_ascii=False)}"


def run_watch(settings: Settings, args: argparse.Namespace) -> int:
    """Print messages (and with ``--events`` mesh events) until stopped; exits 0."""
    person = None
    if is_person_name(args.as_name):  # the person watches their own mail: asked on the terminal
        from .client.http import OneShot

        person = OneShot(settings, args.as_name).person_session()

    async def watch() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with AsyncClient(
            settings, args.as_name, client_kind="watch", auto_read=False, events=args.events, person=person
        ) as peer:
            if getattr(args, "exclusive_cwd", False):
                await peer.hold(os.path.join(os.getcwd(), ""), reason=f"{peer.name} works in this folder")
            cursor = WatchCursor(settings, peer.name)
            if not args.json:
                print(f"watching as {peer.name} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            for topic in args.topic or ():
                await peer.subscribe(topic, from_start=args.from_start)

            async def events() -> None:
                while True:
                    print(_event_line(await peer.events.get(), args.json), flush=True)

            async def messages() -> None:
                while True:
                    env = await peer.recv()
                    if env.id not in cursor:
                        wire = env.to_wire()
                        print(
                            json.dumps(wire, ensure_ascii=False) if args.json else injection.line(wire),
                            flush=True,
                        )
                        cursor.add(env.id)
                    peer.note_read(env.id)

            tasks = [asyncio.create_task(messages())]
            if args.events:
                tasks.append(asyncio.create_task(events()))
            waiter = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiter, *tasks):
                    task.cancel()
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception():
                        raise task.exception()  # type: ignore[misc]
                cursor.close()

    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(watch())
    return 0
