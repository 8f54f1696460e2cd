"""What only the NATS store does: its state outlives the broker process in JetStream,
the lease table is one for the whole mesh (compare-and-set), streams and buckets are
created or brought up to date on open, and a NATS that is not there is a clear error."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.backends.nats import NatsStore, open_store, token, untoken
from sessionmesh.codec import dumps
from sessionmesh.config import load
from sessionmesh.core.locks import Lease
from sessionmesh.envelope import Priority, ReceiptState
from sessionmesh.errors import Contention, Unavailable
from sessionmesh.storage import PeerRecord, ReceiptUpdate, ThreadRecord
from tests.conftest import nats_overrides
from tests.natsserver import NatsNode, free_port
from tests.storage.test_contract import T0, envelope, stored


def open_nats(tmp_path: Path, overrides: dict[str, Any]) -> NatsStore:
    return open_store(load(env={}, overrides={"home": str(tmp_path), **overrides}))


@pytest.mark.parametrize("text", ["alice", "a.b_c-d", "name#2", "#build", "laptop:bob", "ünï"])
def test_names_become_subject_tokens_and_back(text: str) -> None:
    tok = token(text)
    assert all(c.isalnum() or c in "-_" for c in tok) and "." not in tok
    assert untoken(tok) == text


def test_nats_state_survives_close_and_reopen(tmp_path: Path, nats_node: NatsNode) -> None:
    overrides = nats_overrides(nats_node.url)
    store = open_nats(tmp_path, overrides)
    store.put_peer(PeerRecord("alice", "h", {"role": "grip"}, T0, T0 + 1))
    env = stored(store, priority=Priority.URGENT, body={"x": 1})
    other = stored(store, ["bob", "carol"], recipients=["bob", "carol"])
    store.set_answer(env.id, {"status": "queued"})
    store.update_receipts([ReceiptUpdate(env.id, "bob", ReceiptState.DELIVERED, T0 + 2)])
    store.update_receipts([ReceiptUpdate(other.id, "carol", ReceiptState.READ, T0 + 3)])
    store.put_thread(ThreadRecord(env.id, "open", 1, ["alice", "bob"], T0, T0))
    store.put_lease(Lease("src", "alice", True, "refactor", T0, T0 + 60))
    store.subscribe("#build", "bob")
    store.subscribe("#build", "carol")
    store.unsubscribe("#build", "carol")
    store.append_audit(T0, "message", {"id": env.id})
    store.commit()
    store.close()

    again = open_nats(tmp_path, overrides)
    try:
        assert again.get_peer("alice") == PeerRecord("alice", "h", {"role": "grip"}, T0, T0 + 1)
        assert again.get_message(env.id) == env
        assert again.get_answer(env.id) == {"status": "queued"}
        assert again.get_receipt(env.id, "bob").state is ReceiptState.DELIVERED
        assert again.get_receipt(other.id, "carol").state is ReceiptState.READ
        assert [e.id for e in again.unread("bob", 10)] == [env.id, other.id]
        assert again.get_thread(env.id).participants == ["alice", "bob"]
        assert again.leases() == [Lease("src", "alice", True, "refactor", T0, T0 + 60)]
        assert again.subscribers("#build") == ["bob"]
        assert [e["id"] for e in again.read_audit(after=0, limit=10)] == [env.id]
        assert again.add_message(envelope()) > other.seq
    finally:
        again.close()


def test_writes_not_committed_are_not_in_nats(tmp_path: Path, nats_node: NatsNode) -> None:
    overrides = nats_overrides(nats_node.url)
    store = open_nats(tmp_path, overrides)
    kept = stored(store)
    store.commit()
    stored(store)  # never committed: the process "dies" here
    store._ops.clear()
    store._db.rollback()
    store.close()
    again = open_nats(tmp_path, overrides)
    try:
        assert [e.id for e in again.unread("bob", 10)] == [kept.id]
    finally:
        again.close()


def test_two_machines_share_one_lease_table_with_their_labels(tmp_path: Path, nats_node: NatsNode) -> None:
    laptop_settings = nats_overrides(nats_node.url, "laptop")
    server_settings = {**laptop_settings, "machine": "server"}
    laptop = open_nats(tmp_path / "a", laptop_settings)
    server = open_nats(tmp_path / "b", server_settings)
    try:
        laptop.put_lease(Lease("src/app.py", "alice", True, "mine", T0, T0 + 60))
        assert server.leases() == [Lease("src/app.py", "laptop:alice", True, "mine", T0, T0 + 60)]
        assert laptop.leases()[0].holder == "alice"
        server.delete_lease("src/app.py", "laptop:alice")
        assert laptop.leases() == []
    finally:
        laptop.close()
        server.close()


def test_a_lease_written_on_a_stale_read_is_refused_with_contention(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    laptop_settings = nats_overrides(nats_node.url, "laptop")
    laptop = open_nats(tmp_path / "a", laptop_settings)
    server = open_nats(tmp_path / "b", {**laptop_settings, "machine": "server"})
    try:
        assert laptop.leases() == [] and server.leases() == []
        laptop.put_lease(Lease("src", "alice", True, "", T0, T0 + 60))
        with pytest.raises(Contention):
            server.put_lease(Lease("src/app.py", "bob", True, "", T0, T0 + 60))  # decided on []
        assert [(l.resource, l.holder) for l in server.leases()] == [("src", "laptop:alice")]
    finally:
        laptop.close()
        server.close()


def test_opening_updates_a_stream_made_with_an_older_configuration(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    overrides = nats_overrides(nats_node.url)
    first = open_nats(tmp_path, overrides)
    conn, layout = first._conn, first.layout
    from nats.js import api

    async def downgrade() -> Any:
        info = await conn.js.stream_info(layout.state_stream)
        await conn.js.update_stream(
            api.StreamConfig.from_response({**info.config.as_dict(), "max_msgs_per_subject": 5})
        )
        return (await conn.js.stream_info(layout.state_stream)).config.max_msgs_per_subject

    assert conn.call(downgrade()) == 5
    first.close()
    again = open_nats(tmp_path, overrides)
    try:

        async def limit() -> Any:
            return (await again._conn.js.stream_info(layout.state_stream)).config.max_msgs_per_subject

        assert again._conn.call(limit()) == 1
    finally:
        again.close()


def test_a_nats_that_is_not_there_is_unavailable(tmp_path: Path) -> None:
    overrides = nats_overrides(f"nats://127.0.0.1:{free_port()}", nats_timeout=2.0)
    with pytest.raises(Unavailable):
        open_nats(tmp_path, overrides)


def test_a_restart_reads_only_the_batches_its_cache_does_not_hold(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    overrides = nats_overrides(nats_node.url)
    store = open_nats(tmp_path, overrides)
    for _ in range(30):
        stored(store)
        store.commit()
    store.close()
    again = open_nats(tmp_path, overrides)
    try:
        assert again.replayed == 0
        assert len(again.unread("bob", 100)) == 30
    finally:
        again.close()


def close_and_delete_cache(store: NatsStore) -> None:
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(store.path + suffix).unlink(missing_ok=True)


def test_a_deleted_cache_is_rebuilt_from_jetstream(tmp_path: Path, nats_node: NatsNode) -> None:
    overrides = nats_overrides(nats_node.url)
    store = open_nats(tmp_path, overrides)
    store.put_peer(PeerRecord("alice", "h", {"role": "grip"}, T0, T0 + 1))
    kept = [stored(store, body={"n": i}) for i in range(20)]
    store.update_receipts([ReceiptUpdate(kept[0].id, "bob", ReceiptState.READ, T0 + 2)])
    store.subscribe("#build", "bob")
    store.append_audit(T0, "message", {"id": kept[0].id})
    store.commit()
    close_and_delete_cache(store)
    again = open_nats(tmp_path, overrides)
    try:
        assert again.replayed > 0
        assert again.get_peer("alice") == PeerRecord("alice", "h", {"role": "grip"}, T0, T0 + 1)
        assert [e.id for e in again.unread("bob", 100)] == [e.id for e in kept[1:]]
        assert again.get_message(kept[5].id) == kept[5]
        assert again.subscribers("#build") == ["bob"]
        assert [e["id"] for e in again.read_audit(after=0, limit=10)] == [kept[0].id]
    finally:
        again.close()


def test_reading_the_log_back_writes_nothing_to_it(tmp_path: Path, nats_node: NatsNode) -> None:
    """A rebuild once journalled every receipt it read back again: a start with no
    cache wrote the history's receipts to the log a second time."""
    overrides = nats_overrides(nats_node.url)
    store = open_nats(tmp_path, overrides)
    for n in range(10):
        env = stored(store, ["bob", "carol"], recipients=["bob", "carol"])
        store.update_receipts([ReceiptUpdate(env.id, "bob", ReceiptState.READ, T0 + n)])
        store.commit()
    conn, stream = store._conn, store.layout.state_stream
    before = conn.call(conn.js.stream_info(stream)).state.last_seq
    close_and_delete_cache(store)
    again = open_nats(tmp_path, overrides)
    try:
        assert again.replayed == 10
        again.commit()
        assert again._conn.call(again._conn.js.stream_info(stream)).state.last_seq == before
        assert len(again.unread("carol", 100)) == 10 and again.unread("bob", 100) == []
    finally:
        again.close()


