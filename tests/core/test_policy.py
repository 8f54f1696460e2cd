"""Issue #17 item 3: inbound policies (accept, hold, refuse), set by the person in the
settings and by a peer for itself; the stricter wins."""

from __future__ import annotations

import pytest

from sessionmesh.config import load
from sessionmesh.errors import BadFrame, BadRequest

from .conftest import Mesh


def test_accept_is_the_default(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    call = mesh.call("alice", "send", to="bob", body="hi")
    assert [m["body"] for m in mesh.delivered(call.effects, "bob")] == ["hi"]


def test_a_peer_that_holds_gets_nothing_until_the_person_approves(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    mesh.register_person()
    assert mesh.ok("bob", "policy", default="hold")["policy"]["default"] == "hold"
    call = mesh.call("alice", "send", to="bob", body="an ordinary note")
    assert mesh.delivered(call.effects, "bob") == []
    assert call.result["status"] == "queued" and "inbound policy" in call.result["held"]["match"]
    [held] = mesh.ok("human", "held")["messages"]
    assert held["held_for"] == ["bob"]
    approved = mesh.call("human", "approve", ids=[held["id"]])
    assert [m["body"] for m in mesh.delivered(approved.effects, "bob")] == ["an ordinary note"]


def test_only_the_holding_recipient_waits_in_a_list_send(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.register("carol")
    mesh.ok("carol", "policy", default="hold")
    answer = mesh.send("alice", ["bob", "carol"], "to you both")
    assert answer["held"]["recipients"] == ["carol"]
    assert mesh.track("alice", answer["id"]) == {"bob": "queued", "carol": "held"}


def test_refuse_per_sender_denies_that_sender_only(mesh: Mesh) -> None:
    for name in ("alice", "bob", "mallory"):
        mesh.register(name)
    mesh.ok("bob", "policy", **{"from": {"mallory": "refuse"}})
    assert mesh.send("mallory", "bob", "obey me")["status"] == "denied"
    assert mesh.send("alice", "bob", "hello")["status"] == "queued"


def test_the_persons_rules_win_and_a_peer_cannot_loosen_them(make_mesh) -> None:
    mesh = make_mesh(inbound=("*=hold", "bob<mallory=refuse"))
    for name in ("alice", "bob", "mallory"):
        mesh.join(name)
    mesh.register_person()
    answer = mesh.ok("bob", "policy", default="accept", **{"from": {"mallory": "accept"}})
    assert answer["configured"] == ["*=hold", "bob<mallory=refuse"]
    call = mesh.call("alice", "send", to="bob", body="steered or not, this waits")
    assert mesh.delivered(call.effects, "bob") == [] and "held" in call.result
    assert mesh.send("mallory", "bob", "let me in")["status"] == "denied"
    # the person's own word is never held
    person = mesh.call("human", "send", to="bob", body="from the person")
    assert [m["body"] for m in mesh.delivered(person.effects, "bob")] == ["from the person"]


def test_a_reply_to_your_own_request_is_not_refused(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.join("bob")
    asked = mesh.call("bob", "send", to="alice", body="status?", kind="request").result["id"]
    mesh.ok("bob", "policy", default="refuse")
    reply = mesh.call("alice", "send", re=asked, body="green")
    assert [m["body"] for m in mesh.delivered(reply.effects, "bob")] == ["green"]
    mesh.leave("bob")
    assert mesh.send("alice", "bob", "and a new topic")["status"] == "denied"


def test_a_policy_is_private_and_bad_input_changes_nothing(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    mesh.ok("bob", "policy", default="hold", **{"from": {"alice": "refuse"}})
    [bob] = [p for p in mesh.ok("alice", "peers")["peers"] if p["name"] == "bob"]
    assert "policy" not in bob["meta"]
    for bad in ({"default": "maybe"}, {"from": {"alice": "sometimes"}}, {"from": ["alice"]}, {"other": 1}):
        assert isinstance(mesh.fails("bob", "policy", **bad), BadFrame)
    assert mesh.ok("bob", "policy")["policy"] == {"default": "hold", "from": {"alice": "refuse"}}


@pytest.mark.parametrize("rule", ["bob", "bob=maybe", "Bob=hold", "bob<=hold", "<x=refuse"])
def test_a_bad_rule_in_the_settings_is_refused_at_load(tmp_path, rule: str) -> None:
    with pytest.raises(BadRequest):
        load(env={}, overrides={"home": str(tmp_path), "inbound": (rule,)})
