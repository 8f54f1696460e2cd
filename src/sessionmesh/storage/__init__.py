"""The durable state of a broker, behind one `Store` protocol.

The core reads and writes through a `Store` inside a batch that the server ends with
`Store.commit`; nothing a batch wrote is visible to a peer before that commit. The
SQLite store is the default; the memory store serves fast core tests; both pass the
same contract suite (``tests/storage/test_contract.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..codec import dumps
from ..core.locks import Lease
from ..envelope import Envelope, ReceiptState

_WORD = re.compile(r"[^\W_]+")  # letters and digits: what SQLite FTS5 (unicode61) calls a token


def body_text(body: Any) -> str:
    """The text a search looks in: a string body itself, any other body as JSON."""
    return body if isinstance(body, str) else dumps(body)


def search_terms(query: str) -> list[str]:
    """The words of a search query, lower-cased (punctuation separates words)."""
    return _WORD.findall(query.lower())[:16]


@dataclass(slots=True)
class PeerRecord:
    name: str
    secret_hash: str
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    last_seen: float = 0.0


@dataclass(slots=True)
class ThreadRecord:
    id: str
    state: str  # a ThreadState value
    turns: int
    participants: list[str]
    created_at: float
    updated_at: float

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "turns": self.turns,
            "participants": self.participants,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Receipt:
    msg_id: str
    recipient: str
    state: ReceiptState
    updated_at: float


@dataclass(frozen=True, slots=True)
class ReceiptUpdate:
    msg_id: str
    recipient: str
    state: ReceiptState
    ts: float


class Store(Protocol):
    """Everything the core keeps across restarts."""

    # lifecycle
    def commit(self) -> None: ...
    def checkpoint(self) -> None:
        """Housekeeping that may run on another thread (SQLite: copy the WAL back)."""
        ...

    def close(self) -> None: ...

    # peers
    def get_peer(self, name: str) -> PeerRecord | None: ...
    def put_peer(self, peer: PeerRecord) -> None: ...
    def list_peers(self) -> list[PeerRecord]: ...
    def delete_peer(self, name: str) -> None:
        """Forget a name: its record and its subscriptions (its messages stay)."""
        ...

    # messages
    def add_message(self, env: Envelope) -> int:
        """Store a new envelope and return its sequence number (monotonic).

        Raises `DuplicateMessage` if the id is already stored, before writing anything."""
        ...

    def get_message(self, msg_id: str) -> Envelope | None: ...
    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Ids of stored messages that start with ``prefix`` (lower-case), in order."""
        ...

    def set_answer(self, msg_id: str, answer: dict[str, Any]) -> None: ...
    def get_answer(self, msg_id: str) -> dict[str, Any] | None: ...
    def replies_to(self, msg_id: str) -> list[Envelope]: ...
    def thread_messages(self, thread_id: str, limit: int) -> list[Envelope]: ...
    def topic_messages(self, topic: str) -> list[Envelope]: ...

    # browsing (the dashboard): newest first, paged by sequence number
    def recent_messages(self, *, before: int | None, limit: int) -> list[Envelope]:
        """Stored envelopes newest first; with ``before``, only those with a smaller seq."""
        ...

    def search(self, query: str, *, limit: int, before: int | None = None) -> list[Envelope]:
        """Envelopes whose body contains every word of ``query`` (word prefixes match,
        case-insensitive), newest first; with ``before``, only smaller seqs."""
        ...

    def traffic(self, since: float) -> list[tuple[str, str, int]]:
        """(sender, wire ``to``, count) of the envelopes stored at or after ``since``;
        a ``to`` that names a list of peers is one row per name."""
        ...

    def recent_threads(self, *, before: float | None, limit: int) -> list[ThreadRecord]:
        """Thread rows (threads with a second turn) by last activity, newest first."""
        ...

    # receipts (the inboxes)
    def add_receipts(
        self, env: Envelope, recipients: Iterable[str], state: ReceiptState = ReceiptState.QUEUED
    ) -> None:
        """Create a receipt for each recipient of a stored envelope: `queued`, or
        `held` for a message waiting for a person."""
        ...

    def receipts_in_state(self, state: ReceiptState, limit: int) -> list[Receipt]:
        """Receipts in one state, oldest message first (the held ones, for a person)."""
        ...

    def update_receipts(self, updates: Iterable[ReceiptUpdate]) -> None: ...
    def receipts(self, msg_id: str) -> list[Receipt]: ...
    def get_receipt(self, msg_id: str, recipient: str) -> Receipt | None: ...
    def unread(self, recipient: str, limit: int, after: tuple[int, int] | None = None) -> list[Envelope]:
        """Unread (queued or delivered) envelopes, urgent first, then by sequence;
        with ``after`` = (urgent, seq) of the last one seen, the page that follows."""
        ...

    def expire_due(self, now: float) -> list[tuple[str, str, str]]:
        """Mark queued (undelivered) receipts past their TTL `expired`; return
        (msg_id, recipient, sender). A copy the recipient's client holds does not expire."""
        ...

    def queue_depths(self) -> dict[str, int]:
        """Unread receipts per recipient."""
        ...

    # threads
    def get_thread(self, thread_id: str) -> ThreadRecord | None: ...
    def put_thread(self, thread: ThreadRecord) -> None: ...

    # leases
    def leases(self) -> list[Lease]: ...
    def put_lease(self, lease: Lease) -> None: ...
    def delete_lease(self, resource: str, holder: str) -> None: ...

    # topics
    def subscribe(self, topic: str, name: str, *, catch_up: bool = False) -> None:
        """Subscribe ``name``. ``catch_up``: it asked for every stored message of the
        topic (``from_start``); a store shared by several machines (NATS) has the
        other machines send theirs too."""
        ...

    def unsubscribe(self, topic: str, name: str) -> None: ...
    def subscribers(self, topic: str) -> list[str]: ...

    # audit
    def append_audit(self, ts: float, event: str, data: dict[str, Any]) -> None: ...
    def read_audit(self, *, after: int, limit: int) -> list[dict[str, Any]]: ...
