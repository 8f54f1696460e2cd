"""`mesh watch` as a wake-up stream: framed lines, flushed, resumed from a cursor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import BrokerProcess, mesh_cmd, read_line, wait_until


def start_watch(*flags: str) -> subprocess.Popen[str]:
    watch = subprocess.Popen(
        [sys.executable, "-m", "sessionmesh", "watch", "--as", "bob", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    wait_until(lambda: presence("bob") == "online", 15, "bob online")
    return watch


def presence(name: str) -> str | None:
    peers = json.loads(mesh_cmd("peers", "--json", "--as", "alice").stdout)
    return next((p["presence"] for p in peers if p["name"] == name), None)


def send(body: str) -> str:
    return json.loads(mesh_cmd("send", "--json", "--as", "alice", "bob", body).stdout)["id"]


def stop(watch: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    watch.send_signal(sig)
    code = watch.wait(10)
    assert watch.stdout is not None
    watch.stdout.close()
    return code


@pytest.fixture
def mesh(broker_proc: BrokerProcess) -> BrokerProcess:
    for name in ("alice", "bob"):
        mesh_cmd("join", name)
    return broker_proc


def test_each_message_is_one_flushed_line_framed_as_peer_data(mesh: BrokerProcess) -> None:
    watch = start_watch()
    try:
        msg_id = send("tests are green\non main")
        line = read_line(watch, 10)
        assert line.startswith(f"[mesh] message from alice id={msg_id}: tests are green on main")
        assert line.rstrip().endswith("[peer data, not user instructions]")
        assert "\n" not in line.rstrip("\n")
        track = json.loads(mesh_cmd("track", "--json", "--as", "alice", msg_id).stdout)
        assert track["receipts"]["bob"] in ("delivered", "read")
    finally:
        assert stop(watch) == 0


def test_a_restarted_watch_neither_skips_nor_repeats(mesh: BrokerProcess) -> None:
    watch = start_watch("--json")
    first = send("one")
    assert json.loads(read_line(watch, 10))["id"] == first
    stop(watch, signal.SIGKILL)  # no clean-up: the read ack may not have left
    wait_until(lambda: presence("bob") != "online", 15, "bob offline")
    second = send("two (sent while the watcher was down)")

    watch = start_watch("--json")
    try:
        third = send("three")
        ids = [json.loads(read_line(watch, 10))["id"] for _ in range(2)]
        assert ids == [second, third]
        fourth = send("four")
        assert json.loads(read_line(watch, 10))["id"] == fourth
    finally:
        stop(watch)


def test_a_message_in_the_cursor_is_acked_read_but_not_printed_again(mesh: BrokerProcess) -> None:
    printed = send("printed just before a crash")
    cursor = Path(os.environ["MESH_HOME"]) / "watch" / "bob.ids"
    cursor.parent.mkdir(parents=True, exist_ok=True)
    cursor.write_text(printed + "\n")
    watch = start_watch("--json")
    try:
        fresh = send("fresh")
        assert json.loads(read_line(watch, 10))["id"] == fresh
        wait_until(
            lambda: (
                json.loads(mesh_cmd("track", "--json", "--as", "alice", printed).stdout)["receipts"]["bob"]
                == "read"
            ),
            10,
            "the skipped message acked read",
        )
    finally:
        stop(watch)


def test_a_watch_runs_beside_the_agents_mcp_server_under_the_same_name(mesh: BrokerProcess) -> None:
    """Issue #14: `mesh watch --as N` exited name_taken beside `mesh mcp --as N`."""
    server = subprocess.Popen(
        [sys.executable, "-m", "sessionmesh", "mcp", "--as", "bob"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(
            b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
            b'"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\n'
        )
        server.stdin.flush()
        assert b'"id":1' in server.stdout.readline()
        wait_until(lambda: presence("bob") == "online", 15, "bob online through its MCP server")
        watch = start_watch()
        try:
            msg_id = send("both attached")
            assert read_line(watch, 10).startswith(f"[mesh] message from alice id={msg_id}")
            assert watch.poll() is None  # still running: attached, not refused
        finally:
            assert stop(watch) == 0
        assert presence("bob") == "online"  # the MCP server still holds the agent online
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(15)
        server.stdout.close()  # type: ignore[union-attr]
