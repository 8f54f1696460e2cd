"""The NATS store: a broker's state journalled to its machine's JetStream state
stream, the lease table in KV, the audit log in a stream of its own."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import secrets
from collections.abc import Iterable
from typing import Any

from nats.js import api

from ...codec import dumps, loads
from ...config import Settings
from ...core.locks import Lease
from ...envelope import Envelope, ReceiptState
from ...errors import BadRequest, Contention, DuplicateMessage, StorageError, Unavailable
from ...storage import PeerRecord, ReceiptUpdate, ThreadRecord
from ...storage.memory import MemoryStore
from .connection import COMMIT_TIMEOUT, Committer, NatsConnection, Record
from .layout import PRESENCE_TTL, Layout, layout_of, token, untoken

log = logging.getLogger("sessionmesh.nats")
LEASE_READ_TIMEOUT = 1.0  # the tick reads the lease table: it must not stall the broker long


def _peer_wire(peer: PeerRecord) -> dict[str, Any]:
    return {
        "name": peer.name,
        "secret_hash": peer.secret_hash,
        "meta": peer.meta,
        "created_at": peer.created_at,
        "last_seen": peer.last_seen,
    }


class NatsStore(MemoryStore):
    """A `Store` journalled to JetStream: a working copy in memory, every changed
    record written to the machine's state stream at `commit`, read back on open.

    The lease table is the mesh's, not the machine's: `leases` reads it from KV, and
    `put_lease` writes it by compare-and-set on the revision `leases` saw, raising
    `Contention` when another broker wrote in between. Holders on this machine are
    plain names; holders elsewhere are ``LABEL:name``.
    """

    def __init__(self, conn: NatsConnection, layout: Layout, *, owns_connection: bool = False) -> None:
        super().__init__()
        self._conn = conn
        self.layout = layout
        self._owns = owns_connection
        self._dirty: dict[str, Any] = {}  # state subject -> record (None: deleted)
        self._directory: dict[str, Any] = {}  # peers-bucket key -> public peer record
        self._remote_subs: dict[str, set[str]] = {}  # topic -> LABEL:name subscribed elsewhere
        self._audit_out: list[bytes] = []
        self._lease_rev: int | None = None
        self._lease_rows: list[dict[str, Any]] = []
        self._committer = Committer(conn)
        self._boot = secrets.token_hex(6)
        self._audit_n = 0
        self._closed = False
        self._load()

    # -- lifecycle ---------------------------------------------------------------------
    def _load(self) -> None:
        records = self._conn.call(
            self._conn.read_stream(self.layout.state_stream, self.layout.state_prefix + ">", 1),
            timeout=max(self._conn.timeout, 120.0),
            doing="reading the state stream",
        )
        pre = len(self.layout.state_prefix)
        messages: dict[str, Any] = {}
        receipts: dict[tuple[str, str], Any] = {}
        for _, subject, data in records:
            if not data:
                continue
            kind, _, key = subject[pre:].partition(".")
            record = loads(data)
            if record is None:
                continue
            if kind == "P":
                self._peers[record["name"]] = PeerRecord(**record)
            elif kind == "M":
                messages[key] = record
            elif kind == "R":
                msg_id, _, who = key.partition(".")
                receipts[(msg_id, untoken(who))] = record
            elif kind == "T":
                self._threads[record["id"]] = ThreadRecord(**record)
            elif kind == "S":
                topic, _, who = key.partition(".")
                self._subs.setdefault(untoken(topic), set()).add(untoken(who))
        for record in sorted(messages.values(), key=lambda r: r["seq"]):
            env = Envelope.from_wire(record["env"])
            env.seq = record["seq"]
            self._messages[env.id] = env
            if record.get("answer"):
                self._answers[env.id] = record["answer"]
            self._seq = max(self._seq, env.seq)
        for (msg_id, who), (state, updated_at, expires_at, seq, urgent) in receipts.items():
            if msg_id in self._messages:
                self._receipts[(msg_id, who)] = [ReceiptState(state), updated_at, expires_at, seq, urgent]

    def commit(self) -> None:
        """Write every changed record (and the audit entries) and wait until JetStream
        has them, and everything committed before. Raises `StorageError` when that
        takes longer than `COMMIT_TIMEOUT` (NATS is gone)."""
        try:
            self.commit_async().result(COMMIT_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise StorageError(f"JetStream did not store a commit within {COMMIT_TIMEOUT:.0f}s") from None

    def commit_async(self) -> concurrent.futures.Future[None]:
        """Start committing what changed since the last commit; the future is done
        when JetStream has it and every earlier batch (`Committer`). The broker goes
        on with the next commands meanwhile and holds back what they caused until
        their own batch is done: group commit, pipelined."""
        records: list[Record] = [
            (self.layout.state_prefix + subject, dumps(record).encode(), None)
            for subject, record in self._dirty.items()
        ]
        records.extend(
            (self._conn.kv_subject(self.layout.peers_bucket, key), dumps(record).encode(), None)
            for key, record in self._directory.items()
        )
        for entry in self._audit_out:
            self._audit_n += 1  # the id lets JetStream drop an entry written again
            records.append(
                (self.layout.audit_subject, entry, {"Nats-Msg-Id": f"{self._boot}.{self._audit_n}"})
            )
        self._dirty.clear()
        self._directory.clear()
        self._audit_out.clear()
        return self._conn.spawn(self._committer.submit(records))

    def checkpoint(self) -> None:
        return None

    def close(self) -> None:
        """Write what is left and close. Once the broker is stopping (`begin_stop`), the
        wait is bounded by the stop's budget: what JetStream has not acknowledged by
        then was never answered to anyone, and is logged as given up."""
        if self._closed:
            return
        self._closed = True
        try:
            self.commit_async().result(self._conn.time_left(COMMIT_TIMEOUT))
        except concurrent.futures.TimeoutError:
            log.error("nats: the last commit was not acknowledged before the stop; its senders got no answer")
        finally:
            if self._owns:
                self._conn.close()

    # -- journalled writes -------------------------------------------------------------
    def put_peer(self, peer: PeerRecord) -> None:
        super().put_peer(peer)
        self._dirty[f"P.{token(peer.name)}"] = _peer_wire(self._peers[peer.name])
        self._publish(peer.name)

    def delete_peer(self, name: str) -> None:
        topics = [t for t, names in self._subs.items() if name in names]
        super().delete_peer(name)
        self._dirty[f"P.{token(name)}"] = None
        for topic in topics:
            self._dirty[f"S.{token(topic)}.{token(name)}"] = None
        self._directory[f"{self.layout.machine}.{token(name)}"] = None

    def _publish(self, name: str) -> None:
        """Put a local peer's public record (no secret; its topics) in the directory."""
        stored = self._peers.get(name)
        if stored is None:
            return
        public = _peer_wire(stored)
        del public["secret_hash"]
        public["machine"] = self.layout.machine
        public["topics"] = sorted(t for t, names in self._subs.items() if name in names)
        self._directory[f"{self.layout.machine}.{token(name)}"] = public

    # Envelopes are copied shallowly (the memory store deep-copies, to catch a test
    # that mutates what it read): nothing changes a stored envelope's body, and a
    # deep copy of every message read or written was a fifth of the broker's CPU.
    def add_message(self, env: Envelope) -> int:
        if env.id in self._messages:
            raise DuplicateMessage(f"message {env.id} is already stored")
        self._seq += 1
        env.seq = self._seq
        self._messages[env.id] = dataclasses.replace(env)
        self._journal_message(env.id)
        return env.seq

    def get_message(self, msg_id: str) -> Envelope | None:
        env = self._messages.get(msg_id)
        return dataclasses.replace(env) if env else None

    def _select(self, pred: Any) -> list[Envelope]:
        found = [e for e in self._messages.values() if pred(e)]
        return [dataclasses.replace(e) for e in sorted(found, key=lambda e: e.seq)]

    def unread(self, recipient: str, limit: int, after: tuple[int, int] | None = None) -> list[Envelope]:
        start = (not after[0], after[1]) if after is not None else (False, 0)
        keys = [
            (not v[4], v[3], m)
            for (m, r), v in self._receipts.items()
            if r == recipient and v[0].unread and (not v[4], v[3]) > start
        ]
        return [dataclasses.replace(self._messages[m]) for _, _, m in sorted(keys)[:limit]]

    def _journal_message(self, msg_id: str) -> None:
        env = self._messages[msg_id]
        self._dirty[f"M.{msg_id}"] = {
            "env": env.to_wire(),
            "seq": env.seq,
            "answer": self._answers.get(msg_id),
        }

    def set_answer(self, msg_id: str, answer: dict[str, Any]) -> None:
        super().set_answer(msg_id, answer)
        if msg_id in self._messages:
            self._journal_message(msg_id)

    def _journal_receipt(self, msg_id: str, recipient: str) -> None:
        rec = self._receipts.get((msg_id, recipient))
        if rec is not None:
            state, updated_at, expires_at, seq, urgent = rec
            self._dirty[f"R.{msg_id}.{token(recipient)}"] = [state.value, updated_at, expires_at, seq, urgent]

    def add_receipts(
        self, env: Envelope, recipients: Iterable[str], state: ReceiptState = ReceiptState.QUEUED
    ) -> None:
        recipients = list(recipients)
        super().add_receipts(env, recipients, state)
        for r in recipients:
            self._journal_receipt(env.id, r)

    def update_receipts(self, updates: Iterable[ReceiptUpdate]) -> None:
        updates = list(updates)
        super().update_receipts(updates)
        for u in updates:
            self._journal_receipt(u.msg_id, u.recipient)

    def expire_due(self, now: float) -> list[tuple[str, str, str]]:
        expired = super().expire_due(now)
        for msg_id, recipient, _ in expired:
            self._journal_receipt(msg_id, recipient)
        return expired

    def put_thread(self, thread: ThreadRecord) -> None:
        super().put_thread(thread)
        self._dirty[f"T.{thread.id}"] = thread.to_wire()

    def subscribe(self, topic: str, name: str) -> None:
        super().subscribe(topic, name)
        self._dirty[f"S.{token(topic)}.{token(name)}"] = 1
        self._publish(name)

    def unsubscribe(self, topic: str, name: str) -> None:
        super().unsubscribe(topic, name)
        self._dirty[f"S.{token(topic)}.{token(name)}"] = None
        self._publish(name)

    def subscribers(self, topic: str) -> list[str]:
        """This machine's subscribers and, as ``LABEL:name``, those of other machines
        (from the directory): a topic message is stored for them all here."""
        local = super().subscribers(topic)
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

    # -- the shared lease table --------------------------------------------------------
    def _qualify(self, holder: str) -> str:
        return holder if ":" in holder else f"{self.layout.machine}:{holder}"

    def _local(self, holder: str) -> str:
        mine = self.layout.machine + ":"
        return holder[len(mine) :] if holder.startswith(mine) else holder

    def _read_leases(self) -> None:
        data, rev = self._conn.call(
            self._conn.kv_get(self.layout.leases_bucket, "table"),
            timeout=LEASE_READ_TIMEOUT,
            doing="reading the lease table",
        )
        self._lease_rows = loads(data)["leases"] if data else []
        self._lease_rev = rev

    def _refresh_leases(self) -> None:
        """Read the table; when NATS is gone or slow, keep the one last read. A stale
        table is safe: every write is a compare-and-set on the revision it was read at."""
        try:
            self._read_leases()
        except (Unavailable, StorageError) as exc:
            log.debug("nats: the lease table as last read (%s)", exc)

    def _write_leases(self, rows: list[dict[str, Any]]) -> None:
        """Compare-and-set the table against the revision last read; `Contention` if
        another broker wrote since (the cached table is then dropped)."""
        if self._lease_rev is None:
            self._read_leases()
        try:
            rev = self._conn.call(
                self._conn.kv_put(
                    self.layout.leases_bucket, "table", dumps({"leases": rows}).encode(), last=self._lease_rev
                ),
                doing="writing the lease table",
            )
        except Contention:
            self._lease_rev = None
            raise
        self._lease_rows, self._lease_rev = rows, rev

    def leases(self) -> list[Lease]:
        self._refresh_leases()
        found = [
            Lease(
                r["resource"],
                self._local(r["holder"]),
                r["exclusive"],
                r["reason"],
                r["acquired_at"],
                r["expires_at"],
            )
            for r in self._lease_rows
        ]
        return sorted(found, key=lambda lease: (lease.acquired_at, lease.resource))

    def put_lease(self, lease: Lease) -> None:
        """Raises `Contention` if the table changed since `leases` read it."""
        holder = self._qualify(lease.holder)
        row = {**lease.to_wire(), "holder": holder}
        rows = [r for r in self._lease_rows if (r["resource"], r["holder"]) != (lease.resource, holder)]
        self._write_leases([*rows, row])

    def delete_lease(self, resource: str, holder: str) -> None:
        holder = self._qualify(holder)
        for _ in range(50):
            self._read_leases()
            rows = [r for r in self._lease_rows if (r["resource"], r["holder"]) != (resource, holder)]
            if len(rows) == len(self._lease_rows):
                return
            try:
                self._write_leases(rows)
                return
            except Contention:
                continue
        raise Contention(f"could not release {resource!r}: the lease table keeps changing")

    # -- audit -------------------------------------------------------------------------
    def append_audit(self, ts: float, event: str, data: dict[str, Any]) -> None:
        self._audit_out.append(dumps({"ts": ts, "event": event, **data}).encode())

    def read_audit(self, *, after: int, limit: int) -> list[dict[str, Any]]:
        if self._audit_out:
            self.commit()
        records = self._conn.call(
            self._conn.read_stream(self.layout.audit_stream, self.layout.audit_subject, after + 1, limit),
            timeout=max(self._conn.timeout, 60.0),
            doing="reading the audit log",
        )
        out = []
        for seq, _, data in records:
            entry = loads(data)
            out.append({"seq": seq, "ts": entry.pop("ts"), "event": entry.pop("event"), **entry})
        return out


