"""Receipts and inbox order: queued → delivered → read → answered, or expired (SPEC §3)."""

from __future__ import annotations

from typing import Any

import pytest

from sessionmesh.core.broker import BACKLOG_CHUNK, Caller

from .conftest import Mesh


def test_a_receipt_moves_queued_delivered_read_answered_and_the_sender_is_told(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob", "review please")["id"]
    assert mesh.track("alice", msg_id) == {"bob": "queued"}

    mesh.join("bob")
    assert [m["id"] for m in mesh.delivered(mesh.last_connect_effects, "bob")] == [msg_id]
    effects = mesh.ack("bob", [msg_id], "delivered")
    assert mesh.receipt_states(effects, "alice", msg_id) == ["delivered"]
    assert mesh.track("alice", msg_id) == {"bob": "delivered"}

    effects = mesh.ack("bob", [msg_id], "read")
    assert mesh.receipt_states(effects, "alice", msg_id) == ["read"]
    assert mesh.track("alice", msg_id) == {"bob": "read"}

    reply = mesh.call("bob", "send", re=msg_id, body="looks good")
    assert mesh.receipt_states(reply.effects, "alice", msg_id) == ["answered"]
    assert mesh.track("alice", msg_id) == {"bob": "answered"}
    [answer] = mesh.delivered(reply.effects, "alice")
    assert mesh.ok("alice", "track", id=msg_id)["replies"] == [answer["id"]]


def test_receipt_updates_carry_the_time_they_happened(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob")["id"]
    mesh.now += 7
    mesh.ack("bob", [msg_id], "read")
    assert mesh.ok("alice", "track", id=msg_id)["updated"] == {"bob": mesh.now}


def test_a_receipt_never_moves_backwards(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob")["id"]
    mesh.ack("bob", [msg_id], "read")

    call = mesh.call("bob", "ack", ids=[msg_id], state="delivered")
    assert call.result == {"acked": 0}
    assert mesh.receipt_states(call.effects, "alice", msg_id) == []
    assert mesh.track("alice", msg_id) == {"bob": "read"}

    mesh.call("bob", "send", re=msg_id, body="done")
    assert mesh.ok("bob", "ack", ids=[msg_id], state="read") == {"acked": 0}
    assert mesh.track("alice", msg_id) == {"bob": "answered"}


def test_a_read_ack_may_skip_delivered(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob")["id"]
    assert mesh.ok("bob", "ack", ids=[msg_id], state="read") == {"acked": 1}
    assert mesh.track("alice", msg_id) == {"bob": "read"}


def test_an_ack_for_someone_elses_message_changes_nothing(mesh: Mesh) -> None:
    for name in ("alice", "bob", "carol"):
        mesh.register(name)
    msg_id = mesh.send("alice", "bob")["id"]
    assert mesh.ok("carol", "ack", ids=[msg_id], state="read") == {"acked": 0}
    assert mesh.track("alice", msg_id) == {"bob": "queued"}


def test_an_ack_with_a_malformed_id_is_a_bad_frame_and_changes_nothing(mesh: Mesh) -> None:
    for name in ("alice", "bob"):
        mesh.register(name)
    msg_id = mesh.send("alice", "bob")["id"]
    effects = mesh.core.handle(
        Caller("bob"), "ack", {"ids": [msg_id, "not-an-id"], "state": "read"}, "r", mesh.now
    )
    assert [type(e.error).__name__ for e in effects] == ["BadFrame"]
    assert mesh.track("alice", msg_id) == {"bob": "queued"}


def test_inbox_returns_unread_messages_and_marks_them_delivered(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    first = mesh.send("alice", "bob", "one")["id"]
    second = mesh.send("alice", "bob", "two")["id"]

    assert [m["body"] for m in mesh.ok("bob", "inbox")["messages"]] == ["one", "two"]
    assert mesh.track("alice", first) == {"bob": "delivered"}

    # delivered is still unread: the agent has not seen it until it acks 'read'
    assert [m["id"] for m in mesh.ok("bob", "inbox", limit=1)["messages"]] == [first]
    mesh.ack("bob", [first, second], "read")
    assert mesh.ok("bob", "inbox")["messages"] == []


def test_an_undelivered_message_expires_after_its_ttl_and_the_sender_is_told(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob", "soon stale", ttl=60)["id"]

    assert mesh.receipt_states(mesh.advance(59.9), "alice", msg_id) == []
    assert mesh.track("alice", msg_id) == {"bob": "queued"}

    effects = mesh.advance(0.1)
    assert mesh.receipt_states(effects, "alice", msg_id) == ["expired"]
    assert mesh.track("alice", msg_id) == {"bob": "expired"}
    assert [e["state"] for e in mesh.audit("receipt") if e["id"] == msg_id] == ["expired"]

    mesh.join("bob")
    assert mesh.delivered(mesh.last_connect_effects, "bob") == []
    assert mesh.ok("bob", "ack", ids=[msg_id], state="read") == {"acked": 0}
    assert mesh.track("alice", msg_id) == {"bob": "expired"}


def test_a_read_message_does_not_expire(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob", ttl=60)["id"]
    mesh.ack("bob", [msg_id], "read")
    mesh.advance(3600)
    assert mesh.track("alice", msg_id) == {"bob": "read"}


def test_a_message_the_recipient_holds_does_not_expire_and_its_read_still_counts(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob", ttl=60)["id"]
    assert [m["id"] for m in mesh.ok("bob", "inbox")["messages"]] == [msg_id]  # now delivered
    mesh.advance(61)
    assert mesh.track("alice", msg_id) == {"bob": "delivered"}
    mesh.ack("bob", [msg_id], "read")
    assert mesh.track("alice", msg_id) == {"bob": "read"}


def test_the_default_ttl_comes_from_the_settings(make_mesh: Any) -> None:
    mesh = make_mesh(default_ttl=100.0)
    mesh.register("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "bob")["id"]
    mesh.advance(99)
    assert mesh.track("alice", msg_id) == {"bob": "queued"}
    mesh.advance(1)
    assert mesh.track("alice", msg_id) == {"bob": "expired"}


def test_the_backlog_keeps_per_sender_fifo_order(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("carol")
    mesh.register("bob")
    for i in range(5):
        mesh.send("alice", "bob", f"a{i}")
        mesh.send("carol", "bob", f"c{i}")
    mesh.join("bob")
    bodies = [m["body"] for m in mesh.delivered(mesh.last_connect_effects, "bob")]
    assert [b for b in bodies if b[0] == "a"] == [f"a{i}" for i in range(5)]
    assert [b for b in bodies if b[0] == "c"] == [f"c{i}" for i in range(5)]


def test_urgent_messages_come_before_normal_ones_in_fifo_order(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    mesh.send("alice", "bob", "n1")
    mesh.send("alice", "bob", "u1", priority="urgent")
    mesh.send("alice", "bob", "n2")
    mesh.send("alice", "bob", "u2", priority="urgent")
    mesh.join("bob")
    bodies = [m["body"] for m in mesh.delivered(mesh.last_connect_effects, "bob")]
    assert bodies == ["u1", "u2", "n1", "n2"]
    assert [m["body"] for m in mesh.ok("bob", "inbox")["messages"]] == ["u1", "u2", "n1", "n2"]


def test_a_live_recipient_gets_each_message_as_it_is_sent(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    got = []
    for i in range(3):
        call = mesh.call("alice", "send", to="bob", body=i)
        [env] = mesh.delivered(call.effects, "bob")
        got.append(env["body"])
        mesh.ack("bob", [env["id"]])
    assert got == [0, 1, 2]


def test_a_large_backlog_is_pushed_in_chunks_in_order(make_mesh: Any) -> None:
    mesh = make_mesh(rate_limit=0)  # no rate limit
    mesh.register("alice")
    mesh.register("bob")
    total = BACKLOG_CHUNK + 3
    for i in range(total):
        mesh.send("alice", "bob", i)
    mesh.join("bob")
    frames = mesh.frames(mesh.last_connect_effects, "bob", "deliver")
    assert [len(f["messages"]) for f in frames] == [BACKLOG_CHUNK, 3]
    assert [m["body"] for f in frames for m in f["messages"]] == list(range(total))


def test_unacked_messages_are_delivered_again_on_reconnect(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.join("bob")
    call = mesh.call("alice", "send", to="bob", body="again")
    [env] = mesh.delivered(call.effects, "bob")
    mesh.ack("bob", [env["id"]], "delivered")
    mesh.leave("bob", graceful=False)
    mesh.join("bob")
    assert [m["id"] for m in mesh.delivered(mesh.last_connect_effects, "bob")] == [env["id"]]


def test_a_sender_never_receives_its_own_broadcast(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    msg_id = mesh.send("alice", "broadcast")["id"]
    assert mesh.track("alice", msg_id) == {"bob": "queued"}
    assert mesh.store.unread("alice", 10) == []


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> int:
    import sessionmesh.core.receipts as receipts

    monkeypatch.setattr(receipts, "BACKLOG_WINDOW", 4)
    monkeypatch.setattr(receipts, "BACKLOG_CHUNK", 2)
    return 4


def test_a_backlog_goes_out_a_window_at_a_time_as_the_client_acknowledges(
    make_mesh: Any, small_window: int
) -> None:
    mesh = make_mesh(rate_limit=0)
    mesh.register("alice")
    mesh.register("bob")
    ids = [mesh.send("alice", "bob", i)["id"] for i in range(10)]
    mesh.join("bob")
    first = mesh.delivered(mesh.last_connect_effects, "bob")
    assert [m["body"] for m in first] == [0, 1, 2, 3]
    # one ack of a quarter does not open the next window; half of it does
    assert mesh.delivered(mesh.ack("bob", ids[:1]), "bob") == []
    assert [m["body"] for m in mesh.delivered(mesh.ack("bob", ids[1:2]), "bob")] == [4, 5, 6, 7]
    assert [m["body"] for m in mesh.delivered(mesh.ack("bob", ids[2:6]), "bob")] == [8, 9]


def test_new_messages_wait_behind_the_backlog_so_each_pair_stays_fifo(
    make_mesh: Any, small_window: int
) -> None:
    mesh = make_mesh(rate_limit=0)
    mesh.register("alice")
    mesh.register("bob")
    ids = [mesh.send("alice", "bob", i)["id"] for i in range(6)]
    mesh.join("bob")
    live = mesh.call("alice", "send", to="bob", body="new")
    assert live.result["status"] == "queued"  # bob is catching up: it waits its turn
    assert mesh.delivered(live.effects, "bob") == []
    rest = mesh.delivered(mesh.ack("bob", ids[:4]), "bob")
    assert [m["body"] for m in rest] == [4, 5, "new"]


def test_an_urgent_message_is_not_held_behind_a_normal_backlog(make_mesh: Any, small_window: int) -> None:
    mesh = make_mesh(rate_limit=0)
    mesh.register("alice")
    mesh.register("bob")
    for i in range(6):
        mesh.send("alice", "bob", i)
    mesh.join("bob")
    urgent = mesh.call("alice", "send", to="bob", body="stop", priority="urgent")
    assert [m["body"] for m in mesh.delivered(urgent.effects, "bob")] == ["stop"]
