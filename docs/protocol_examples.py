"""Regenerate the captured examples of docs/protocol.md from a real broker.

Each regenerated example in the document is a code block right after a marker line::

    <!-- example: join -->
    ```
    $ curl -s -X POST $URL/v1/join ...
    ```

The marker names a scene below (``async with m.scene(NAME)`` in a story), which says
what to send. The script starts real brokers (``python -m sessionmesh serve --port 0
--home TMP``, of the ``sessionmesh`` this script imports), plays every scene against
them over HTTP and WebSocket, and writes what was sent and what came back into the
block, requests included. The scenes of one story share a broker and its cast (alice,
bob, ...) and run in the order written; the stories run side by side, each on a
broker of its own. What a scene does unseen (joins, the sends a reply needs) is done
with ``show=False`` outside or inside the scene.

What changes from run to run is replaced, so that a run writes the same text as the
last one unless the broker's answers changed:

- message ids: each id the run produced (by the broker, or by a client's uuid7) becomes
  a made-up UUIDv7, in the order ids first appear, the same id in every example of its
  story. Ids a scene spells out (``01a2011c-aaaa-...``) are kept.
- secrets, person sessions, login codes and session cookies: made-up strings of the
  same length and alphabet, in the order they first appear;
- times (``ts``, ``server_time``, ``expires_at``, ...): renumbered in each example from
  a start fixed for that example, 2 ms apart in the order they happened, plus the
  pauses the scene declares (``Mesh.later``: a sleep, an expiry, a timeout the scene
  waits for). Equal times stay equal. An expiry keeps its whole seconds from what it
  counts from (``expires_at - acquired_at`` is the ``ttl``; see `Times`), and
  ``expires_in`` is counted from the broker's clock when it answered;
- ``uptime`` is 1.121, ``pid`` 29950, the broker's address ``http://127.0.0.1:45577``
  and its state directory ``/tmp/mesh-home``.

How long a step really took never shows (a person session's 12 hours aside, which
are counted to the minute), so a slow machine writes the same text. What the broker
decides by the clock is kept out of reach of a slow machine: sends that must meet
the rate limit go out together on one WebSocket, and an expiry is waited for, not
slept for.

    python docs/protocol_examples.py           # rewrite the examples in docs/protocol.md
    python docs/protocol_examples.py --check   # exit 1, listing the examples that differ
    python docs/protocol_examples.py --check --diff   # and show how

``tests/test_protocol_examples.py`` fails when the document and a real broker disagree.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import difflib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import sessionmesh
from sessionmesh.config import load
from sessionmesh.person import write_credential

DOC = Path(__file__).resolve().parent / "protocol.md"
MARKER = re.compile(r"^(?P<indent>[ \t]*)<!-- example: (?P<name>[a-z0-9-]+) -->[ \t]*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```")

PASSPHRASE = "correct horse battery staple"
FAKE_URL = "http://127.0.0.1:45577"
FAKE_HOME = "/tmp/mesh-home"
FAKE_PID = 29950
FAKE_UPTIME = 1.121
TIME_BASE = 1795314952.0  # every example's clock starts within an hour after this
TIME_STEP = 0.002  # between two times of an example, unless the scene declared a pause
START_TIMEOUT = 15.0
FRAME_TIMEOUT = 5.0

# Ids the scenes spell out: kept as they are.
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UNKNOWN_ID = "01a2010d-0000-7000-8000-000000000000"  # no message has it
UPPER_ID = "01A2011C-AAAA-7BBB-8CCC-DDDDDDDDDDDD"
BRACED_ID = "{01A20142-AAAA-7BBB-8CCC-DDDDDDDDDDDD}"
PLAIN_ID = "01A20142AAAA7BBB8CCCEEEEEEEEEEEE"
RESOLVE_ID = "01a24dde-c476-7ad5-93a7-b2c5aa4c9e42"
KEEP = frozenset(str(uuid.UUID(i)) for i in (UNKNOWN_ID, UPPER_ID, BRACED_ID, PLAIN_ID, RESOLVE_ID))
TIME_KEYS = frozenset(
    {
        "ts",
        "server_time",
        "pong",
        "last_seen",
        "connected_since",
        "created_at",
        "updated_at",
        "acquired_at",
        "expires_at",
        "expires",
        "now",
        "since",
        "activity_since",
        "started_at",
    }
)
EXPIRY_KEYS = frozenset({"expires_at", "expires"})
NOTHING: Any = object()


# -- made-up values ------------------------------------------------------------------
def _digest(*parts: object) -> bytes:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


def fake_uuid(example: str, n: int) -> str:
    """The ``n``-th made-up UUIDv7 of ``example``: stable, and later ones sort later."""
    millis = int(TIME_BASE * 1000) + zlib.crc32(example.encode()) % 3_600_000 + 37 * n
    rand = int.from_bytes(_digest("id", example, n)[:10], "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def fake_token(example: str, n: int, length: int) -> str:
    """A made-up URL-safe token of ``length`` characters."""
    text = base64.urlsafe_b64encode(_digest("token", example, n) * 2).decode()
    return text[:length]


# -- a transcript --------------------------------------------------------------------
@dataclass
class Line:
    """One line of an example: ``who`` (a peer's label), ``mark`` (``→``, ``←``,
    ``$``, or ``""`` for an answer or a note), and either literal ``text`` or a JSON
    ``frame`` that is normalised before it is written."""

    who: str | None
    mark: str
    text: str = ""
    frame: Any = NOTHING
    indent: int | None = None  # columns before the text, when not the usual
    note: bool = False


@dataclass
class Example:
    name: str
    labels: bool = False  # write who sent or got each line (several peers)
    lines: list[Line] = field(default_factory=list)

    def add(self, line: Line) -> None:
        self.lines.append(line)


class Names:
    """Real run values and the made-up ones that replace them, for one story."""

    def __init__(self) -> None:
        self.replace: dict[str, str] = {}
        self.keep: set[str] = set(KEEP)

    def token(self, real: str | None, example: str) -> None:
        """Replace ``real`` (a secret, a session, a code) from now on."""
        if real and real not in self.replace:
            self.replace[real] = fake_token(example, len(self.replace), len(real))

    def ids(self, text: str, example: str) -> None:
        for found in UUID.findall(text):
            if found not in self.replace and found not in self.keep:
                self.replace[found] = fake_uuid(example, len(self.replace))

    def apply(self, text: str) -> str:
        if not self.replace:
            return text
        pattern = re.compile("|".join(re.escape(k) for k in sorted(self.replace, key=len, reverse=True)))
        return pattern.sub(lambda m: self.replace[m.group(0)], text)


def _walk_times(value: Any, key: str | None, out: list[tuple[float, bool]]) -> None:
    """Collect ``(time, is_expiry)`` for every time in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "updated" and isinstance(v, dict):
                out.extend((float(t), False) for t in v.values() if isinstance(t, (int, float)))
            else:
                _walk_times(v, k, out)
    elif isinstance(value, list):
        for v in value:
            _walk_times(v, key, out)
    elif key in TIME_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append((float(value), key in EXPIRY_KEYS))


def _now_of(value: Any) -> float | None:
    """The broker's clock when it wrote an answer with a lease: ``expires_at -
    expires_in`` (to the millisecond ``expires_in`` is rounded to)."""
    if isinstance(value, dict):
        if isinstance(value.get("expires_in"), (int, float)) and isinstance(
            value.get("expires_at"), (int, float)
        ):
            return float(value["expires_at"]) - float(value["expires_in"])
        return next((now for v in value.values() if (now := _now_of(v)) is not None), None)
    if isinstance(value, list):
        return next((now for v in value if (now := _now_of(v)) is not None), None)
    return None


@dataclass
class Shown:
    """The times one line of an example shows."""

    plain: list[float]  # every time but expiries, all of them in the past when the line was written
    expiries: list[float]  # expires_at, expires
    now: float | None  # the broker's clock when it answered, where a lease tells it


class Times:
    """Made-up times for one example: the times it shows in order, 2 ms apart, plus
    the pauses its story declared (`Mesh.later`) between two of them. An expiry keeps
    its distance, in whole seconds, from what it was counted from: a time shown with
    it (``acquired_at``), else the broker's clock when the answer was written
    (``expires_at - expires_in``), else the time just before it, to the minute (a
    person session). ``bases`` remembers, for the whole story, where an expiry was
    counted from, so a lease renewed in one example shows the same in the next."""

    def __init__(
        self,
        example: str,
        lines: list[Shown],
        pauses: list[tuple[float, float]],
        bases: dict[float, tuple[float, int]],
    ) -> None:
        self.pauses = pauses
        self.micros: dict[float, int] = {}
        start = round(TIME_BASE * 1e6) + zlib.crc32(example.encode()) % 3_600_000_000 + 7_123
        prev: float | None = None
        for value in sorted({v for line in lines for v in line.plain}):
            self.micros[value] = start if prev is None else self.micros[prev] + self._step(prev, value)
            prev = value
        plain = sorted(self.micros)
        self.nows: list[int | None] = []
        for i, line in enumerate(lines):
            seen = [v for earlier in lines[: i + 1] for v in earlier.plain]
            now = None if line.now is None or not seen else self._after(max(seen), line.now)
            self.nows.append(now)
            for value in line.expiries:
                if value not in self.micros:
                    self.micros[value] = self._expiry(value, plain, now, line.now, bases)

    def _step(self, before: float, after: float) -> int:
        paused = sum(seconds for at, seconds in self.pauses if before < at <= after)
        return round((TIME_STEP + paused) * 1_000_000)

    def _after(self, shown: float, moment: float) -> int:
        """A moment not shown itself, after the shown time ``shown``."""
        return self.micros[shown] + self._step(shown, moment) - round(TIME_STEP * 1_000_000)

    def _expiry(
        self,
        value: float,
        plain: list[float],
        now: int | None,
        real_now: float | None,
        bases: dict[float, tuple[float, int]],
    ) -> int:
        for u in reversed(plain):
            seconds = round(value - u)
            if seconds >= 1 and abs(value - u - seconds) < 1e-6:
                bases[value] = (u, seconds)
                return self.micros[u] + seconds * 1_000_000
        if value in bases:
            base, seconds = bases[value]
            if base in self.micros:
                return self.micros[base] + seconds * 1_000_000
            earlier = [u for u in plain if u <= base]
            if earlier:
                return self._after(earlier[-1], base) + seconds * 1_000_000
        if now is not None and real_now is not None:
            seconds = round(value - real_now)
            if seconds >= 1 and abs(value - real_now - seconds) < 0.002:
                bases[value] = (real_now, seconds)
                return now + seconds * 1_000_000
        earlier = [u for u in plain if u <= value] or plain
        seconds = round((value - earlier[-1]) / 60) * 60
        return self.micros[earlier[-1]] + seconds * 1_000_000

    def of(self, value: float) -> float:
        return self.micros[value] / 1e6 if value in self.micros else value


