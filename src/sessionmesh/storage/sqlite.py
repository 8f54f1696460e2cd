"""The embedded SQLite store (WAL mode): the only module that imports sqlite3."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

from ..codec import dumps, loads
from ..core.locks import Lease
from ..envelope import Envelope, Kind, Priority, ReceiptState, ReplyStatus, Target
from ..errors import DuplicateMessage, StorageError
from . import PeerRecord, Receipt, ReceiptUpdate, ThreadRecord, body_text, search_terms

SCHEMA_VERSION = 1
FTS_INTERVAL = 1.0  # seconds between batches of bodies added to the full-text index

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
    name TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    meta TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
-- seq and the audit's seq are plain rowids: no row is ever deleted, so they still only
-- grow, and no sqlite_sequence page is written with every insert (a store made before
-- keeps its AUTOINCREMENT, which behaves the same)
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    re TEXT,
    thread TEXT NOT NULL,
    status TEXT,
    priority TEXT NOT NULL,
    body TEXT NOT NULL,
    ttl REAL NOT NULL,
    ts REAL NOT NULL,
    answer TEXT,
    handoff TEXT
);
CREATE INDEX IF NOT EXISTS messages_re ON messages(re) WHERE re IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_thread ON messages(thread, seq);
CREATE INDEX IF NOT EXISTS messages_topic ON messages(recipient, seq) WHERE recipient LIKE '#%';
-- full-text index of the bodies (contentless: the text lives in messages.body);
-- meta 'fts_seq' is the last message indexed
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    body, content='', tokenize='unicode61 remove_diacritics 0'
);
CREATE TABLE IF NOT EXISTS receipts (
    msg_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    seq INTEGER NOT NULL,
    urgent INTEGER NOT NULL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (msg_id, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_unread ON receipts(recipient, urgent DESC, seq)
    WHERE state IN ('queued', 'delivered');
CREATE INDEX IF NOT EXISTS receipts_queued_expiry ON receipts(expires_at)
    WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS receipts_held ON receipts(seq) WHERE state = 'held';
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    turns INTEGER NOT NULL,
    participants TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS threads_updated ON threads(updated_at);
CREATE TABLE IF NOT EXISTS leases (
    resource TEXT NOT NULL,
    holder TEXT NOT NULL,
    exclusive INTEGER NOT NULL,
    reason TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (resource, holder)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (topic, name)
);
-- a store that journals its writes elsewhere (NATS): batches written here and not
-- yet acknowledged there
CREATE TABLE IF NOT EXISTS outbox (n INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL
);
"""

_MSG_COLS = "seq, id, sender, recipient, kind, re, thread, status, priority, body, ttl, ts, handoff"


_dumps = dumps


def _row_to_envelope(row: tuple[Any, ...]) -> Envelope:
    seq, msg_id, sender, recipient, kind, re_id, thread, status, priority, body, ttl, ts, handoff = row
    return Envelope(
        id=msg_id,
        sender=sender,
        to=Target.parse(loads(recipient) if recipient.startswith("[") else recipient),
        kind=Kind(kind),
        body=loads(body),
        re=re_id,
        thread=thread,
        status=ReplyStatus(status) if status else None,
        priority=Priority(priority),
        ttl=ttl,
        ts=ts,
        seq=seq,
        handoff=loads(handoff) if handoff else None,
    )


