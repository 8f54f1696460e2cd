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
