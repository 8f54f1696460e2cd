"""State streams written before the state log (#10): one record per peer, message,
receipt, thread and subscription under ``ns.state.L.<kind>.<key>``, the last
version of each kept. A broker whose state stream holds such records and no
state-log batch yet takes them over once: into its cache, and as one batch of the
log, so that nothing later needs this format."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...codec import loads
from ...envelope import Envelope, ReceiptState
from ...errors import MeshError
from ...storage import PeerRecord, ReceiptUpdate, ThreadRecord
from .layout import untoken

if TYPE_CHECKING:
    from .store import NatsStore

KINDS = ("P", "M", "R", "T", "S")  # in the order they are applied: a receipt needs its message


def import_legacy(store: NatsStore) -> int:
    """Take over the per-record state of ``store``'s stream; returns how many records
    were taken (0 when there are none). Raises what reading the stream raises."""
    conn, layout = store._conn, store.layout
    taken = 0
    for kind in KINDS:
        prefix = f"{layout.state_prefix}{kind}."
        records = conn.call(
            conn.read_stream(layout.state_stream, prefix + ">", 1),
            timeout=max(conn.timeout, 120.0),
            doing="reading the state stream's older records",
        )
        rows = []
        for _, subject, data in records:
            try:
                record = loads(data) if data else None
            except MeshError:
                continue
            if record is not None:
                rows.append((subject[len(prefix) :], record))
        taken += len(rows)
        _TAKE[kind](store, rows)
    if taken:
        store.commit()  # the cache, and one batch of the log with every op above
    return taken


def _peers(store: NatsStore, rows: list[tuple[str, Any]]) -> None:
    for _, r in rows:
        store.put_peer(PeerRecord(r["name"], r["secret_hash"], r["meta"], r["created_at"], r["last_seen"]))


def _messages(store: NatsStore, rows: list[tuple[str, Any]]) -> None:
    for _, r in sorted(rows, key=lambda row: row[1]["seq"]):
        env = Envelope.from_wire(r["env"])
        env.seq = r["seq"]
        store.restore_message(env)
        store._op("M", env.to_wire(), env.seq)
        if r.get("answer"):
            store.set_answer(env.id, r["answer"])


def _receipts(store: NatsStore, rows: list[tuple[str, Any]]) -> None:
    for key, (state, updated_at, _expires_at, _seq, _urgent) in rows:
        msg_id, _, who = key.partition(".")
        env = store.get_message(msg_id)
        if env is not None:
            store.add_receipts(env, [untoken(who)], ReceiptState(state))
            store.update_receipts([ReceiptUpdate(msg_id, untoken(who), ReceiptState(state), updated_at)])


def _threads(store: NatsStore, rows: list[tuple[str, Any]]) -> None:
    for _, r in rows:
        store.put_thread(ThreadRecord(**r))


def _subscriptions(store: NatsStore, rows: list[tuple[str, Any]]) -> None:
    for key, _ in rows:
        topic, _, who = key.partition(".")
        store.subscribe(untoken(topic), untoken(who))


_TAKE = {"P": _peers, "M": _messages, "R": _receipts, "T": _threads, "S": _subscriptions}
