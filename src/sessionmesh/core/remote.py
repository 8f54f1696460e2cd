"""Remote peers: names on other machines (``LABEL:name``), each behind a link.

A backend that spans machines (NATS) gives every peer of another broker a *link*:
a connection id the core treats like a live connection. What the core pushes down
a link (a delivery, a receipt for a message that peer sent) the backend carries to
the other broker; what comes back it turns into ordinary commands given as the
remote peer (``send``, ``ack``) on the link. So routing, receipts, backlog windows
and per-pair order are the same code for both kinds of peer.

Two things differ and live here: presence (a remote peer's link is always there,
but the peer is online only when its own broker says so), and `release` (the other
broker could not confirm a copy now: the send answers ``queued`` at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..storage import PeerRecord
from .effects import Effect
from .holds import POLICY_HOLD, held_note
from .peers import Presence
from .state import BACKLOG_WINDOW, CoreState, LiveConn


@dataclass(slots=True)
class RemotePeer:
    conn: int
    online: bool
    since: float | None
    last_seen: float


class RemoteMixin(CoreState):
    """Peers of other brokers, reached through links."""

    def is_remote(self, name: str) -> bool:
        return name in self._remote

    def remote_peers(self) -> list[str]:
        return sorted(self._remote)

    def attach_remote(
        self,
        conn: int,
        name: str,
        now: float,
        *,
        meta: dict[str, Any],
        created_at: float,
        online: bool,
        since: float | None,
        last_seen: float,
    ) -> list[Effect]:
        """A peer of another broker becomes reachable through link ``conn``: its
        backlog here (copies not yet confirmed there) goes out on the link."""
        self._peer_cache[name] = PeerRecord(name, "", dict(meta), created_at, last_seen)
        self._remote[name] = RemotePeer(conn, online, since, last_seen)
        self._conns[conn] = LiveConn(name, False, now)
        self._online[name] = conn
        self._last_seen[name] = last_seen
        effects: list[Effect] = []
        if online:
            self._event(effects, now, "peer_joined", name=name, presence=Presence.ONLINE.value)
        effects.extend(self._next_page(conn))
        return effects

    def update_remote(
        self,
        name: str,
        now: float,
        *,
        meta: dict[str, Any] | None = None,
        online: bool | None = None,
        since: float | None = None,
        last_seen: float | None = None,
    ) -> list[Effect]:
        """What another broker says about its peer; join, leave and update events."""
        remote = self._remote.get(name)
        if remote is None:
            return []
        effects: list[Effect] = []
        if meta is not None and meta != self._peer_cache[name].meta:
            self._peer_cache[name].meta = dict(meta)
            shown = {k: v for k, v in meta.items() if k not in ("refuse", "policy")}
            self._event(effects, now, "peer_updated", name=name, meta=shown)
        if last_seen is not None:
            remote.last_seen = max(remote.last_seen, last_seen)
            self._last_seen[name] = remote.last_seen
            self._peer_cache[name].last_seen = remote.last_seen
        if online is not None and online != remote.online:
            remote.online = online
            remote.since = since if online else None
            if online:
                self._event(effects, now, "peer_joined", name=name, presence=Presence.ONLINE.value)
            else:
                self._event(effects, now, "peer_left", name=name, graceful=True)
        return effects

    def release(self, conn: int, ids: list[str], now: float, *, held: str | None = None) -> list[Effect]:
        """The broker behind link ``conn`` holds these copies but cannot confirm them
        now (its peer is offline, or ``held`` there for that machine's person, for
        what ``held`` names): waiting sends answer ``queued``, with a held copy named
        in their ``held``, and the link's backlog window moves on. The receipts stay
        ``queued`` until that peer's broker reports them delivered (or rejected)."""
        state = self._conns.get(conn)
        if state is None:
            return []
        effects: list[Effect] = []
        for msg_id in ids:
            pending = self._pending.get(msg_id)
            if pending is not None and state.name in pending.waiting:
                pending.waiting.discard(state.name)
                if held is not None:
                    _note_held(pending.answer, held, state.name)
                effects.extend(self._maybe_finish(pending))
        if state.in_flight:
            state.in_flight.difference_update(ids)
            if state.catching_up and len(state.in_flight) <= BACKLOG_WINDOW // 2:
                effects.extend(self._next_page(conn))
        return effects

    def watch_events(self, conn: int) -> None:
        """Connection ``conn`` (a backend's, not a peer's) gets every event."""
        self._watchers.add(conn)

    # -- overrides of the shared hooks -------------------------------------------------
    def _confirms(self, name: str) -> bool:
        remote = self._remote.get(name)
        return remote is None or remote.online

    def _remote_presence(self, name: str, now: float) -> Presence | None:
        remote = self._remote.get(name)
        if remote is None:
            return None
        if remote.online:
            return Presence.ONLINE
        return Presence.AWAY if now - remote.last_seen < self.settings.away_window else Presence.OFFLINE

    def _since(self, name: str) -> float | None:
        remote = self._remote.get(name)
        if remote is not None:
            return remote.since
        conn = self._online.get(name)
        return self._conns[conn].since if conn is not None else None


def _note_held(answer: dict[str, Any], match: str, name: str) -> None:
    """Name ``name`` in a send's ``held``: another machine holds its copy for
    ``match`` (that machine's words are not passed on, only what they matched)."""
    before = answer.get("held") or {}
    names = [*before.get("recipients", []), name]
    if match == POLICY_HOLD:
        answer["held"] = held_note(POLICY_HOLD, names)
    else:
        answer["held"] = {**held_note(match[:200], None), "recipients": names}
