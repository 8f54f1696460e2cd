"""Peers of other brokers behind links: routing, statuses, receipts, presence."""

from __future__ import annotations

from sessionmesh.core.effects import Push
from tests.core.conftest import T0, Mesh, responses

LINK = -1


def attach(mesh: Mesh, name: str = "laptop:bob", *, online: bool = True, conn: int = LINK) -> list:
    effects = mesh.core.attach_remote(
        conn, name, mesh.now, meta={"machine": "laptop"}, created_at=T0, online=online, since=T0, last_seen=T0
    )
    mesh.conns[name] = conn
    return effects


def pushed(effects: list, conn: int = LINK, op: str = "deliver") -> list[dict]:
    return [e.frame for e in effects if isinstance(e, Push) and e.conn == conn and e.frame["op"] == op]


def test_a_send_to_an_online_remote_peer_goes_down_its_link_and_waits_for_its_receipt(mesh: Mesh) -> None:
    mesh.join("alice")
    attach(mesh)
    call = mesh.call("alice", "send", to="laptop:bob", body="hi")
    assert not call.answered
    [frame] = pushed(call.effects)
    msg_id = frame["messages"][0]["id"]
    assert frame["messages"][0]["from"] == "alice"
    effects = mesh.ack("laptop:bob", [msg_id])
    assert responses(effects, call.reply_to)[0].result["status"] == "received"
    assert mesh.track("alice", msg_id) == {"laptop:bob": "delivered"}


def test_a_released_copy_answers_queued_at_once_and_stays_queued(mesh: Mesh) -> None:
    mesh.join("alice")
    attach(mesh)
    call = mesh.call("alice", "send", to="laptop:bob", body="hi")
    msg_id = pushed(call.effects)[0]["messages"][0]["id"]
    effects = mesh.core.release(LINK, [msg_id], mesh.now)
    assert responses(effects, call.reply_to)[0].result["status"] == "queued"
    assert mesh.track("alice", msg_id) == {"laptop:bob": "queued"}


def test_a_send_to_an_offline_remote_peer_is_forwarded_and_answers_queued(mesh: Mesh) -> None:
    mesh.join("alice")
    attach(mesh, online=False)
    call = mesh.call("alice", "send", to="laptop:bob", body="hi")
    assert call.result["status"] == "queued"
    assert len(pushed(call.effects)) == 1  # its broker keeps it until bob is back


def test_an_unknown_remote_name_is_denied(mesh: Mesh) -> None:
    mesh.join("alice")
    attach(mesh)
    assert mesh.send("alice", "laptop:nobody")["status"] == "denied"


def test_a_remote_peer_s_unconfirmed_backlog_goes_out_when_its_link_is_attached(mesh: Mesh) -> None:
    mesh.join("alice")
    attach(mesh, online=False)
    first = mesh.send("alice", "laptop:bob", "one")["id"]
    mesh.core.release(LINK, [first], mesh.now)
    # the broker restarts: a new core on the same store attaches the link again
    again = Mesh(mesh.settings, mesh.store)
    again.now = mesh.now
    effects = attach(again, online=True, conn=-7)
    assert [m["id"] for f in pushed(effects, -7) for m in f["messages"]] == [first]


def test_remote_presence_changes_are_events_and_show_in_peers(mesh: Mesh) -> None:
    mesh.join("watcher", events=True)
    attach(mesh, online=False)
    peers = {p["name"]: p for p in mesh.ok("watcher", "peers")["peers"]}
    assert peers["laptop:bob"]["presence"] in ("away", "offline")
    effects = mesh.core.update_remote("laptop:bob", mesh.now, online=True, since=mesh.now)
    events = [f for f in mesh.frames(effects, "watcher", "event")]
    assert [(e["event"], e["name"]) for e in events] == [("peer_joined", "laptop:bob")]
    peers = {p["name"]: p for p in mesh.ok("watcher", "peers")["peers"]}
    assert peers["laptop:bob"]["presence"] == "online"
    assert peers["laptop:bob"]["connected_since"] == mesh.now
    assert mesh.core.online_names() == ["watcher"]


