"""The state every part of the core shares, and the helpers they all use.

`Core` is assembled from one mixin per noun (peers, sending, receipts, threads,
topics, leases); each reads and writes the attributes declared here and may call
the others' methods through ``self``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..envelope import ReceiptState

if TYPE_CHECKING:
    from .peers import Presence
    from .remote import RemotePeer
    from .sending import Bucket, PendingSend
    from .threads import Awaiter

from ..storage import PeerRecord, Store
from .effects import Effect, Push

BACKLOG_CHUNK = 500  # messages per deliver frame
BACKLOG_WINDOW = 2000  # backlog messages in flight per connection while catching up
SENDER_CACHE = 100_000
RECEIPT_CACHE = 200_000


@dataclass(slots=True)
class Caller:
    """Who gives a command: an authenticated name, and its live connection if any."""

    name: str
    conn: int | None = None


@dataclass(slots=True)
class LiveConn:
    name: str
    events: bool
    since: float
    # Catch-up after connecting: the backlog goes out a window at a time, the next
    # when the client has acknowledged half of the last. Until it is through, new
    # messages wait in the store behind the older ones (per-pair FIFO).
    catching_up: bool = True
    cursor: tuple[int, int] | None = None  # (urgent, seq) of the last backlog message sent
    in_flight: set[str] = field(default_factory=set)


class CoreState:
    """What the core keeps in memory; the durable rest is in ``store``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._conns: dict[int, LiveConn] = {}
        self._watchers: set[int] = set()  # connections that asked for events
        # observers (the dashboard): every event, and each stored message with its body
        self._observers: set[int] = set()
        # senders and receipt states of recent messages, so an ack needs no lookups
        self._senders: OrderedDict[str, str] = OrderedDict()
        self._states: OrderedDict[tuple[str, str], ReceiptState] = OrderedDict()
        self._online: dict[str, int] = {}  # name -> its first live connection (a link, for a remote peer)
        # one agent, several attachments: every live local connection of a name, oldest first
        self._attachments: dict[str, list[int]] = {}
        self._variant_grants: dict[str, str] = {}  # name#N picked for its base's holder, not yet registered
        self._last_seen: dict[str, float] = {}
        self._pending: dict[str, PendingSend] = {}
        self._awaiters: dict[str, list[Awaiter]] = defaultdict(list)
        self._buckets: dict[str, Bucket] = {}
        self._peer_cache: dict[str, PeerRecord] = {p.name: p for p in store.list_peers()}
        self._remote: dict[str, RemotePeer] = {}  # peers of other brokers (core/remote.py)
        # waking idle agents (core/wakes.py): activity, waits, recent wakes per name
        self._activity: dict[str, tuple[Any, float]] = {}
        self._wakers: dict[str, list[Any]] = {}
        self._idle_waiters: dict[str, list[tuple[Hashable, float]]] = {}  # await_idle: (reply_to, deadline)
        self._wake_times: dict[str, Any] = {}
        self._wake_counts: dict[str, int] = {}
        # an id minted before this core started (plus a margin for clock skew) may be
        # stored already: a client resending after a broker restart
        self._started_ms = int(time.time() * 1000) + 5_000
        self.counters: dict[str, int] = defaultdict(int)

    # hooks that `RemoteMixin` overrides for peers of other brokers
    def _confirms(self, name: str) -> bool:
        """Whether a send waits for ``name``'s live connection to confirm a push."""
        return True

    def _remote_presence(self, name: str, now: float) -> Presence | None:
        return None

    # hooks that `WakesMixin` overrides
    def _mail_for(self, names: list[str], now: float) -> list[Effect]:
        """New mail was stored for ``names``."""
        return []

    def _forget_wakers(self, reply_to: Hashable) -> None:
        """The caller behind ``reply_to`` is gone."""

    # a hook that `PairsMixin` overrides
    def _pairs_on_leave(self, name: str, now: float, effects: list[Effect]) -> None:
        """``name`` left gracefully or was forgotten: its pair ends."""

    def _conns_of(self, name: str) -> list[int]:
        """Every live connection that acts for ``name`` (its attachments; a link)."""
        attached = self._attachments.get(name)
        if attached:
            return attached
        conn = self._online.get(name)
        return [conn] if conn is not None else []

    def _since(self, name: str) -> float | None:
        conn = self._online.get(name)
        return self._conns[conn].since if conn is not None else None

    def _audit(self, now: float, event: str, data: dict[str, Any]) -> None:
        self.store.append_audit(now, event, data)

    def _event(self, effects: list[Effect], now: float, event: str, **data: Any) -> None:
        if not self._watchers:
            return
        frame = {"op": "event", "event": event, "ts": now, **data}
        for conn in self._watchers:
            effects.append(Push(conn, frame))

    def observe(self, conn: int) -> None:
        """Send ``conn`` (not a peer: no name, no inbox) every event, plus a ``message``
        event for each stored envelope; the server routes its pushes like any other."""
        self._observers.add(conn)
        self._watchers.add(conn)

    def unobserve(self, conn: int) -> None:
        self._observers.discard(conn)
        self._watchers.discard(conn)

    def _observe(self, effects: list[Effect], now: float, event: str, **data: Any) -> None:
        """An event for observers only (it may carry bodies, which peers' events never do)."""
        if not self._observers:
            return
        frame = {"op": "event", "event": event, "ts": now, **data}
        for conn in self._observers:
            effects.append(Push(conn, frame))

    def _audit_envelope(self, wire: dict[str, Any], recipients: list[str]) -> dict[str, Any]:
        data = dict(wire)
        if not self.settings.audit_bodies:
            data.pop("body")
        data["recipients"] = recipients
        return data