def test_a_commit_jetstream_never_acknowledged_is_written_at_the_next_start(tmp_path: Path) -> None:
    node = NatsNode("frozen", tmp_path / "nats").start()
    overrides = nats_overrides(node.url, nats_timeout=2.0)
    try:
        store = open_nats(tmp_path, overrides)
        first = stored(store)
        store.commit()
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)  # NATS stops answering
        late = stored(store)
        store._conn.begin_stop(0.5)
        store.close()  # the cache has `late`; JetStream does not
        node.kill()  # what it had not read is gone with it
        node.start()
        store = open_nats(tmp_path, overrides)  # writes it now
        close_and_delete_cache(store)
        rebuilt = open_nats(tmp_path, overrides)
        try:
            assert [e.id for e in rebuilt.unread("bob", 10)] == [first.id, late.id]
        finally:
            rebuilt.close()
    finally:
        node.kill()


def test_a_state_stream_from_before_the_state_log_is_taken_over(tmp_path: Path, nats_node: NatsNode) -> None:
    overrides = nats_overrides(nats_node.url)
    first = open_nats(tmp_path, overrides)  # makes the streams; then writes the older format
    env = envelope(body={"x": 1})
    env.seq = 7
    pre = first.layout.state_prefix
    records = [
        (
            f"{pre}P.alice",
            {"name": "alice", "secret_hash": "h", "meta": {}, "created_at": T0, "last_seen": T0},
        ),
        (f"{pre}M.{env.id}", {"env": env.to_wire(), "seq": 7, "answer": {"status": "queued"}}),
        (f"{pre}R.{env.id}.bob", ["delivered", T0 + 2, env.expires_at, 7, False]),
        (f"{pre}S.{token('#build')}.bob", 1),
    ]

    async def write_older() -> None:
        for subject, record in records:
            await first._conn.js.publish(subject, dumps(record).encode())

    first._conn.call(write_older())
    close_and_delete_cache(first)
    for _ in range(2):  # taken over; then, the cache gone again, read back from the log
        again = open_nats(tmp_path, overrides)
        try:
            assert again.get_peer("alice") is not None
            assert again.get_message(env.id) == env and again.get_message(env.id).seq == 7
            assert again.get_answer(env.id) == {"status": "queued"}
            assert again.get_receipt(env.id, "bob").state is ReceiptState.DELIVERED
            assert again.subscribers("#build") == ["bob"]
        finally:
            close_and_delete_cache(again)


