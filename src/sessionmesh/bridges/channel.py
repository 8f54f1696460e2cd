"""The file channel bridge: a JSONL file channel linked both ways to a mesh #topic.

A file channel is a shared file with one JSON object per line,
``{"ts": ..., "from": ..., "body": ...}``, each line appended with a single
``write()`` on an ``O_APPEND`` descriptor so concurrent writers never interleave
(Linux and macOS append a regular file atomically per call; keep lines under 4 KiB
when the file lives on NFS). ``mesh channel bridge FILE '#topic'`` makes the bridge a
peer on the mesh (client kind ``channel``) that carries each new line to the topic
and each topic message into the file. Its name is ``--as``, else ``<file
stem>-channel``, so it never takes the name of the agent running it.

File to topic
    The file is polled with ``stat`` every ``poll_interval`` seconds from a byte
    cursor. Only complete lines are read (a trailing line without its newline waits
    until it is finished); blank lines are ignored; a line that is not a JSON object
    with a ``body`` is skipped with a warning on stderr. The mesh sets ``from`` to the
    bridge's name, so the line's own author travels in the body: the topic gets the
    text ``"[worker] the body"`` (a non-string body as compact JSON after the tag; no
    tag when the line has no ``from``). Readers of the topic see the bridge as the
    sender and the file author in the text, which is what an agent reading a
    transcript needs; a program that wants the original line reads the file.

    Ids: every forwarded line gets a fresh UUIDv7 that is written to the cursor file
    (``pending``, keyed by byte offset and the line's SHA-256) *before* the send,
    and the cursor moves past the lines only after the broker acknowledged them.
    A bridge killed between the two reuses the journaled ids on restart, and the
    broker's idempotency (a resend of a stored id is not stored or delivered again)
    removes the duplicates: no line is skipped and none is sent twice. A line the
    broker refuses for good (oversize, a secret in the body) is skipped with a
    warning; a rate limit or a missing broker is retried with the same id.

Topic to file
    Each message the bridge receives (the topic's messages, and anything sent to
    the bridge by name) is appended as one line, ``{"ts", "from", "body", "id", "to",
    "via"}`` (plus ``re``/``kind``/``status`` for replies and requests), with one
    ``os.write`` on an ``O_APPEND`` descriptor followed by ``fsync``. Only then is the
    message marked read, so the broker redelivers whatever a crash interrupted;
    the ids already written (remembered in memory, in the cursor file, and found
    again in the file by the tail) keep a redelivery from being written twice.
    ``ts`` is the broker's receive time, ISO 8601 UTC; ``from`` is the mesh sender.

No echo
    A line carrying ``"via": <this bridge's name>``, or any bridge's ``via`` with
    ``"to": <this topic>``, came from the mesh and is never sent back to it. The
    second rule stops two bridges on one file and one topic from looping. Like the
    seed convention's ``from`` filter this is honour-system: a file writer that sets
    ``via`` is not forwarded.

Truncation and rotation
    The cursor remembers the file's device and inode and a SHA-256 of the 64 bytes
    before the offset. A file that shrank below the cursor, was replaced (another
    inode), or whose bytes before the cursor changed (truncated and rewritten past
    it) is read again from offset 0, and the bridge says so on stderr.

Cursor
    ``$MESH_HOME/channels/<sha256(path, topic, name)[:32]>.json``, written through a
    temporary file, ``fsync`` and ``rename``. A first run starts at the end of the
    file (no backlog replay) unless ``--from-start`` is given, which also subscribes
    to the topic with catch-up; an existing cursor always wins.

Output
    Human mode prints one line on stderr when ready, and warnings. ``--json`` prints
    one JSON object per line on stdout: ``ready``, ``to_topic`` (id, offset),
    ``to_file`` (id), ``skipped`` and ``refused`` (offset, reason), ``restarted``
    (why: replaced, truncated or rewritten).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import enum
import hashlib
import json
import os
import re
import signal
import sys
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..client.aio import AsyncClient
from ..codec import dumps, loads
from ..config import Settings
from ..envelope import TOPIC_RE, Envelope, Kind, SendStatus, check_name, new_id
from ..errors import BadFrame, InvalidName, MeshError, Unavailable

POLL_INTERVAL = 0.1
FINGERPRINT_BYTES = 64
READ_LIMIT = 8 << 20  # bytes read per poll at most; the rest waits for the next one
WRITTEN_MEMORY = 4096  # ids written to the file, remembered in memory
WRITTEN_SAVED = 256  # ... and in the cursor file (a redelivery comes within seconds)
RETRY_START = 0.05
RETRY_MAX = 2.0
RETRY_CODES = {"rate_limited", "unavailable", "timeout"}


# -- lines: pure functions -----------------------------------------------------------
class LineKind(enum.Enum):
    FORWARD = "forward"  # a file writer's message: send it to the topic
    ECHO = "echo"  # it came from the mesh: never send it back
    MALFORMED = "malformed"
    BLANK = "blank"


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: LineKind
    body: str | None = None  # FORWARD: the topic message's body
    id: str | None = None  # ECHO: the mesh message id the line carries
    reason: str = ""  # MALFORMED: why


def classify(raw: bytes, *, name: str, topic: str) -> Parsed:
    """What to do with one complete line of the channel file (without I/O)."""
    text = raw.strip()
    if not text:
        return Parsed(LineKind.BLANK)
    try:
        record = loads(text)
    except BadFrame as exc:
        return Parsed(LineKind.MALFORMED, reason=str(exc))
    if not isinstance(record, dict) or "body" not in record:
        return Parsed(LineKind.MALFORMED, reason="not a JSON object with a 'body'")
    via = record.get("via")
    if via == name or (via and record.get("to") == topic):
        msg_id = record.get("id")
        return Parsed(LineKind.ECHO, id=msg_id if isinstance(msg_id, str) else None)
    return Parsed(LineKind.FORWARD, body=topic_body(record.get("from"), record["body"]))


def topic_body(author: Any, body: Any) -> str:
    """The topic message for a line: its text, tagged with the line's author."""
    text = body if isinstance(body, str) else dumps(body)
    if isinstance(author, str) and author.strip():
        return f"[{author.strip()}] {text}"
    return text