def normalise(value: Any, times: Times, key: str | None = None, *, now: int | None = None) -> Any:
    """``value`` with its times made up (``now``: the broker's clock when it wrote
    the answer, for ``expires_in``), and ``uptime`` and ``pid`` fixed."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "updated" and isinstance(v, dict):
                out[k] = {n: times.of(float(t)) for n, t in v.items()}
            elif k == "expires_in" and isinstance(v, (int, float)) and now is not None:
                out[k] = round((times.micros[float(value["expires_at"])] - now) / 1e6, 3)
            elif k == "uptime":
                out[k] = FAKE_UPTIME
            elif k == "pid" and isinstance(v, int):
                out[k] = FAKE_PID
            else:
                out[k] = normalise(v, times, k, now=now)
        return out
    if isinstance(value, list):
        return [normalise(v, times, key, now=now) for v in value]
    if key in TIME_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return times.of(float(value))
    return value


def dumps(value: Any) -> str:
    """Compact JSON, as the broker writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render(
    example: Example,
    names: Names,
    urls: dict[str, str],
    pauses: list[tuple[float, float]],
    bases: dict[float, tuple[float, int]],
) -> str:
    """The text of an example's block, its values normalised."""
    shown: list[Shown] = []
    for line in example.lines:
        if line.frame is not NOTHING:
            value = line.frame.value if isinstance(line.frame, Pretty) else line.frame
            found: list[tuple[float, bool]] = []
            _walk_times(value, None, found)
            shown.append(Shown([t for t, e in found if not e], [t for t, e in found if e], _now_of(value)))
    times = Times(example.name, shown, pauses, bases)
    nows = iter(times.nows)
    width = max((len(line.who) for line in example.lines if line.who), default=0) + 1
    out: list[str] = []
    for line in example.lines:
        text = line.text if line.frame is NOTHING else _frame_text(line.frame, times, next(nows))
        for real, fake in urls.items():
            text = text.replace(real, fake)
        if line.mark:
            prefix = f"{line.who or '':<{width}}{line.mark} " if example.labels else f"{line.mark} "
        elif line.indent is not None:
            prefix = " " * line.indent
        elif line.note:
            prefix = " " * (width + 2 if example.labels else 3)
        else:
            prefix = " " * (width if example.labels else 0)
        rows = text.split("\n")
        out.append(prefix + rows[0])
        hang = len(prefix) - (len(line.mark) + 1 if line.mark else 0)
        out.extend((" " * hang + row if row else row) for row in rows[1:])
    text = "\n".join(out)
    names.ids(text, example.name)
    return names.apply(text).rstrip("\n") + "\n"


def _frame_text(frame: Any, times: Times, now: int | None) -> str:
    if isinstance(frame, Pretty):
        return frame.text(normalise(frame.value, times, now=now))
    return dumps(normalise(frame, times, now=now))


@dataclass
class Pretty:
    """A JSON value shown indented, two spaces a level; objects and lists deeper than
    ``inline_after`` levels stay on one line."""

    value: Any
    inline_after: int = 2

    def text(self, value: Any, depth: int = 0) -> str:
        pad = "  " * (depth + 1)
        if isinstance(value, dict) and value and depth < self.inline_after:
            items = [f"{pad}{json.dumps(k)}: {self.text(v, depth + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
        if isinstance(value, list) and value and depth < self.inline_after:
            items = [pad + self.text(v, depth + 1) for v in value]
            return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"
        return json.dumps(value, ensure_ascii=False)


# -- a broker and the peers that talk to it --------------------------------------------
class Broker:
    """`mesh serve` in a subprocess on port 0, with a temporary state directory."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.stdout = ""

    async def start(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sessionmesh",
            "serve",
            "--port",
            "0",
            "--home",
            str(self.home),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=self.env,
        )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), START_TIMEOUT)).decode()
        if "listening on" not in line:
            raise RuntimeError(f"the broker did not start: {line!r}")
        self.stdout = line.rstrip("\n")
        self.url = line.split("listening on ", 1)[1].split()[0]
        return self.url

    async def stop(self, *, graceful: bool = True) -> None:
        """SIGTERM (the broker commits and cleans up), or SIGKILL when nothing in
        its state directory is wanted any more."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if graceful:
                    self.proc.terminate()
                else:
                    self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 15)
        assert self.proc.stdout is not None
        await self.proc.stdout.read()  # to its end, which closes the pipe
        self.proc = None


@dataclass
class Answer:
    status: int
    headers: Any
    text: str
    json: Any = NOTHING


class Peer:
    """One raw WebSocket session (no client library: every frame is the script's)."""

    def __init__(self, mesh: Mesh, who: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.mesh = mesh
        self.who = who
        self.ws = ws
        self._rid = 0
        self.last_result: Any = None

    def rid(self) -> int:
        self._rid += 1
        return self._rid

    async def send(self, frame: Any, *, show: bool = True, shown: str | None = None) -> None:
        """Send a frame (a dict, or text sent as it is, or bytes as a binary frame)."""
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
            text = shown or f"<binary frame, {len(frame)} bytes>"
        else:
            text = frame if isinstance(frame, str) else dumps(frame)
            await self.ws.send_str(text)
            text = shown or text
        if show:
            self.mesh.record(Line(self.who, "→", text))

    async def request(self, op: str, args: Any = NOTHING, *, rid: Any = NOTHING, show: bool = True) -> Any:
        """Send ``op`` with a rid and return its result frame (recording the frames
        that arrive before it too)."""
        rid = self.rid() if rid is NOTHING else rid
        frame: dict[str, Any] = {"op": op, "rid": rid}
        if args is not NOTHING:
            frame["args"] = args
        await self.send(frame, show=show)
        while True:
            got = await self.recv(show=show)
            if got.get("op") == "result" and got.get("rid") == rid:
                return got

    async def recv(self, *, show: bool = True, timeout: float = FRAME_TIMEOUT) -> Any:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"{self.who}: expected a text frame, got {msg.type!r} {msg.data!r}")
        frame = json.loads(msg.data)
        self.mesh.learn(frame)
        if frame.get("op") == "result" and frame.get("ok"):
            self.last_result = frame["result"]
        if show:
            self.mesh.record(Line(self.who, "←", frame=frame))
        return frame

    async def recv_until(self, op: str, *, show: bool = True) -> Any:
        while True:
            frame = await self.recv(show=show)
            if frame.get("op") == op:
                return frame

    async def closed(self, *, show: bool = True) -> int:
        """Wait for the broker to close the connection; its close code."""
        msg = await asyncio.wait_for(self.ws.receive(), FRAME_TIMEOUT)
        if msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            raise RuntimeError(f"{self.who}: expected the connection to close, got {msg.type!r} {msg.data!r}")
        code = self.ws.close_code or 0
        if show:
            self.mesh.note(f"(closed, code {code})")
        await self.ws.close()
        return code

    async def quiet(self, timeout: float = 0.3) -> list[Any]:
        """Frames that arrive within ``timeout``, not recorded."""
        frames = []
        with contextlib.suppress(TimeoutError):
            while True:
                frames.append(await self.recv(show=False, timeout=timeout))
        return frames

    async def bye(self, *, show: bool = False) -> None:
        await self.send({"op": "bye", "rid": self.rid()}, show=show)
        await self.ws.close()