async def ensure_layout(conn: NatsConnection, layout: Layout, replicas: int) -> None:
    """Create every stream and bucket this machine uses, or update them in place."""
    if replicas < 1 or replicas > 5:
        raise BadRequest("nats_replicas must be 1 to 5")
    await conn.ensure_stream(
        api.StreamConfig(
            name=layout.state_stream,
            subjects=[layout.state_prefix + ">"],
            max_msgs_per_subject=1,
            num_replicas=replicas,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
        )
    )
    await conn.ensure_stream(
        api.StreamConfig(
            name=layout.audit_stream,
            subjects=[layout.audit_subject],
            num_replicas=replicas,
            storage=api.StorageType.FILE,
        )
    )
    await conn.ensure_stream(
        api.StreamConfig(
            name=layout.route_stream,
            subjects=[layout.route_filter],
            num_replicas=replicas,
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.WORK_QUEUE,  # a record is gone once its machine took it
            allow_msg_ttl=True,
            duplicate_window=120.0,
        )
    )
    await conn.ensure_bucket(layout.peers_bucket, replicas=replicas)
    await conn.ensure_bucket(layout.presence_bucket, replicas=replicas, ttl=PRESENCE_TTL)
    await conn.ensure_bucket(layout.leases_bucket, replicas=replicas)


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
        return NatsStore(conn, layout, owns_connection=True)
    except BaseException:
        conn.close()
        raise
