"""The broker core, called directly: names, sending, fan-out, topics, presence, audit,
and what bad input does (SPEC §1-3)."""

from __future__ import annotations

from typing import Any

import pytest

from sessionmesh.core.broker import Core
from sessionmesh.core.state import Caller
from sessionmesh.envelope import new_id
from sessionmesh.errors import (
    BadFrame,
    BadSecret,
    Forbidden,
    Impersonation,
    InvalidName,
    UnknownMessage,
    UnknownOp,
)

from .conftest import Mesh, responses, result_of

# -- names and secrets ---------------------------------------------------------------


def test_first_join_issues_a_secret_and_a_rejoin_with_it_gets_the_same_name(mesh: Mesh) -> None:
    welcome, _ = mesh.connect("alice")
    assert welcome["name"] == "alice"
    assert isinstance(welcome["secret"], str) and len(welcome["secret"]) >= 16
    mesh.leave("alice")

    again, _ = mesh.connect("alice")
    assert again == {**again, "name": "alice", "secret": None}


def test_a_held_name_refuses_a_wrong_secret(mesh: Mesh) -> None:
    mesh.register("alice")
    with pytest.raises(BadSecret):
        mesh.connect("alice", "not-the-secret")
    with pytest.raises(BadSecret):
        mesh.core.authenticate("alice", None, mesh.now)
    assert mesh.core.online_names() == []


def test_a_name_is_reclaimed_with_its_secret_after_a_core_restart(mesh: Mesh) -> None:
    mesh.register("alice")
    restarted = Core(mesh.store, mesh.settings)
    assert restarted.authenticate("alice", mesh.secrets["alice"], mesh.now) == ("alice", None)
    with pytest.raises(BadSecret):
        restarted.authenticate("alice", "guess", mesh.now)


def test_a_second_connection_with_the_names_secret_attaches_to_the_same_agent(mesh: Mesh) -> None:
    mesh.join("alice")
    welcome, _ = mesh.core.connect(99, "alice", mesh.secrets["alice"], mesh.now)
    assert (welcome["name"], welcome["secret"], welcome["attachments"]) == ("alice", None, 2)
    assert mesh.core.online_names() == ["alice"]
    assert [e["event"] for e in mesh.audit() if e["event"].startswith("peer_")][-1] == "peer_attached"


def test_a_second_claimant_without_the_secret_is_refused(mesh: Mesh) -> None:
    mesh.join("alice")
    with pytest.raises(BadSecret):
        mesh.core.connect(99, "alice", "not-the-secret", mesh.now)
    assert mesh.core.online_names() == ["alice"]


