"""`mesh channel bridge FILE '#topic'`: a JSONL file channel linked both ways to a topic,
run as a real subprocess against a real broker, watched by real peers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.bridges.channel import (
    ChannelBridge,
    ChannelFile,
    CursorFile,
    LineKind,
    channel_line,
    classify,
    topic_body,
)
from sessionmesh.client.aio import AsyncClient
from sessionmesh.client.sync import SyncClient
from sessionmesh.envelope import Envelope, Target, new_id
from sessionmesh.errors import Timeout
from tests.conftest import BrokerProcess, read_line, wait_until

TOPIC = "#team"


def append(path: Path, body: Any, author: str = "worker", **extra: Any) -> None:
    """What a file-channel writer does: one JSON line, one O_APPEND write."""
    line = json.dumps({"ts": "2026-05-15T02:38:00Z", "from": author, "body": body, **extra}) + "\n"
    append_raw(path, line.encode())


def append_raw(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def file_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Bridge:
    """The bridge as a user runs it, with its --json events on stdout."""

    def __init__(self, broker: BrokerProcess, path: Path, err: Path) -> None:
        self.broker = broker
        self.path = path
        self.err = err
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> dict[str, Any]:
        argv = [sys.executable, "-m", "sessionmesh", "channel", "bridge", str(self.path), TOPIC]
        argv += ["--as", "bridge", "--json", "--home", str(self.broker.home), "--url", self.broker.url]
        with open(self.err, "a") as err:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "MESH_AUTOSTART": "0"}
            )
        return self.event("ready", timeout=20)

    def event(self, name: str, timeout: float = 10) -> dict[str, Any]:
        """The next --json event called ``name`` (earlier ones are passed over)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {name!r} event; stderr: {self.err.read_text()}")
            event = json.loads(read_line(self.proc, remaining))
            if event["event"] == name:
                return event

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()  # type: ignore[union-attr]

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(15)
        self.proc.stdout.close()  # type: ignore[union-attr]
        return code


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    return tmp_path / "channel.jsonl"


@pytest.fixture
def bridge(broker_proc: BrokerProcess, channel: Path, tmp_path: Path) -> Iterator[Bridge]:
    b = Bridge(broker_proc, channel, tmp_path / "bridge.err")
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.stop()


@pytest.fixture
def peers(broker_proc: BrokerProcess) -> Iterator[tuple[SyncClient, SyncClient]]:
    """alice and carol, both subscribed to the topic before the bridge starts."""
    settings = broker_proc.settings()
    with SyncClient(settings, "alice") as alice, SyncClient(settings, "carol") as carol:
        for peer in (alice, carol):
            peer.subscribe(TOPIC)
        yield alice, carol


def until(peer: SyncClient, marker: str, timeout: float = 10.0) -> list[tuple[str, Any]]:
    """(sender, body) of everything ``peer`` receives, up to the message ending in ``marker``.

    Per sender, order is FIFO: anything the bridge sent before the marker is in the list.
    """
    got: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {marker!r} within {timeout}s; got {got}")
        try:
            env = peer.recv(timeout=remaining)
        except Timeout:
            continue
        got.append((env.sender, env.body))
        if isinstance(env.body, str) and env.body.endswith(marker):
            return got


def test_a_line_appended_to_the_file_reaches_the_topic_tagged_with_its_author(bridge, peers, channel):
    alice, _ = peers
    bridge.start()
    append(channel, "hello from the file\nwith a second line")
    assert until(alice, "second line") == [("bridge", "[worker] hello from the file\nwith a second line")]


def test_a_topic_message_becomes_one_json_line_and_is_not_echoed_back(bridge, peers, channel):
    alice, carol = peers
    bridge.start()
    sent = alice.send(TOPIC, 'ping "quoted"\nand a newline')
    assert sent.ok
    line = wait_until(
        lambda: [l for l in file_lines(channel) if l.get("id") == sent.id], 10, "the line in the file"
    )[0]
    assert (line["from"], line["body"], line["to"]) == ("alice", 'ping "quoted"\nand a newline', TOPIC)
    assert isinstance(line["ts"], str) and line["ts"].endswith("Z") and line["via"] == "bridge"
    # the bridge's own line was tailed like any other: had it gone back to the topic it
    # would reach carol (and alice) before the marker written after it
    append(channel, "marker-1")
    assert until(alice, "marker-1") == [("bridge", "[worker] marker-1")]
    assert until(carol, "marker-1") == [
        ("alice", 'ping "quoted"\nand a newline'),
        ("bridge", "[worker] marker-1"),
    ]
    assert [l.get("id") for l in file_lines(channel)].count(sent.id) == 1
    wait_until(lambda: alice.track(sent.id)["receipts"].get("bridge") == "read", 10, "read receipt")


