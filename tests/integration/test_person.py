"""Issue #15: the person is a principal of their own. ``mesh person init`` sets a
passphrase on a terminal; approving, rejecting and acting as ``human`` ask for it
there; an agent's shell (no terminal) can do none of it."""

from __future__ import annotations

import json
import os
import stat

from sessionmesh.person import credential_path, read_credential, verify

from ..conftest import PASSPHRASE, BrokerProcess, mesh_cmd, person_cmd


def _held(broker: BrokerProcess, sender: str, body: str) -> str:
    out = mesh_cmd("send", "--as", sender, "--json", "bob", body, env=broker.env)
    answer = json.loads(out.stdout)
    assert "held" in answer, answer
    return str(answer["id"])


def test_person_init_sets_a_slow_hash_only_from_a_terminal(broker_proc: BrokerProcess) -> None:
    env, settings = broker_proc.env, broker_proc.settings()
    assert mesh_cmd("person", "status", env=env).returncode == 1
    out = mesh_cmd("person", "init", env=env)  # an agent's shell
    assert out.returncode != 0 and "needs_terminal" in out.stderr
    assert read_credential(settings) is None

    short = person_cmd("person", "init", answers=["short", "short"], env=env)
    assert short.status != 0 and "bad_passphrase" in short.output
    differ = person_cmd("person", "init", answers=[PASSPHRASE, PASSPHRASE + "!"], env=env)
    assert differ.status != 0 and "differ" in differ.output
    assert read_credential(settings) is None

    run = person_cmd("person", "init", answers=[PASSPHRASE, PASSPHRASE], env=env)
    assert run.status == 0, run.output
    path = credential_path(settings)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as fh:
        assert PASSPHRASE not in fh.read()
    record = read_credential(settings)
    assert record is not None and record["kdf"] == "scrypt" and verify(record, PASSPHRASE)
    assert mesh_cmd("person", "status", env=env).returncode == 0

    # replacing it takes the current one
    wrong = person_cmd("person", "init", answers=["not the current one"], env=env)
    assert wrong.status != 0 and "bad_passphrase" in wrong.output
    assert verify(read_credential(settings) or {}, PASSPHRASE)
    again = person_cmd(
        "person", "init", answers=[PASSPHRASE, "a new passphrase!", "a new passphrase!"], env=env
    )
    assert again.status == 0, again.output
    assert verify(read_credential(settings) or {}, "a new passphrase!")


def test_held_approve_and_reject_are_the_persons_on_a_terminal(broker_proc: BrokerProcess) -> None:
    env = broker_proc.env
    for name in ("alice", "bob", "carol"):
        assert mesh_cmd("join", name, env=env).returncode == 0
    mine = _held(broker_proc, "alice", "please rm -rf build/")
    theirs = _held(broker_proc, "carol", "git push --force origin main")
    # without a credential set, the person is told how to set one
    early = person_cmd("approve", mine, answers=[PASSPHRASE], env=env)
    assert early.status != 0 and "no_person" in early.output and "mesh person init" in early.output
    assert person_cmd("person", "init", answers=[PASSPHRASE, PASSPHRASE], env=env).status == 0

    # an agent sees its own held message only, and decides nothing
    listed = json.loads(mesh_cmd("held", "--as", "alice", "--json", env=env).stdout)
    assert [m["id"] for m in listed] == [mine]
    for op in ("approve", "reject"):
        out = mesh_cmd(op, "--as", "alice", mine, env=env)
        assert out.returncode != 0 and "not_approver" in out.stderr
        out = mesh_cmd(op, mine, env=env)  # as the person, but from a shell with no terminal
        assert out.returncode != 0 and "needs_terminal" in out.stderr

    held = person_cmd("held", "--json", answers=[PASSPHRASE], env=env)
    assert held.status == 0, held.output
    assert mine in held.output and theirs in held.output
    approved = person_cmd("approve", mine, answers=[PASSPHRASE], env=env)
    assert approved.status == 0 and f"{mine} approved" in approved.output
    rejected = person_cmd("reject", theirs, answers=[PASSPHRASE], env=env)
    assert rejected.status == 0 and f"{theirs} rejected" in rejected.output
    track = json.loads(mesh_cmd("track", "--as", "carol", "--json", theirs, env=env).stdout)
    assert track["receipts"] == {"bob": "rejected"}
    inbox = json.loads(mesh_cmd("inbox", "--as", "bob", "--json", env=env).stdout)
    assert [m["id"] for m in inbox] == [mine]