def iso_time(ts: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC, ``2026-05-15T02:38:00.123Z``."""
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def channel_line(env: Envelope, *, via: str) -> bytes:
    """The line a mesh message becomes in the file, newline included."""
    record: dict[str, Any] = {
        "ts": iso_time(env.ts),
        "from": env.sender,
        "body": env.body,
        "id": env.id,
        "to": env.to.to_wire(),
        "via": via,
    }
    if env.kind is not Kind.MESSAGE:
        record["kind"] = env.kind.value
    if env.re:
        record["re"] = env.re
    if env.status:
        record["status"] = env.status.value
    return (dumps(record) + "\n").encode()


def default_bridge_name(path: str) -> str:
    """``<file stem>-channel`` as a valid peer name (the agent keeps its own name)."""
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:56]
    return f"{base or 'file'}-channel"


def normal_topic(value: str) -> str:
    """``#name`` (a bare ``name`` is accepted); raises `InvalidName`."""
    topic = value if value.startswith("#") else f"#{value}"
    if not TOPIC_RE.fullmatch(topic):
        raise InvalidName(f"invalid topic {value!r}", hint="topics are '#' + a valid name, e.g. '#team'")
    return topic


class Restart(enum.StrEnum):
    """Why the tail went back to offset 0."""

    REPLACED = "replaced"  # another file (inode) has the name now: rotation, or delete and create
    TRUNCATED = "truncated"  # the file is shorter than the cursor
    REWRITTEN = "rewritten"  # the bytes before the cursor changed: truncated and written past it


# -- the cursor ----------------------------------------------------------------------
@dataclass
class Cursor:
    """Where the bridge is in the file, and what it must not lose in a crash."""

    dev: int = 0
    ino: int = 0
    offset: int = 0
    fingerprint: str = ""  # sha256 of the FINGERPRINT_BYTES before offset
    pending: dict[int, tuple[str, str]] = field(default_factory=dict)  # offset -> (line sha, id)
    written: list[str] = field(default_factory=list)  # ids recently appended by this bridge

    def restart(self, dev: int, ino: int) -> None:
        self.dev, self.ino, self.offset, self.fingerprint = dev, ino, 0, ""
        self.pending.clear()

    def to_json(self, **about: Any) -> dict[str, Any]:
        return {
            **about,
            "dev": self.dev,
            "ino": self.ino,
            "offset": self.offset,
            "fingerprint": self.fingerprint,
            "pending": [{"offset": o, "sha": s, "id": i} for o, (s, i) in sorted(self.pending.items())],
            "written": self.written[-WRITTEN_SAVED:],
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Cursor:
        return Cursor(
            dev=int(data["dev"]),
            ino=int(data["ino"]),
            offset=int(data["offset"]),
            fingerprint=str(data.get("fingerprint") or ""),
            pending={int(p["offset"]): (str(p["sha"]), str(p["id"])) for p in data.get("pending") or ()},
            written=[str(i) for i in data.get("written") or ()],
        )


class CursorFile:
    """The cursor on disk, replaced atomically (temporary file, fsync, rename)."""

    def __init__(self, settings: Settings, path: str, topic: str, name: str) -> None:
        key = hashlib.sha256(f"{path}\0{topic}\0{name}".encode()).hexdigest()[:32]
        self.path = os.path.join(settings.home, "channels", f"{key}.json")
        self.about = {"file": path, "topic": topic, "name": name}

    def load(self) -> Cursor | None:
        try:
            with open(self.path, encoding="utf-8") as fh:
                return Cursor.from_json(json.load(fh))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warn(f"ignoring the unreadable cursor {self.path}: {exc}")
            return None

    def save(self, cursor: Cursor) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(cursor.to_json(**self.about)).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


# -- the channel file ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Line:
    start: int
    end: int  # offset just past the newline
    raw: bytes
    fingerprint: str  # what Cursor.fingerprint becomes once the cursor is at ``end``

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ChannelFile:
    """The JSONL file: complete new lines from a cursor, and atomic appends."""

    def __init__(self, path: str, *, max_line: int) -> None:
        self.path = path
        self.max_line = max_line

    def ensure(self) -> None:
        """Create the file if it does not exist (an empty channel)."""
        os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666))

    def open_cursor(self, *, at_end: bool) -> Cursor:
        """A cursor for a first run: at the end of the file, or at its start."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            cursor = Cursor(dev=st.st_dev, ino=st.st_ino)
            if at_end and st.st_size:
                cursor.offset = st.st_size
                before = max(0, st.st_size - FINGERPRINT_BYTES)
                cursor.fingerprint = _digest(os.pread(fd, st.st_size - before, before))
            return cursor
        finally:
            os.close(fd)

    def read_new(self, cursor: Cursor) -> tuple[list[Line], Restart | None]:
        """Complete lines after the cursor, and why it restarted from 0 (or None).

        The cursor's identity is updated on a restart; its offset is left to the
        caller, which moves it once the lines are dealt with.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return [], None
        try:
            st = os.fstat(fd)
            why = None
            if (st.st_dev, st.st_ino) != (cursor.dev, cursor.ino):
                why = Restart.REPLACED
            elif st.st_size < cursor.offset:
                why = Restart.TRUNCATED
            if why is None and st.st_size > cursor.offset:
                base = max(0, cursor.offset - FINGERPRINT_BYTES)
                data = os.pread(fd, min(st.st_size, cursor.offset + READ_LIMIT) - base, base)
                if cursor.offset and _digest(data[: cursor.offset - base]) != cursor.fingerprint:
                    why = Restart.REWRITTEN
            if why is not None:
                cursor.restart(st.st_dev, st.st_ino)
                base = 0
                data = os.pread(fd, min(st.st_size, READ_LIMIT), 0)
            elif st.st_size <= cursor.offset:
                return [], None
            return self._lines(data, base, cursor.offset), why
        finally:
            os.close(fd)

    def _lines(self, data: bytes, base: int, offset: int) -> list[Line]:
        lines: list[Line] = []
        pos = offset - base
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                if len(data) - pos <= self.max_line:
                    break  # a partial line: wait for the writer to finish it
                nl = len(data) - 1  # a runaway line: give it up as malformed
            end = nl + 1
            lines.append(
                Line(
                    start=base + pos,
                    end=base + end,
                    raw=data[pos:end],
                    fingerprint=_digest(data[max(0, end - FINGERPRINT_BYTES) : end]),
                )
            )
            pos = end
        return lines

    def append(self, line: bytes) -> None:
        """Append one line with one write on an O_APPEND descriptor, then fsync."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, line)
            if written < len(line):  # only on a full disk or an odd filesystem
                warn(f"{self.path}: a line was appended in two writes ({written}/{len(line)} bytes)")
                while written < len(line):
                    written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)


# -- the bridge ----------------------------------------------------------------------
def warn(text: str) -> None:
    print(f"mesh channel bridge: {text}", file=sys.stderr, flush=True)


class ChannelBridge:
    """Moves lines to the topic and messages to the file for one connected peer."""

    def __init__(
        self,
        client: AsyncClient,
        channel: ChannelFile,
        cursors: CursorFile,
        cursor: Cursor,
        topic: str,
        *,
        poll_interval: float = POLL_INTERVAL,
        report: TextIO | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.cursors = cursors
        self.cursor = cursor
        self.topic = topic
        self.poll_interval = poll_interval
        self.report = report
        self.written: OrderedDict[str, None] = OrderedDict.fromkeys(cursor.written)

    @property
    def name(self) -> str:
        return self.client.name

    def say(self, event: str, **data: Any) -> None:
        if self.report is not None:
            print(json.dumps({"event": event, **data}, ensure_ascii=False), file=self.report, flush=True)

    def _remember(self, ids: Iterable[str]) -> None:
        for msg_id in ids:
            self.written[msg_id] = None
            self.written.move_to_end(msg_id)
        while len(self.written) > WRITTEN_MEMORY:
            self.written.popitem(last=False)

    def _save(self) -> None:
        self.cursor.written = list(self.written)[-WRITTEN_SAVED:]
        self.cursors.save(self.cursor)

    # -- file -> topic
    async def pump_file(self) -> int:
        """Forward the file's new complete lines; returns how many went to the topic."""
        lines, why = self.channel.read_new(self.cursor)
        if why is not None:
            warn(f"{self.channel.path} was {why}; reading it again from the start")
            self.say("restarted", file=self.channel.path, why=why.value)
            self._save()
        if not lines:
            return 0
        plan: list[tuple[Line, str, str]] = []
        echoes: list[str] = []
        for line in lines:
            parsed = classify(line.raw, name=self.name, topic=self.topic)
            if parsed.kind is LineKind.MALFORMED:
                warn(
                    f"skipping the malformed line at byte {line.start} of {self.channel.path}: {parsed.reason}"
                )
                self.say("skipped", offset=line.start, reason=parsed.reason)
            elif parsed.kind is LineKind.ECHO and parsed.id:
                echoes.append(parsed.id)
            elif parsed.kind is LineKind.FORWARD:
                assert parsed.body is not None
                known = self.cursor.pending.get(line.start)
                msg_id = known[1] if known and known[0] == line.sha else new_id()
                plan.append((line, parsed.body, msg_id))
        self._remember(echoes)
        if plan:
            # journal the ids first: a resend after a crash reuses them, and the
            # broker stores and delivers each id once
            self.cursor.pending = {line.start: (line.sha, msg_id) for line, _, msg_id in plan}
            self._save()
        sent = 0
        for line, body, msg_id in plan:
            if await self._forward(line, body, msg_id):
                sent += 1
        self.cursor.offset = lines[-1].end
        self.cursor.fingerprint = lines[-1].fingerprint
        self.cursor.pending = {}
        self._save()
        return sent

    async def _forward(self, line: Line, body: str, msg_id: str) -> bool:
        """Send one line until the broker takes it or refuses it for good."""
        delay = RETRY_START
        while True:
            try:
                result = await self.client.send(self.topic, body, id=msg_id)
            except Unavailable as exc:
                code, reason = "unavailable", str(exc)
            except MeshError as exc:
                code, reason = exc.code, str(exc)
            else:
                if result.ok:
                    self.say("to_topic", id=msg_id, offset=line.start)
                    return True
                code = "timeout" if result.status is SendStatus.TIMEOUT else (result.reason or {}).get("code")
                reason = (result.reason or {}).get("message") or result.status.value
            if code not in RETRY_CODES:
                warn(f"the broker refused the line at byte {line.start} of {self.channel.path}: {reason}")
                self.say("refused", id=msg_id, offset=line.start, reason=reason)
                return False
            await asyncio.sleep(delay)  # sleep-ok: backoff before resending the same id
            delay = min(delay * 2, RETRY_MAX)

    async def tail_forever(self) -> None:
        while True:
            await self.pump_file()
            await asyncio.sleep(self.poll_interval)  # sleep-ok: the poll interval of a file tail

    # -- topic -> file
    def write_message(self, env: Envelope) -> bool:
        """Append a message to the file unless it is there already; then it is read."""
        fresh = env.id not in self.written
        if fresh:
            self.channel.append(channel_line(env, via=self.name))
            self._remember([env.id])
            self.say("to_file", id=env.id)
        self.client.note_read(env.id)
        return fresh

    async def deliver_forever(self) -> None:
        while True:
            self.write_message(await self.client.recv())

    async def drop_receipts_forever(self) -> None:
        """The topic's receipts for forwarded lines are not needed: drop them, or the
        client's queue grows with every line for as long as the bridge runs."""
        while True:
            await self.client.receipts.get()