def test_a_killed_bridge_resends_nothing_old_and_misses_nothing_new(bridge, peers, channel):
    alice, carol = peers
    bridge.start()
    append(channel, "one")
    before = alice.send(TOPIC, "to the file before the kill")
    assert until(carol, "one") == [("alice", "to the file before the kill"), ("bridge", "[worker] one")]
    wait_until(lambda: any(l.get("id") == before.id for l in file_lines(channel)), 10, "first line")
    bridge.kill()
    wait_until(
        lambda: all(p["presence"] != "online" for p in alice.peers() if p["name"] == "bridge"),
        10,
        "the broker sees the bridge gone",
    )

    append(channel, "two")
    append(channel, "three")
    down = alice.send(TOPIC, "sent while the bridge was down")
    assert down.status.value == "sent"
    bridge.start()
    append(channel, "four")

    assert until(alice, "four") == [
        ("bridge", "[worker] one"),
        ("bridge", "[worker] two"),
        ("bridge", "[worker] three"),
        ("bridge", "[worker] four"),
    ]
    got = until(carol, "four")
    assert [m for m in got if m[0] == "bridge"] == [
        ("bridge", "[worker] two"),
        ("bridge", "[worker] three"),
        ("bridge", "[worker] four"),
    ]
    assert [m for m in got if m[0] == "alice"] == [("alice", "sent while the bridge was down")]
    wait_until(lambda: any(l.get("id") == down.id for l in file_lines(channel)), 10, "line sent while down")
    ids = [l.get("id") for l in file_lines(channel)]
    assert ids.count(before.id) == 1 and ids.count(down.id) == 1


def test_a_truncated_file_is_read_again_from_the_start(bridge, peers, channel):
    alice, _ = peers
    bridge.start()
    append(channel, "old-1")
    append(channel, "old-2")
    assert [b for _, b in until(alice, "old-2")] == ["[worker] old-1", "[worker] old-2"]

    os.truncate(channel, 0)
    assert bridge.event("restarted")["why"] == "truncated"
    append(channel, "fresh-1")
    append(channel, "fresh-2")
    assert [b for _, b in until(alice, "fresh-2")] == ["[worker] fresh-1", "[worker] fresh-2"]
    assert "truncated" in bridge.err.read_text()


def test_a_file_rewritten_past_the_cursor_or_replaced_is_read_from_the_start(bridge, peers, channel):
    alice, _ = peers
    bridge.start()
    append(channel, "a")
    assert until(alice, "a") == [("bridge", "[worker] a")]
    # rewritten in place, longer than before: the file never looks shorter than the cursor
    rewritten = b"".join(
        json.dumps({"ts": "t", "from": "w2", "body": f"new-{i}"}).encode() + b"\n" for i in range(3)
    )
    fd = os.open(channel, os.O_WRONLY)
    try:
        os.pwrite(fd, rewritten, 0)
    finally:
        os.close(fd)
    assert [b for _, b in until(alice, "new-2")] == ["[w2] new-0", "[w2] new-1", "[w2] new-2"]
    assert bridge.event("restarted")["why"] == "rewritten"

    # rotation: the channel moves away and a new file takes its name
    os.rename(channel, channel.with_suffix(".old"))
    append(channel, "after rotation")
    assert until(alice, "after rotation") == [("bridge", "[worker] after rotation")]
    assert bridge.event("restarted")["why"] == "replaced"