class SqliteStore:
    """A `Store` in one SQLite file, in WAL mode; writes batch until `commit`."""

    def __init__(self, path: str, *, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            # checkpoints run from `checkpoint` on another thread, never inside a commit
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
            if "handoff" not in columns:  # a store from before handoffs carried paths and evidence
                self._db.execute("ALTER TABLE messages ADD COLUMN handoff TEXT")
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._index_bodies()  # what a crash left unindexed, or a store from before the index
            self._db.commit()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the store at {path}: {exc}") from exc
        self.path = path
        self._checkpoint_db: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        self._closed = False
        self._audit_rows: list[tuple[float, str, str]] = []
        # receipt moves wait here until a read needs them or the batch commits, so a
        # 'delivered' and a 'read' for one copy in one batch are a single UPDATE
        self._receipt_moves: dict[tuple[str, str], tuple[str, float]] = {}

    def _index_bodies(self) -> None:
        """Add the bodies stored since the last call to the full-text index.

        Indexing in batches (at most once a second, at a commit, and before a search)
        rather than on every insert keeps a send's cost flat: FTS5 writes a segment
        per transaction, which one commit per message would pay every time."""
        self._fts_at = time.monotonic()
        row = self._db.execute("SELECT value FROM meta WHERE key = 'fts_seq'").fetchone()
        done = int(row[0]) if row else 0
        rows = self._db.execute(
            "SELECT seq, body FROM messages WHERE seq > ? ORDER BY seq", (done,)
        ).fetchall()
        if not rows:
            return
        self._db.executemany(
            "INSERT INTO messages_fts(rowid, body) VALUES (?, ?)",
            ((seq, body_text(loads(body))) for seq, body in rows),
        )
        self.set_meta("fts_seq", str(rows[-1][0]))

    @property
    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    # lifecycle -----------------------------------------------------------------
    def commit(self) -> None:
        self.commit_local()

    def commit_local(self) -> None:
        """Write the batch to the file (a store that also journals elsewhere commits
        its file through this)."""
        try:
            self._flush_audit()
            self._flush_receipts()
            if time.monotonic() - self._fts_at >= FTS_INTERVAL:
                self._index_bodies()
            self._db.commit()
        except sqlite3.Error as exc:
            raise StorageError(f"commit failed: {exc}") from exc

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database (PASSIVE: never waits for or
        blocks the writer). Safe to call from another thread: it uses its own
        connection, and `close` waits for a checkpoint in progress (closing a
        connection another thread is using crashes the process)."""
        with self._checkpoint_lock:
            if self._closed:
                return
            try:
                if self._checkpoint_db is None:
                    self._checkpoint_db = sqlite3.connect(self.path, check_same_thread=False)
                self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                raise StorageError(f"checkpoint failed: {exc}") from exc

    def copy_to(self, dest: str) -> None:
        """Write a consistent copy of what is committed to ``dest`` (replacing it).
        It reads on a connection of its own, in one read transaction: safe from
        another thread while this one writes, and in WAL mode it never blocks the
        writer. Raises `StorageError`."""
        try:
            if os.path.exists(dest):
                os.unlink(dest)
            source = sqlite3.connect(self.path, check_same_thread=False)
            try:
                copy = sqlite3.connect(dest)
                try:
                    source.backup(copy)  # every page in one step: one snapshot of the file
                finally:
                    copy.close()
            finally:
                source.close()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot copy the store to {dest}: {exc}") from exc

    def close(self) -> None:
        self.commit_local()
        with self._checkpoint_lock:
            self._closed = True
            if self._checkpoint_db is not None:
                self._checkpoint_db.close()
                self._checkpoint_db = None
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    # peers ---------------------------------------------------------------------
    def get_peer(self, name: str) -> PeerRecord | None:
        row = self._db.execute(
            "SELECT name, secret_hash, meta, created_at, last_seen FROM peers WHERE name = ?", (name,)
        ).fetchone()
        return PeerRecord(row[0], row[1], loads(row[2]), row[3], row[4]) if row else None

    def put_peer(self, peer: PeerRecord) -> None:
        self._db.execute(
            "INSERT INTO peers(name, secret_hash, meta, created_at, last_seen) VALUES (?,?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET secret_hash=excluded.secret_hash,"
            " meta=excluded.meta, last_seen=excluded.last_seen",
            (peer.name, peer.secret_hash, _dumps(peer.meta), peer.created_at, peer.last_seen),
        )

    def list_peers(self) -> list[PeerRecord]:
        rows = self._db.execute(
            "SELECT name, secret_hash, meta, created_at, last_seen FROM peers ORDER BY name"
        ).fetchall()
        return [PeerRecord(r[0], r[1], loads(r[2]), r[3], r[4]) for r in rows]

    def delete_peer(self, name: str) -> None:
        self._db.execute("DELETE FROM peers WHERE name = ?", (name,))
        self._db.execute("DELETE FROM subscriptions WHERE name = ?", (name,))

    # messages ------------------------------------------------------------------
    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        # a range on the unique index: every id from the prefix up to the next prefix
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._db.execute(
            "SELECT id FROM messages WHERE id >= ? AND id < ? ORDER BY id LIMIT ?", (prefix, upper, limit)
        ).fetchall()
        return [r[0] for r in rows]

    def add_message(self, env: Envelope) -> int:
        return self._insert_message(env, None)

    def restore_message(self, env: Envelope) -> None:
        """Store an envelope under the seq it already has (a journal read back).
        Raises `DuplicateMessage` if the id is already stored."""
        self._insert_message(env, env.seq)

    def _insert_message(self, env: Envelope, seq: int | None) -> int:
        to = env.to.to_wire()
        row = (
            seq,
            env.id,
            env.sender,
            to if isinstance(to, str) else _dumps(to),
            env.kind.value,
            env.re,
            env.thread,
            env.status.value if env.status else None,
            env.priority.value,
            _dumps(env.body),
            env.ttl,
            env.ts,
            _dumps(env.handoff) if env.handoff else None,
        )
        try:
            cur = self._db.execute(
                "INSERT INTO messages(seq, id, sender, recipient, kind, re, thread, status, priority,"
                " body, ttl, ts, handoff) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateMessage(f"message {env.id} is already stored") from exc
        env.seq = int(cur.lastrowid or 0)
        return env.seq

    def get_message(self, msg_id: str) -> Envelope | None:
        row = self._db.execute(f"SELECT {_MSG_COLS} FROM messages WHERE id = ?", (msg_id,)).fetchone()
        return _row_to_envelope(row) if row else None

    def set_answer(self, msg_id: str, answer: dict[str, Any]) -> None:
        self._db.execute("UPDATE messages SET answer = ? WHERE id = ?", (_dumps(answer), msg_id))

    def get_answer(self, msg_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT answer FROM messages WHERE id = ?", (msg_id,)).fetchone()
        return loads(row[0]) if row and row[0] else None

    def replies_to(self, msg_id: str) -> list[Envelope]:
        rows = self._db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE re = ? ORDER BY seq", (msg_id,)
        ).fetchall()
        return [_row_to_envelope(r) for r in rows]

    def thread_messages(self, thread_id: str, limit: int) -> list[Envelope]:
        rows = self._db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE thread = ? ORDER BY seq LIMIT ?", (thread_id, limit)
        ).fetchall()
        return [_row_to_envelope(r) for r in rows]

    def topic_messages(self, topic: str) -> list[Envelope]:
        rows = self._db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE recipient = ? ORDER BY seq", (topic,)
        ).fetchall()
        return [_row_to_envelope(r) for r in rows]

    # browsing ------------------------------------------------------------------
    def recent_messages(self, *, before: int | None, limit: int) -> list[Envelope]:
        rows = self._db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        ).fetchall()
        return [_row_to_envelope(r) for r in rows]

    def search(self, query: str, *, limit: int, before: int | None = None) -> list[Envelope]:
        terms = search_terms(query)
        if not terms:
            return []
        self._index_bodies()
        match = " ".join(f'"{t}"*' for t in terms)  # terms are letters and digits only
        cols = ", ".join(f"m.{c.strip()}" for c in _MSG_COLS.split(","))
        try:
            rows = self._db.execute(
                f"SELECT {cols} FROM messages_fts f JOIN messages m ON m.seq = f.rowid"
                " WHERE messages_fts MATCH ? AND f.rowid < ? ORDER BY f.rowid DESC LIMIT ?",
                (match, before if before is not None else 2**62, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"search failed: {exc}") from exc
        return [_row_to_envelope(r) for r in rows]

    def _first_seq_since(self, since: float) -> int:
        """The first seq stored at or after ``since``, by bisecting the seq order: the
        broker stamps ``ts`` as it stores, so ts grows with seq (a clock stepped back
        makes the window's edge approximate), and no index on ts is paid per insert."""
        lo_row = self._db.execute("SELECT min(seq), max(seq) FROM messages").fetchone()
        if lo_row[0] is None:
            return 0
        lo, hi = lo_row[0], lo_row[1] + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = self._db.execute(
                "SELECT seq, ts FROM messages WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
            ).fetchone()
            if row is None or row[1] >= since:
                hi = mid
            else:
                lo = row[0] + 1
        return lo

    def traffic(self, since: float) -> list[tuple[str, str, int]]:
        rows = self._db.execute(
            "SELECT sender, recipient, count(*) FROM messages WHERE seq >= ? AND ts >= ?"
            " GROUP BY sender, recipient",
            (self._first_seq_since(since), since),
        ).fetchall()
        counts: dict[tuple[str, str], int] = {}
        for sender, recipient, n in rows:
            for target in loads(recipient) if recipient.startswith("[") else [recipient]:
                counts[(sender, target)] = counts.get((sender, target), 0) + n
        return [(s, t, n) for (s, t), n in sorted(counts.items())]

    def recent_threads(self, *, before: float | None, limit: int) -> list[ThreadRecord]:
        rows = self._db.execute(
            "SELECT id, state, turns, participants, created_at, updated_at FROM threads"
            " WHERE updated_at < ? ORDER BY updated_at DESC, id DESC LIMIT ?",
            (before if before is not None else float("inf"), limit),
        ).fetchall()
        return [ThreadRecord(r[0], r[1], r[2], loads(r[3]), r[4], r[5]) for r in rows]

    # receipts ------------------------------------------------------------------
    def add_receipts(
        self, env: Envelope, recipients: Iterable[str], state: ReceiptState = ReceiptState.QUEUED
    ) -> None:
        urgent = 1 if env.priority is Priority.URGENT else 0
        rows = [(env.id, r, env.seq, urgent, state.value, env.ts, env.expires_at) for r in recipients]
        sql = (
            "INSERT OR IGNORE INTO receipts(msg_id, recipient, seq, urgent, state, updated_at,"
            " expires_at) VALUES (?,?,?,?,?,?,?)"
        )
        if len(rows) == 1:  # a unicast: one statement, without executemany's iterator
            self._db.execute(sql, rows[0])
        elif rows:
            self._db.executemany(sql, rows)

    def receipts_in_state(self, state: ReceiptState, limit: int) -> list[Receipt]:
        self._flush_receipts()
        rows = self._db.execute(
            "SELECT msg_id, recipient, state, updated_at FROM receipts WHERE state = ?"
            " ORDER BY seq, recipient LIMIT ?",
            (state.value, limit),
        ).fetchall()
        return [Receipt(r[0], r[1], ReceiptState(r[2]), r[3]) for r in rows]

    def update_receipts(self, updates: Iterable[ReceiptUpdate]) -> None:
        for u in updates:
            self._receipt_moves[(u.msg_id, u.recipient)] = (u.state.value, u.ts)

    def _flush_receipts(self) -> None:
        if self._receipt_moves:
            moves, self._receipt_moves = self._receipt_moves, {}
            self._db.executemany(
                "UPDATE receipts SET state = ?, updated_at = ? WHERE msg_id = ? AND recipient = ?",
                [(state, ts, m, r) for (m, r), (state, ts) in moves.items()],
            )

    def receipts(self, msg_id: str) -> list[Receipt]:
        self._flush_receipts()
        rows = self._db.execute(
            "SELECT msg_id, recipient, state, updated_at FROM receipts WHERE msg_id = ? ORDER BY recipient",
            (msg_id,),
        ).fetchall()
        return [Receipt(r[0], r[1], ReceiptState(r[2]), r[3]) for r in rows]

    def get_receipt(self, msg_id: str, recipient: str) -> Receipt | None:
        self._flush_receipts()
        row = self._db.execute(
            "SELECT msg_id, recipient, state, updated_at FROM receipts WHERE msg_id = ? AND recipient = ?",
            (msg_id, recipient),
        ).fetchone()
        return Receipt(row[0], row[1], ReceiptState(row[2]), row[3]) if row else None

    def unread(self, recipient: str, limit: int, after: tuple[int, int] | None = None) -> list[Envelope]:
        self._flush_receipts()
        cols = ", ".join(f"m.{c.strip()}" for c in _MSG_COLS.split(","))
        urgent, seq = after if after is not None else (2, 0)  # (2, 0) is before everything
        rows = self._db.execute(
            f"SELECT {cols} FROM receipts r JOIN messages m ON m.id = r.msg_id"
            " WHERE r.recipient = ? AND r.state IN ('queued', 'delivered')"
            " AND (r.urgent < ? OR (r.urgent = ? AND r.seq > ?))"
            " ORDER BY r.urgent DESC, r.seq LIMIT ?",
            (recipient, urgent, urgent, seq, limit),
        ).fetchall()
        return [_row_to_envelope(r) for r in rows]

    def expire_due(self, now: float) -> list[tuple[str, str, str]]:
        self._flush_receipts()
        rows = self._db.execute(
            "SELECT r.msg_id, r.recipient, m.sender FROM receipts r JOIN messages m"
            " ON m.id = r.msg_id WHERE r.state = 'queued' AND r.expires_at <= ?",
            (now,),
        ).fetchall()
        if rows:
            self._db.executemany(
                "UPDATE receipts SET state = 'expired', updated_at = ? WHERE msg_id = ? AND recipient = ?",
                [(now, r[0], r[1]) for r in rows],
            )
        return [(r[0], r[1], r[2]) for r in rows]

    def queue_depths(self) -> dict[str, int]:
        self._flush_receipts()
        rows = self._db.execute(
            "SELECT recipient, count(*) FROM receipts WHERE state IN ('queued', 'delivered')"
            " GROUP BY recipient"
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    # threads -------------------------------------------------------------------
    def get_thread(self, thread_id: str) -> ThreadRecord | None:
        row = self._db.execute(
            "SELECT id, state, turns, participants, created_at, updated_at FROM threads WHERE id = ?",
            (thread_id,),
        ).fetchone()
        return ThreadRecord(row[0], row[1], row[2], loads(row[3]), row[4], row[5]) if row else None

    def put_thread(self, thread: ThreadRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO threads(id, state, turns, participants, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?)",
            (
                thread.id,
                thread.state,
                thread.turns,
                _dumps(thread.participants),
                thread.created_at,
                thread.updated_at,
            ),
        )

    # leases --------------------------------------------------------------------
    def leases(self) -> list[Lease]:
        rows = self._db.execute(
            "SELECT resource, holder, exclusive, reason, acquired_at, expires_at FROM leases"
            " ORDER BY acquired_at, resource"
        ).fetchall()
        return [Lease(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows]

    def put_lease(self, lease: Lease) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO leases(resource, holder, exclusive, reason, acquired_at,"
            " expires_at) VALUES (?,?,?,?,?,?)",
            (
                lease.resource,
                lease.holder,
                int(lease.exclusive),
                lease.reason,
                lease.acquired_at,
                lease.expires_at,
            ),
        )

    def delete_lease(self, resource: str, holder: str) -> None:
        self._db.execute("DELETE FROM leases WHERE resource = ? AND holder = ?", (resource, holder))

    # topics --------------------------------------------------------------------
    def subscribe(self, topic: str, name: str, *, catch_up: bool = False) -> None:
        self._db.execute("INSERT OR IGNORE INTO subscriptions(topic, name) VALUES (?, ?)", (topic, name))

    def unsubscribe(self, topic: str, name: str) -> None:
        self._db.execute("DELETE FROM subscriptions WHERE topic = ? AND name = ?", (topic, name))

    def subscribers(self, topic: str) -> list[str]:
        rows = self._db.execute(
            "SELECT name FROM subscriptions WHERE topic = ? ORDER BY name", (topic,)
        ).fetchall()
        return [r[0] for r in rows]

    def topics_of(self, name: str) -> list[str]:
        """The topics ``name`` subscribes to, in order."""
        rows = self._db.execute(
            "SELECT topic FROM subscriptions WHERE name = ? ORDER BY topic", (name,)
        ).fetchall()
        return [r[0] for r in rows]

    # a journal kept elsewhere (NATS) ---------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value; it is written with the batch's commit."""
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def outbox_put(self, n: int, payload: bytes) -> None:
        """Keep batch ``n`` of the journal until `outbox_drop` says it is stored."""
        self._db.execute("INSERT OR REPLACE INTO outbox(n, payload) VALUES (?, ?)", (n, payload))

    def outbox_drop(self, upto: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE n <= ?", (upto,))

    def outbox(self) -> list[tuple[int, bytes]]:
        """The journal's batches not known to be stored, in order."""
        return [(r[0], bytes(r[1])) for r in self._db.execute("SELECT n, payload FROM outbox ORDER BY n")]

    # audit ---------------------------------------------------------------------
    def append_audit(self, ts: float, event: str, data: dict[str, Any]) -> None:
        # Buffered and written in one statement with the batch's commit.
        self._audit_rows.append((ts, event, _dumps(data)))

    def _flush_audit(self) -> None:
        if self._audit_rows:
            rows, self._audit_rows = self._audit_rows, []
            self._db.executemany("INSERT INTO audit(ts, event, data) VALUES (?, ?, ?)", rows)

    def read_audit(self, *, after: int, limit: int) -> list[dict[str, Any]]:
        self._flush_audit()
        rows = self._db.execute(
            "SELECT seq, ts, event, data FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return [{"seq": r[0], "ts": r[1], "event": r[2], **loads(r[3])} for r in rows]
