"""Issue #16, "the first ten minutes": commands that only read register no one;
`mesh forget` removes a stale peer, as the person's decision."""

from __future__ import annotations

import json
from typing import Any

from sessionmesh.person import write_credential

from ..conftest import PASSPHRASE, BrokerProcess, mesh_cmd, person_cmd


def _names(broker: BrokerProcess) -> set[str]:
    out = mesh_cmd("peers", "--json", env=broker.env)
    assert out.returncode == 0, out.stderr
    return {p["name"] for p in json.loads(out.stdout)}


def _send(broker: BrokerProcess, sender: str, to: str, body: str) -> dict[str, Any]:
    out = mesh_cmd("send", "--as", sender, "--json", to, body, env=broker.env)
    return dict(json.loads(out.stdout))


def test_read_only_commands_register_no_one(broker_proc: BrokerProcess, tmp_path) -> None:
    env = {**broker_proc.env}
    env.pop("MESH_NAME", None)
    assert mesh_cmd("join", "alice", env=env).returncode == 0
    sent = _send(broker_proc, "alice", "alice-2", "x")  # denied: nobody is alice-2
    assert sent["status"] == "denied"
    for argv in (["peers"], ["locks"], ["log"], ["status"], ["peers", "--json"], ["locks", "--json"]):
        out = mesh_cmd(*argv, env=env)
        assert out.returncode == 0, (argv, out.stderr)
    for argv in (["track", sent["id"]], ["thread", sent["id"]], ["peers", "--as", "stranger"]):
        out = mesh_cmd(*argv, env=env)
        assert out.returncode != 0 and "mesh join" in out.stderr, (argv, out.stderr)
    assert _names(broker_proc) == {"alice"}


def test_forget_removes_an_offline_peer_and_its_mail_after_saying_how_much(
    broker_proc: BrokerProcess,
) -> None:
    env = broker_proc.env
    write_credential(broker_proc.settings(), PASSPHRASE)
    for name in ("alice", "stale"):
        assert mesh_cmd("join", name, env=env).returncode == 0
    ids = [_send(broker_proc, "alice", "stale", f"note {i}")["id"] for i in range(3)]
    assert mesh_cmd("lock", "--as", "stale", "docs/", env=env).returncode == 0
    # not an agent's decision, and not from a shell without a terminal
    out = mesh_cmd("forget", "--as", "alice", "stale", env=env)
    assert out.returncode != 0 and "not_approver" in out.stderr
    out = mesh_cmd("forget", "stale", env=env)
    assert out.returncode != 0 and "needs_terminal" in out.stderr
    # the person is told what goes, and may say no
    declined = person_cmd("forget", "stale", answers=[PASSPHRASE, "n"], env=env)
    assert declined.status != 0 and "3 unread" in declined.output and "1 lease" in declined.output
    assert "stale" in _names(broker_proc)
    done = person_cmd("forget", "stale", answers=[PASSPHRASE, "y"], env=env)
    assert done.status == 0, done.output
    assert "stale" not in _names(broker_proc)
    assert not (broker_proc.home / "secrets" / "stale").exists()
    for msg_id in ids:
        track = json.loads(mesh_cmd("track", "--as", "alice", "--json", msg_id, env=env).stdout)
        assert track["receipts"] == {"stale": "rejected"}
    assert json.loads(mesh_cmd("locks", "--json", env=env).stdout) == []
    assert _send(broker_proc, "alice", "stale", "still there?")["status"] == "denied"
    log = [json.loads(line) for line in mesh_cmd("log", "--json", env=env).stdout.splitlines()]
    [entry] = [e for e in log if e["event"] == "peer_forgotten"]
    assert (entry["name"], entry["unread"], entry["by"]) == ("stale", 3, "human")


def test_forget_refuses_an_online_peer_and_an_unknown_one(broker_proc: BrokerProcess) -> None:
    from sessionmesh.client.sync import SyncClient

    env = broker_proc.env
    write_credential(broker_proc.settings(), PASSPHRASE)
    with SyncClient(broker_proc.settings(), "busy"):
        run = person_cmd("forget", "busy", "--yes", answers=[PASSPHRASE], env=env)
        assert run.status != 0 and "online" in run.output
    run = person_cmd("forget", "nobody", "--yes", answers=[PASSPHRASE], env=env)
    assert run.status != 0 and "no peer named 'nobody'" in run.output


def test_watch_leaves_nothing_unread_when_the_broker_dies_twice(broker_proc: BrokerProcess) -> None:
    """Issue #16: after a reconnect `mesh watch` acknowledged what it had already
    printed as delivered, never read; `mesh inbox` showed 35 of 1,200 again."""
    import subprocess
    import sys
    import threading

    from sessionmesh.client.sync import SyncClient

    from ..conftest import wait_until

    env = {**broker_proc.env}
    assert mesh_cmd("join", "bob", env=env).returncode == 0
    watch = subprocess.Popen(
        [sys.executable, "-m", "sessionmesh", "watch", "--as", "bob", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    printed: set[str] = set()

    def read() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            printed.add(json.loads(line)["id"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: "bob" in _online(broker_proc), 15, "the watcher online")
        sent: list[str] = []

        def send() -> None:  # found through discovery: the broker comes back on a new port
            with SyncClient(broker_proc.settings(url=None), "alice") as alice:
                sent.extend(alice.send("bob", f"m{i}").id for i in range(1000))

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        for at in (300, 600):  # mid-stream: read acks are on their way when it dies
            wait_until(lambda: len(printed) >= at, 30, f"{at} printed")  # noqa: B023
            broker_proc.kill()
            broker_proc.start()
        sender.join(timeout=60)
        assert not sender.is_alive()
        wait_until(lambda: printed >= set(sent), 30, "every message printed")
        wait_until(
            lambda: json.loads(mesh_cmd("inbox", "--as", "bob", "--peek", "--json", env=env).stdout) == [],
            15,
            "nothing left unread",
        )
        assert len(sent) == 1000 and printed == set(sent)
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=10)
        assert watch.stdout is not None
        watch.stdout.close()


def _online(broker: BrokerProcess) -> set[str]:
    out = mesh_cmd("peers", "--json", env=broker.env)
    return (
        {p["name"] for p in json.loads(out.stdout or "[]") if p["presence"] == "online"}
        if out.returncode == 0
        else set()
    )


def test_mesh_up_takes_a_free_port_when_its_own_is_taken_and_port_n_says_why(mesh_home) -> None:
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "MESH_HOME": str(mesh_home), "MESH_PORT": str(port)}
        try:
            up = mesh_cmd("up", env=env)
            assert up.returncode == 0, up.stderr
            assert f"port {port} is taken" in up.stdout
            info = json.loads((mesh_home / "broker.json").read_text())
            assert not info["url"].endswith(f":{port}") and info["url"] in up.stdout
        finally:
            assert mesh_cmd("down", env=env).returncode == 0
        failed = mesh_cmd("up", "--port", str(port), env=env)
        assert failed.returncode == 6
        assert "address already in use" in failed.stderr and "--port 0" in failed.stderr