class Mesh:
    """One story: a broker, its cast, and the examples recorded against it."""

    def __init__(self, story: str, root: Path, env: dict[str, str], names: Names) -> None:
        self.story = story
        self.home = root / story
        self.broker = Broker(self.home, env)
        self.names = names
        self.urls: dict[str, str] = {}
        self.token = ""
        self.secrets: dict[str, str] = {}
        self.session = ""  # the person's
        self.http: aiohttp.ClientSession | None = None
        self.example: Example | None = None
        self.recorded: dict[str, Example] = {}
        self.pauses: list[tuple[float, float]] = []
        self.clock = 0.0  # the latest time an answer has shown
        self.bases: dict[float, tuple[float, int]] = {}  # expiry -> what it counts from (`Times`)
        self.peers: list[Peer] = []

    async def start(self, *, person: bool = False) -> None:
        if person:
            write_credential(load(env={}, overrides={"home": str(self.home)}), PASSPHRASE)
        await self._start_broker()
        self.token = (self.home / "token").read_text().strip()
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def _start_broker(self) -> None:
        url = await self.broker.start()
        self.urls[url] = FAKE_URL
        self.urls[str(self.home)] = FAKE_HOME

    async def restart(self) -> None:
        await self.broker.stop()
        await self._start_broker()

    async def close(self) -> None:
        for peer in self.peers:
            await peer.ws.close()
        if self.http is not None:
            await self.http.close()
        await self.broker.stop(graceful=False)

    @property
    def url(self) -> str:
        return self.broker.url

    @staticmethod
    def new_id() -> str:
        """A fresh UUIDv7, as a client mints one for a send."""
        millis = int(time.time() * 1000)
        rand = int.from_bytes(os.urandom(10), "big")
        value = (
            (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & (2**62 - 1))
        )
        return str(uuid.UUID(int=value))

    # -- recording ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def scene(self, name: str, *, labels: bool = False) -> AsyncIterator[Example]:
        """Record what happens inside as the example ``name``; a second scene of the
        same name goes on where the first stopped."""
        assert self.example is None, "scenes do not nest"
        self.example = self.recorded.setdefault(name, Example(name, labels))
        try:
            yield self.example
        finally:
            self.example = None

    def derive(self, name: str, source: str, keep: Callable[[int, Line], bool]) -> None:
        """An example made of some lines of another (the same run, shown twice)."""
        lines = [line for i, line in enumerate(self.recorded[source].lines) if keep(i, line)]
        self.recorded[name] = Example(name, False, lines)

    def rendered(self) -> dict[str, str]:
        """Every example of the story, written out (in the order they were begun, which
        is the order made-up ids are handed out in)."""
        return {
            name: render(example, self.names, self.urls, self.pauses, self.bases)
            for name, example in self.recorded.items()
        }

    def record(self, line: Line) -> None:
        if self.example is not None:
            self.example.add(line)

    def later(self, seconds: float) -> None:
        """Declare that the scene now waits ``seconds`` (a sleep, an expiry, a timeout):
        every time after the last one an answer has shown so far is shown that much
        later. Call it once the answers from before the wait are in."""
        self.pauses.append((self.clock + 1e-6, seconds))

    def note(self, text: str, *, indent: int | None = None) -> None:
        """A remark between the lines, such as ``(closed, code 1008)``."""
        self.record(Line(None, "", text, indent=indent, note=True))

    def text(self, text: str) -> None:
        """A line written as it is."""
        self.record(Line(None, "", text, indent=0))

    def blank(self) -> None:
        self.text("")

    def learn(self, value: Any) -> None:
        """Note the secrets, sessions and codes in an answer, to replace them, and
        the latest time it shows (`later`)."""
        seen: list[tuple[float, bool]] = []
        _walk_times(value, None, seen)
        now = _now_of(value)
        self.clock = max([self.clock, *(t for t, expiry in seen if not expiry), *([now] if now else [])])
        self._learn(value)

    def _learn(self, value: Any) -> None:
        where = self.example.name if self.example is not None else self.story
        if isinstance(value, dict):
            for key in ("secret", "session", "code"):
                if isinstance(value.get(key), str) and (key != "code" or "url" in value):
                    self.names.token(value[key], where)
            for v in value.values():
                self._learn(v)
        elif isinstance(value, list):
            for v in value:
                self._learn(v)

    # -- HTTP -----------------------------------------------------------------------
    async def curl(
        self,
        path: str,
        *,
        shown_path: str | None = None,
        method: str = "POST",
        body: Any = NOTHING,
        raw: str | bytes | None = None,
        shown_body: str | None = None,
        token: str | None = "$TOKEN",
        who: str | None = None,
        secret: str | None = "$SECRET",
        person: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
        layout: str = "line",
        note: str | None = None,
        include: tuple[str, ...] | None = None,
        status_line: bool = True,
        show: bool = True,
        show_answer: bool = True,
        quote_url: bool = False,
        label: bool = False,
    ) -> Answer:
        """Make one HTTP request and record it as a ``curl`` command and its answer.

        ``token``/``secret``: ``"$TOKEN"``/``"$SECRET"`` send the real ones, any other
        string is sent as it is, ``None`` sends none. ``layout``: ``"full"`` (one line
        for the token, one for the name, one for the body), ``"brief"`` (the headers
        shown as ``...``) or ``"line"``. ``include`` (``curl -i``) lists the answer's
        headers to show."""
        assert self.http is not None
        send_headers: dict[str, str] = {}
        auth_shown: list[str] = []
        name_shown: list[str] = []
        if token is not None:
            send_headers["Authorization"] = f"Bearer {self.token if token == '$TOKEN' else token}"
            auth_shown.append(f'-H "Authorization: Bearer {token}"')
        if who is not None:
            send_headers["X-Mesh-Name"] = who
            name_shown.append(f'-H "X-Mesh-Name: {who}"')
            if person:
                send_headers["X-Mesh-Person"] = self.session
                name_shown.append('-H "X-Mesh-Person: $SESSION"')
            elif secret is not None:
                real = self.secrets.get(who, "") if secret == "$SECRET" else secret
                send_headers["X-Mesh-Secret"] = real
                name_shown.append(f'-H "X-Mesh-Secret: {secret}"')
        elif person:
            send_headers["X-Mesh-Person"] = self.session
            name_shown.append('-H "X-Mesh-Person: $SESSION"')
        for key, value in headers:
            send_headers[key] = value
            name_shown.append(f"-H '{key}: {value}'" if key == "Host" else f'-H "{key}: {value}"')
        data: bytes | None = None
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
        elif body is not NOTHING:
            data = dumps(body).encode()
        elif method == "POST":
            data = b"{}"
        payload = io.BytesIO(data) if data is not None and len(data) > 2**20 else data  # aiohttp's advice
        async with self.http.request(
            method, self.url + path, data=payload, headers=send_headers, allow_redirects=False
        ) as response:
            text = await response.text()
            answer = Answer(response.status, response.headers, text)
        if "json" in answer.headers.get("Content-Type", ""):
            answer.json = json.loads(text)
            self.learn(answer.json)
        if not show:
            return answer
        target = f"$URL{shown_path or path}"
        target = f'"{target}"' if quote_url else target
        start = ["$ curl -s"] + (["-i"] if include is not None else [])
        start += ([] if method == "GET" else [f"-X {method}"]) + [target]
        if data and method != "GET":
            shown = shown_body or ("'" + (data.decode() if raw is not None else dumps(body)) + "'")
            tail = [f"-d {shown}"]
        else:
            tail = []
        if layout == "full":
            rows = [" ".join(start + auth_shown)]
            if name_shown:
                rows.append("    " + " ".join(name_shown))
            if tail:
                rows.append("    " + " ".join(tail))
            command = " \\\n".join(rows)
        elif layout == "brief":
            command = " ".join([*start, "...", *tail])
        else:
            command = " ".join(start + auth_shown + name_shown + tail)
        if note:
            command += f"   # {note}"
        self.record(Line(who if label else None, "$", command[2:]))
        if show_answer:
            self.answer(answer, include=include, status_line=status_line)
        return answer

    def answer(
        self, answer: Answer, *, include: tuple[str, ...] | None = None, status_line: bool = True
    ) -> None:
        if include is not None:
            import http

            self.record(Line(None, "", f"HTTP/1.1 {answer.status} {http.HTTPStatus(answer.status).phrase}"))
            for key in include:
                if key in answer.headers:
                    self.record(Line(None, "", f"{key}: {answer.headers[key]}"))
            return
        if answer.json is not NOTHING:
            self.record(Line(None, "", frame=answer.json))
        else:
            self.record(Line(None, "", answer.text.rstrip("\n")))
        if status_line:
            self.record(Line(None, "", f"HTTP {answer.status}"))

    async def join(self, name: str, *, show: bool = False, **more: Any) -> Answer:
        """``POST /v1/join`` for a new name; keeps its secret. A name this story has
        already joined is left as it is (unless the join is shown)."""
        if name in self.secrets and not show:
            return Answer(200, {}, "")
        body = {"name": name, **more}
        answer = await self.curl("/v1/join", body=body, layout="full", show=show)
        if answer.status == 200 and answer.json.get("secret"):
            self.secrets[name] = answer.json["secret"]
        return answer

    async def op(
        self, who: str | None, op: str, args: Any = NOTHING, *, layout: str = "brief", **more: Any
    ) -> Answer:
        """``POST /v1/<op>`` as ``who``."""
        return await self.curl(
            f"/v1/{op}", body={} if args is NOTHING else args, who=who, layout=layout, **more
        )

    async def until_receipt(self, who: str, sent: str, state: str) -> None:
        """Ask ``track`` (quietly) until every copy of ``sent`` is in ``state``."""
        async with asyncio.timeout(FRAME_TIMEOUT):
            while True:
                answer = await self.op(who, "track", {"id": sent}, show=False)
                if set(answer.json["receipts"].values()) == {state}:
                    return
                await asyncio.sleep(0.05)

    async def person_login(self) -> None:
        answer = await self.curl("/v1/person/session", body={"passphrase": PASSPHRASE}, show=False)
        self.session = answer.json["session"]

    # -- WebSocket --------------------------------------------------------------------
    async def open(self, who: str, path: str = "/v1/ws", *, person: bool = False) -> Peer:
        """A WebSocket to ``path`` with the token (and the person's session)."""
        assert self.http is not None
        headers = {"Authorization": f"Bearer {self.token}"}
        if person:
            headers["X-Mesh-Person"] = self.session
        ws = await self.http.ws_connect(
            self.url.replace("http", "ws", 1) + path, headers=headers, max_msg_size=0, autoping=True
        )
        peer = Peer(self, who, ws)
        self.peers.append(peer)
        return peer

    async def hand(self, sender: Peer, receiver: Peer, args: dict[str, Any], *, state: str = "read") -> str:
        """Quietly: ``sender`` sends, ``receiver`` gets the message and acks it; the id."""
        args = {"id": self.new_id(), **args}
        await sender.send({"op": "send", "rid": "quiet", "args": args}, show=False)
        await receiver.recv_until("deliver", show=False)
        await receiver.send({"op": "ack", "args": {"ids": [args["id"]], "state": state}}, show=False)
        await sender.recv_until("receipt", show=False)
        return args["id"]

    async def http_ws(self, path: str, who: str, *, person: bool = False) -> Peer:
        return await self.open(who, path, person=person)

    async def connect(
        self,
        who: str,
        *,
        show: bool = False,
        secret: Any = NOTHING,
        meta: Any = NOTHING,
        events: Any = NOTHING,
        unique: Any = NOTHING,
        backlog: bool = False,
        name: str | None = None,
    ) -> Peer:
        """A session as ``who``: hello (with its saved secret), welcome. With
        ``backlog``, the backlog frame that follows is recorded too."""
        peer = await self.open(who)
        args: dict[str, Any] = {"name": name or who}
        if secret is NOTHING:
            if (name or who) in self.secrets:
                args["secret"] = self.secrets[name or who]
        elif secret is not None:
            args["secret"] = secret
        for key, value in (("meta", meta), ("unique", unique), ("events", events)):
            if value is not NOTHING:
                args[key] = value
        if (name or who) == "human":
            args["person"] = self.session
        await peer.send({"op": "hello", "args": args}, show=show)
        welcome = await peer.recv(show=show)
        if welcome.get("op") != "welcome":
            raise RuntimeError(f"{who}: no welcome: {welcome}")
        if welcome.get("secret"):
            self.secrets[welcome["name"]] = welcome["secret"]
        peer.who = who
        return peer


# -- the stories -----------------------------------------------------------------------
Story = Callable[[Mesh], Awaitable[None]]
STORIES: dict[str, tuple[Story, dict[str, str], bool]] = {}