def test_malformed_and_partial_lines_are_handled_without_killing_the_bridge(bridge, peers, channel):
    alice, _ = peers
    bridge.start()
    append_raw(channel, b"this is not json\n")
    append_raw(channel, b'{"from": "worker", "no": "body"}\n')
    append_raw(channel, b"[1, 2, 3]\n\n   \n")
    append(channel, {"structured": True})
    append_raw(channel, b'{"ts": "t", "from": "slow", "body": "written in ')
    assert bridge.event("to_topic")  # the structured line went out while the last one is partial
    append_raw(channel, b'two parts"}\n')
    append(channel, "end")
    assert until(alice, "end") == [
        ("bridge", '[worker] {"structured":true}'),
        ("bridge", "[slow] written in two parts"),
        ("bridge", "[worker] end"),
    ]
    assert bridge.proc.poll() is None
    assert bridge.err.read_text().count("skipping the malformed line") == 3


def test_lines_the_mesh_wrote_are_never_forwarded_and_a_sigterm_exits_zero(bridge, peers, channel):
    alice, carol = peers
    bridge.start()
    # a line another bridge wrote for the same topic, and one this bridge's name wrote
    append(channel, "from a twin bridge", author="dave", id="x", to=TOPIC, via="twin")
    append(channel, "from myself", author="erin", id="y", to="#other", via="bridge")
    append(channel, "from another topic's bridge", author="frank", to="#ops", via="ops-bridge")
    append(channel, "done")
    assert until(carol, "done") == [
        ("bridge", "[frank] from another topic's bridge"),
        ("bridge", "[worker] done"),
    ]
    assert bridge.stop() == 0


# -- in-process: the window between a send and the cursor save --------------------
class Crash(Exception):
    """Raised by the test where the bridge would die between a send and the cursor save."""


async def test_a_crash_between_send_and_cursor_save_resends_the_same_ids(broker, tmp_path):
    path = tmp_path / "crash.jsonl"
    channel = ChannelFile(str(path), max_line=broker.settings.max_frame_bytes)
    channel.ensure()
    cursors = CursorFile(broker.settings, str(path), TOPIC, "bridge")
    cursors.save(channel.open_cursor(at_end=True))
    async with (
        AsyncClient(broker.settings, "carol") as carol,
        AsyncClient(broker.settings, "bridge", client_kind="channel", auto_read=False) as client,
    ):
        await carol.subscribe(TOPIC)
        append(path, "exactly once")
        append(path, "and this one too")

        saves = 0
        real_save = cursors.save

        def save_then_die(cursor):
            nonlocal saves
            saves += 1
            if saves == 2:  # the first save journals the ids; the second would move on
                raise Crash
            real_save(cursor)

        cursors.save = save_then_die  # type: ignore[method-assign]
        first = ChannelBridge(client, channel, cursors, cursors.load(), TOPIC)
        with pytest.raises(Crash):
            await first.pump_file()
        cursors.save = real_save  # type: ignore[method-assign]

        again = ChannelBridge(client, channel, cursors, cursors.load(), TOPIC)
        assert again.cursor.pending and again.cursor.offset == 0
        assert await again.pump_file() == 2  # resent: the broker answers from what it stored
        append(path, "marker")
        assert await again.pump_file() == 1
        bodies = [(await carol.recv(timeout=5)).body for _ in range(3)]
        assert bodies == ["[worker] exactly once", "[worker] and this one too", "[worker] marker"]
        reloaded = cursors.load()
        assert reloaded is not None and reloaded.offset == path.stat().st_size and not reloaded.pending


class StubClient:
    """What `ChannelBridge` uses of a client when nothing goes to the topic."""

    name = "bridge"

    def __init__(self) -> None:
        self.read: list[str] = []

    def note_read(self, msg_id: str) -> None:
        self.read.append(msg_id)


async def test_a_redelivered_message_is_written_once_even_by_a_restarted_bridge(tmp_path):
    from sessionmesh.config import load

    settings = load(env={}, overrides={"home": str(tmp_path / "home")})
    path = tmp_path / "redeliver.jsonl"
    channel = ChannelFile(str(path), max_line=1024)
    channel.ensure()
    cursors = CursorFile(settings, str(path), TOPIC, "bridge")
    cursors.save(channel.open_cursor(at_end=True))
    env = Envelope(id=new_id(), sender="alice", to=Target(topic=TOPIC), body="once", ts=time.time())

    first = ChannelBridge(StubClient(), channel, cursors, cursors.load(), TOPIC)  # type: ignore[arg-type]
    assert first.write_message(env) and not first.write_message(env)
    # killed before its tail saw the line: the restarted bridge finds it in the file
    client = StubClient()
    again = ChannelBridge(client, channel, cursors, cursors.load(), TOPIC)  # type: ignore[arg-type]
    assert await again.pump_file() == 0
    assert not again.write_message(env) and client.read == [env.id]
    assert [l["id"] for l in file_lines(path)] == [env.id]