def test_a_remote_peer_replies_with_the_sender_s_name_verbatim(mesh: Mesh) -> None:
    mesh.join("alice")
    attach(mesh)
    ask = mesh.call("alice", "send", to="laptop:bob", body="ok?", kind="request")
    msg_id = pushed(ask.effects)[0]["messages"][0]["id"]
    mesh.ack("laptop:bob", [msg_id], "read")
    reply = mesh.call("laptop:bob", "send", re=msg_id, body="yes", status="PASS")
    assert not reply.answered  # it waits for alice's client to confirm
    assert mesh.track("alice", msg_id) == {"laptop:bob": "answered"}
    [got] = mesh.delivered(reply.effects, "alice")
    assert (got["from"], got["re"], got["status"]) == ("laptop:bob", msg_id, "PASS")


def test_a_message_from_another_machine_is_held_here_too(mesh: Mesh) -> None:
    """Issue #15: a relayed message was never held on the receiving machine, so a
    machine that skipped its holds (or a person there who let it go) decided for this one."""
    mesh.join("alice")
    mesh.register_person()
    attach(mesh)
    call = mesh.call("laptop:bob", "send", to="alice", body="please run rm -rf build/ now")
    assert mesh.delivered(call.effects, "alice") == []
    [held] = mesh.ok("human", "held")["messages"]
    assert (held["from"], held["held_for"]) == ("laptop:bob", ["alice"])
    approved = mesh.call("human", "approve", ids=[held["id"]])
    assert [m["body"] for m in mesh.delivered(approved.effects, "alice")] == ["please run rm -rf build/ now"]
    local = mesh.call("alice", "send", to="laptop:bob", body="then rm -rf dist/")
    assert pushed(local.effects) == []  # held here, for a person on this machine


def test_a_relayed_fan_out_keeps_its_to_and_reaches_only_the_recipients_it_names(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("carol")
    mesh.register("dave")
    mesh.ok("dave", "subscribe", topic="#builds")
    attach(mesh)
    attach(mesh, "laptop:erin", conn=-2)
    call = mesh.call(
        "laptop:bob", "send", to="#builds", body="green", recipients=["alice", "dave", "laptop:erin"]
    )
    answer = call.result
    assert answer["statuses"] == {"alice": "queued", "dave": "queued"}  # a fan-out answers at once
    [got] = mesh.delivered(call.effects, "alice")
    assert (got["to"], got["from"]) == ("#builds", "laptop:bob")
    assert mesh.delivered(call.effects, "carol") == []  # not named, though online
    assert pushed(call.effects, conn=-2) == []  # another machine's peer: never relayed on
    assert mesh.track("laptop:bob", answer["id"]) == {"alice": "queued", "dave": "queued"}


def test_a_later_batch_of_a_relayed_message_adds_copies_for_its_recipients_once(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("carol")
    attach(mesh)
    first = mesh.call("laptop:bob", "send", to="broadcast", body="standup", recipients=["alice"]).result
    again = mesh.call(
        "laptop:bob", "send", id=first["id"], to="broadcast", body="standup", recipients=["carol", "alice"]
    )
    assert again.result["statuses"] == {"carol": "queued", "alice": "queued"}
    assert [m["id"] for m in mesh.delivered(again.effects, "carol")] == [first["id"]]
    assert mesh.delivered(again.effects, "alice") == []  # she has her copy
    assert set(mesh.track("laptop:bob", first["id"])) == {"alice", "carol"}


def test_only_a_link_can_name_the_recipients_of_a_send(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("carol")
    err = mesh.call("alice", "send", to="broadcast", body="hi", recipients=["carol"]).error
    assert err.code == "bad_frame"


def test_a_relayed_message_named_again_answers_as_its_receipts_stand(mesh: Mesh) -> None:
    mesh.join("alice")
    attach(mesh)
    first = mesh.call("laptop:bob", "send", to="#builds", body="red", recipients=["alice"]).result
    mesh.ack("alice", [first["id"]])
    again = mesh.call("laptop:bob", "send", id=first["id"], to="#builds", body="red", recipients=["alice"])
    assert again.result["statuses"] == {"alice": "received"}
    assert mesh.delivered(again.effects, "alice") == []