def story(name: str, *, env: dict[str, str] | None = None, person: bool = False) -> Callable[[Story], Story]:
    def register(fn: Story) -> Story:
        STORIES[name] = (fn, env or {}, person)
        return fn

    return register


@story("basics", person=True)
async def basics(m: Mesh) -> None:
    """§2 the state directory, §3 joining and the person, §6 the HTTP API."""
    async with m.scene("broker-json"):
        m.record(Line(None, "", frame=json.loads((m.home / "broker.json").read_text())))
    async with m.scene("serve-stdout"):
        m.text(m.broker.stdout)

    async with m.scene("join"):
        first = await m.join(
            "alice",
            show=True,
            meta={"client": "cli", "machine": "devbox", "cwd": "/home/me/app", "role": "builder"},
        )
        m.blank()
        secret = first.json["secret"]
        await m.curl(
            "/v1/join",
            body={"name": "alice", "secret": secret, "meta": {"status": "fixing retries"}},
            layout="full",
        )
        for body in (
            {"name": "alice"},
            {"name": "Alice"},
            {"name": "broadcast"},
            {"name": "alice", "meta": "builder"},
        ):
            m.blank()
            await m.curl("/v1/join", body=body, layout="full")

    async with m.scene("person-session"):
        login = await m.curl("/v1/person/session", body={"passphrase": PASSPHRASE})
        m.session = login.json["session"]
        for guess in ("a guess", "another guess"):
            m.blank()
            await m.curl("/v1/person/session", body={"passphrase": guess})
        m.blank()
        await m.curl("/v1/join", body={"name": "human"})
        m.blank()
        await m.curl("/v1/join", body={"name": "mallory", "meta": {"client": "human"}})
        m.blank()
        await m.op("human", "peers", person=True, layout="line")

    async with m.scene("http-errors"):
        await m.op("alice", "ping", layout="full")
        m.blank()
        await m.op(None, "ping", layout="full")
        m.blank()
        await m.op("alice", "ping", secret="wrong", layout="line")
        m.blank()
        await m.op(None, "ping", token="wrong", layout="line")
        m.blank()
        await m.op("frank", "ping", secret=None, layout="line")
        m.blank()
        await m.op("frank", "send", {"to": "bob", "body": "hi"}, secret="made-up", layout="line")
        m.blank()
        await m.op("alice", "frobnicate", layout="full")
        m.blank()
        await m.op("alice", "ping", raw="[1,2]", layout="full")
        m.blank()
        await m.op("alice", "ping", raw="{not json", layout="full")
        m.blank()
        huge = dumps({"to": "bob", "body": "x" * 1_700_000})
        await m.op("alice", "send", raw=huge, shown_body="@huge.json", note="body: 1700000 x characters")

    async with m.scene("health-wrong-host"):
        await m.curl("/health", method="GET", token=None, headers=(("Host", "attacker.example"),))
    async with m.scene("health"):
        await m.curl("/health", method="GET", token=None)
    async with m.scene("metrics-unauthorized"):
        await m.curl("/metrics", method="GET", token=None)
    async with m.scene("not-json"):
        await m.curl("/v1/send", method="GET", note="GET on a POST route")
        m.blank()
        await m.curl("/nope", method="GET")
        m.blank()
        await m.curl("/nope", method="GET", token=None)
    await hello(m)
    async with m.scene("shutdown"):  # the broker stops: the last scene
        await m.curl("/v1/shutdown", token="wrong", raw=b"", shown_body=None)
        m.blank()
        await m.curl("/v1/shutdown", raw=b"")


def brief_message(env: dict[str, Any]) -> str:
    """A message shortened to its id and body (and priority, when urgent)."""
    urgent = '"priority":"urgent",' if env.get("priority") == "urgent" else ""
    return f'{{"id":{dumps(env["id"])},...,{urgent}"body":{dumps(env["body"])},...}}'


@story("json")
async def json_and_ids(m: Mesh) -> None:
    """§1.2 numbers and strict JSON, §4.3 message ids."""
    for name in ("alice", "bob", "dana"):
        await m.join(name)

    async with m.scene("json-numbers"):
        body = {"big": 2**70, "u64": 2**64 - 1, "i64min": -(2**63), "below": -(2**63) - 1, "f": 1e2}
        raw = dumps({"to": "dana", "body": body}).replace("100.0", "1e2")
        await m.op("alice", "send", raw=raw, note="big = 2**70")
        m.blank()
        await m.op("dana", "inbox", note="as dana")
        m.blank()
        await m.op("dana", "inbox", raw=dumps({"limit": 2**70}))
        for raw in ('{"n":NaN}', '{"n":1e400}', '{"s":"\\ud800"}'):
            m.blank()
            await m.op("dana", "ping", raw=raw)

    async with m.scene("json-rid"):
        alice = await m.connect("alice")
        await alice.send(f'{{"op":"ping","rid":{2**70}}}')
        await alice.recv()
        await alice.request("ping", rid=2**64 - 1)
        await alice.bye()

    async with m.scene("ids-canonical"):
        await m.op("alice", "send", {"id": UPPER_ID, "to": "bob", "body": "upper-case id"}, note="as alice")
        m.blank()
        braced = "{" + UPPER_ID + "}"
        await m.op("bob", "ack", {"ids": [braced], "state": "delivered"}, note="as bob")
        m.blank()
        urn = "urn:uuid:" + str(uuid.UUID(UPPER_ID)).replace("-", "")
        await m.op("alice", "thread", {"id": urn, "limit": 1}, note="as alice")

    async with m.scene("ids-refused"):
        await m.op("alice", "send", {"id": BRACED_ID, "to": "Bob!", "body": "hi"}, note="as alice")
        m.blank()
        await m.op("alice", "send", {"id": PLAIN_ID, "to": "alice", "body": "note to self"}, note="as alice")
    await resend(m)


async def hello(m: Mesh) -> None:
    """§5.2 hello and welcome, §5.4 frames, §5.9 frame size, §7.15 ping (after
    `basics`, on its broker)."""
    for name in ("alice", "bob", "dana"):
        await m.join(name)

    async with m.scene("hello-new"):
        erin = await m.connect("erin", show=True, meta={"client": "codex", "role": "docs"})

    async with m.scene("hello-failures"):
        attempts: list[Any] = [
            {"op": "ping", "rid": 1, "args": {}},
            {"op": "hello", "args": {"name": "dana", "secret": "guess"}},
            {"op": "hello", "args": {"name": "Dana Smith"}},
            {"op": "hello", "args": {"name": "dana", "secret": m.secrets["dana"], "meta": "reviewer"}},
            {"op": "hello", "args": {"name": "dana", "secret": m.secrets["dana"], "unique": "yes"}},
            {"op": "hello", "args": {"name": "dana", "secret": m.secrets["dana"], "events": 1}},
            {"op": "hello", "args": {"name": "human"}},
            {"op": "hello", "args": {"name": "mallory", "meta": {"role": "person"}}},
        ]
        for i, frame in enumerate(attempts):
            if i:
                m.blank()
            peer = await m.open("dana")
            await peer.send(frame)
            await peer.recv()
            await peer.closed()

    async with m.scene("hello-unique"):
        bob = await m.connect("bob")
        second = await m.open("bob")
        await second.send(
            {"op": "hello", "args": {"name": "bob", "secret": m.secrets["bob"], "unique": True}}
        )
        await second.recv()
        m.blank()
        other = await m.open("bob")
        await other.send({"op": "hello", "args": {"name": "bob", "unique": True}})
        await other.recv()
        for peer in (bob, second, other):
            await peer.bye()

    async with m.scene("ping"):
        await erin.request("ping", rid=3)

    async with m.scene("result-frames"):
        await erin.request("ping", rid=3)
        m.blank()
        await erin.request("frobnicate", {}, rid="r-1")
        m.blank()
        await erin.request("ping", [], rid=2)

    async with m.scene("unreadable-frames"):
        await erin.send('{"op":"ping","rid":1')
        await erin.recv()
        m.blank()
        await erin.send({"op": "ping", "rid": {"a": 1}, "args": {}})
        await erin.recv()
        m.blank()
        await erin.send(b"\x00\x01")
        await erin.recv()

    async with m.scene("no-rid"):
        await erin.send({"op": "frobnicate", "args": {}})
        await erin.recv()
        await erin.send({"op": "ack", "args": {"ids": ["not-an-id"]}})
        await erin.recv()
        await erin.send({"op": "ping", "args": {}})
        await erin.request("ping", {}, rid="after")

    async with m.scene("frame-size"):
        body = "x" * 400_000
        await erin.send(
            {"op": "send", "rid": 1, "args": {"to": "alice", "body": body}},
            shown='{"op":"send","rid":1,"args":{"to":"alice","body":"xxxx…"}}   (a 400000-byte body)',
        )
        await erin.recv()
        body = "x" * 1_700_000
        await erin.send(
            {"op": "send", "rid": 2, "args": {"to": "alice", "body": body}},
            shown='{"op":"send","rid":2,"args":{"to":"alice","body":"xxxx…"}}'
            "   (a 1700000-byte body: the frame is over 1638400 bytes)",
        )
        await erin.closed()