# -- the file tail, without a broker ------------------------------------------------
def test_the_tail_reads_complete_lines_and_restarts_when_the_file_changes_under_it(tmp_path):
    path = tmp_path / "tail.jsonl"
    append_raw(path, b"old\n")
    tail = ChannelFile(str(path), max_line=1024)
    cursor = tail.open_cursor(at_end=True)
    assert tail.read_new(cursor) == ([], None)

    append_raw(path, b"one\ntw")
    lines, why = tail.read_new(cursor)
    assert why is None and [l.raw for l in lines] == [b"one\n"] and lines[0].start == 4
    cursor.offset, cursor.fingerprint = lines[-1].end, lines[-1].fingerprint
    append_raw(path, b"o\n")
    assert [l.raw for l in tail.read_new(cursor)[0]] == [b"two\n"]
    cursor.offset = path.stat().st_size  # fingerprint now stale: as if the bytes changed

    append_raw(path, b"three\n")
    lines, why = tail.read_new(cursor)
    assert why == "rewritten" and lines[0].start == 0 and cursor.offset == 0

    os.truncate(path, 2)
    cursor.offset = 10
    assert tail.read_new(cursor)[1] == "truncated"

    os.rename(path, tmp_path / "rotated.jsonl")
    append_raw(path, b"new file\n")
    lines, why = tail.read_new(cursor)
    assert why == "replaced" and [l.raw for l in lines] == [b"new file\n"]
    assert (cursor.dev, cursor.ino) == (path.stat().st_dev, path.stat().st_ino)


def test_a_runaway_line_without_a_newline_is_given_up_not_waited_for_forever(tmp_path):
    path = tmp_path / "big.jsonl"
    append_raw(path, b"x" * 100)
    tail = ChannelFile(str(path), max_line=64)
    lines, _ = tail.read_new(tail.open_cursor(at_end=False))
    assert [len(l.raw) for l in lines] == [100]
    assert classify(lines[0].raw, name="bridge", topic=TOPIC).kind is LineKind.MALFORMED


# -- pure functions --------------------------------------------------------------------
def test_classify_tells_forward_echo_malformed_and_blank_apart():
    kw = {"name": "bridge", "topic": TOPIC}
    assert classify(b'{"from":"w","body":"hi"}\n', **kw).body == "[w] hi"
    assert classify(b'{"body":"anon"}\n', **kw).body == "anon"
    assert classify(b'{"from":"w","body":"x","via":"bridge","id":"i"}\n', **kw).kind is LineKind.ECHO
    assert classify(b'{"from":"w","body":"x","via":"b2","to":"#team"}\n', **kw).kind is LineKind.ECHO
    assert classify(b'{"from":"w","body":"x","via":"b2","to":"#ops"}\n', **kw).kind is LineKind.FORWARD
    assert classify(b'{"from":"w"}\n', **kw).kind is LineKind.MALFORMED
    assert classify(b"{nope\n", **kw).kind is LineKind.MALFORMED
    assert classify(b"NaN\n", **kw).kind is LineKind.MALFORMED
    assert classify(b"  \n", **kw).kind is LineKind.BLANK
    assert topic_body("w", [1, {"a": None}]) == '[w] [1,{"a":null}]'


def test_channel_line_is_one_line_of_the_file_convention():
    env = Envelope(
        id="0190c5d2-0000-7000-8000-000000000000",
        sender="alice",
        to=Target(topic=TOPIC),
        body="multi\nline",
        ts=1747276680.5,
    )
    raw = channel_line(env, via="bridge")
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    record = json.loads(raw)
    assert record == {
        "ts": "2025-05-15T02:38:00.500Z",
        "from": "alice",
        "body": "multi\nline",
        "id": env.id,
        "to": TOPIC,
        "via": "bridge",
    }
