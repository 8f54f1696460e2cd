"""Compaction of the NATS store's state log: a snapshot in JetStream, then the log
before it purged. A start with no cache restores the snapshot and reads the tail;
a crash at any step of a compaction loses nothing that was committed; commits go
on while a snapshot is taken. Real nats-server, real SQLite; a "crash" abandons
the store as a killed process would (nothing more is written, no clean close)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sessionmesh.backends.nats import NatsStore
from sessionmesh.backends.nats import snapshot as snapshots
from sessionmesh.envelope import Envelope, ReceiptState
from sessionmesh.errors import MeshError, StorageError
from sessionmesh.storage import PeerRecord, ReceiptUpdate
from tests.conftest import nats_overrides
from tests.natsserver import NatsNode, cluster, start_all
from tests.storage.test_contract import T0, stored
from tests.storage.test_nats_store import close_and_delete_cache, open_nats

T = TypeVar("T")
MANUAL = {"nats_compact_batches": 0, "nats_compact_bytes": 0}  # compactions only when a test runs one


def log_state(store: NatsStore) -> Any:
    conn = store._conn
    return conn.call(conn.js.stream_info(store.layout.state_stream)).state


def head_of(store: NatsStore) -> snapshots.Head | None:
    return store._conn.call(snapshots.read_head(store._conn.js, store.layout))


def write(store: NatsStore, count: int) -> list[Envelope]:
    """``count`` messages to bob, one commit each; those whose seq is a multiple of
    three are read."""
    out = []
    for _ in range(count):
        env = stored(store)
        if env.seq % 3 == 0:
            store.update_receipts([ReceiptUpdate(env.id, "bob", ReceiptState.READ, T0 + env.seq)])
        store.commit()
        out.append(env)
    return out


def crash(store: NatsStore) -> None:
    """What a SIGKILL leaves: what was committed, and no more (no last commit, no
    checkpoint, the compactor gone with the process)."""
    store.compactor.stop(1.0)
    store._closed = True
    store._ops.clear()
    store._db.rollback()
    store._db.close()
    store._conn.close()


def expect_all(store: NatsStore, sent: list[Envelope]) -> None:
    """Every message once, in order, with its receipt's state."""
    unread = [e.id for e in store.unread("bob", 10_000)]
    assert len(unread) == len(set(unread))
    assert unread == [e.id for e in sent if e.seq % 3 != 0]
    for env in sent[::7]:
        assert store.get_message(env.id) == env
    read = next(e for e in sent if e.seq % 3 == 0)
    assert store.get_receipt(read.id, "bob").state is ReceiptState.READ


