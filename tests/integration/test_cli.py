"""The `mesh` command as a user runs it: JSON shapes, exit codes, watch, ask, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import mesh_cmd, read_line


@pytest.fixture
def env(broker_proc):
    return {**os.environ, "MESH_HOME": str(broker_proc.home), "MESH_AUTOSTART": "0"}


def _json(proc: subprocess.CompletedProcess[str]):
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def test_send_json_maps_each_recipient_to_its_status_and_denied_exits_3(env):
    assert mesh_cmd("join", "bob", env=env).returncode == 0
    sent = mesh_cmd("send", "--as", "alice", "bob", "hello", "--json", env=env)
    assert sent.returncode == 0
    out = _json(sent)
    assert out["statuses"] == {"bob": "queued"} and out["status"] == "queued" and out["id"]
    denied = mesh_cmd("send", "--as", "alice", "bobb", "hello", "--json", env=env)
    assert denied.returncode == 3
    assert _json(denied)["statuses"] == {"bobb": "denied"}
    assert "did you mean 'bob'" in json.dumps(_json(denied)["reasons"])


def test_self_send_and_oversize_are_refused_with_exit_4(env):
    me = mesh_cmd("send", "--as", "alice", "alice", "hi", env=env)
    assert me.returncode == 4 and "yourself" in me.stderr
    big = mesh_cmd("send", "--as", "alice", "bob", "-", "--json", env=env, input="x" * (300 * 1024))
    assert big.returncode == 4
    assert _json(big)["reason"]["code"] == "too_large"


def test_inbox_json_is_an_array_and_marks_read_so_track_shows_it(env):
    mesh_cmd("join", "bob", env=env)
    sent = _json(mesh_cmd("send", "--as", "alice", "bob", "please", "look", "--json", env=env))
    inbox = mesh_cmd("inbox", "--as", "bob", "--json", env=env)
    messages = _json(inbox)
    assert [m["body"] for m in messages] == ["please look"] and messages[0]["from"] == "alice"
    assert _json(mesh_cmd("inbox", "--as", "bob", "--json", env=env)) == []
    track = _json(mesh_cmd("track", "--as", "alice", sent["id"], "--json", env=env))
    assert track["id"] == sent["id"] and track["receipts"] == {"bob": "read"}


def test_broadcast_json_says_sent_with_a_recipient_count(env):
    for name in ("bob", "carol"):
        mesh_cmd("join", name, env=env)
    out = _json(mesh_cmd("broadcast", "--as", "alice", "deploy", "freeze", "--json", env=env))
    assert out["status"] == "sent" and out["recipients"] == 2


def test_peers_and_locks_print_arrays_and_a_conflict_exits_7(env, tmp_path):
    target = tmp_path / "src" / "app.py"
    target.parent.mkdir()
    target.write_text("x")
    got = mesh_cmd("lock", "--as", "alice", str(target), "--reason", "refactor", "--json", env=env)
    assert got.returncode == 0 and _json(got)["outcome"] == "granted"
    clash = mesh_cmd("lock", "--as", "bob", str(tmp_path / "src" / "*.py"), "--json", env=env)
    assert clash.returncode == 7
    assert _json(clash)["holder"] == "alice" and _json(clash)["lease"]["reason"] == "refactor"
    locks = _json(mesh_cmd("locks", "--as", "bob", "--json", env=env))
    assert [(l["resource"], l["holder"]) for l in locks] == [(str(target), "alice")]
    peers = _json(mesh_cmd("peers", "--json", env=env))
    assert {p["name"] for p in peers} >= {"alice", "bob"}
    assert mesh_cmd("unlock", "--as", "alice", str(target), env=env).returncode == 0
    assert _json(mesh_cmd("locks", "--as", "bob", "--json", env=env)) == []


def test_watch_prints_one_envelope_per_line_as_messages_arrive(env):
    watch = subprocess.Popen(
        [sys.executable, "-m", "sessionmesh", "watch", "--as", "bob", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        # the watcher is online once the broker lists bob as online
        from tests.conftest import wait_until

        wait_until(
            lambda: any(
                p["name"] == "bob" and p["presence"] == "online"
                for p in _json(mesh_cmd("peers", "--json", env=env))
            ),
            15,
            "bob online",
        )
        first = _json(mesh_cmd("send", "--as", "alice", "bob", "one", "--json", env=env))
        assert first["status"] == "received"
        mesh_cmd("send", "--as", "alice", "bob", "two", env=env)
        lines = [json.loads(read_line(watch, 10)) for _ in range(2)]
        assert [(l["from"], l["body"]) for l in lines] == [("alice", "one"), ("alice", "two")]
        assert lines[0]["id"] == first["id"]
    finally:
        watch.terminate()
        watch.wait(10)
        watch.stdout.close()


def test_ask_waits_for_the_reply_and_exits_by_its_end_state(env):
    mesh_cmd("join", "bob", env=env)
    ask = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sessionmesh",
            "ask",
            "--as",
            "alice",
            "bob",
            "ship it?",
            "--timeout",
            "20",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        from tests.conftest import wait_until

        request = wait_until(
            lambda: _json(mesh_cmd("inbox", "--as", "bob", "--json", env=env)), 15, "request"
        )
        assert request[0]["kind"] == "request"
        reply = mesh_cmd(
            "reply", "--as", "bob", request[0]["id"], "half done", "--status", "PARTIAL", env=env
        )
        assert reply.returncode == 0
        out, err = ask.communicate(timeout=20)
    finally:
        if ask.poll() is None:
            ask.kill()
            ask.communicate()
    assert ask.returncode == 10, err
    result = json.loads(out)
    assert result["reply"]["status"] == "PARTIAL" and result["reply"]["re"] == request[0]["id"]
    thread = _json(mesh_cmd("thread", "--as", "alice", request[0]["id"], "--json", env=env))
    assert thread["state"] == "answered" and thread["turns"] == 2


def test_await_times_out_with_exit_5(env):
    mesh_cmd("join", "bob", env=env)
    sent = _json(mesh_cmd("send", "--as", "alice", "bob", "anyone?", "--json", env=env))
    waited = mesh_cmd("await", "--as", "alice", sent["id"], "--timeout", "0.3", env=env)
    assert waited.returncode == 5 and "no reply" in waited.stderr


def test_log_exports_jsonl_without_bodies(env):
    mesh_cmd("join", "bob", env=env)
    mesh_cmd("send", "--as", "alice", "bob", "secret plans", env=env)
    out = mesh_cmd("log", "--as", "alice", "--json", env=env)
    entries = [json.loads(line) for line in out.stdout.splitlines()]
    messages = [e for e in entries if e["event"] == "message"]
    assert len(messages) == 1 and "body" not in messages[0]
    assert "secret plans" not in out.stdout


def test_no_broker_and_no_autostart_exits_6(tmp_path):
    env = {**os.environ, "MESH_HOME": str(tmp_path / "empty"), "MESH_AUTOSTART": "0"}
    out = mesh_cmd("join", "alice", env=env)
    assert out.returncode == 6 and "no broker" in out.stderr


def test_demo_exits_zero_shows_statuses_and_leaves_nothing_behind():
    out = mesh_cmd("demo", "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    statuses = {e["status"] for e in events if e.get("event") == "send"}
    assert {"received", "queued", "denied"} <= statuses
    receipts = {e["state"] for e in events if e.get("event") == "receipt"}
    assert {"delivered", "read", "answered"} <= receipts
    outcomes = [e["outcome"] for e in events if e.get("event") == "lock"]
    assert outcomes == ["granted", "conflict", "granted"]
    home = events[0]["say"].split("temporary home ")[1].rstrip(")")
    assert not os.path.exists(home)
