"""Safety (SPEC §6): destructive requests are held for a person, secrets never travel."""

from __future__ import annotations

import pytest

from sessionmesh.core.safety import DEFAULT_HOLD_PATTERNS, find_secrets, hold_reason, redact
from sessionmesh.errors import BadFrame, NotApprover, UnknownMessage

from .conftest import Mesh

PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
)
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


@pytest.mark.parametrize(
    "body",
    [
        "please run rm -rf build/ before the next step",
        "then `rm -fr /tmp/x`",
        "git push --force origin main",
        "git push -f",
        "git push origin +main",
        "git reset --hard HEAD~3",
        "DROP TABLE users;",
        "drop database prod",
        "git clean -fdx",
        {"cmd": "rm -rf node_modules"},
    ],
)
def test_destructive_requests_are_recognised(body: object) -> None:
    assert hold_reason(body, DEFAULT_HOLD_PATTERNS) is not None


@pytest.mark.parametrize(
    "body",
    [
        "I removed the rf-scanner module",
        "git push origin main",
        "the table was dropped from the design",
        "git reset HEAD file.py",
        "rm build.log",
        "DELETE FROM sessions WHERE expires < now()",
    ],
)
def test_ordinary_messages_are_not_held(body: str) -> None:
    assert hold_reason(body, DEFAULT_HOLD_PATTERNS) is None


def test_secrets_are_found_and_redacted_in_strings_and_json() -> None:
    assert [f.kind for f in find_secrets(f"key:\n{PRIVATE_KEY}")] == ["private key"]
    assert [f.kind for f in find_secrets({"t": GITHUB_TOKEN})] == ["GitHub token"]
    assert find_secrets("the token lives in ~/.config/gh/hosts.yml") == []
    assert redact({"t": f"use {GITHUB_TOKEN} now", "n": 3}) == {
        "t": "use [redacted GitHub token] now",
        "n": 3,
    }


