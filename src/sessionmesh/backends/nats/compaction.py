"""Compaction of a machine's state log: a snapshot of its state goes into JetStream
(`snapshot`), and only then are the log's batches it holds purged, so JetStream's
storage and a lost cache's rebuild are bounded by the live state and the log since
the last snapshot, not by the whole history.

One compaction is three steps, each safe to be cut short by a crash:

1. `Compactor.copy`: a consistent copy of the cache file (one SQLite read
   transaction; commits go on meanwhile), the last batch ``B`` it holds, and, once
   JetStream has acknowledged every batch up to ``B``, the stream sequence ``S`` of
   ``B``. A crash here leaves a stray local file and nothing else.
2. `Compactor.upload`: the copy becomes the snapshot, ``(B, S)`` in its headers.
   Until its meta record lands, the previous snapshot is the one a start reads; a
   crash leaves chunks no snapshot owns (`snapshot.sweep` removes them next time).
3. `Compactor.purge`: the state log's messages up to ``S`` are purged (one
   JetStream request: done or not). Before it, a start reads a longer tail and
   skips the batches the snapshot holds; after it, those batches are in the
   snapshot. Every batch after ``B`` is at a sequence after ``S`` (the committer
   writes in order and writes every later batch again after one it had to write
   again), so the purge removes nothing the snapshot lacks that was acknowledged.

The store counts what it writes to the log (`wrote`); a compaction starts on a
thread of its own once the log past the last snapshot holds ``nats_compact_batches``
batches or ``nats_compact_bytes`` bytes, and at least as many bytes as that
snapshot (so snapshots never cost more JetStream traffic than the log itself).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import MeshError, StorageError
from ...storage.sqlite import SqliteStore
from . import snapshot
from .connection import COMMIT_TIMEOUT

if TYPE_CHECKING:
    from .store import NatsStore

log = logging.getLogger("sessionmesh.nats")
RETRY_INTERVAL = 30.0  # after a failed compaction, the next try waits this long (doubling, to MAX)
MAX_RETRY_INTERVAL = 600.0
_ACK_POLL = 0.05  # how often the copy step looks whether its batch is acknowledged yet


@dataclass(frozen=True, slots=True)
class Copy:
    """A consistent copy of the cache, holding every batch up to ``batch`` (at ``seq``
    in the state stream), ready to upload."""

    path: str
    batch: int
    seq: int


class Compactor:
    """Compacts one `NatsStore`'s state log when it has grown enough (module
    docstring). `compact` runs one compaction on the calling thread; `start` runs
    them on a thread of its own when `wrote` finds one due."""

    def __init__(self, store: NatsStore, *, batches: int, nbytes: int) -> None:
        self._store = store
        self.limit_batches = batches
        self.limit_bytes = nbytes
        self.log_batches = 0  # the state log past the last snapshot: messages
        self.log_bytes = 0  # ... and bytes (as JetStream counts them at a purge, then as written)
        self.snapshot_bytes = 0  # the last snapshot's size in JetStream
        self.done = 0  # compactions finished by this process
        self._finished = threading.Condition()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # one compaction at a time
        self._thread: threading.Thread | None = None
        self.held: str | None = None  # why compaction must not run in this process (None: it may)

    @property
    def copy_path(self) -> str:
        return self._store.path + ".snapshot"

    # -- when ---------------------------------------------------------------------------
    def measured(self, *, log_batches: int, log_bytes: int, snapshot_bytes: int) -> None:
        """What the state log and the snapshot hold now (at start, after a purge)."""
        self.log_batches, self.log_bytes, self.snapshot_bytes = log_batches, log_bytes, snapshot_bytes

    def wrote(self, batches: int, nbytes: int) -> None:
        """(the broker's loop) ``batches`` more batches of ``nbytes`` went to the log."""
        self.log_batches += batches
        self.log_bytes += nbytes
        if self._thread is not None and self.due():
            self._wake.set()

    def hold(self, reason: str) -> None:
        """Compact nothing in this process: the state it would snapshot lacks history
        the log may still hold (a purge would make the loss final). Logged as an error."""
        self.held = reason
        log.error("nats: the state log is not compacted while this broker runs: %s", reason)

    def due(self) -> bool:
        """Whether the log past the last snapshot has grown enough for a new one."""
        if self.held is not None:
            return False
        by_count = 0 < self.limit_batches <= self.log_batches
        by_size = 0 < self.limit_bytes <= self.log_bytes
        return (by_count or by_size) and self.log_bytes >= self.snapshot_bytes

    # -- the thread ---------------------------------------------------------------------
    def start(self) -> None:
        """Compact on a thread of its own whenever one is due (and once now, if it is)."""
        if self.limit_batches <= 0 and self.limit_bytes <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="mesh-nats-compact", daemon=True)
        self._thread.start()
        if self.due():
            self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop the thread; a compaction under way is abandoned at its next step (its
        NATS calls end within the stop's budget), which loses nothing."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def wait_done(self, count: int, *, timeout: float) -> bool:
        """Wait until ``count`` compactions have finished; False if not within ``timeout``."""
        with self._finished:
            return self._finished.wait_for(lambda: self.done >= count, timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _run(self) -> None:
        wait = RETRY_INTERVAL
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.stopping:
                return
            if not self.due():  # woken while the last compaction ran: its purge reset the counts
                continue
            try:
                self.compact()
                wait = RETRY_INTERVAL
            except MeshError as exc:
                if self.stopping:
                    return
                log.warning("nats: compacting the state log failed (%s); next try in %.0f s", exc, wait)
                if self._stopping.wait(wait):
                    return
                wait = min(wait * 2, MAX_RETRY_INTERVAL)
                if self.due():
                    self._wake.set()

    # -- the steps ----------------------------------------------------------------------
    def compact(self) -> snapshot.Head | None:
        """One whole compaction (the module docstring's three steps); returns the new
        snapshot's head, or None when there was nothing new to hold. Raises
        `MeshError` when a step fails (what was done stays safe)."""
        if self.held is not None:
            raise StorageError(f"the state log is not compacted while this broker runs: {self.held}")
        with self._lock:
            t0 = time.monotonic()
            try:
                copy = self.copy()
                if copy is None:
                    return None
                head = self.upload(copy)
            finally:
                self.discard()
            self.purge(head)
            with self._finished:
                self.done += 1
                self._finished.notify_all()
            log.info(
                "nats: compacted the state log up to batch %d (snapshot %.1f MiB, %.1f s)",
                head.batch,
                head.size / 2**20,
                time.monotonic() - t0,
            )
            return head

    def copy(self) -> Copy | None:
        """Step 1: copy the cache and find where its last batch is in the log. None
        when the newest snapshot already holds that batch."""
        store = self._store
        conn = store._conn
        store.copy_to(self.copy_path)
        copied = SqliteStore(self.copy_path)
        try:
            batch = int(copied.get_meta("nats_batch") or 0)
            stored = conn.call(snapshot.read_head(conn.js, store.layout), doing="reading the state snapshot")
            if batch == 0 or (stored is not None and stored.batch >= batch):
                seq = 0
            else:
                seq = self._sequence_of(batch)
                # the copy holds every batch up to `batch`, each acknowledged: no outbox
                copied.outbox_drop(batch)
                copied.set_meta("nats_stream_seq", str(seq))
        finally:
            copied.close()
        if seq == 0:
            self.discard()
            return None
        return Copy(self.copy_path, batch, seq)

    def _sequence_of(self, batch: int) -> int:
        """The stream sequence of ``batch``, once it and every batch before it are
        acknowledged (so the copy holds nothing JetStream lacks)."""
        store, conn = self._store, self._store._conn
        deadline = time.monotonic() + COMMIT_TIMEOUT
        while store.acknowledged() < batch:
            if self.stopping or time.monotonic() > deadline:
                raise StorageError(f"batch {batch} was not acknowledged in time for a snapshot")
            self._stopping.wait(_ACK_POLL)
        try:
            msg = conn.call(
                conn.js.get_msg(store.layout.state_stream, subject=store.layout.state_log_subject(batch)),
                doing="finding the snapshot's last batch in the state log",
            )
        except StorageError as exc:
            raise StorageError(f"batch {batch} is not in the state log ({exc})") from None
        return int(msg.seq)

    def upload(self, copy: Copy) -> snapshot.Head:
        """Step 2: store the copy as the newest snapshot (after removing the chunks of
        an upload cut short)."""
        store, conn = self._store, self._store._conn
        conn.call(snapshot.sweep(conn.js, store.layout), doing="sweeping the snapshot store")
        size = os.path.getsize(copy.path)
        return conn.call(
            snapshot.write(
                conn.js, store.layout, copy.path, batch=copy.batch, seq=copy.seq, stream=store.stream_ident
            ),
            timeout=max(conn.timeout, 60.0 + size / 2**20),  # a second per MiB, beyond a minute
            doing="writing the state snapshot",
        )

    def purge(self, head: snapshot.Head) -> None:
        """Step 3: purge the state log up to the snapshot's sequence, then count what
        is left."""
        store, conn = self._store, self._store._conn
        stream = store.layout.state_stream
        conn.call(conn.js.purge_stream(stream, seq=head.seq + 1), doing="purging the compacted state log")
        info = conn.call(conn.js.stream_info(stream), doing="reading the state log")
        self.measured(log_batches=info.state.messages, log_bytes=info.state.bytes, snapshot_bytes=head.size)

    def discard(self) -> None:
        """Remove the local copy (what a compaction cut short may have left too)."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(self.copy_path + suffix)
            except FileNotFoundError:
                pass
