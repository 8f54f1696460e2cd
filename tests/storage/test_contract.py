"""One contract for every `Store`: the memory, SQLite and NATS stores must behave alike.

Each test runs against all three (``store`` is parametrized; the NATS one on a real
nats-server); the SQLite-only tests at the end cover what only a file can: WAL mode
and surviving a close and reopen. ``tests/storage/test_nats_store.py`` covers what
only the NATS store does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.core.locks import Lease
from sessionmesh.envelope import Envelope, Kind, Priority, ReceiptState, ReplyStatus, Target, new_id
from sessionmesh.storage import PeerRecord, ReceiptUpdate, Store, ThreadRecord
from sessionmesh.storage.memory import MemoryStore
from sessionmesh.storage.sqlite import SqliteStore

T0 = 1_000_000.0


@pytest.fixture(params=["memory", "sqlite", "nats"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "mesh.db"))
    else:
        from sessionmesh.backends.nats import open_store
        from sessionmesh.config import load
        from tests.conftest import nats_overrides

        node = request.getfixturevalue("nats_node")
        s = open_store(load(env={}, overrides={"home": str(tmp_path), **nats_overrides(node.url)}))
    yield s
    s.close()


def envelope(
    to: Any = "bob",
    sender: str = "alice",
    *,
    ts: float = T0,
    ttl: float = 3600.0,
    priority: Priority = Priority.NORMAL,
    **fields: Any,
) -> Envelope:
    msg_id = fields.pop("id", None) or new_id()
    fields.setdefault("thread", msg_id)
    return Envelope(
        id=msg_id, sender=sender, to=Target.parse(to), ts=ts, ttl=ttl, priority=priority, **fields
    )


def stored(store: Store, to: Any = "bob", recipients: list[str] | None = None, **kw: Any) -> Envelope:
    """Add an envelope and a queued receipt for each recipient (default: the ``to`` name)."""
    env = envelope(to, **kw)
    store.add_message(env)
    store.add_receipts(env, recipients if recipients is not None else [to])
    return env


def state_of(store: Store, msg_id: str, recipient: str) -> ReceiptState | None:
    receipt = store.get_receipt(msg_id, recipient)
    return receipt.state if receipt else None


# -- peers ------------------------------------------------------------------------------


def test_an_unknown_peer_is_none(store: Store) -> None:
    assert store.get_peer("ghost") is None
    assert store.list_peers() == []


def test_a_peer_reads_back_as_written(store: Store) -> None:
    peer = PeerRecord("alice", "hash1", {"client": "codex", "refuse": ["bob"]}, T0, T0 + 1)
    store.put_peer(peer)
    assert store.get_peer("alice") == peer


def test_putting_a_peer_again_updates_it_but_keeps_created_at(store: Store) -> None:
    store.put_peer(PeerRecord("alice", "hash1", {"role": "grip"}, T0, T0))
    store.put_peer(PeerRecord("alice", "hash2", {"role": "guard"}, T0 + 50, T0 + 60))
    assert store.get_peer("alice") == PeerRecord("alice", "hash2", {"role": "guard"}, T0, T0 + 60)
    assert len(store.list_peers()) == 1


def test_peers_are_listed_by_name(store: Store) -> None:
    for name in ("carol", "alice", "bob"):
        store.put_peer(PeerRecord(name, "h", {}, T0, T0))
    assert [p.name for p in store.list_peers()] == ["alice", "bob", "carol"]


def test_a_peer_read_back_is_a_copy(store: Store) -> None:
    store.put_peer(PeerRecord("alice", "h", {"role": "grip"}, T0, T0))
    got = store.get_peer("alice")
    assert got is not None
    got.meta["role"] = "changed"
    assert store.get_peer("alice").meta == {"role": "grip"}


# -- messages ---------------------------------------------------------------------------


def test_message_sequence_numbers_increase_and_are_set_on_the_envelope(store: Store) -> None:
    envs = [envelope() for _ in range(5)]
    seqs = [store.add_message(e) for e in envs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [e.seq for e in envs] == seqs
    assert [store.get_message(e.id).seq for e in envs] == seqs


@pytest.mark.parametrize("to", ["bob", ["bob", "carol"], "broadcast", "#build"])
@pytest.mark.parametrize("body", ["text", None, {"k": [1, 2.5, True, None]}, ["x"], 7, "ünïcødé ✓"])
def test_a_message_reads_back_as_written(store: Store, to: Any, body: Any) -> None:
    parent = envelope(kind=Kind.REQUEST)
    store.add_message(parent)
    env = envelope(
        to,
        kind=Kind.REPLY,
        body=body,
        re=parent.id,
        thread=parent.id,
        status=ReplyStatus.PARTIAL,
        priority=Priority.URGENT,
        ttl=12.5,
        ts=T0 + 0.25,
    )
    store.add_message(env)
    assert store.get_message(env.id) == env
    assert store.get_message(env.id).to_wire() == env.to_wire()


def test_an_unknown_message_is_none(store: Store) -> None:
    assert store.get_message(new_id()) is None
    assert store.get_answer(new_id()) is None


def test_adding_a_message_id_twice_raises_a_storage_error(store: Store) -> None:
    from sessionmesh.errors import StorageError

    env = envelope()
    store.add_message(env)
    with pytest.raises(StorageError):
        store.add_message(envelope(id=env.id))


def test_an_answer_is_kept_with_its_message_and_can_be_replaced(store: Store) -> None:
    env = envelope()
    store.add_message(env)
    store.set_answer(env.id, {"id": env.id, "status": "queued", "statuses": {"bob": "queued"}})
    assert store.get_answer(env.id) == {"id": env.id, "status": "queued", "statuses": {"bob": "queued"}}
    store.set_answer(env.id, {"id": env.id, "status": "received"})
    assert store.get_answer(env.id) == {"id": env.id, "status": "received"}


def test_replies_are_listed_in_sequence_order(store: Store) -> None:
    parent = envelope()
    store.add_message(parent)
    replies = [envelope("alice", sender=s, re=parent.id, thread=parent.id) for s in ("bob", "carol", "bob")]
    for r in replies:
        store.add_message(r)
    store.add_message(envelope())  # unrelated
    assert [r.id for r in store.replies_to(parent.id)] == [r.id for r in replies]
    assert store.replies_to(replies[0].id) == []


def test_thread_messages_come_in_order_up_to_the_limit(store: Store) -> None:
    first = envelope()
    store.add_message(first)
    rest = [envelope(re=first.id, thread=first.id) for _ in range(3)]
    for e in rest:
        store.add_message(e)
    store.add_message(envelope())  # another thread
    ids = [first.id] + [e.id for e in rest]
    assert [e.id for e in store.thread_messages(first.id, 100)] == ids
    assert [e.id for e in store.thread_messages(first.id, 2)] == ids[:2]


def test_topic_messages_are_those_sent_to_the_topic_in_order(store: Store) -> None:
    a = envelope("#build")
    store.add_message(a)
    store.add_message(envelope("#other"))
    store.add_message(envelope("bob"))
    b = envelope("#build")
    store.add_message(b)
    assert [e.id for e in store.topic_messages("#build")] == [a.id, b.id]
    assert store.topic_messages("#none") == []


# -- receipts ---------------------------------------------------------------------------


def test_new_receipts_are_queued_at_the_message_time(store: Store) -> None:
    env = stored(store, ["bob", "carol"], recipients=["carol", "bob"], ts=T0 + 3)
    assert [(r.recipient, r.state, r.updated_at) for r in store.receipts(env.id)] == [
        ("bob", ReceiptState.QUEUED, T0 + 3),
        ("carol", ReceiptState.QUEUED, T0 + 3),
    ]
    assert store.get_receipt(env.id, "dave") is None
    assert store.receipts(new_id()) == []


def test_adding_a_receipt_again_keeps_its_state(store: Store) -> None:
    env = stored(store)
    store.update_receipts([ReceiptUpdate(env.id, "bob", ReceiptState.READ, T0 + 5)])
    store.add_receipts(env, ["bob"])
    assert store.get_receipt(env.id, "bob").state is ReceiptState.READ


def test_receipt_updates_set_state_and_time(store: Store) -> None:
    env = stored(store, ["bob", "carol"], recipients=["bob", "carol"])
    store.update_receipts(
        [
            ReceiptUpdate(env.id, "bob", ReceiptState.DELIVERED, T0 + 1),
            ReceiptUpdate(env.id, "carol", ReceiptState.READ, T0 + 2),
            ReceiptUpdate(env.id, "nobody", ReceiptState.READ, T0 + 2),
        ]
    )
    receipt = store.get_receipt(env.id, "bob")
    assert (receipt.state, receipt.updated_at) == (ReceiptState.DELIVERED, T0 + 1)
    assert state_of(store, env.id, "carol") is ReceiptState.READ
    assert store.get_receipt(env.id, "nobody") is None


def test_unread_is_urgent_first_then_by_sequence(store: Store) -> None:
    n1 = stored(store)
    u1 = stored(store, priority=Priority.URGENT)
    n2 = stored(store)
    u2 = stored(store, priority=Priority.URGENT)
    assert [e.id for e in store.unread("bob", 10)] == [u1.id, u2.id, n1.id, n2.id]
    assert [e.id for e in store.unread("bob", 3)] == [u1.id, u2.id, n1.id]


def test_unread_holds_queued_and_delivered_only_and_only_for_that_recipient(store: Store) -> None:
    queued = stored(store)
    delivered = stored(store)
    read = stored(store)
    answered = stored(store)
    stored(store, "carol")
    store.update_receipts(
        [
            ReceiptUpdate(delivered.id, "bob", ReceiptState.DELIVERED, T0),
            ReceiptUpdate(read.id, "bob", ReceiptState.READ, T0),
            ReceiptUpdate(answered.id, "bob", ReceiptState.ANSWERED, T0),
        ]
    )
    assert [e.id for e in store.unread("bob", 10)] == [queued.id, delivered.id]
    assert store.unread("nobody", 10) == []


def test_expire_due_expires_queued_receipts_past_their_ttl_once(store: Store) -> None:
    due = stored(store, ["bob", "carol"], recipients=["bob", "carol"], ttl=10)
    read_due = stored(store, ttl=10)
    later = stored(store, ttl=20)
    store.update_receipts([ReceiptUpdate(read_due.id, "bob", ReceiptState.READ, T0 + 1)])
    assert store.expire_due(T0 + 9.9) == []

    expired = store.expire_due(T0 + 10)
    assert sorted(expired) == [(due.id, "bob", "alice"), (due.id, "carol", "alice")]
    receipt = store.get_receipt(due.id, "bob")
    assert (receipt.state, receipt.updated_at) == (ReceiptState.EXPIRED, T0 + 10)
    assert state_of(store, read_due.id, "bob") is ReceiptState.READ
    assert state_of(store, later.id, "bob") is ReceiptState.QUEUED
    assert [e.id for e in store.unread("bob", 10)] == [later.id]
    assert store.expire_due(T0 + 10) == []


def test_expire_due_leaves_delivered_receipts_alone(store: Store) -> None:
    env = stored(store, ttl=10)
    store.update_receipts([ReceiptUpdate(env.id, "bob", ReceiptState.DELIVERED, T0 + 1)])
    assert store.expire_due(T0 + 10) == []
    assert state_of(store, env.id, "bob") is ReceiptState.DELIVERED


def test_queue_depths_count_unread_receipts_per_recipient(store: Store) -> None:
    assert store.queue_depths() == {}
    a = stored(store, ["bob", "carol"], recipients=["bob", "carol"])
    stored(store)
    stored(store, "dave")
    store.update_receipts([ReceiptUpdate(a.id, "carol", ReceiptState.READ, T0)])
    store.update_receipts([ReceiptUpdate(a.id, "bob", ReceiptState.DELIVERED, T0)])
    assert store.queue_depths() == {"bob": 2, "dave": 1}


# -- threads ----------------------------------------------------------------------------


def test_a_thread_reads_back_as_written_and_is_replaced_on_put(store: Store) -> None:
    assert store.get_thread("t1") is None
    store.put_thread(ThreadRecord("t1", "open", 1, ["alice", "bob"], T0, T0))
    assert store.get_thread("t1") == ThreadRecord("t1", "open", 1, ["alice", "bob"], T0, T0)
    store.put_thread(ThreadRecord("t1", "answered", 2, ["alice", "bob", "carol"], T0, T0 + 5))
    assert store.get_thread("t1") == ThreadRecord("t1", "answered", 2, ["alice", "bob", "carol"], T0, T0 + 5)


def test_recent_threads_come_by_last_activity_newest_first_and_page_by_time(store: Store) -> None:
    for i, name in enumerate(["t1", "t2", "t3"]):
        store.put_thread(ThreadRecord(name, "open", 2, ["alice", "bob"], T0, T0 + i))
    store.put_thread(ThreadRecord("t1", "answered", 3, ["alice", "bob"], T0, T0 + 10))
    assert [t.id for t in store.recent_threads(before=None, limit=10)] == ["t1", "t3", "t2"]
    assert [t.id for t in store.recent_threads(before=None, limit=2)] == ["t1", "t3"]
    assert [t.id for t in store.recent_threads(before=T0 + 2, limit=10)] == ["t2"]
    assert store.recent_threads(before=None, limit=1)[0].turns == 3


# -- browsing and search ----------------------------------------------------------------


def test_recent_messages_come_newest_first_and_page_by_sequence(store: Store) -> None:
    envs = [stored(store, body=f"m{i}") for i in range(5)]
    page = store.recent_messages(before=None, limit=3)
    assert [e.id for e in page] == [envs[4].id, envs[3].id, envs[2].id]
    older = store.recent_messages(before=page[-1].seq, limit=3)
    assert [e.id for e in older] == [envs[1].id, envs[0].id]
    assert older[0] == envs[1]
    assert store.recent_messages(before=envs[0].seq, limit=3) == []


def test_search_finds_every_word_as_a_prefix_case_insensitively_newest_first(store: Store) -> None:
    a = stored(store, body="Please run the migration on staging")
    b = stored(store, body="the Migration failed: see build/log.txt")
    stored(store, body="nothing to see here")
    c = stored(store, body={"note": "migrations are done", "n": 3})
    assert [e.id for e in store.search("migration", limit=10)] == [c.id, b.id, a.id]
    assert [e.id for e in store.search("MIGRAT stag", limit=10)] == [a.id]
    assert [e.id for e in store.search("build/log", limit=10)] == [b.id]
    assert [e.id for e in store.search("migration", limit=1)] == [c.id]
    assert [e.id for e in store.search("migration", limit=10, before=b.seq)] == [a.id]
    assert store.search("absent", limit=10) == []
    assert store.search(' "*( ', limit=10) == []  # no words: nothing, and no syntax error


def test_traffic_counts_messages_per_sender_and_target_since_a_time(store: Store) -> None:
    stored(store, "bob", ts=T0 - 100)
    stored(store, "bob", ts=T0)
    stored(store, "bob", ts=T0 + 1)
    stored(store, ["bob", "carol"], recipients=["bob", "carol"], ts=T0 + 2)
    stored(store, "broadcast", recipients=["bob", "carol"], ts=T0 + 3)
    stored(store, "alice", sender="bob", ts=T0 + 4)
    assert sorted(store.traffic(T0)) == [
        ("alice", "bob", 3),
        ("alice", "broadcast", 1),
        ("alice", "carol", 1),
        ("bob", "alice", 1),
    ]
    assert store.traffic(T0 + 100) == []


# -- leases -----------------------------------------------------------------------------


def test_leases_are_listed_by_acquisition_then_resource(store: Store) -> None:
    b = Lease("src/b", "alice", True, "r", T0, T0 + 60)
    a = Lease("src/a", "bob", False, "", T0, T0 + 60)
    early = Lease("zzz", "carol", True, "early", T0 - 5, T0 + 10)
    for lease in (b, a, early):
        store.put_lease(lease)
    assert store.leases() == [early, a, b]


def test_putting_a_lease_again_replaces_it_per_resource_and_holder(store: Store) -> None:
    store.put_lease(Lease("docs", "alice", False, "", T0, T0 + 60))
    store.put_lease(Lease("docs", "bob", False, "", T0, T0 + 60))
    renewed = Lease("docs", "alice", True, "mine now", T0, T0 + 600)
    store.put_lease(renewed)
    # same acquisition time and resource: the order between holders is not specified
    by_holder = sorted(store.leases(), key=lambda l: l.holder)
    assert by_holder == [renewed, Lease("docs", "bob", False, "", T0, T0 + 60)]


def test_deleting_a_lease_removes_only_that_holders(store: Store) -> None:
    store.put_lease(Lease("docs", "alice", False, "", T0, T0 + 60))
    store.put_lease(Lease("docs", "bob", False, "", T0, T0 + 60))
    store.delete_lease("docs", "alice")
    store.delete_lease("docs", "nobody")
    store.delete_lease("nothing", "alice")
    assert [(l.resource, l.holder) for l in store.leases()] == [("docs", "bob")]


# -- subscriptions ----------------------------------------------------------------------


def test_subscriptions_are_per_topic_sorted_and_idempotent(store: Store) -> None:
    store.subscribe("#build", "carol")
    store.subscribe("#build", "alice")
    store.subscribe("#build", "alice")
    store.subscribe("#other", "bob")
    assert store.subscribers("#build") == ["alice", "carol"]
    assert store.subscribers("#other") == ["bob"]
    assert store.subscribers("#none") == []


def test_unsubscribing_removes_one_subscriber(store: Store) -> None:
    store.subscribe("#build", "alice")
    store.subscribe("#build", "carol")
    store.unsubscribe("#build", "alice")
    store.unsubscribe("#build", "nobody")
    store.unsubscribe("#none", "alice")
    assert store.subscribers("#build") == ["carol"]


# -- audit ------------------------------------------------------------------------------


def test_audit_entries_are_numbered_and_read_after_a_sequence_with_a_limit(store: Store) -> None:
    for i in range(5):
        store.append_audit(T0 + i, "message", {"id": f"m{i}", "to": ["bob"], "n": i})
    entries = store.read_audit(after=0, limit=100)
    assert entries[0] == {"seq": 1, "ts": T0, "event": "message", "id": "m0", "to": ["bob"], "n": 0}
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert [e["n"] for e in store.read_audit(after=2, limit=2)] == [2, 3]
    assert store.read_audit(after=5, limit=10) == []


# -- SQLite only ------------------------------------------------------------------------


def test_the_sqlite_store_runs_in_wal_mode(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "mesh.db"))
    try:
        assert store.journal_mode.lower() == "wal"
    finally:
        store.close()


def test_sqlite_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "mesh.db")
    store = SqliteStore(path)
    store.put_peer(PeerRecord("alice", "h", {"role": "grip"}, T0, T0 + 1))
    env = stored(store, priority=Priority.URGENT, body={"x": 1})
    store.set_answer(env.id, {"status": "queued"})
    store.update_receipts([ReceiptUpdate(env.id, "bob", ReceiptState.DELIVERED, T0 + 2)])
    store.put_thread(ThreadRecord(env.id, "open", 1, ["alice", "bob"], T0, T0))
    store.put_lease(Lease("src", "alice", True, "refactor", T0, T0 + 60))
    store.subscribe("#build", "bob")
    store.append_audit(T0, "message", {"id": env.id})
    store.commit()
    store.close()

    again = SqliteStore(path)
    try:
        assert again.get_peer("alice") == PeerRecord("alice", "h", {"role": "grip"}, T0, T0 + 1)
        assert again.get_message(env.id) == env
        assert again.get_answer(env.id) == {"status": "queued"}
        assert again.get_receipt(env.id, "bob").state is ReceiptState.DELIVERED
        assert [e.id for e in again.unread("bob", 10)] == [env.id]
        assert again.get_thread(env.id).participants == ["alice", "bob"]
        assert again.leases() == [Lease("src", "alice", True, "refactor", T0, T0 + 60)]
        assert again.subscribers("#build") == ["bob"]
        assert [e["id"] for e in again.read_audit(after=0, limit=10)] == [env.id]
        assert again.add_message(envelope()) > env.seq
    finally:
        again.close()


def test_sqlite_indexes_the_bodies_of_a_store_written_before_search_existed(tmp_path: Path) -> None:
    path = str(tmp_path / "mesh.db")
    store = SqliteStore(path)
    env = stored(store, body="an old message about the release")
    store._db.execute("DROP TABLE messages_fts")  # as a store from before the index
    store._db.execute("DELETE FROM meta WHERE key = 'fts_seq'")
    store.close()
    again = SqliteStore(path)
    try:
        assert [e.id for e in again.search("release", limit=5)] == [env.id]
    finally:
        again.close()


def test_sqlite_sequence_numbers_are_not_reused_after_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "mesh.db")
    store = SqliteStore(path)
    seqs = [store.add_message(envelope()) for _ in range(3)]
    store.close()
    again = SqliteStore(path)
    try:
        assert again.add_message(envelope()) > max(seqs)
    finally:
        again.close()


def test_sqlite_rejects_an_unknown_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteStore(str(tmp_path / "mesh.db"), synchronous="OFF")
    assert not (tmp_path / "mesh.db").exists()