def test_a_read_cut_off_as_a_slow_consumer_comes_back_whole_and_in_order(tmp_path: Path) -> None:
    """A start's catch-up once lost the batches in flight when NATS cut its client off
    as a slow consumer (a gap in the cache, noticed only by the batches' numbers);
    the delivery count shows the loss now and the rest is read again."""
    node = NatsNode("strict", tmp_path / "nats", extra='write_deadline: "100ms"').start()
    store = open_nats(tmp_path, nats_overrides(node.url))
    conn, layout = store._conn, store.layout
    payloads = [bytes([65 + n % 26]) * 900_000 for n in range(60)]  # 54 MB

    async def publish() -> None:
        for n, payload in enumerate(payloads):
            await conn.js.publish(f"{layout.state_prefix}big.{n}", payload)

    try:
        conn.call(publish(), timeout=60)

        async def stall() -> None:
            """Once the read's consumer exists, stop reading the socket for a while."""
            async with asyncio.timeout(10):
                while not (await conn.js.stream_info(layout.state_stream)).state.consumer_count:
                    continue
            time.sleep(1.5)  # sleep-ok: the stall itself (it blocks the client's loop)

        reading = conn.spawn(conn.read_stream(layout.state_stream, f"{layout.state_prefix}big.>", 1))
        conn.spawn(stall()).result(15)
        got = reading.result(60)
        assert [subject.rsplit(".", 1)[1] for _, subject, _ in got] == [str(n) for n in range(60)]
        assert [data for _, _, data in got] == payloads
    finally:
        store.close()
        node.kill()