def test_a_compaction_purges_the_log_and_a_lost_cache_comes_back_from_snapshot_and_tail(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    overrides = nats_overrides(nats_node.url, **MANUAL)
    store = open_nats(tmp_path, overrides)
    store.put_peer(PeerRecord("alice", "h", {"role": "grip"}, T0, T0 + 1))
    store.subscribe("#build", "bob")
    store.append_audit(T0, "started", {})
    sent = write(store, 30)
    before = log_state(store)
    head = store.compactor.compact()
    assert head is not None and head.batch == store.acknowledged()
    after = log_state(store)
    assert after.messages == 0 and after.first_seq == before.last_seq + 1
    assert store.compactor.compact() is None  # nothing new since
    sent += write(store, 4)  # the tail
    close_and_delete_cache(store)

    again = open_nats(tmp_path, overrides)
    try:
        assert again.restored == head
        assert again.replayed == 4  # the tail only
        expect_all(again, sent)
        assert again.get_peer("alice") == PeerRecord("alice", "h", {"role": "grip"}, T0, T0 + 1)
        assert again.subscribers("#build") == ["bob"]
        assert [e["event"] for e in again.read_audit(after=0, limit=10)] == ["started"]
        newer = stored(again)
        again.commit()
        assert newer.seq > sent[-1].seq
    finally:
        again.close()


@pytest.mark.parametrize("keep_cache", [True, False], ids=["cache kept", "cache lost"])
@pytest.mark.parametrize("step", ["copied", "upload cut short", "uploaded", "half purged", "purged"])
def test_a_crash_at_any_step_of_a_compaction_loses_nothing_committed(
    tmp_path: Path, nats_node: NatsNode, step: str, keep_cache: bool
) -> None:
    overrides = nats_overrides(nats_node.url, **MANUAL)
    store = open_nats(tmp_path, overrides)
    sent = write(store, 12)
    first = store.compactor.compact()  # an earlier snapshot, which the crash must not spoil
    sent += write(store, 12)
    compactor = store.compactor
    copy = compactor.copy()
    assert copy is not None and copy.batch > first.batch
    sent += write(store, 5)  # committed while the compaction runs: after the copy
    if step == "upload cut short":  # some chunks of a new object, never its meta record
        conn, bucket = store._conn, store.layout.snapshot_bucket
        conn.call(conn.js.publish(f"$O.{bucket}.C.cutshort", b"x" * 1000))
    if step in ("uploaded", "half purged", "purged"):
        head = compactor.upload(copy)
        assert head_of(store) == head
    if step == "half purged":  # more than a purge can do (it is one request), and still safe
        conn = store._conn
        conn.call(conn.js.purge_stream(store.layout.state_stream, seq=(first.seq + head.seq) // 2))
    if step == "purged":
        compactor.purge(head)
    crash(store)
    if not keep_cache:
        for suffix in ("", "-wal", "-shm"):
            Path(store.path + suffix).unlink(missing_ok=True)

    again = open_nats(tmp_path, overrides)
    try:
        expect_all(again, sent)
        sent += write(again, 3)
        later = again.compactor.compact()  # the next compaction finishes the work
        assert later is not None and later.batch == again.acknowledged()
        conn, layout = again._conn, again.layout
        chunks = conn.call(conn.js.stream_info(layout.snapshot_stream, subjects_filter="$O.>")).state.subjects
        assert set(chunks) == {f"$O.{layout.snapshot_bucket}.C.{later.nuid}"} | {
            s for s in chunks if ".M." in s
        }, "chunks no snapshot owns are swept"
        close_and_delete_cache(again)
        rebuilt = open_nats(tmp_path, overrides)
        try:
            assert rebuilt.restored == later and rebuilt.replayed == 0
            expect_all(rebuilt, sent)
        finally:
            rebuilt.close()
    finally:
        again.close()


def test_commits_go_on_while_snapshots_are_taken_on_their_own_thread(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    overrides = nats_overrides(nats_node.url, nats_compact_batches=15, nats_compact_bytes=0)
    store = open_nats(tmp_path, overrides)
    sent: list[Envelope] = []
    while store.compactor.done < 3 and len(sent) < 3000:
        sent += write(store, 5)
    assert store.compactor.wait_done(3, timeout=30), f"{store.compactor.done} compactions in 30 s"
    sent += write(store, 2)
    assert log_state(store).first_seq > 1
    close_and_delete_cache(store)
    again = open_nats(tmp_path, overrides)
    try:
        assert again.restored is not None
        expect_all(again, sent)
    finally:
        again.close()


def test_a_snapshot_of_another_state_log_is_not_restored(tmp_path: Path, nats_node: NatsNode) -> None:
    overrides = nats_overrides(nats_node.url, **MANUAL)
    store = open_nats(tmp_path, overrides)
    write(store, 3)
    store.compactor.compact()
    conn, layout = store._conn, store.layout
    conn.call(conn.js.delete_stream(layout.state_stream))  # an operator starts the log afresh
    close_and_delete_cache(store)
    again = open_nats(tmp_path, overrides)
    try:
        assert again.restored is None
        assert again.unread("bob", 10) == []
    finally:
        again.close()


def test_a_store_closes_within_its_stop_budget_while_a_compaction_waits_on_a_frozen_nats(
    tmp_path: Path,
) -> None:
    node = NatsNode("frozen", tmp_path / "nats").start()
    try:
        store = open_nats(tmp_path, nats_overrides(node.url, nats_timeout=5.0, **MANUAL))
        write(store, 5)
        assert node.proc is not None
        node.freeze()  # NATS stops answering

        def compact() -> None:
            with contextlib.suppress(MeshError):
                store.compactor.compact()

        compacting = threading.Thread(target=compact)
        compacting.start()
        t0 = time.monotonic()
        store._conn.begin_stop()
        store.close()
        assert time.monotonic() - t0 < 5.0
        compacting.join(15)
        assert not compacting.is_alive()
    finally:
        node.thaw()
        node.kill()


def retried(step: Callable[[], T], timeout: float = 60.0) -> T:
    """``step`` until it does not raise `MeshError` (a compaction's step is tried again
    later by the compactor's thread, a start by whatever supervises the broker)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return step()
        except MeshError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # sleep-ok: pacing the retries while NATS elects new leaders


def test_a_nats_node_lost_during_compactions_on_r3_loses_nothing(tmp_path: Path) -> None:
    nodes = start_all(cluster(tmp_path / "nats", name="c"))
    try:
        urls = ",".join(node.url for node in nodes)
        overrides = nats_overrides(urls, nats_replicas=3, nats_timeout=10.0, **MANUAL)
        store = open_nats(tmp_path, overrides)
        sent = write(store, 10)
        copy = store.compactor.copy()
        assert copy is not None
        nodes[0].kill()  # mid-compaction: a new leader is elected for each stream it led
        head = retried(lambda: store.compactor.upload(copy))
        retried(lambda: store.compactor.purge(head))
        store.compactor.discard()
        sent += write(store, 3)
        close_and_delete_cache(store)
        # as a supervisor starts it again (a try cut short may have restored the cache already)
        again = retried(lambda: open_nats(tmp_path, overrides))
        try:
            expect_all(again, sent)
        finally:
            again.close()
    finally:
        for node in nodes:
            node.kill()


def test_a_log_purged_with_no_snapshot_is_not_compacted_again(tmp_path: Path, nats_node: NatsNode) -> None:
    """Batches gone from the log with no snapshot holding them (the object store
    emptied by hand): the start applies what is there and says so, and compacts
    nothing, so the log keeps whatever else it holds."""
    overrides = nats_overrides(nats_node.url, **MANUAL)
    store = open_nats(tmp_path, overrides)
    write(store, 6)
    conn = store._conn
    conn.call(conn.js.purge_stream(store.layout.state_stream, seq=3))  # batches 1 and 2 gone
    close_and_delete_cache(store)
    again = open_nats(tmp_path, overrides)
    try:
        assert again.restored is None and again.replayed == 4
        assert again.compactor.held is not None and not again.compactor.due()
        with pytest.raises(StorageError, match="no snapshot holds them"):
            again.compactor.compact()
    finally:
        again.close()
