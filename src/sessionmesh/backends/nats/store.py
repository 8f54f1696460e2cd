"""The NATS store: JetStream holds a machine's state; the SQLite store is its local,
materialised view.

Every commit becomes batches of operations on the machine's state log
(`Layout.state_log_subject`, `journal`), and the runner answers nothing before
JetStream has acknowledged them (group commit). The same writes go to a SQLite
file under ``$MESH_HOME`` (`SqliteStore`: the same queries and indexes as the
one-machine broker, so memory stays bounded by what is live, not by history). The
file records the last batch it holds and where in the log that was, so a start
reads only the batches after it; a file that is gone, or that belongs to another
stream, is rebuilt from the newest snapshot of the state (`snapshot`) and the log
after it. The log is compacted now and then (`compaction`): a snapshot, then the
batches it holds purged. A batch the file holds but JetStream may not (the broker
died before the acknowledgement) waits in its outbox and is written again at the
next start. The lease table is the mesh's, in KV (`leases`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from nats.js import api

from ...codec import dumps, dumps_bytes, loads
from ...config import Settings
from ...envelope import Envelope, ReceiptState
from ...errors import BadRequest, DuplicateMessage
from ...storage import PeerRecord, ReceiptUpdate, ThreadRecord
from ...storage.sqlite import SqliteStore
from . import journal, snapshot
from .compaction import Compactor
from .connection import COMMIT_TIMEOUT, LAYOUT_PATIENCE, Committer, NatsConnection, Record
from .layout import PRESENCE_TTL, Layout, layout_of, token
from .leases import SharedLeases

log = logging.getLogger("sessionmesh.nats")
CATCH_UP_CHUNK = 500  # batches read from the log at a time at start
SLOW_START = 2.0  # seconds: a layout taking longer to be ready is logged
_STREAM, _BATCH, _SEQ = "nats_stream", "nats_batch", "nats_stream_seq"  # cache meta keys


class NatsStore(SharedLeases, SqliteStore):
    """A `Store` whose durable truth is the machine's JetStream state log, read and
    written through a SQLite cache at ``cache_path`` (see the module docstring)."""

    def __init__(
        self, conn: NatsConnection, layout: Layout, cache_path: str, *, owns_connection: bool = False
    ) -> None:
        SqliteStore.__init__(self, cache_path)
        self._conn = conn
        self.layout = layout
        self._owns = owns_connection
        self._ops: list[bytes] = []  # this batch's operations, encoded
        self._directory: dict[str, Any] = {}  # peers-bucket key -> public peer record
        self._remote_subs: dict[str, set[str]] = {}  # topic -> LABEL:name subscribed elsewhere
        self._committer = Committer(conn)
        self._acked = (0, 0)  # (batch, stream seq) last acknowledged, set on the NATS thread
        self._settled = 0  # the batch the cache last recorded as acknowledged
        self._closed = False
        self.replayed = 0  # batches read back from the log at start (not already cached)
        self.restored: snapshot.Head | None = None  # the snapshot a start restored the cache from
        self.stream_ident = ""  # the state log's name@created, as the cache records it
        settings = conn.settings
        self.compactor = Compactor(
            self, batches=settings.nats_compact_batches, nbytes=settings.nats_compact_bytes
        )
        self._init_leases()
        self._catch_up()
        self.compactor.start()

    # -- start: the log after what the cache holds -----------------------------------
    def _catch_up(self) -> None:
        stream = self.layout.state_stream
        info = self._conn.call(
            self._conn.patiently(lambda: self._conn.js.stream_info(stream), "reading the state log"),
            timeout=max(self._conn.timeout, LAYOUT_PATIENCE + 5.0),
            doing="reading the state log",
        )
        ident = self.stream_ident = f"{self.layout.state_stream}@{info.created}"
        seq = int(self.get_meta(_SEQ) or 0)
        if self.get_meta(_STREAM) not in (None, ident) or seq > info.state.last_seq:
            log.warning("nats: the cache %s is not this state log's; rebuilding it", self.path)
            self._rebuild()
            seq = 0
        head = self._conn.call(
            snapshot.read_head(self._conn.js, self.layout), doing="reading the state snapshot"
        )
        if head is not None and head.stream != ident:
            log.warning("nats: the state snapshot belongs to an earlier state log; it is not used")
            head = None
        if head is not None and head.batch > int(self.get_meta(_BATCH) or 0):
            # the cache lacks batches the snapshot holds (and the log may not any more)
            self._restore(head)
            seq = head.seq
        self.set_meta(_STREAM, ident)
        self.compactor.measured(
            log_batches=info.state.messages,
            log_bytes=info.state.bytes,
            snapshot_bytes=head.size if head else 0,
        )
        start = int(self.get_meta(_BATCH) or 0)
        order = journal.Reorder(start)
        unsure = dict(self.outbox())  # batches the cache holds that JetStream may not
        while seq < info.state.last_seq:
            records = self._conn.call(
                self._conn.read_stream(
                    self.layout.state_stream, self.layout.state_log_filter, seq + 1, CATCH_UP_CHUNK
                ),
                timeout=max(self._conn.timeout, 120.0),
                doing="reading the state log",
            )
            if not records:
                break
            for seq, _, data in records:  # noqa: B007 - the last seq read is kept
                n, ops = journal.unpack(data)
                unsure.pop(n, None)
                for batch in order.add(n, ops):
                    self._apply_all(batch)
            self._record(order.applied, seq)
        if order.waiting:
            gap = f"the state log lacks batches {order.applied + 1} to {order.waiting[0] - 1}"
            log.warning(
                "nats: %s (never acknowledged, or purged with no snapshot holding them); the %d after"
                " them are applied",
                gap,
                len(order.waiting),
            )
            if order.applied == 0:  # nothing before the gap: was the snapshot store emptied?
                self.compactor.hold(f"{gap}, and no snapshot holds them")
        for batch in order.rest():
            self._apply_all(batch)
        self._record(order.applied, seq)
        self._settled = order.applied
        if unsure:
            self._write_again(unsure)
        if order.applied == 0 and info.state.messages:  # a stream from before the state log
            from .legacy import import_legacy

            if taken := import_legacy(self):
                log.warning("nats: took over %d records of the state stream's older format", taken)

    def acknowledged(self) -> int:
        """(any thread) The last batch JetStream has acknowledged, with every one before it."""
        return max(self._acked[0], self._settled)

    def _record(self, batch: int, seq: int) -> None:
        self.set_meta(_BATCH, str(batch))
        self.set_meta(_SEQ, str(seq))
        self.commit_local()

    def _restore(self, head: snapshot.Head) -> None:
        """Replace the cache file with the snapshot ``head`` names."""
        path, part = self.path, self.path + ".restore"
        log.warning(
            "nats: restoring the cache from the state snapshot (batch %d, %d bytes)", head.batch, head.size
        )
        SqliteStore.close(self)
        try:
            self._conn.call(
                snapshot.fetch(self._conn.js, self.layout, head, part),
                timeout=max(
                    self._conn.timeout, 120.0 + head.size / 2**20
                ),  # a second per MiB, beyond two minutes
                doing="reading the state snapshot",
            )
            for suffix in ("-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.unlink(path + suffix)
            os.replace(part, path)
        finally:
            if os.path.exists(part):
                os.unlink(part)
            SqliteStore.__init__(self, path)
        # what the head says the file holds (the file says the same; the head decides)
        self.set_meta(_BATCH, str(head.batch))
        self.set_meta(_SEQ, str(head.seq))
        self.outbox_drop(head.batch)
        self.commit_local()
        self.restored = head

    def _rebuild(self) -> None:
        path = self.path
        SqliteStore.close(self)  # its file only: the log is not touched
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        SqliteStore.__init__(self, path)

    def _write_again(self, unsure: dict[int, bytes]) -> None:
        """Write the batches the cache holds and the log may not, in order (a batch
        already there is dropped by its message id within the duplicate window, and
        applied once by number on a later read in any case)."""
        records: list[Record] = [
            (self.layout.state_log_subject(n), payload, {"Nats-Msg-Id": str(n)})
            for n, payload in sorted(unsure.items())
        ]
        acks = self._conn.call(
            self._committer.submit(records), timeout=COMMIT_TIMEOUT, doing="writing the state log again"
        )
        self.outbox_drop(max(unsure))
        self.set_meta(_SEQ, str(max(a.seq for a in acks)))
        self.commit_local()

    def _apply_all(self, ops: list[list[Any]]) -> None:
        self.replayed += 1
        for op in ops:
            apply = _APPLY.get(op[0]) if op else None
            if apply is None:
                log.warning("nats: skipped a state-log op this version does not know: %.40r", op)
                continue
            apply(self, *op[1:])

    # -- commit --------------------------------------------------------------------------
    def commit(self) -> None:
        """Write what changed and wait until JetStream has it, and everything committed
        before (within what is left of a stop's budget once one began)."""
        assert self._committer.conn is self._conn, "commit() blocks: not while commits go through the loop"
        future = self.commit_async()
        assert isinstance(future, concurrent.futures.Future)
        future.result(self._conn.time_left(COMMIT_TIMEOUT))

    def commit_async(self) -> concurrent.futures.Future[Any] | asyncio.Future[Any]:
        """Commit the cache and start writing this batch to the log; the future is done
        when JetStream has it and every earlier batch (`Committer`). The broker goes on
        with the next commands meanwhile and holds back what they caused until their
        own batch is done: group commit, pipelined."""
        self._settle()
        batches = journal.pack(self._ops, int(self.get_meta(_BATCH) or 0) + 1) if self._ops else []
        self._ops = []
        for n, payload in batches:
            self.outbox_put(n, payload)
        if batches:
            self.set_meta(_BATCH, str(batches[-1][0]))
            self.compactor.wrote(len(batches), sum(len(payload) for _, payload in batches))
        self.commit_local()
        records: list[Record] = [
            (self.layout.state_log_subject(n), payload, {"Nats-Msg-Id": str(n)}) for n, payload in batches
        ]
        records.extend(
            (self._conn.kv_subject(self.layout.peers_bucket, key), dumps_bytes(record), None)
            for key, record in self._directory.items()
        )
        self._directory.clear()
        future = self._committer.conn.spawn(self._committer.submit(records))
        if batches:
            future.add_done_callback(functools.partial(self._on_stored, batches[-1][0]))
        return future

    def commit_through(self, conn: NatsConnection | None) -> None:
        """Write the next commits through ``conn``, a connection on the broker's own
        loop (`NatsConnection.here`: no hand-over between threads per commit), or with
        None through the store's own connection again (`commit` blocks only on that
        one). Call it between commits: once the last one through the other has been
        acknowledged (`NatsBackend.stop` waits for it)."""
        self._committer = Committer(conn or self._conn)

    def _on_stored(self, batch: int, future: concurrent.futures.Future[Any] | asyncio.Future[Any]) -> None:
        """(the committing connection's loop) JetStream holds ``batch``: the next commit forgets it."""
        if future.cancelled() or future.exception() is not None:
            return
        seqs = [a.seq for a in future.result() if getattr(a, "stream", None) == self.layout.state_stream]
        if seqs and batch > self._acked[0]:
            self._acked = (batch, max(seqs))

    def _settle(self) -> None:
        """Record in the cache what JetStream acknowledged since the last commit."""
        batch, seq = self._acked
        if batch > self._settled:
            self.outbox_drop(batch)
            self.set_meta(_SEQ, str(seq))
            self._settled = batch

    def close(self) -> None:
        """Write what is left and close. Once the broker is stopping (`begin_stop`), the
        wait is bounded by the stop's budget: what JetStream has not acknowledged by
        then was never answered to anyone; it stays in the cache's outbox and is
        written at the next start."""
        if self._closed:
            return
        self._closed = True
        self.compactor.stop(self._conn.time_left(1.0))
        try:
            self.commit()
        except concurrent.futures.TimeoutError:
            log.error(
                "nats: the last commit was not acknowledged before the stop; it is written at the next start"
            )
        finally:
            try:
                self._settle()
                SqliteStore.close(self)
            finally:
                if self._owns:
                    self._conn.close()

    def checkpoint(self) -> None:
        SqliteStore.checkpoint(self)

    # -- journalled writes ---------------------------------------------------------------
    def _op(self, *op: Any) -> None:
        self._ops.append(dumps_bytes(op))

    def put_peer(self, peer: PeerRecord) -> None:
        SqliteStore.put_peer(self, peer)
        self._op("P", peer.name, peer.secret_hash, peer.meta, peer.created_at, peer.last_seen)
        self._publish(peer.name)

    def delete_peer(self, name: str) -> None:
        SqliteStore.delete_peer(self, name)
        self._op("P-", name)
        self._directory[f"{self.layout.machine}.{token(name)}"] = None

    def _publish(self, name: str) -> None:
        """Put a local peer's public record (no secret; its topics) in the directory."""
        stored = self.get_peer(name)
        if stored is None:
            return
        self._directory[f"{self.layout.machine}.{token(name)}"] = {
            "name": stored.name,
            "meta": stored.meta,
            "created_at": stored.created_at,
            "last_seen": stored.last_seen,
            "machine": self.layout.machine,
            "topics": self.topics_of(name),
            "catch_up": self._catch_up_topics(name),
        }

    def add_message(self, env: Envelope) -> int:
        seq = SqliteStore.add_message(self, env)
        self._op("M", env.to_wire(), seq)
        return seq

    def set_answer(self, msg_id: str, answer: dict[str, Any]) -> None:
        SqliteStore.set_answer(self, msg_id, answer)
        self._op("A", msg_id, answer)

    def add_receipts(
        self, env: Envelope, recipients: Iterable[str], state: ReceiptState = ReceiptState.QUEUED
    ) -> None:
        recipients = list(recipients)
        SqliteStore.add_receipts(self, env, recipients, state)
        self._op("R", env.id, recipients, state.value)

    def update_receipts(self, updates: Iterable[ReceiptUpdate]) -> None:
        updates = list(updates)
        SqliteStore.update_receipts(self, updates)
        self._op("U", [[u.msg_id, u.recipient, u.state.value, u.ts] for u in updates])

    def expire_due(self, now: float) -> list[tuple[str, str, str]]:
        expired = SqliteStore.expire_due(self, now)
        if expired:
            self._op("U", [[m, r, ReceiptState.EXPIRED.value, now] for m, r, _ in expired])
        return expired

    def put_thread(self, thread: ThreadRecord) -> None:
        SqliteStore.put_thread(self, thread)
        self._op("T", thread.to_wire())

    def subscribe(self, topic: str, name: str, *, catch_up: bool = False) -> None:
        """Subscribe a peer of this machine; with ``catch_up`` the directory asks every
        other machine for the topic's messages it stored (`NatsBackend` there sends
        those this peer has no copy of). A subscriber elsewhere (``LABEL:name``) is
        the directory's to know (`set_remote_topics`): nothing is stored here."""
        if ":" in name:
            return
        SqliteStore.subscribe(self, topic, name)
        self._op("S", topic, name)
        if catch_up:
            self._set_catch_up(name, {*self._catch_up_topics(name), topic})
        self._publish(name)

    def unsubscribe(self, topic: str, name: str) -> None:
        SqliteStore.unsubscribe(self, topic, name)
        self._op("S-", topic, name)
        if topic in self._catch_up_topics(name):
            self._set_catch_up(name, set(self._catch_up_topics(name)) - {topic})
        self._publish(name)

    def _catch_up_topics(self, name: str) -> list[str]:
        """The topics ``name`` subscribed to with catch-up."""
        return loads(self.get_meta(f"catch_up.{name}") or "[]")

    def _set_catch_up(self, name: str, topics: set[str]) -> None:
        value = dumps(sorted(topics))
        self.set_meta(f"catch_up.{name}", value)
        self._op("K", f"catch_up.{name}", value)

    def append_audit(self, ts: float, event: str, data: dict[str, Any]) -> None:
        SqliteStore.append_audit(self, ts, event, data)
        self._op("L", ts, event, data)

    # -- topics across machines ----------------------------------------------------------
    def subscribers(self, topic: str) -> list[str]:
        """This machine's subscribers and, as ``LABEL:name``, those of other machines
        (from the directory): a topic message is stored for them all here."""
        local = SqliteStore.subscribers(self, topic)
        remote = self._remote_subs.get(topic)
        return sorted({*local, *remote}) if remote else local

    def set_remote_topics(self, remote: str, topics: Iterable[str]) -> None:
        """What the directory says ``remote`` (``LABEL:name``) subscribes to now."""
        wanted = set(topics)
        for topic, names in list(self._remote_subs.items()):
            if topic not in wanted:
                names.discard(remote)
                if not names:
                    del self._remote_subs[topic]
        for topic in wanted:
            self._remote_subs.setdefault(topic, set()).add(remote)


# -- reading the log back: each op applied to the cache alone -----------------------------


def _restore_message(store: SqliteStore, wire: dict[str, Any], seq: int) -> None:
    env = Envelope.from_wire(wire)
    env.seq = seq
    try:
        store.restore_message(env)
    except DuplicateMessage:
        return


def _restore_receipts(store: SqliteStore, msg_id: str, recipients: list[str], state: str) -> None:
    env = store.get_message(msg_id)
    if env is not None:  # the cache's method: what is read back is not journalled again
        SqliteStore.add_receipts(store, env, recipients, ReceiptState(state))


def _restore_updates(store: SqliteStore, rows: list[list[Any]]) -> None:
    SqliteStore.update_receipts(store, (ReceiptUpdate(m, r, ReceiptState(s), ts) for m, r, s, ts in rows))


_APPLY: dict[str, Callable[..., None]] = {
    "P": lambda s, *f: SqliteStore.put_peer(s, PeerRecord(*f)),
    "P-": SqliteStore.delete_peer,
    "M": _restore_message,
    "A": SqliteStore.set_answer,
    "R": _restore_receipts,
    "U": _restore_updates,
    "T": lambda s, wire: SqliteStore.put_thread(s, ThreadRecord(**wire)),
    "S": SqliteStore.subscribe,
    "S-": SqliteStore.unsubscribe,
    "L": SqliteStore.append_audit,
    "K": SqliteStore.set_meta,
}


def _stream(name: str, subject: str, replicas: int, **more: Any) -> api.StreamConfig:
    return api.StreamConfig(
        name=name, subjects=[subject], num_replicas=replicas, storage=api.StorageType.FILE, **more
    )


async def ensure_layout(conn: NatsConnection, layout: Layout, replicas: int) -> None:
    """Create every stream and bucket this machine uses, or update them in place, all
    at once: on a cluster each new replicated stream elects a leader of its own, which
    takes a moment, and seven of them one after the other made a start slow."""
    if replicas < 1 or replicas > 5:
        raise BadRequest("nats_replicas must be 1 to 5")
    started = time.monotonic()
    await asyncio.gather(
        *(
            conn.ensure_stream(config)
            for config in (
                # a batch written again replaces its first copy
                _stream(layout.state_stream, layout.state_prefix + ">", replicas, max_msgs_per_subject=1),
                _stream(layout.audit_stream, layout.audit_subject, replicas),
                _stream(
                    layout.route_stream,
                    layout.route_filter,
                    replicas,
                    retention=api.RetentionPolicy.WORK_QUEUE,  # a record is gone once its machine took it
                    allow_msg_ttl=True,
                    duplicate_window=120.0,
                ),
                snapshot.stream_config(layout, replicas),
            )
        ),
        conn.ensure_bucket(layout.peers_bucket, replicas=replicas),
        conn.ensure_bucket(layout.presence_bucket, replicas=replicas, ttl=PRESENCE_TTL),
        conn.ensure_bucket(layout.leases_bucket, replicas=replicas),
    )
    took = time.monotonic() - started
    if took > SLOW_START:
        log.warning("nats: the streams and buckets took %.1f s to be ready (%d replicas)", took, replicas)


def open_store(settings: Settings) -> NatsStore:
    """Connect, make sure the streams and buckets exist, and load this machine's
    state. Raises `Unavailable` (no NATS), `BadRequest` (a bad label), `StorageError`."""
    layout = layout_of(settings)
    conn = NatsConnection(settings).open()
    try:
        conn.call(
            ensure_layout(conn, layout, settings.nats_replicas),
            timeout=max(conn.timeout, 30.0),
            doing="creating streams and buckets",
        )
        cache = os.path.join(settings.home, f"nats-{layout.namespace}-{layout.machine}.db")
        return NatsStore(conn, layout, cache, owns_connection=True)
    except BaseException:
        conn.close()
        raise
