"""Requests, replies, threads and await (SPEC §3, §5)."""

from __future__ import annotations

from sessionmesh.envelope import new_id
from sessionmesh.errors import BadFrame, Forbidden, Timeout, UnknownMessage

from .conftest import Mesh, responses, result_of


def ask(mesh: Mesh, sender: str, to: str, body: str = "are the tests green?") -> str:
    return mesh.send(sender, to, body, kind="request")["id"]


def test_a_reply_goes_to_the_original_sender_without_naming_it(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    call = mesh.call("bob", "send", re=question, body="yes")
    [reply] = mesh.delivered(call.effects, "alice")
    assert (reply["from"], reply["to"], reply["re"], reply["body"]) == ("bob", "alice", question, "yes")


def test_a_reply_to_a_request_is_a_reply_with_answered_by_default(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    reply_id = mesh.send("bob", None, "yes", re=question)["id"]
    reply = mesh.store.get_message(reply_id)
    assert (reply.kind.value, reply.status.value) == ("reply", "ANSWERED")


def test_a_reply_keeps_the_end_state_it_names(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    reply_id = mesh.send("bob", None, "cannot", re=question, status="BLOCKED")["id"]
    assert mesh.store.get_message(reply_id).status.value == "BLOCKED"


def test_a_reply_reaches_a_sender_the_replier_refuses(mesh: Mesh) -> None:
    mesh.register("alice", refuse=["bob"])
    mesh.register("bob")
    assert mesh.send("bob", "alice")["status"] == "denied"
    question = ask(mesh, "alice", "bob")
    assert mesh.send("bob", None, "answer", re=question)["status"] == "queued"


def test_replying_to_an_unknown_id_is_unknown_message(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    before = mesh.snapshot()
    err = mesh.fails("bob", "send", re=new_id(), body="?")
    assert isinstance(err, UnknownMessage)
    assert mesh.snapshot() == before


def test_replying_to_a_message_you_never_received_is_forbidden(mesh: Mesh) -> None:
    for name in ("alice", "bob", "carol"):
        mesh.register(name)
    question = ask(mesh, "alice", "bob")
    before = mesh.snapshot()
    err = mesh.fails("carol", "send", re=question, body="butting in")
    assert isinstance(err, Forbidden)
    assert mesh.snapshot() == before


def test_following_up_your_own_message_needs_a_recipient(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    first = mesh.send("alice", "bob", "one")["id"]
    assert isinstance(mesh.fails("alice", "send", re=first, body="two"), BadFrame)
    follow_up = mesh.send("alice", "bob", "two", re=first)
    assert follow_up["thread"] == first
    assert follow_up["status"] == "queued"


def test_a_reply_to_a_reply_goes_back_to_the_replier(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    answer = mesh.send("bob", None, "yes", re=question)["id"]
    thanks = mesh.send("alice", None, "thanks", re=answer)
    assert thanks["statuses"] == {"bob": "queued"}
    assert mesh.store.get_message(thanks["id"]).kind.value == "message"


def test_a_thread_counts_turns_and_participants_and_becomes_answered(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    thread = mesh.ok("alice", "thread", id=question)
    assert (thread["id"], thread["state"], thread["turns"]) == (question, "open", 1)
    assert thread["participants"] == ["alice", "bob"]

    reply = mesh.send("bob", None, "yes", re=question)
    assert reply["thread"] == question
    thread = mesh.ok("bob", "thread", id=question)
    assert (thread["state"], thread["turns"]) == ("answered", 2)
    assert [m["body"] for m in thread["messages"]] == ["are the tests green?", "yes"]


def test_a_thread_can_be_found_by_any_of_its_message_ids(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    reply = mesh.send("bob", None, "yes", re=question)["id"]
    assert mesh.ok("alice", "thread", id=reply)["id"] == question


def test_a_thread_is_closed_on_request_and_reopens_when_someone_writes_in_it(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    first = mesh.send("alice", "bob", "one")["id"]
    closed = mesh.ok("bob", "thread", id=first, close=True)
    assert closed["state"] == "closed"
    assert mesh.ok("alice", "thread", id=first)["state"] == "closed"

    mesh.send("alice", "bob", "one more thing", re=first)
    thread = mesh.ok("alice", "thread", id=first)
    assert (thread["state"], thread["turns"]) == ("open", 2)


def test_a_thread_is_private_to_its_participants(mesh: Mesh) -> None:
    for name in ("alice", "bob", "carol"):
        mesh.register(name)
    first = mesh.send("alice", "bob")["id"]
    assert isinstance(mesh.fails("carol", "thread", id=first), Forbidden)
    assert isinstance(mesh.fails("carol", "thread", id=new_id()), UnknownMessage)


def test_a_thread_listing_honours_its_limit(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    first = mesh.send("alice", "bob", "0")["id"]
    for i in range(1, 4):
        mesh.send("alice", "bob", str(i), re=first)
    thread = mesh.ok("alice", "thread", id=first, limit=2)
    assert thread["turns"] == 4
    assert [m["body"] for m in thread["messages"]] == ["0", "1"]


def test_await_answers_at_once_when_a_reply_exists_and_marks_it_read(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    reply_id = mesh.send("bob", None, "yes", re=question)["id"]
    result = mesh.ok("alice", "await", id=question)
    assert (result["reply"]["id"], result["reply"]["body"]) == (reply_id, "yes")
    assert mesh.track("alice", reply_id) == {"alice": "read"}


def test_await_is_answered_when_the_reply_arrives(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    waiting = mesh.call("alice", "await", id=question, timeout=30)
    assert not waiting.answered
    mesh.now += 5
    reply = mesh.call("bob", "send", re=question, body="yes")
    assert result_of(reply.effects, waiting.reply_to)["reply"]["body"] == "yes"
    assert mesh.responses_after_tick(60, waiting.reply_to) == []


def test_await_times_out_through_tick(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    question = ask(mesh, "alice", "bob")
    waiting = mesh.call("alice", "await", id=question, timeout=10)
    assert mesh.responses_after_tick(9.9, waiting.reply_to) == []
    [answer] = mesh.responses_after_tick(0.1, waiting.reply_to)
    assert isinstance(answer.error, Timeout)
    assert question in answer.error.message

    # a reply after the timeout wakes no one
    late = mesh.call("bob", "send", re=question, body="late")
    assert late.result["status"] == "queued"
    assert responses(late.effects, waiting.reply_to) == []


def test_await_of_an_unknown_id_is_unknown_message(mesh: Mesh) -> None:
    mesh.register("alice")
    assert isinstance(mesh.fails("alice", "await", id=new_id()), UnknownMessage)


def test_a_reply_to_a_peer_awaiting_it_answers_received_at_once(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    ask = mesh.send("alice", "bob", "ready?", kind="request")
    waiting = mesh.call("alice", "await", id=ask["id"], timeout=30)
    assert waiting.effects == []
    mesh.join("bob")
    request_id = ask["id"]
    reply = mesh.call("bob", "send", re=request_id, body="yes", status="PASS")
    assert reply.result["status"] == "received"
    got = [e for e in reply.effects if getattr(e, "reply_to", None) == waiting.reply_to]
    assert got and got[0].result["reply"]["body"] == "yes"
    assert mesh.track("bob", reply.result["id"]) == {"alice": "read"}


def test_an_await_ends_with_its_connection(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    ask = mesh.send("alice", "bob", "ready?", kind="request")
    mesh.call("alice", "await", id=ask["id"], timeout=30)
    mesh.leave("alice", graceful=False)
    mesh.join("bob")
    # the reply is not marked read for an await nobody is waiting on any more
    reply = mesh.call("bob", "send", re=ask["id"], body="yes")
    assert mesh.track("bob", reply.result["id"]) == {"alice": "queued"}


def test_await_on_another_pairs_message_is_forbidden_as_track_is(mesh: Mesh) -> None:
    """Issue #15: await answered timeout where track answered forbidden."""
    for name in ("alice", "bob", "mallory"):
        mesh.register(name)
    question = ask(mesh, "alice", "bob")
    assert isinstance(mesh.fails("mallory", "await", id=question, timeout=0), Forbidden)
    assert isinstance(mesh.fails("mallory", "track", id=question), Forbidden)