async def _bridge(settings: Settings, args: argparse.Namespace) -> int:
    path = os.path.abspath(os.path.expanduser(args.file))
    topic = normal_topic(args.topic)
    name = check_name(getattr(args, "as_name", None) or default_bridge_name(path))
    from_start = bool(getattr(args, "from_start", False))
    poll_interval = float(getattr(args, "poll_interval", None) or POLL_INTERVAL)
    report = sys.stdout if getattr(args, "json", False) else None

    channel = ChannelFile(path, max_line=settings.max_frame_bytes)
    channel.ensure()
    cursors = CursorFile(settings, path, topic, name)
    cursor = cursors.load() or channel.open_cursor(at_end=not from_start)
    cursors.save(cursor)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncClient(settings, name, client_kind="channel", auto_read=False) as client:
        bridge = ChannelBridge(
            client, channel, cursors, cursor, topic, poll_interval=poll_interval, report=report
        )
        await client.subscribe(topic, from_start=from_start)
        # lines written while the bridge was away go first, and the tail learns the
        # ids of its own lines before any redelivered message is written again
        while True:
            before = bridge.cursor.offset
            await bridge.pump_file()
            if bridge.cursor.offset == before:
                break
        bridge.say("ready", name=client.name, file=path, topic=topic, offset=cursor.offset)
        if report is None:
            print(
                f"bridging {path} <-> {topic} as {client.name} (Ctrl-C to stop)", file=sys.stderr, flush=True
            )
        tasks = [
            asyncio.create_task(bridge.tail_forever()),
            asyncio.create_task(bridge.deliver_forever()),
            asyncio.create_task(bridge.drop_receipts_forever()),
            asyncio.create_task(stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # a failed loop ends the bridge with its error
    return 0


def run_bridge(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``mesh channel bridge`` until SIGINT/SIGTERM; returns the exit code.

    Raises `MeshError` (`Unavailable` with no broker, `NameTaken`, `InvalidName`).
    """
    try:
        return asyncio.run(_bridge(settings, args))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        warn(f"cannot use {args.file}: {exc}")
        return 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