@story("backlog")
async def backlog(m: Mesh) -> None:
    """§4.1 the envelope, §5.2 a returning peer, §5.6 a backlog, its acks, redelivery."""
    await m.join("alice")
    await m.join("bob", meta={"client": "python", "role": "reviewer"})
    await m.join("dana")
    sends = [
        {"to": "bob", "body": "ready for review: src/app.py"},
        {
            "to": "bob",
            "kind": "request",
            "priority": "urgent",
            "body": {"question": "is the retry loop safe?", "file": "src/app.py"},
        },
        {"to": ["bob", "dana", "nobody"], "body": "standup in 5"},
        {"to": "broadcast", "body": "main is green again"},
    ]
    for args in sends:
        await m.op("alice", "send", args, show=False)

    async with m.scene("hello-returning"):
        meta = {"client": "python", "cwd": "/home/me/review"}
        bob = await m.connect("bob", show=True, meta=meta, events=True)
        await bob.recv()  # peer_joined
        deliver = await bob.recv(show=False)
        count = len(deliver["messages"])
        m.record(Line("bob", "←", f'{{"op":"deliver","messages":[ ...{count} messages... ]}}'))

    async with m.scene("envelope"):
        request = next(env for env in deliver["messages"] if env["kind"] == "request")
        m.record(Line(None, "", frame=Pretty(request, inline_after=2)))

    async with m.scene("backlog-deliver"):
        m.record(Line(None, "", frame=Pretty(deliver, inline_after=3)))

    async with m.scene("backlog-ack"):
        ids = [env["id"] for env in deliver["messages"]]
        await bob.send({"op": "ack", "rid": 1, "args": {"ids": ids, "state": "delivered"}})
        await bob.recv()
        for _ in ids[1:]:
            await bob.recv(show=False)
        m.note(f"... {len(ids) - 1} more receipt events ...")
        await bob.recv()

    async with m.scene("redelivery"):
        alice = await m.connect("alice")
        await m.hand(
            alice,
            bob,
            {"to": "bob", "priority": "urgent", "body": "build 413 failed: test_retry"},
            state="delivered",
        )
        await bob.ws.close()  # no bye
        bob = await m.connect("bob", show=True)
        deliver = await bob.recv(show=False)
        shown = [brief_message(env) for env in deliver["messages"][:2]]
        rest = len(deliver["messages"]) - len(shown)
        more = f", ... {rest} more ..." if rest else ""
        m.record(Line("bob", "←", f'{{"op":"deliver","messages":[{",".join(shown)}{more}]}}'))
        await bob.bye()


@story("live")
async def live(m: Mesh) -> None:
    """§5.6 a live delivery, §7.1 a send to a live peer, §8.2 a receipt frame, §11.1 a
    reply, §7.6 await, §7.4 peers."""
    await m.join(
        "alice", meta={"client": "python", "machine": "devbox", "cwd": "/home/me/app", "role": "builder"}
    )
    await m.join("bob", meta={"client": "python", "role": "reviewer", "cwd": "/home/me/review"})
    await m.join("dana")
    await m.join("erin", meta={"client": "codex", "role": "docs"})
    alice = await m.connect("alice")
    bob = await m.connect("bob")

    async with m.scene("live-delivery", labels=True):
        sent = m.new_id()
        await alice.send(
            {"op": "send", "rid": 1, "args": {"id": sent, "to": "bob", "body": "can you look at src/app.py?"}}
        )
        await bob.recv()
        await bob.send({"op": "ack", "args": {"ids": [sent], "state": "delivered"}})
        await alice.recv()
        receipt = await alice.recv()
        await bob.send({"op": "ack", "args": {"ids": [sent], "state": "read"}})
        await alice.recv()
    async with m.scene("receipt-frame"):
        m.record(Line(None, "", frame=receipt))

    async with m.scene("send-live"):
        sent = m.new_id()
        await alice.send(
            {
                "op": "send",
                "rid": 2,
                "args": {"id": sent, "to": "bob", "body": "can you look at src/retry.py?"},
            }
        )
        await bob.recv(show=False)
        await bob.send({"op": "ack", "args": {"ids": [sent], "state": "delivered"}}, show=False)
        await alice.recv()
        await alice.recv()
        m.blank()
        await alice.send({"op": "send", "rid": 3, "args": {"to": "bob", "body": "ping, no ack this time"}})
        unacked = await bob.recv(show=False)
        m.later(2)  # receive_timeout
        await alice.recv()
        await bob.send(
            {"op": "ack", "args": {"ids": [e["id"] for e in unacked["messages"]], "state": "read"}},
            show=False,
        )
        await alice.recv(show=False)

    async with m.scene("reply-ws", labels=True):
        question = {"question": "is the retry loop safe?", "file": "src/app.py"}
        request = await m.hand(
            alice, bob, {"to": "bob", "kind": "request", "priority": "urgent", "body": question}
        )
        reply = m.new_id()
        await bob.send(
            {
                "op": "send",
                "rid": 2,
                "args": {
                    "id": reply,
                    "re": request,
                    "body": "yes: the retry loop is bounded",
                    "status": "PASS",
                },
            }
        )
        await alice.recv()
        await alice.recv()
        await alice.send({"op": "ack", "args": {"ids": [reply], "state": "delivered"}})
        await bob.recv()
        await bob.recv()
        await alice.send({"op": "ack", "args": {"ids": [reply], "state": "read"}}, show=False)
        await bob.recv(show=False)  # the read receipt

    async with m.scene("await-ws", labels=True):
        request = await m.hand(
            alice, bob, {"to": "bob", "kind": "request", "body": "can we ship the migration?"}
        )
        await alice.send({"op": "await", "rid": 2, "args": {"id": request, "timeout": 10}})
        await asyncio.sleep(1)
        await bob.send(
            {
                "op": "send",
                "rid": 3,
                "args": {
                    "id": m.new_id(),
                    "re": request,
                    "body": "no, the migration is missing",
                    "status": "BLOCKED",
                },
            }
        )
        await bob.recv()
        await bob.recv()
        await alice.recv()
        await alice.recv()
        await alice.request("inbox", {}, rid=4)

    async with m.scene("await-dropped", labels=True):
        request = await m.hand(alice, bob, {"to": "bob", "kind": "request", "body": "lunch at 1?"})
        await alice.send({"op": "await", "rid": 6, "args": {"id": request, "timeout": 30}})
        await alice.ws.close()
        m.note("(alice's connection closes)")
        await m.op("bob", "ping", show=False)  # the broker has seen alice go
        await bob.send(
            {
                "op": "send",
                "rid": 4,
                "args": {"id": m.new_id(), "re": request, "body": "yes, after lunch", "status": "PASS"},
            }
        )
        await bob.recv()
        alice = await m.connect("alice", show=True)
        await alice.recv()

    await alice.bye()
    await bob.bye()


@story("peers")
async def peers(m: Mesh) -> None:
    """§7.4 peers."""
    await m.join(
        "alice", meta={"client": "python", "machine": "devbox", "cwd": "/home/me/app", "role": "builder"}
    )
    await m.join("bob", meta={"client": "python", "role": "reviewer", "cwd": "/home/me/review"})
    await m.join("dana")
    await m.join("erin", meta={"client": "codex", "role": "docs"})
    alice = await m.connect("alice")
    bob = await m.connect("bob")
    for body in ("standup in 5", "main is green again"):
        await m.op("alice", "send", {"to": "dana", "body": body}, show=False)
    await m.hand(alice, bob, {"to": "bob", "body": "can you look at src/app.py?"}, state="delivered")
    await alice.request("set_status", {"status": "fixing retries in src/app.py"}, show=False)
    async with m.scene("peers"):
        await alice.request("peers", {}, rid=20)
    await alice.bye()
    await bob.bye()
    await pending(m)


async def pending(m: Mesh) -> None:
    """§5.5 ordering and §7.5 track while a send waits for its recipient (after
    `peers`, on its broker)."""
    await m.join("alice")
    await m.join("bob")
    alice = await m.connect("alice")
    bob = await m.connect("bob")
    async with m.scene("track-pending", labels=True):
        sent = m.new_id()
        await alice.send(
            {"op": "send", "rid": 17, "args": {"id": sent, "to": "bob", "body": "track me while pending"}}
        )
        await alice.send({"op": "track", "rid": 18, "args": {"id": sent}})
        await bob.recv()
        await alice.recv()
        m.later(2)  # receive_timeout
        await alice.recv()
        await bob.send({"op": "ack", "args": {"ids": [sent], "state": "delivered"}})
        await alice.recv()
        await alice.request("track", {"id": sent}, rid=19)
    # §5.5 shows alice's side of it, up to her send's answer
    m.derive("ordering", "track-pending", lambda i, line: line.who == "alice" and i <= 4)
    await alice.bye()
    await bob.bye()


@story("ttl")
async def ttl(m: Mesh) -> None:
    """§9.2 TTL, §9.1 a resend while the first send waits."""
    for name in ("alice", "bob", "dana", "erin"):
        await m.join(name)
    alice = await m.connect("alice")
    bob = await m.connect("bob", events=True)
    await bob.quiet(0.1)

    async with m.scene("ttl-expiry", labels=True):
        await alice.send(
            {
                "op": "send",
                "rid": 10,
                "args": {"to": "dana", "body": "are you there? (expires in 1 s)", "ttl": 1},
            }
        )
        await alice.recv()
        m.later(1)
        await alice.recv(timeout=3)
        await bob.recv()
        sent = alice.last_result["id"]
        await alice.request("track", {"id": sent}, rid=11)

    async with m.scene("ttl-delivered", labels=True):
        sent = m.new_id()
        await alice.send(
            {
                "op": "send",
                "rid": 12,
                "args": {"id": sent, "to": "bob", "body": "short-lived, but bob holds it", "ttl": 1},
            }
        )
        await bob.recv_until("deliver", show=False)
        await bob.send({"op": "ack", "args": {"ids": [sent], "state": "delivered"}}, show=False)
        await alice.recv()
        await alice.recv()
        m.later(2)
        await asyncio.sleep(2)
        m.note("(2 s later)")
        await alice.request("track", {"id": sent}, rid=13)
    await bob.quiet(0.1)

    await alice.bye()
    await bob.bye()


async def resend(m: Mesh) -> None:
    """§9.1 a resend while the first send waits for its recipient (after
    `json_and_ids`, on its broker)."""
    for name in ("alice", "bob", "dana", "erin"):
        await m.join(name)
    alice = await m.connect("alice")
    bob = await m.connect("bob")
    async with m.scene("resend-pending", labels=True):
        sent = m.new_id()
        args = {"id": sent, "to": "bob", "body": "deploy done"}
        await alice.send({"op": "send", "rid": 14, "args": args})
        await bob.recv_until("deliver", show=False)
        await m.op("dana", "send", {"id": sent, "to": "erin", "body": "mine"}, label=True, status_line=True)
        await alice.send({"op": "send", "rid": 15, "args": args})
        m.later(2)  # receive_timeout
        await alice.recv()
        await alice.recv()
        await alice.request("send", args, rid=16)
    await alice.bye()
    await bob.bye()