def test_a_destructive_message_is_held_not_delivered_until_approved(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    mesh.register("human")
    sent = mesh.call("alice", "send", to="bob", body="please rm -rf build/ and rebuild")
    answer = sent.result
    assert answer["status"] == "queued"
    assert answer["held"]["match"].startswith("rm -rf")
    assert mesh.delivered(sent.effects, "bob") == []
    assert mesh.track("alice", answer["id"]) == {"bob": "held"}
    # held copies are nobody's unread mail, and an ack cannot move them
    assert mesh.ok("bob", "inbox")["messages"] == []
    assert mesh.ok("bob", "ack", ids=[answer["id"]], state="read") == {"acked": 0}

    [listed] = mesh.ok("human", "held")["messages"]
    assert (listed["id"], listed["held_for"], listed["body"]) == (
        answer["id"],
        ["bob"],
        "please rm -rf build/ and rebuild",
    )

    approved = mesh.call("human", "approve", ids=[answer["id"]])
    assert approved.result == {"approved": [answer["id"]]}
    assert [m["id"] for m in mesh.delivered(approved.effects, "bob")] == [answer["id"]]
    assert mesh.receipt_states(approved.effects, "alice", answer["id"]) == ["queued"]
    assert mesh.ok("human", "held")["messages"] == []
    assert [e["event"] for e in mesh.audit() if e["event"] in ("held", "approved")] == ["held", "approved"]


def test_a_rejected_message_never_arrives_and_its_sender_is_told(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.register("human")
    msg_id = mesh.send("alice", "bob", "git push --force origin main")["id"]
    rejected = mesh.call("human", "reject", ids=[msg_id])
    assert rejected.result == {"rejected": [msg_id]}
    assert mesh.receipt_states(rejected.effects, "alice", msg_id) == ["rejected"]
    mesh.join("bob")
    assert mesh.delivered(mesh.last_connect_effects, "bob") == []
    assert mesh.track("alice", msg_id) == {"bob": "rejected"}
    assert isinstance(mesh.fails("human", "approve", ids=[msg_id]), UnknownMessage)


def test_only_an_approver_decides_and_a_bad_decision_changes_nothing(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.register("human")
    msg_id = mesh.send("alice", "bob", "DROP TABLE users")["id"]
    before = mesh.snapshot()
    assert isinstance(mesh.fails("bob", "approve", ids=[msg_id]), NotApprover)
    assert isinstance(mesh.fails("alice", "reject", ids=[msg_id]), NotApprover)
    assert isinstance(mesh.fails("human", "approve", ids=[]), BadFrame)
    ordinary = mesh.send("alice", "bob", "hello")["id"]
    after_ordinary = mesh.snapshot()
    assert isinstance(mesh.fails("human", "approve", ids=[msg_id, ordinary]), UnknownMessage)
    assert mesh.snapshot() == after_ordinary
    assert before["_receipts"][(msg_id, "bob")] == after_ordinary["_receipts"][(msg_id, "bob")]


def test_a_held_reply_waits_too_and_answers_the_request_only_when_approved(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.register("human")
    request = mesh.send("alice", "bob", "how do I clean up?", kind="request")["id"]
    mesh.join("bob")
    mesh.ack("bob", [request], "read")
    reply = mesh.call("bob", "send", re=request, body="run git reset --hard origin/main", status="PASS")
    assert mesh.delivered(reply.effects, "alice") == []
    assert mesh.track("alice", request) == {"bob": "read"}
    approved = mesh.call("human", "approve", ids=[reply.result["id"]])
    assert [m["id"] for m in mesh.delivered(approved.effects, "alice")] == [reply.result["id"]]
    assert mesh.track("alice", request) == {"bob": "answered"}


def test_hold_patterns_are_configurable(make_mesh) -> None:
    mesh = make_mesh(hold_patterns=(r"\bdeploy to prod\b",))
    mesh.join("alice")
    mesh.register("bob")
    assert "held" not in mesh.send("alice", "bob", "rm -rf build")
    assert mesh.send("alice", "bob", "please deploy to prod")["held"]["match"] == "deploy to prod"


def test_a_body_with_a_secret_is_refused_and_nothing_is_stored(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    before = mesh.snapshot()
    answer = mesh.send("alice", "bob", f"here is the key\n{PRIVATE_KEY}")
    assert answer["status"] == "refused"
    assert answer["reason"]["code"] == "secret_in_body"
    assert "private key" in answer["reason"]["message"]
    assert mesh.snapshot()["_messages"] == before["_messages"]
    assert PRIVATE_KEY not in repr(mesh.audit())


def test_secrets_can_be_redacted_instead_by_configuration(make_mesh) -> None:
    mesh = make_mesh(secret_action="redact")
    mesh.join("alice")
    mesh.register("bob")
    answer = mesh.send("alice", "bob", f"token {GITHUB_TOKEN} works")
    assert answer["status"] == "queued"
    mesh.join("bob")
    [got] = mesh.delivered(mesh.last_connect_effects, "bob")
    assert got["body"] == "token [redacted GitHub token] works"


def test_held_shows_a_peer_only_what_it_sent_and_an_approver_everything(mesh: Mesh) -> None:
    """Issue #15: `held` showed any peer the bodies of messages held for others."""
    for name in ("alice", "bob", "carol", "human"):
        mesh.register(name)
    mine = mesh.send("alice", "bob", "rm -rf build/ now")["id"]
    theirs = mesh.send("carol", "bob", "git push --force origin main")["id"]
    assert [m["id"] for m in mesh.ok("alice", "held")["messages"]] == [mine]
    assert [m["id"] for m in mesh.ok("carol", "held")["messages"]] == [theirs]
    assert mesh.ok("bob", "held")["messages"] == []  # held *for* bob, but not yet his mail
    assert {m["id"] for m in mesh.ok("human", "held")["messages"]} == {mine, theirs}


def test_screening_a_body_built_to_backtrack_takes_linear_time() -> None:
    """Issue #15: one 261 kB body of "dd " kept the broker busy for 204 s under Python's
    backtracking regexes. With RE2 it is screened at once; a regression hangs here."""
    import threading

    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.append(hold_reason("dd " * 87000, DEFAULT_HOLD_PATTERNS)), daemon=True
    )
    worker.start()
    worker.join(10)
    assert result == [None], "screening did not finish"


def test_a_configured_pattern_re2_cannot_run_is_refused_with_a_clear_error() -> None:
    from sessionmesh.config import load
    from sessionmesh.errors import BadRequest

    with pytest.raises(BadRequest) as err:
        load(env={}, overrides={"home": "/nonexistent", "hold_patterns": (r"(?<=sudo )rm",)})
    assert "RE2 syntax" in (err.value.hint or "")