def test_every_attachment_gets_the_push_and_the_others_learn_it_was_taken(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    _, _ = mesh.core.connect(99, "bob", mesh.secrets["bob"], mesh.now)
    call = mesh.call("alice", "send", to="bob", body="hello")
    delivers = [e for e in call.effects if getattr(e, "frame", {}).get("op") == "deliver"]
    assert sorted(e.conn for e in delivers) == sorted([mesh.conns["bob"], 99])
    msg_id = delivers[0].frame["messages"][0]["id"]
    effects = mesh.core.handle(Caller("bob", 99), "ack", {"ids": [msg_id], "state": "read"}, "r-x", mesh.now)
    taken = [e.conn for e in effects if getattr(e, "frame", {}).get("op") == "taken"]
    assert sorted(taken) == sorted([mesh.conns["bob"], 99])


def test_the_agent_stays_online_until_its_last_attachment_leaves(mesh: Mesh) -> None:
    mesh.join("watcher", events=True)
    mesh.join("alice")
    mesh.call("alice", "lock", resource="src/app.py")
    mesh.core.connect(99, "alice", mesh.secrets["alice"], mesh.now)
    effects = mesh.core.disconnect(99, mesh.now, graceful=True)
    assert mesh.core.online_names() == ["alice", "watcher"]
    assert not [e for e in effects if getattr(e, "frame", {}).get("event") == "peer_left"]
    assert [lease.holder for lease in mesh.store.leases()] == ["alice"]  # the agent's lock stays
    effects = mesh.leave("alice")
    assert [e.frame["event"] for e in effects if getattr(e, "frame", {}).get("op") == "event"][
        -1
    ] == "peer_left"
    assert mesh.store.leases() == []


def test_a_second_claimant_asking_for_a_unique_name_gets_name_2(mesh: Mesh) -> None:
    mesh.join("alice")
    assert mesh.join("alice", unique=True) == "alice#2"
    assert mesh.join("alice", unique=True) == "alice#3"
    assert mesh.core.online_names() == ["alice", "alice#2", "alice#3"]

    # alice#2 holds its own secret and reclaims its own name
    mesh.leave("alice#2")
    assert mesh.join("alice#2") == "alice#2"


def test_unique_claim_of_a_name_held_by_another_secret_gets_a_name_of_its_own(mesh: Mesh) -> None:
    """Issue #15: anyone could mint alice#2, which every peer reads as alice's session."""
    mesh.register("alice")
    welcome, _ = mesh.connect("alice", "wrong", unique=True)
    assert welcome["name"] == "alice-2"
    assert welcome["secret"] is not None


def test_name_hash_n_is_registered_only_with_the_base_names_secret(mesh: Mesh) -> None:
    mesh.register("alice")
    with pytest.raises(BadSecret):
        mesh.core.connect(98, "alice#7", None, mesh.now)
    with pytest.raises(BadSecret):
        mesh.core.connect(98, "nobody#2", None, mesh.now)
    welcome, _ = mesh.core.connect(98, "alice#7", mesh.secrets["alice"], mesh.now)
    assert welcome["name"] == "alice#7" and welcome["secret"] is not None


@pytest.mark.parametrize("name", ["Alice", "-alice", "", "a" * 65, "al ice", "al/ice", None, 7])
def test_invalid_names_cannot_join(mesh: Mesh, name: Any) -> None:
    with pytest.raises(InvalidName):
        mesh.core.connect(1, name, None, mesh.now)
    assert mesh.store.list_peers() == []


def test_the_longest_valid_name_can_join(mesh: Mesh) -> None:
    name = "a" + "b._-9" * 12 + "xyz"
    assert len(name) == 64
    assert mesh.join(name) == name


# -- from is the broker's -------------------------------------------------------------


def test_the_broker_sets_from_to_the_connected_name(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    call = mesh.call("alice", "send", to="bob", body="hello")
    [env] = mesh.delivered(call.effects, "bob")
    assert (env["from"], env["body"]) == ("alice", "hello")


def test_a_send_naming_another_sender_is_impersonation_and_stores_nothing(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    mesh.register("carol")
    before = mesh.snapshot()
    err = mesh.fails("alice", "send", to="bob", body="hi", **{"from": "carol"})
    assert isinstance(err, Impersonation)
    assert mesh.snapshot() == before


def test_a_send_naming_its_own_sender_is_allowed(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    answer = mesh.send("alice", "bob", **{"from": "alice"})
    assert answer["status"] == "queued"
    assert mesh.store.get_message(answer["id"]).sender == "alice"


# -- send statuses ---------------------------------------------------------------------


def test_send_to_a_live_peer_is_received_only_after_its_ack(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    call = mesh.call("alice", "send", to="bob", body="hello")
    [env] = mesh.delivered(call.effects, "bob")
    assert not call.answered

    effects = mesh.ack("bob", [env["id"]])
    answer = result_of(effects, call.reply_to)
    assert answer["status"] == "received"
    assert answer["statuses"] == {"bob": "received"}
    assert answer["recipients"] == 1


def test_send_to_a_live_peer_that_never_acks_answers_queued_after_the_receive_timeout(make_mesh: Any) -> None:
    mesh = make_mesh(receive_timeout=2.0)
    mesh.join("alice")
    mesh.join("bob")
    call = mesh.call("alice", "send", to="bob", body="hello")
    assert responses(mesh.advance(1.9), call.reply_to) == []
    answer = result_of(mesh.advance(0.1), call.reply_to)
    assert answer["status"] == "queued"
    assert mesh.store.queue_depths() == {"bob": 1}


def test_send_to_a_live_peer_that_drops_before_acking_answers_queued(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    call = mesh.call("alice", "send", to="bob", body="hello")
    effects = mesh.leave("bob", graceful=False)
    assert result_of(effects, call.reply_to)["status"] == "queued"


def test_send_to_a_known_offline_peer_is_queued_in_its_inbox(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    answer = mesh.send("alice", "bob", "later")
    assert answer["status"] == "queued"
    assert answer["statuses"] == {"bob": "queued"}
    assert [e.body for e in mesh.store.unread("bob", 10)] == ["later"]


def test_send_to_an_unknown_name_is_denied_with_a_did_you_mean_hint(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("backend")
    before = mesh.store.queue_depths()
    answer = mesh.send("alice", "bakend")
    assert answer["status"] == "denied"
    assert answer["reasons"]["bakend"]["code"] == "unknown_peer"
    assert "did you mean 'backend'" in answer["reasons"]["bakend"]["hint"]
    assert mesh.store.get_message(answer["id"]) is None
    assert mesh.store.queue_depths() == before


def test_send_to_a_peer_that_refuses_the_sender_is_denied(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob", refuse=["alice"])
    mesh.register("carol")
    answer = mesh.send("alice", "bob")
    assert answer["status"] == "denied"
    assert answer["reasons"]["bob"]["code"] == "forbidden"
    assert mesh.store.get_message(answer["id"]) is None
    assert mesh.send("carol", "bob")["status"] == "queued"


def test_the_refuse_list_is_not_shown_to_other_peers(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob", refuse=["alice"], role="reviewer")
    peers = {p["name"]: p for p in mesh.ok("alice", "peers")["peers"]}
    assert peers["bob"]["meta"] == {"role": "reviewer"}


def test_send_to_yourself_is_refused_and_not_stored(mesh: Mesh) -> None:
    mesh.join("alice")
    answer = mesh.send("alice", "alice")
    assert answer["status"] == "refused"
    assert answer["reason"]["code"] == "self_send"
    assert mesh.store.get_message(answer["id"]) is None


def test_an_oversize_body_is_refused_and_not_stored(make_mesh: Any) -> None:
    mesh = make_mesh(max_body_bytes=10)
    mesh.register("alice")
    mesh.register("bob")
    assert mesh.send("alice", "bob", "x" * 10)["status"] == "queued"
    answer = mesh.send("alice", "bob", "é" * 6)  # 12 bytes in UTF-8
    assert answer["status"] == "refused"
    assert answer["reason"]["code"] == "too_large"
    assert mesh.store.get_message(answer["id"]) is None
    assert mesh.store.queue_depths() == {"bob": 1}


@pytest.mark.parametrize("to", ["Bob", "bob!", "#", "#Topic", ["bob", "Nope"]])
def test_a_send_to_an_invalid_name_is_refused_and_stores_nothing(mesh: Mesh, to: Any) -> None:
    mesh.register("alice")
    mesh.register("bob")
    before = mesh.store.queue_depths()
    answer = mesh.send("alice", to)
    assert answer["status"] == "refused"
    assert answer["reason"]["code"] == "invalid_name"
    assert mesh.store.queue_depths() == before
    assert mesh.audit("message") == []


def test_sends_over_the_rate_limit_are_refused_until_tokens_refill(make_mesh: Any) -> None:
    mesh = make_mesh(rate_limit=1.0)  # burst of 2
    mesh.register("alice")
    mesh.register("bob")
    assert [mesh.send("alice", "bob")["status"] for _ in range(3)] == ["queued", "queued", "refused"]
    refused = mesh.send("alice", "bob")
    assert refused["reason"]["code"] == "rate_limited"
    assert mesh.store.get_message(refused["id"]) is None

    mesh.now += 1.0
    assert mesh.send("alice", "bob", id=refused["id"])["status"] == "queued"
    assert mesh.store.queue_depths() == {"bob": 3}


def test_the_rate_limit_is_per_sender(make_mesh: Any) -> None:
    mesh = make_mesh(rate_limit=1.0)
    for name in ("alice", "bob", "carol"):
        mesh.register(name)
    assert [mesh.send("alice", "carol")["status"] for _ in range(3)][-1] == "refused"
    assert mesh.send("bob", "carol")["status"] == "queued"


# -- idempotency -----------------------------------------------------------------------


def test_a_resend_with_the_same_id_answers_the_same_and_is_stored_once(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    msg_id = new_id()
    first = mesh.send("alice", "bob", "once", id=msg_id)
    second = mesh.send("alice", "bob", "once", id=msg_id)
    assert second == {**first, "duplicate": True}
    assert mesh.store.queue_depths() == {"bob": 1}
    assert len(mesh.audit("message")) == 1

    mesh.join("bob")
    assert [m["id"] for m in mesh.delivered(mesh.last_connect_effects, "bob")] == [msg_id]


def test_a_resend_while_the_first_waits_for_its_receipt_is_not_delivered_twice(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    msg_id = new_id()
    first = mesh.call("alice", "send", to="bob", body="once", id=msg_id)
    second = mesh.call("alice", "send", to="bob", body="once", id=msg_id)
    assert len(mesh.delivered(first.effects, "bob")) == 1
    assert second.effects == []

    effects = mesh.ack("bob", [msg_id])
    assert result_of(effects, first.reply_to)["status"] == "received"
    assert result_of(effects, second.reply_to)["status"] == "received"


def test_a_resend_after_the_receipt_answers_received_again(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    msg_id = new_id()
    mesh.call("alice", "send", to="bob", body="once", id=msg_id)
    mesh.ack("bob", [msg_id])
    again = mesh.call("alice", "send", to="bob", body="once", id=msg_id)
    assert again.result["status"] == "received"
    assert again.result["duplicate"] is True
    assert mesh.delivered(again.effects, "bob") == []


def test_another_sender_cannot_reuse_a_message_id(mesh: Mesh) -> None:
    for name in ("alice", "bob", "carol"):
        mesh.register(name)
    msg_id = mesh.send("alice", "bob", "mine")["id"]
    err = mesh.fails("carol", "send", to="bob", body="theirs", id=msg_id)
    assert isinstance(err, Forbidden)
    assert mesh.store.get_message(msg_id).body == "mine"


# -- fan-out ---------------------------------------------------------------------------


def test_broadcast_reaches_every_other_peer_and_counts_them(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    mesh.register("carol")
    call = mesh.call("alice", "send", to="broadcast", body="all hands")
    answer = call.result
    assert answer["status"] == "sent"
    assert answer["recipients"] == 2
    assert answer["statuses"] == {"bob": "queued", "carol": "queued"}
    assert [m["body"] for m in mesh.delivered(call.effects, "bob")] == ["all hands"]
    assert mesh.delivered(call.effects, "alice") == []
    assert mesh.store.queue_depths() == {"bob": 1, "carol": 1}


def test_broadcast_skips_peers_that_refuse_the_sender(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob", refuse=["alice"])
    mesh.register("carol")
    answer = mesh.send("alice", "broadcast")
    assert answer["recipients"] == 1
    assert mesh.store.queue_depths() == {"carol": 1}


def test_multicast_answers_sent_with_a_status_per_name(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.register("carol", refuse=["alice"])
    answer = mesh.send("alice", ["bob", "carol", "ghost", "alice"])
    assert answer["status"] == "sent"
    assert answer["recipients"] == 1
    assert answer["statuses"] == {"bob": "queued", "carol": "denied", "ghost": "denied", "alice": "refused"}
    assert answer["reasons"]["carol"]["code"] == "forbidden"
    assert answer["reasons"]["ghost"]["code"] == "unknown_peer"
    assert answer["reasons"]["alice"]["code"] == "self_send"
    assert mesh.store.queue_depths() == {"bob": 1}


def test_multicast_names_a_repeated_recipient_once(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    mesh.register("carol")
    answer = mesh.send("alice", ["bob", "carol", "bob"])
    assert answer["recipients"] == 2
    assert mesh.store.queue_depths() == {"bob": 1, "carol": 1}


# -- topics ----------------------------------------------------------------------------


def test_a_topic_message_reaches_its_subscribers_but_not_its_sender(mesh: Mesh) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        mesh.join(name)
    for name in ("alice", "bob", "carol"):
        assert mesh.ok(name, "subscribe", topic="#build") == {"topic": "#build", "catch_up": 0}
    call = mesh.call("alice", "send", to="#build", body="green")
    assert call.result["status"] == "sent"
    assert call.result["recipients"] == 2
    assert [m["to"] for m in mesh.delivered(call.effects, "bob")] == ["#build"]
    assert mesh.delivered(call.effects, "carol") != []
    assert mesh.delivered(call.effects, "alice") == []
    assert mesh.delivered(call.effects, "dave") == []


def test_subscribing_from_now_skips_earlier_topic_messages(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.join("bob")
    mesh.send("alice", "#build", "before")
    call = mesh.call("bob", "subscribe", topic="#build")
    assert call.result["catch_up"] == 0
    assert mesh.delivered(call.effects, "bob") == []
    mesh.send("alice", "#build", "after")
    assert [e.body for e in mesh.store.unread("bob", 10)] == ["after"]


def test_subscribing_from_start_catches_up_on_earlier_topic_messages_once(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.join("bob")
    mesh.send("alice", "#build", "one")
    mesh.send("alice", "#build", "two")
    mesh.send("bob", "#build", "bob's own")
    mesh.send("alice", "#other", "elsewhere")

    call = mesh.call("bob", "subscribe", topic="#build", from_start=True)
    assert call.result["catch_up"] == 2
    assert [m["body"] for m in mesh.delivered(call.effects, "bob")] == ["one", "two"]
    assert [e.body for e in mesh.store.unread("bob", 10)] == ["one", "two"]

    again = mesh.call("bob", "subscribe", topic="#build", from_start=True)
    assert again.result["catch_up"] == 0
    assert mesh.store.queue_depths() == {"bob": 2}


def test_catch_up_leaves_out_expired_topic_messages(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    mesh.send("alice", "#build", "short", ttl=5)
    mesh.send("alice", "#build", "long")
    mesh.now += 5
    assert mesh.ok("bob", "subscribe", topic="#build", from_start=True)["catch_up"] == 1
    assert [e.body for e in mesh.store.unread("bob", 10)] == ["long"]


def test_an_unsubscribed_peer_gets_no_more_topic_messages(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    mesh.ok("bob", "subscribe", topic="#build")
    assert mesh.ok("bob", "unsubscribe", topic="#build") == {"topic": "#build"}
    answer = mesh.send("alice", "#build", "anyone?")
    assert answer["recipients"] == 0
    assert mesh.store.queue_depths() == {}


# -- presence --------------------------------------------------------------------------


def presence(mesh: Mesh, asker: str = "watcher") -> dict[str, str]:
    return {p["name"]: p["presence"] for p in mesh.ok(asker, "peers")["peers"]}


def test_presence_is_online_then_away_then_offline(make_mesh: Any) -> None:
    mesh = make_mesh(away_window=300.0)
    mesh.join("watcher")
    mesh.join("alice")
    assert presence(mesh)["alice"] == "online"
    mesh.leave("alice")
    mesh.now += 299
    assert presence(mesh)["alice"] == "away"
    mesh.now += 1
    assert presence(mesh)["alice"] == "offline"


def test_a_one_shot_call_counts_as_being_seen(make_mesh: Any) -> None:
    mesh = make_mesh(away_window=300.0)
    mesh.join("watcher")
    mesh.register("alice")
    mesh.now += 1000
    assert presence(mesh)["alice"] == "offline"
    mesh.ok("alice", "ping")
    assert presence(mesh)["alice"] == "away"


def test_peers_lists_meta_connection_time_and_unread_count(mesh: Mesh) -> None:
    mesh.join("alice", client="codex", role="grip")
    mesh.register("bob")
    mesh.send("alice", "bob")
    mesh.send("alice", "bob")
    peers = {p["name"]: p for p in mesh.ok("alice", "peers")["peers"]}
    assert peers["alice"]["meta"] == {"client": "codex", "role": "grip"}
    assert peers["alice"]["connected_since"] == mesh.now
    assert peers["bob"]["connected_since"] is None
    assert (peers["alice"]["unread"], peers["bob"]["unread"]) == (0, 2)


def test_set_status_updates_meta_that_peers_see(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    result = mesh.ok("alice", "set_status", status="refactoring auth")
    assert result["meta"] == {"status": "refactoring auth"}
    peers = {p["name"]: p for p in mesh.ok("bob", "peers")["peers"]}
    assert peers["alice"]["meta"]["status"] == "refactoring auth"
    assert mesh.store.get_peer("alice").meta == {"status": "refactoring auth"}


def test_watchers_see_join_and_leave_events(mesh: Mesh) -> None:
    mesh.join("watcher", events=True)
    mesh.join("quiet")
    mesh.connect("alice")
    joined = mesh.frames(mesh.last_connect_effects, "watcher", "event")
    assert [(f["event"], f["name"], f["presence"]) for f in joined] == [("peer_joined", "alice", "online")]
    assert mesh.frames(mesh.last_connect_effects, "quiet") == []

    left = mesh.frames(mesh.leave("alice"), "watcher", "event")
    assert [(f["event"], f["name"], f["graceful"]) for f in left] == [("peer_left", "alice", True)]


# -- audit -----------------------------------------------------------------------------


def test_the_audit_log_records_messages_without_their_bodies(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    answer = mesh.send("alice", "bob", "secret plans")
    [entry] = mesh.audit("message")
    assert entry["id"] == answer["id"]
    assert (entry["from"], entry["to"], entry["recipients"]) == ("alice", "bob", ["bob"])
    assert "body" not in entry
    assert "secret plans" not in repr(mesh.audit())


def test_the_audit_log_keeps_bodies_when_configured(make_mesh: Any) -> None:
    mesh = make_mesh(audit_bodies=True)
    mesh.register("alice")
    mesh.register("bob")
    mesh.send("alice", "bob", "secret plans")
    [entry] = mesh.audit("message")
    assert entry["body"] == "secret plans"


def test_the_audit_log_records_denied_and_refused_sends(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.send("alice", "ghost")
    mesh.send("alice", "alice")
    assert [e["to"] for e in mesh.audit("send_denied")] == ["ghost"]
    assert [e["code"] for e in mesh.audit("send_refused")] == ["self_send"]


def test_log_pages_through_the_audit_log(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    for _ in range(3):
        mesh.send("alice", "bob")
    everything = mesh.ok("alice", "log")["entries"]
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    page = mesh.ok("alice", "log", after=2, limit=2)["entries"]
    assert page == everything[2:4]


# -- bad input -------------------------------------------------------------------------

BAD_CALLS: list[tuple[Any, Any, type]] = [
    ("send", ["not", "an", "object"], BadFrame),
    ("send", None, BadFrame),
    ("nope", {}, UnknownOp),
    (42, {}, UnknownOp),
    ("send", {"to": 42, "body": "x"}, BadFrame),
    ("send", {"to": [], "body": "x"}, BadFrame),
    ("send", {"body": "x"}, BadFrame),
    ("send", {"to": "bob", "id": "not-a-uuid"}, BadFrame),
    ("send", {"to": "bob", "id": 12}, BadFrame),
    ("send", {"to": "bob", "kind": "shout"}, BadFrame),
    ("send", {"to": "bob", "priority": "high"}, BadFrame),
    ("send", {"to": "bob", "ttl": -1}, BadFrame),
    ("send", {"to": "bob", "ttl": True}, BadFrame),
    ("send", {"to": "bob", "ttl": "1h"}, BadFrame),
    ("send", {"to": "bob", "colour": "red"}, BadFrame),
    ("send", {"to": "bob", "status": "PASS"}, BadFrame),
    ("send", {"to": "bob", "kind": "reply"}, BadFrame),
    ("send", {"to": "bob", "re": "not-a-uuid"}, BadFrame),
    ("ack", {"ids": "abc"}, BadFrame),
    ("ack", {"ids": [1, 2]}, BadFrame),
    ("ack", {"ids": [], "state": "answered"}, BadFrame),
    ("ack", {"ids": [], "state": "eaten"}, BadFrame),
    ("inbox", {"limit": 0}, BadFrame),
    ("inbox", {"limit": True}, BadFrame),
    ("inbox", {"limit": "5"}, BadFrame),
    ("track", {}, BadFrame),
    ("track", {"id": "abc"}, BadFrame),
    ("await", {"id": None}, BadFrame),
    ("thread", {"id": 5}, BadFrame),
    ("lock", {"resource": ""}, BadFrame),
    ("lock", {"resource": "   "}, BadFrame),
    ("lock", {"resource": ["a"]}, BadFrame),
    ("lock", {"resource": "src", "ttl": 0}, BadFrame),
    ("lock", {"resource": "src", "exclusive": "yes"}, BadFrame),
    ("lock", {"resource": "src", "reason": 5}, BadFrame),
    ("unlock", {"resource": None}, BadFrame),
    ("subscribe", {"topic": "build"}, BadFrame),
    ("subscribe", {"topic": "#Build"}, InvalidName),
    ("unsubscribe", {}, BadFrame),
    ("set_status", {"mood": "happy"}, BadFrame),
    ("set_status", {"status": 5}, BadFrame),
    ("set_status", {"status": "x" * 2001}, BadFrame),
    ("set_status", {"refuse": "carol"}, BadFrame),
    ("log", {"after": -1}, BadFrame),
    ("log", {"limit": 0}, BadFrame),
]


@pytest.mark.parametrize(("op", "args", "error"), BAD_CALLS)
def test_bad_input_answers_a_typed_error_and_changes_nothing(
    mesh: Mesh, op: Any, args: Any, error: type
) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.send("alice", "bob", "existing")
    mesh.ok("alice", "lock", resource="src")
    before = mesh.snapshot()
    err = mesh.fails("alice", op, args)
    assert type(err) is error
    assert err.message
    assert mesh.snapshot() == before


def test_an_unknown_op_lists_the_ops_in_its_hint(mesh: Mesh) -> None:
    mesh.register("alice")
    err = mesh.fails("alice", "sned", {})
    assert isinstance(err, UnknownOp)
    assert "send" in (err.hint or "")


def test_track_of_an_unknown_id_is_unknown_message(mesh: Mesh) -> None:
    mesh.register("alice")
    assert isinstance(mesh.fails("alice", "track", id=new_id()), UnknownMessage)


def test_track_by_a_bystander_is_forbidden(mesh: Mesh) -> None:
    for name in ("alice", "bob", "carol"):
        mesh.register(name)
    msg_id = mesh.send("alice", "bob")["id"]
    assert isinstance(mesh.fails("carol", "track", id=msg_id), Forbidden)
    assert mesh.ok("bob", "track", id=msg_id)["from"] == "alice"


def test_a_thread_call_with_a_bad_limit_does_not_close_the_thread(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob")["id"]
    before = mesh.snapshot()
    err = mesh.fails("alice", "thread", id=msg_id, close=True, limit=0)
    assert isinstance(err, BadFrame)
    assert mesh.snapshot() == before
    assert mesh.ok("alice", "thread", id=msg_id)["state"] == "open"


def test_a_refuse_list_set_later_denies_from_then_on(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    assert mesh.send("alice", "bob")["status"] == "queued"
    mesh.ok("bob", "set_status", refuse=["alice"])
    assert mesh.send("alice", "bob")["status"] == "denied"
    assert mesh.store.queue_depths() == {"bob": 1}


def test_a_join_with_bad_meta_is_refused_and_registers_nothing(mesh: Mesh) -> None:
    before = mesh.snapshot()
    with pytest.raises(BadFrame):
        mesh.core.connect(1, "alice", None, mesh.now, meta={"refuse": "bob"})
    assert mesh.snapshot() == before
    assert mesh.core.online_names() == []


def test_the_name_broadcast_cannot_be_claimed(mesh: Mesh) -> None:
    with pytest.raises(InvalidName):
        mesh.core.connect(1, "broadcast", None, mesh.now)


def test_a_list_send_that_reaches_nobody_is_denied_and_not_stored(mesh: Mesh) -> None:
    mesh.register("alice")
    before = mesh.snapshot()["_messages"]
    answer = mesh.send("alice", ["nobody", "noone"], "hello?")
    assert answer["status"] == "denied" and answer["recipients"] == 0
    assert answer["statuses"] == {"nobody": "denied", "noone": "denied"}
    assert mesh.snapshot()["_messages"] == before


def test_boolean_options_must_be_booleans(mesh: Mesh) -> None:
    mesh.register("alice")
    assert type(mesh.fails("alice", "subscribe", topic="#ci", from_start="yes")).__name__ == "BadFrame"
    assert type(mesh.fails("alice", "lock", resource="x", exclusive="no")).__name__ == "BadFrame"
    assert type(mesh.fails("alice", "subscribe")).__name__ == "BadFrame"


def test_a_resend_after_a_restart_is_a_duplicate_even_when_rate_limited(make_mesh) -> None:
    mesh = make_mesh(rate_limit=1.0)
    mesh.register("alice")
    mesh.register("bob")
    first = mesh.send("alice", "bob", "once")
    restarted = Mesh(mesh.settings, mesh.store)  # a new core on the same store
    restarted.secrets = mesh.secrets
    for _ in range(3):  # more than the bucket holds: duplicates are not rate limited
        again = restarted.send("alice", "bob", "once", id=first["id"])
        assert again["duplicate"] and again["status"] == "queued"
    assert restarted.ok("alice", "track", id=first["id"])["status"] == "queued"