@story("http")
async def http_ops(m: Mesh) -> None:
    """§7 the ops over HTTP (send, ack, inbox, track, await, thread, set_status, log),
    §9.1 resends, §10 a broadcast, §11.1 replies, §16 an audit entry."""
    await m.join("alice", meta={"client": "cli", "role": "builder"})
    await m.join("bob", meta={"client": "python", "role": "reviewer", "cwd": "/home/me/review"})
    await m.join("dana")
    await m.join("erin", meta={"client": "codex", "role": "docs"})
    await m.op("alice", "set_status", {"refuse": ["erin"]}, show=False)

    async with m.scene("send-queued"):
        ready = m.new_id()
        for i in range(2):
            if i:
                m.blank()
            await m.op(
                "alice",
                "send",
                {"id": ready, "to": "bob", "body": "ready for review: src/app.py"},
                layout="full",
            )

    async with m.scene("send-request"):
        args = {
            "to": "bob",
            "kind": "request",
            "priority": "urgent",
            "body": {"question": "is the retry loop safe?", "file": "src/app.py"},
        }
        request = (await m.op("alice", "send", args, layout="full")).json["id"]

    async with m.scene("send-denied"):
        denied = (await m.op("alice", "send", {"to": "bobb", "body": "hi"}, layout="full")).json["id"]
        m.blank()
        await m.op("erin", "send", {"to": "alice", "body": "hello alice"}, layout="full")

    async with m.scene("send-list-denied"):
        nobody = await m.op("alice", "send", {"to": ["alice", "nobody"], "body": "hi"}, note="as alice")
        m.blank()
        await m.op("alice", "track", {"id": nobody.json["id"]})
        m.blank()
        await m.op("alice", "send", {"to": ["bobb", "nobody"], "body": "hi"})

    async with m.scene("send-refused"):
        await m.op("alice", "send", {"to": "alice", "body": "note to self"}, note="as alice")
        for args in (
            {"to": "Bob!", "body": "hi"},
            {"to": ["broadcast", "bob"], "body": "hi"},
            {"to": "bob", "body": "  "},
        ):
            m.blank()
            await m.op("alice", "send", args)
        m.blank()
        big = dumps({"to": "bob", "body": "x" * 262_145})
        await m.op("alice", "send", raw=big, shown_body="@big.json", note="body: 262145 x characters")

    async with m.scene("send-fanout"):
        standup_args = {"to": ["bob", "dana", "nobody"], "body": "standup in 5"}
        standup = (await m.op("alice", "send", standup_args)).json["id"]
        m.blank()
        green = (await m.op("alice", "send", {"to": "broadcast", "body": "main is green again"})).json["id"]
        m.blank()
        await m.op("alice", "send", {"to": "#builds", "body": "build 412 passed"})

    async with m.scene("send-errors"):
        for i, args in enumerate(
            [
                {"to": "bob", "from": "bob", "body": "hi"},
                {"to": "bob", "kind": "shout", "body": "hi"},
                {"to": "bob", "subject": "x", "body": "hi"},
                {"to": "bob", "thread": UNKNOWN_ID, "body": "hi"},
                {"body": "hi"},
                {"to": [], "body": "hi"},
                {"to": "bob", "body": "hi", "ttl": 0},
                {"to": "bob", "status": "PASS", "body": "done"},
                {"to": "bob", "kind": "reply", "body": "done"},
                {"id": "not-a-uuid", "to": "bob", "body": "hi"},
            ]
        ):
            if i:
                m.blank()
            await m.op("alice", "send", args)

    reply = (
        await m.op(
            "bob",
            "send",
            {"re": request, "body": "yes: the retry loop is bounded", "status": "PASS"},
            show=False,
        )
    ).json["id"]
    async with m.scene("thread"):
        await m.op("alice", "thread", {"id": request}, layout="full")
    async with m.scene("thread-close"):
        await m.op("bob", "thread", {"id": reply, "close": True, "limit": 0}, note="as bob")
        m.blank()
        await m.op("bob", "thread", {"id": reply, "close": True, "limit": 1}, note="as bob")
    async with m.scene("thread-access"):
        await m.op("dana", "thread", {"id": green}, note="as dana, a broadcast she received")
        m.blank()
        await m.op("erin", "thread", {"id": request}, note="as erin")
        m.blank()
        await m.op("alice", "thread", {"id": UNKNOWN_ID})
        m.blank()
        await m.op("alice", "thread", {"id": standup, "close": "yes"})
    async with m.scene("thread-reopen"):
        closing = await m.op(
            "alice", "send", {"to": "bob", "body": "closing this one right away"}, note="as alice"
        )
        m.blank()
        await m.op("alice", "thread", {"id": closing.json["id"], "close": True}, note="as alice")
        m.blank()
        await m.op("bob", "send", {"re": closing.json["id"], "body": "reopened"}, note="as bob")
        m.blank()
        await m.op("alice", "thread", {"id": closing.json["id"], "limit": 1}, note="as alice")

    async with m.scene("inbox"):
        await m.op("dana", "inbox", {"limit": 10}, layout="full")

    async with m.scene("ack"):
        await m.op("dana", "ack", {"ids": [standup, green], "state": "read"}, layout="full")
        m.blank()
        await m.op("dana", "ack", {"ids": [standup], "state": "delivered"})

    async with m.scene("inbox-after"):
        await m.op("dana", "inbox", {"limit": None})
        m.blank()
        await m.op("dana", "inbox", {"limit": 0})

    async with m.scene("ack"):
        lunch = (await m.op("alice", "send", {"to": "dana", "body": "lunch at 1?"}, show=False)).json["id"]
        m.blank()
        await m.op("dana", "ack", {"ids": [lunch], "state": None}, note="a queued copy")
        for state in ("answered", False, "", 0):
            m.blank()
            await m.op("dana", "ack", {"ids": [lunch], "state": state})
        m.blank()
        await m.op("dana", "ack", {"ids": standup})
        m.blank()
        await m.op("dana", "ack", {"ids": [standup, "not-an-id"], "state": "read"})

    versions = (
        await m.op(
            "alice", "send", {"to": "dana", "kind": "request", "body": "which Python versions?"}, show=False
        )
    ).json["id"]
    async with m.scene("await-http"):
        await m.op("alice", "await", {"id": versions, "timeout": 1}, layout="full")
        m.later(1)
    async with m.scene("reply-http"):
        await m.op("dana", "send", {"re": versions, "body": "3.11 and later"}, layout="full")
    async with m.scene("await-http"):
        m.blank()
        await m.op("alice", "await", {"id": versions, "timeout": 5})
        m.blank()
        await m.op("alice", "await", {"id": UNKNOWN_ID})
        m.blank()
        await m.op("alice", "await", {"id": versions, "timeout": 7200})

    async with m.scene("resend-expired"):
        expiring = m.new_id()
        args = {"id": expiring, "to": "erin", "body": "are you there? (expires in 1 s)", "ttl": 1}
        await m.op("alice", "send", args, note="as alice")
        m.blank()
        m.later(1)
        await m.until_receipt("alice", expiring, "expired")
        m.note("(a second later the copy has expired)", indent=8)
        await m.op("alice", "send", args, note="as alice")

    await m.op("bob", "inbox", show=False)
    async with m.scene("track"):
        await m.op("alice", "track", {"id": standup}, layout="full")
        for who, sent in [
            ("alice", versions),
            ("alice", expiring),
            ("alice", denied),
            ("dana", ready),
            ("alice", "nope"),
        ]:
            m.blank()
            await m.op(who, "track", {"id": sent}, note="as dana" if who == "dana" else None)

    async with m.scene("reply-errors"):
        await m.op("erin", "send", {"re": ready, "body": "me too"}, note="as erin")
        m.blank()
        await m.op("alice", "send", {"re": UNKNOWN_ID, "body": "?"})
        m.blank()
        await m.op("alice", "send", {"re": ready, "body": "also: src/retry.py"}, note="as alice, its sender")
        m.blank()
        await m.op("alice", "send", {"re": ready, "to": "bob", "body": "also: src/retry.py"})

    async with m.scene("broadcast-refused"):
        await m.op("erin", "send", {"to": "broadcast", "body": "docs build is back"}, note="as erin")

    async with m.scene("resend-received"):
        rebase = {"id": m.new_id(), "to": "bob", "body": "please rebase on main"}
        await m.op("alice", "send", rebase, note="as alice; bob offline")
        m.blank()
        inbox = await m.op("bob", "inbox", note="as bob: the message is now delivered", show_answer=False)
        mine = next(env for env in inbox.json["messages"] if env["id"] == rebase["id"])
        m.record(
            Line(
                None,
                "",
                '{"messages":[...,'
                + f'{{"id":{dumps(mine["id"])},"from":"alice","to":"bob",...,"body":{dumps(mine["body"])},...}}'
                + "]}",
            )
        )
        m.record(Line(None, "", f"HTTP {inbox.status}"))
        m.blank()
        await m.op("alice", "send", rebase, note="as alice, again")
        m.blank()
        again = {"id": m.new_id(), "to": "broadcast", "body": "main is green again"}
        await m.op("alice", "send", again, note="as alice")
        m.blank()
        await m.op("dana", "ack", {"ids": [again["id"]], "state": "read"}, note="as dana")
        m.blank()
        await m.op("alice", "send", again, note="as alice, again")

    async with m.scene("resend-list"):
        await m.op("alice", "send", {"id": standup, **standup_args}, note="as alice, a resend")

    async with m.scene("set-status-http"):
        await m.op("bob", "set_status", {"status": "reviewing PR 12", "role": "reviewer"}, layout="full")
        m.blank()
        await m.op("bob", "set_status", {"mood": "ok"})
        m.blank()
        await m.op("bob", "set_status", {"status": 42})

    async with m.scene("log"):
        await m.op("alice", "log", {"after": 0, "limit": 4}, layout="full")
        entries = (await m.op("alice", "log", {"limit": 100_000}, show=False)).json["entries"]
        m.blank()
        await m.op("alice", "log", {"after": entries[-1]["seq"] - 4, "limit": 4})
        m.blank()
        await m.op("alice", "log", {"limit": 0})

    async with m.scene("audit-send-denied"):
        entry = next(e for e in entries if e["event"] == "send_denied" and e["id"] == nobody.json["id"])
        m.record(Line(None, "", frame=entry))


