"""An in-memory `Store` for fast core tests; it keeps nothing across processes."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..core.locks import Lease
from ..envelope import Envelope, Priority, ReceiptState
from ..errors import DuplicateMessage
from . import PeerRecord, Receipt, ReceiptUpdate, ThreadRecord, body_text, search_terms


class MemoryStore:
    def __init__(self) -> None:
        self._peers: dict[str, PeerRecord] = {}
        self._messages: dict[str, Envelope] = {}
        self._answers: dict[str, dict[str, Any]] = {}
        # (msg_id, recipient) -> [state, updated_at, expires_at, seq, urgent]
        self._receipts: dict[tuple[str, str], list[Any]] = {}
        self._threads: dict[str, ThreadRecord] = {}
        self._leases: dict[tuple[str, str], Lease] = {}
        self._subs: dict[str, set[str]] = {}
        self._audit: list[dict[str, Any]] = []
        self._seq = 0

    def commit(self) -> None:
        pass

    def checkpoint(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_peer(self, name: str) -> PeerRecord | None:
        peer = self._peers.get(name)
        return copy.deepcopy(peer) if peer else None

    def put_peer(self, peer: PeerRecord) -> None:
        old = self._peers.get(peer.name)
        self._peers[peer.name] = copy.deepcopy(replace(peer, created_at=old.created_at) if old else peer)

    def list_peers(self) -> list[PeerRecord]:
        return [copy.deepcopy(self._peers[n]) for n in sorted(self._peers)]

    def delete_peer(self, name: str) -> None:
        self._peers.pop(name, None)
        for names in self._subs.values():
            names.discard(name)

    def add_message(self, env: Envelope) -> int:
        if env.id in self._messages:
            raise DuplicateMessage(f"message {env.id} is already stored")
        self._seq += 1
        env.seq = self._seq
        self._messages[env.id] = copy.deepcopy(env)
        return env.seq

    def get_message(self, msg_id: str) -> Envelope | None:
        env = self._messages.get(msg_id)
        return copy.deepcopy(env) if env else None

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return sorted(i for i in self._messages if i.startswith(prefix))[:limit]

    def set_answer(self, msg_id: str, answer: dict[str, Any]) -> None:
        self._answers[msg_id] = copy.deepcopy(answer)

    def get_answer(self, msg_id: str) -> dict[str, Any] | None:
        answer = self._answers.get(msg_id)
        return copy.deepcopy(answer) if answer else None

    def _select(self, pred: Any) -> list[Envelope]:
        found = [e for e in self._messages.values() if pred(e)]
        return [copy.deepcopy(e) for e in sorted(found, key=lambda e: e.seq)]

    def replies_to(self, msg_id: str) -> list[Envelope]:
        return self._select(lambda e: e.re == msg_id)

    def thread_messages(self, thread_id: str, limit: int) -> list[Envelope]:
        return self._select(lambda e: e.thread == thread_id)[:limit]

    def topic_messages(self, topic: str) -> list[Envelope]:
        return self._select(lambda e: e.to.topic == topic)

    def recent_messages(self, *, before: int | None, limit: int) -> list[Envelope]:
        found = self._select(lambda e: before is None or e.seq < before)
        return found[::-1][:limit]

    def search(self, query: str, *, limit: int, before: int | None = None) -> list[Envelope]:
        terms = search_terms(query)
        if not terms:
            return []

        def match(env: Envelope) -> bool:
            words = search_terms(body_text(env.body))
            return all(any(w.startswith(t) for w in words) for t in terms)

        found = self._select(lambda e: (before is None or e.seq < before) and match(e))
        return found[::-1][:limit]

    def traffic(self, since: float) -> list[tuple[str, str, int]]:
        counts: dict[tuple[str, str], int] = {}
        for env in self._messages.values():
            if env.ts < since:
                continue
            to = env.to.to_wire()
            for target in to if isinstance(to, list) else [to]:
                counts[(env.sender, target)] = counts.get((env.sender, target), 0) + 1
        return [(s, t, n) for (s, t), n in sorted(counts.items())]

    def recent_threads(self, *, before: float | None, limit: int) -> list[ThreadRecord]:
        found = [t for t in self._threads.values() if before is None or t.updated_at < before]
        found.sort(key=lambda t: (t.updated_at, t.id), reverse=True)
        return [copy.deepcopy(t) for t in found[:limit]]

    def add_receipts(
        self, env: Envelope, recipients: Iterable[str], state: ReceiptState = ReceiptState.QUEUED
    ) -> None:
        urgent = env.priority is Priority.URGENT
        for r in recipients:
            self._receipts.setdefault((env.id, r), [state, env.ts, env.expires_at, env.seq, urgent])

    def receipts_in_state(self, state: ReceiptState, limit: int) -> list[Receipt]:
        rows = sorted((v[3], r, m, v[1]) for (m, r), v in self._receipts.items() if v[0] is state)
        return [Receipt(m, r, state, ts) for _, r, m, ts in rows[:limit]]

    def update_receipts(self, updates: Iterable[ReceiptUpdate]) -> None:
        for u in updates:
            rec = self._receipts.get((u.msg_id, u.recipient))
            if rec:
                rec[0], rec[1] = u.state, u.ts

    def receipts(self, msg_id: str) -> list[Receipt]:
        return sorted(
            (Receipt(m, r, v[0], v[1]) for (m, r), v in self._receipts.items() if m == msg_id),
            key=lambda x: x.recipient,
        )

    def get_receipt(self, msg_id: str, recipient: str) -> Receipt | None:
        v = self._receipts.get((msg_id, recipient))
        return Receipt(msg_id, recipient, v[0], v[1]) if v else None

    def unread(self, recipient: str, limit: int, after: tuple[int, int] | None = None) -> list[Envelope]:
        # sort key (not urgent, seq): the page after (u, s) starts past (not u, s)
        start = (not after[0], after[1]) if after is not None else (False, 0)
        keys = [
            (not v[4], v[3], m)
            for (m, r), v in self._receipts.items()
            if r == recipient and v[0].unread and (not v[4], v[3]) > start
        ]
        return [copy.deepcopy(self._messages[m]) for _, _, m in sorted(keys)[:limit]]

    def expire_due(self, now: float) -> list[tuple[str, str, str]]:
        out = []
        for (m, r), v in self._receipts.items():
            if v[0] is ReceiptState.QUEUED and v[2] <= now:
                v[0], v[1] = ReceiptState.EXPIRED, now
                out.append((m, r, self._messages[m].sender))
        return out

    def queue_depths(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        for (_, r), v in self._receipts.items():
            if v[0].unread:
                depths[r] = depths.get(r, 0) + 1
        return depths

    def get_thread(self, thread_id: str) -> ThreadRecord | None:
        t = self._threads.get(thread_id)
        return copy.deepcopy(t) if t else None

    def put_thread(self, thread: ThreadRecord) -> None:
        self._threads[thread.id] = copy.deepcopy(thread)

    def leases(self) -> list[Lease]:
        return sorted(self._leases.values(), key=lambda lease: (lease.acquired_at, lease.resource))

    def put_lease(self, lease: Lease) -> None:
        self._leases[(lease.resource, lease.holder)] = lease

    def delete_lease(self, resource: str, holder: str) -> None:
        self._leases.pop((resource, holder), None)

    def subscribe(self, topic: str, name: str, *, catch_up: bool = False) -> None:
        self._subs.setdefault(topic, set()).add(name)

    def unsubscribe(self, topic: str, name: str) -> None:
        self._subs.get(topic, set()).discard(name)

    def subscribers(self, topic: str) -> list[str]:
        return sorted(self._subs.get(topic, ()))

    def append_audit(self, ts: float, event: str, data: dict[str, Any]) -> None:
        self._audit.append({"seq": len(self._audit) + 1, "ts": ts, "event": event, **data})

    def read_audit(self, *, after: int, limit: int) -> list[dict[str, Any]]:
        return copy.deepcopy(self._audit[after : after + limit])