@story("locks")
async def locks(m: Mesh) -> None:
    """§7.8 to §7.10 lock, unlock, locks."""
    for name in ("alice", "bob", "dana"):
        await m.join(name)
    async with m.scene("lock"):
        await m.op(
            "alice",
            "lock",
            {"resource": "/repo/src/app.py", "reason": "fixing retries", "ttl": 900},
            layout="full",
        )
        for who, args in [
            ("bob", {"resource": "/repo/src/*.py", "reason": "reformat"}),
            ("alice", {"resource": "/repo/src/./app.py", "ttl": 1200}),
            ("dana", {"resource": "/repo/lib/../src/app.py", "reason": "typo"}),
            ("bob", {"resource": "/repo/docs", "exclusive": False, "reason": "reading"}),
            ("dana", {"resource": "/repo/docs", "exclusive": False, "reason": "reading too"}),
            ("alice", {"resource": "/repo/docs/guide.md", "reason": "rewrite"}),
        ]:
            m.blank()
            await m.op(who, "lock", args, note=f"as {who}")
    async with m.scene("lock-folder"):
        args = {"resource": "/repo/v1.2/", "reason": "release notes", "ttl": None, "exclusive": None}
        await m.op("dana", "lock", args, note="as dana")
        m.blank()
        await m.op("alice", "lock", {"resource": "/repo/v1.2/notes.txt", "reason": "typo"}, note="as alice")
    async with m.scene("lock-errors"):
        for i, args in enumerate(
            [{"resource": "  "}, {"resource": "x", "ttl": 0.5}, {"resource": "x", "exclusive": "yes"}]
        ):
            if i:
                m.blank()
            await m.op("alice", "lock", args)
    async with m.scene("unlock"):
        await m.op("dana", "unlock", {"resource": "/repo/docs"}, layout="full")
        for who, resource in [("bob", "/repo/src/app.py"), ("dana", "/repo/v1.2"), ("dana", "/repo/v1.2/")]:
            m.blank()
            await m.op(who, "unlock", {"resource": resource}, note=f"as {who}")
    async with m.scene("locks"):
        await m.op("bob", "lock", {"resource": "deploy-staging", "reason": "deploying", "ttl": 1}, show=False)
        await m.op("alice", "locks", layout="full")
    m.later(2)
    await asyncio.sleep(2)
    async with m.scene("locks-later"):
        later = await m.op("alice", "locks", show=False)
        m.record(Line(None, "", frame=later.json))


@story("events")
async def events(m: Mesh) -> None:
    """§7.13 set_status over a WebSocket, §13 events."""
    await m.join(
        "alice", meta={"client": "python", "machine": "devbox", "cwd": "/home/me/app", "role": "builder"}
    )
    await m.join("bob")
    await m.join("dana")
    bob = await m.connect("bob", events=True)
    await bob.quiet(0.1)

    async with m.scene("receipt-events"):
        args = {"to": "bob", "kind": "request", "body": "is the cache warm?"}
        asking = asyncio.create_task(m.op("alice", "send", args, show=False))
        request = (await bob.recv_until("deliver", show=False))["messages"][0]["id"]
        await bob.send({"op": "ack", "args": {"ids": [request], "state": "read"}}, show=False)
        await bob.recv(show=False)  # the event of that receipt
        await asking
        await m.op("bob", "send", {"re": request, "body": "yes", "status": "PASS"}, show=False)
        await bob.recv()
        await m.op(
            "alice", "send", {"to": "dana", "body": "are you there? (expires in 1 s)", "ttl": 1}, show=False
        )
        m.later(1)
        await bob.recv(timeout=3)

    alice = await m.connect("alice")
    await alice.recv_until("deliver", show=False)  # bob's reply
    await bob.recv(show=False)  # peer_joined
    async with m.scene("set-status-ws"):
        args = {"status": "fixing retries in src/app.py", "refuse": ["erin"]}
        await alice.request("set_status", args, rid=19)
    async with m.scene("events"):
        await bob.recv()
        await alice.request(
            "lock", {"resource": "/repo/migrations/**", "reason": "schema change", "ttl": 60}, show=False
        )
        await bob.recv()
        await alice.bye()
        await bob.recv()
        await bob.recv()
        alice = await m.connect("alice")
        await bob.recv()
        await alice.request("lock", {"resource": "/repo/README.md", "ttl": 1}, show=False)
        await bob.recv()
        await alice.ws.close()
        await bob.recv()
        m.later(1)
        await bob.recv(timeout=4)
    m.derive("set-status-event", "events", lambda i, line: i == 0)  # §7.13: the set_status above
    await bob.bye()


@story("topics")
async def topics(m: Mesh) -> None:
    """§7.11 subscribe, §7.12 unsubscribe, §10 topics."""
    for name in ("alice", "bob", "dana", "erin"):
        await m.join(name)
    await m.op("alice", "send", {"to": "#builds", "body": "build 412 passed"}, show=False)
    bob = await m.connect("bob")

    async with m.scene("subscribe-ws"):
        await bob.request("subscribe", {"topic": "#builds", "from_start": True}, rid=4)
    async with m.scene("subscribe"):
        await m.op("dana", "subscribe", {"topic": "#builds"}, layout="full")
        for args in ({"topic": "builds"}, {}, {"topic": 5}, {"topic": "#Builds"}):
            m.blank()
            await m.op("dana", "subscribe", args)
    async with m.scene("subscribe-bad-flag"):
        await m.op("dana", "subscribe", {"topic": "#releases", "from_start": "yes"}, note="as dana")
        m.blank()
        await m.op("alice", "send", {"to": "#releases", "body": "1.4 is tagged"}, note="as alice")
        m.blank()
        await m.op("dana", "subscribe", {"topic": "#releases", "from_start": True}, note="as dana")

    alice = await m.connect("alice")
    async with m.scene("topic-send", labels=True):
        args = {"to": "#builds", "body": "build 413 failed: test_retry", "priority": "urgent"}
        await alice.request("send", args, rid=1)
        await bob.recv()

    async with m.scene("topic-refuse"):
        await m.op("alice", "send", {"to": "#deploys", "body": "staging is yours"}, note="as alice")
        m.blank()
        await m.op("bob", "send", {"to": "#deploys", "body": "deployed 1.4 to staging"}, note="as bob")
        m.blank()
        await m.op("erin", "set_status", {"refuse": ["alice"]}, note="as erin")
        m.blank()
        await m.op("erin", "subscribe", {"topic": "#deploys", "from_start": True}, note="as erin")
        m.blank()
        await m.op("erin", "inbox", note="as erin")
    await bob.recv_until("receipt", show=False)  # erin has bob's message

    async with m.scene("unsubscribe-ws"):
        await bob.request("unsubscribe", {"topic": "#builds"}, rid=5)
    async with m.scene("unsubscribe"):
        await m.op("bob", "unsubscribe", {"topic": None})
    await alice.bye()
    await bob.bye()


@story("person", env={"MESH_INBOUND": '["*<mallory=refuse"]'}, person=True)
async def person_ops(m: Mesh) -> None:
    """§7.16 held, §7.17 approve, §7.18 activity, §7.19 wake, §7.20 forget, §7.21
    resolve, §7.22 policy, §7.23 await_idle, §8.3 a held send."""
    for name in ("alice", "bob", "stale", "agent", "deployer", "builder"):
        await m.join(name)
    await m.person_login()

    async with m.scene("held-send"):
        held = await m.op("alice", "send", {"to": "bob", "body": "please rm -rf build"}, show=False)
        m.record(Line(None, "", frame=held.json))
    human = await m.connect("human", secret=None)
    async with m.scene("held"):
        await human.request("held", {}, rid=7)
    async with m.scene("approve"):
        await human.request("approve", {"ids": [held.json["id"]]}, rid=8)
        await human.request("approve", {"ids": [held.json["id"]]}, rid=9)

    for body in ("the build is red", "can you rebase?", "still there?"):
        await m.op("alice", "send", {"to": "stale", "body": body}, show=False)
    await m.op("stale", "lock", {"resource": "/repo/old-branch", "reason": "rebasing"}, show=False)
    async with m.scene("forget"):
        await human.request("forget", {"name": "stale", "dry_run": True}, rid=10)
        await human.request("forget", {"name": "stale"}, rid=11)

    await m.op("alice", "send", {"id": RESOLVE_ID, "to": "bob", "body": "see the diff"}, show=False)
    alice = await m.connect("alice")
    async with m.scene("resolve"):
        await alice.request("resolve", {"prefix": RESOLVE_ID[:13]}, rid=5)

    async with m.scene("activity"):
        await m.op("agent", "activity", {"state": "working"})
    await m.op("agent", "activity", {"state": "idle"}, show=False)
    async with m.scene("wake"):
        waking = asyncio.create_task(
            m.op(
                "agent", "wake", {"timeout": 600, "exclude": []}, note="bob sends 'ping' half a second later"
            )
        )
        await asyncio.sleep(0.5)
        await m.op("bob", "send", {"to": "agent", "body": "ping"}, show=False)
        await waking

    deployer = await m.connect("deployer")
    async with m.scene("policy"):
        await deployer.request("policy", {"default": "hold", "from": {"intern": "refuse"}}, rid=6)

    await m.op("builder", "activity", {"state": "working"}, show=False)
    async with m.scene("await-idle"):
        await alice.send({"op": "await_idle", "rid": 7, "args": {"name": "builder", "timeout": 60}})
        await asyncio.sleep(0.5)
        m.note("(builder's Stop hook runs half a second later)")
        await m.op("builder", "activity", {"state": "idle"}, show=False)
        await alice.recv()
    for peer in (human, alice, deployer):
        await peer.bye()


@story("pair")
async def pair(m: Mesh) -> None:
    """§7.24 pair: an invitation and its acceptance, a stop and its acknowledgement, as
    the two members' sessions see them."""
    for name in ("builder", "reviewer"):
        await m.join(name)
    builder = await m.connect("builder")
    reviewer = await m.connect("reviewer")
    async with m.scene("pair", labels=True):
        invite = {
            "action": "invite",
            "to": "reviewer",
            "role": "grip",
            "body": "the retry refactor in src/net",
        }
        await builder.request("pair", invite, rid=1)
        await reviewer.recv_until("deliver")
        await reviewer.request("pair", {"action": "accept"}, rid=1)
        await builder.recv_until("deliver")
        await builder.recv_until("receipt")  # the invitation answered: after the commit
    async with m.scene("pair-stop", labels=True):
        stop = {
            "action": "intercept",
            "urgent": True,
            "body": "that loop retries POSTs, which are not idempotent",
        }
        await reviewer.request("pair", stop, rid=2)
        await builder.recv_until("deliver")
        await builder.request("pair", {"action": "ack", "body": "retrying GETs only"}, rid=2)
        await reviewer.recv_until("deliver")
        await reviewer.recv_until("receipt")
    for peer in (builder, reviewer):
        await peer.bye()


@story("rate", env={"MESH_RATE_LIMIT": "1"})
async def rate(m: Mesh) -> None:
    """§7.1 a rate-limited sender."""
    await m.join("alice")
    await m.join("bob")
    alice = await m.connect("alice")
    # Unseen: on this fresh broker, the first send may wait for the screen's rules,
    # which load in the background while a dozen brokers start. Inside the scene, on a
    # busy machine, that wait came between alice's first send (whose token was already
    # taken) and her third, and refilled her bucket. Two seconds refill it again.
    await alice.send({"op": "send", "rid": 0, "args": {"to": "bob", "body": "warming up"}})
    await alice.recv()
    await asyncio.sleep(2.1)
    async with m.scene("send-rate-limited"):
        # all at once on one connection: the broker reads them one right after the
        # other, so no token comes back in between (curl after curl can take a second
        # on a busy machine)
        for i in range(1, 5):
            await alice.send({"op": "send", "rid": i, "args": {"to": "bob", "body": f"update {i}"}})
        for _ in range(4):
            await alice.recv()
    await alice.bye()
    await asyncio.sleep(1.1)  # a token for alice's next send
    await restart(m)


async def restart(m: Mesh) -> None:
    """§9.1 resends after a broker restart (after `rate`, on its broker)."""
    for name in ("alice", "bob", "dana"):
        await m.join(name)
    async with m.scene("resend-restart"):
        args = {"id": m.new_id(), "to": "bob", "body": "deploy done"}
        await m.op("alice", "send", args, note="as alice")
        m.blank()
        await m.restart()
        m.note("(the broker is stopped and started again)", indent=8)
        await m.op("bob", "set_status", {"refuse": ["alice"]}, note="as bob")
        m.blank()
        await m.op("alice", "send", args, note="as alice, three times")
        for _ in range(2):
            m.answer(await m.op("alice", "send", args, show=False))
        m.blank()
        m.note("(alice's next three sends, at once on a WebSocket)", indent=8)
        alice = await m.connect("alice")
        for i in range(1, 4):
            await alice.send({"op": "send", "rid": i, "args": {"to": "dana", "body": f"update {i}"}})
        for _ in range(3):
            await alice.recv()
        await alice.bye()
        m.blank()
        await m.op("dana", "send", {"id": args["id"], "to": "alice", "body": "mine"}, note="as dana")


def login_page_excerpt(text: str) -> str:
    """The start of the login page and its passphrase field, as `curl -i` shows them."""
    form = re.search(r'<form id="login">\s*(<input id="passphrase" type="password")', text)
    if not text.startswith("<!doctype html>") or form is None:
        return text[:200]
    return f'<!doctype html> … <form id="login">{form.group(1)} …'


@story("dashboard", person=True)
async def dashboard(m: Mesh) -> None:
    """§6.6 the dashboard: logging in, reading, acting, the feed."""
    await m.join("alice", meta={"client": "python", "role": "builder", "cwd": "/home/me/app"})
    await m.join("bob", meta={"client": "python", "role": "reviewer", "cwd": "/home/me/review"})
    await m.person_login()

    async with m.scene("dashboard-login"):
        page = await m.curl("/", method="GET", token=None, include=("Content-Type",))
        m.blank()
        m.text(login_page_excerpt(page.text))
        m.blank()
        login = await m.curl("/dashboard/v1/login", body={"passphrase": PASSPHRASE})
        code = login.json["code"]
        m.blank()
        headers = ("Location", "Cache-Control", "Content-Length", "Set-Cookie")
        redeemed = await m.curl(
            f"/login?code={code}",
            shown_path="/login?code=$CODE",
            method="GET",
            token=None,
            quote_url=True,
            include=headers,
        )
        cookie = redeemed.headers.get("Set-Cookie", "")
        m.names.token(cookie.split("=", 1)[1].split(";", 1)[0] if "=" in cookie else None, "dashboard-login")
        m.blank()
        await m.curl(
            f"/login?code={code}",
            shown_path="/login?code=$CODE",
            method="GET",
            token=None,
            quote_url=True,
            include=(),
            note="the same link again",
        )
        m.blank()
        await m.curl("/dashboard/v1/state", method="GET", quote_url=True, note="an agent's token alone")

    feed = await m.http_ws("/dashboard/v1/feed", "feed", person=True)
    async with m.scene("dashboard-feed"):
        await feed.recv()
        alice = await m.connect("alice")
        await feed.recv()
        bob = await m.connect("bob")
        await feed.recv()
        request, reply = m.new_id(), m.new_id()
        await alice.send(
            {
                "op": "send",
                "rid": 1,
                "args": {"id": request, "to": "bob", "kind": "request", "body": "is the retry loop safe?"},
            },
            show=False,
        )
        await feed.recv()
        await bob.recv(show=False)
        await bob.send({"op": "ack", "args": {"ids": [request], "state": "delivered"}}, show=False)
        await feed.recv()
        await alice.recv(show=False)  # the result
        await alice.recv(show=False)  # the receipt
        await bob.send(
            {"op": "send", "rid": 1, "args": {"id": reply, "re": request, "body": "yes", "status": "PASS"}},
            show=False,
        )
        await feed.recv()
        await alice.recv_until("deliver", show=False)
        await alice.send({"op": "ack", "args": {"ids": [reply], "state": "delivered"}}, show=False)
        await feed.recv()
        await alice.request(
            "lock", {"resource": "src/app.py", "reason": "fixing retries", "ttl": 60}, rid=2, show=False
        )
        await feed.recv()

    async with m.scene("dashboard-read"):
        for i, path in enumerate(
            (
                "/dashboard/v1/state?limit=1",
                "/dashboard/v1/messages?limit=1",
                "/dashboard/v1/search?q=retry",
                "/dashboard/v1/graph?window=300",
                "/dashboard/v1/threads",
            )
        ):
            if i:
                m.blank()
            await m.curl(path, method="GET", person=True, quote_url=True)

    async with m.scene("dashboard-act"):
        sent = await m.curl(
            "/dashboard/v1/send", body={"to": "bob", "body": "please run rm -rf build/"}, person=True
        )
        m.blank()
        await m.curl("/dashboard/v1/held", method="GET", person=True, quote_url=True)
        m.blank()
        await m.curl("/dashboard/v1/approve", body={"ids": [sent.json["id"]]}, person=True)
    for peer in (alice, bob):
        await peer.bye()
    await feed.ws.close()


# -- the document ------------------------------------------------------------------------
def blocks(document: str) -> dict[str, tuple[int, int, str]]:
    """Each marked block: name -> (first line, line after the last, indentation), the
    lines counted from 0, content only (not the fences)."""
    lines = document.split("\n")
    found: dict[str, tuple[int, int, str]] = {}
    for i, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        name = marker["name"]
        if name in found:
            raise ValueError(f"docs/protocol.md marks two examples {name!r}")
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if fence is None:
            raise ValueError(f"the marker of {name!r} is not followed by a code block")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"the code block of {name!r} does not end")
        found[name] = (i + 2, end, fence["indent"])
    return found


def rewrite(document: str, examples: dict[str, str]) -> tuple[str, list[str]]:
    """The document with every marked block replaced by its generated text, and the
    names of the blocks that changed. Raises `ValueError` when a marker names no
    example or an example has no marker."""
    found = blocks(document)
    if unknown := sorted(set(found) - set(examples)):
        raise ValueError(f"docs/protocol.md marks examples no scene writes: {', '.join(unknown)}")
    if unmarked := sorted(set(examples) - set(found)):
        raise ValueError(f"scenes whose example docs/protocol.md does not mark: {', '.join(unmarked)}")
    lines = document.split("\n")
    changed = []
    for name, (first, end, indent) in sorted(found.items(), key=lambda item: -item[1][0]):
        new = [indent + row if row else row for row in examples[name].rstrip("\n").split("\n")]
        if lines[first:end] != new:
            changed.append(name)
            lines[first:end] = new
    order = {name: found[name][0] for name in found}
    return "\n".join(lines), sorted(changed, key=order.__getitem__)


async def _play(root: Path) -> dict[str, str]:
    package = str(Path(sessionmesh.__file__).resolve().parents[1])
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (package, base.get("PYTHONPATH")) if p)

    meshes = {name: Mesh(name, root, {**base, **env}, Names()) for name, (_, env, _) in STORIES.items()}

    async def one(mesh: Mesh, fn: Story) -> dict[str, str]:
        await fn(mesh)
        return mesh.rendered()

    try:
        # every broker is up before any story begins: starting one is what costs
        async with asyncio.TaskGroup() as group:
            for name, (_, _, person) in STORIES.items():
                group.create_task(meshes[name].start(person=person))
        async with asyncio.TaskGroup() as group:  # the first story that fails stops the others
            tasks = [group.create_task(one(meshes[name], fn)) for name, (fn, _, _) in STORIES.items()]
        results = [task.result() for task in tasks]
    finally:
        await asyncio.gather(*(mesh.close() for mesh in meshes.values()), return_exceptions=True)
    examples: dict[str, str] = {}
    for done in results:
        examples.update(done)
    return examples


def generate() -> dict[str, str]:
    """Play every story against real brokers: example name -> block text."""
    with tempfile.TemporaryDirectory(prefix="mesh-examples-") as root:
        return asyncio.run(_play(Path(root)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if an example differs; change nothing")
    parser.add_argument("--diff", action="store_true", help="with --check: show the differences")
    args = parser.parse_args(argv)
    examples = generate()
    document = DOC.read_text()  # after the run: the document may have changed meanwhile
    new, changed = rewrite(document, examples)
    if args.check:
        if not changed:
            print(f"docs/protocol.md: all {len(blocks(document))} examples are up to date")
            return 0
        print("docs/protocol.md: these examples differ from a real broker:", ", ".join(changed))
        if args.diff:
            sys.stdout.writelines(
                difflib.unified_diff(
                    document.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    "protocol.md",
                    "generated",
                )
            )
        print("run: python docs/protocol_examples.py")
        return 1
    if new != document:
        DOC.write_text(new)
    print(
        f"docs/protocol.md: {len(changed)} example(s) rewritten"
        + (f": {', '.join(changed)}" if changed else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
