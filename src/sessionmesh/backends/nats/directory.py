"""Who is on the other machines: the peer directory and presence in KV, followed by
`Directory` (a part of `routing.NatsBackend`), which gives every peer of another
machine a link (`LinkConn`) in this broker's core and keeps its presence current,
and this machine's own presence, published for the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ...codec import dumps_bytes, loads
from ...core.broker import Caller
from ...errors import MeshError
from .layout import PRESENCE_TTL, token, untoken

if TYPE_CHECKING:
    import itertools

    from ...server import Runner
    from .connection import NatsConnection
    from .layout import Layout
    from .store import NatsStore

PRESENCE_REFRESH = 10.0
HEARTBEAT_INTERVAL = 1.0  # each broker says it is alive this often (presence key LABEL)
MACHINE_TIMEOUT = 5.0  # a broker not heard from for this long is down: its peers are offline


class LinkConn:
    """What the `Runner` sees of a link or of the backend's event feed: a connection
    whose frames go to the backend instead of a socket."""

    def __init__(self, conn_id: int, name: str, sink: Callable[[LinkConn, dict[str, Any]], None]) -> None:
        self.id = conn_id
        self.name: str | None = name
        self._sink = sink
        self.ws = self  # the Runner closes each connection's socket when it stops
        self.transport = None  # and aborts each one's transport when a commit fails: none here
        self.drained = True
        # what it brings stays in JetStream until this broker stored what it caused:
        # the Runner may answer it before that (`Outbox._flush_async`)
        self.redelivers = True

    def push(self, frame: dict[str, Any]) -> None:
        self._sink(self, frame)

    async def close(self, **_: Any) -> None:
        return None


def strings(value: Any) -> list[str]:
    """The strings of a list from another machine's record (nothing else)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def remote_name(machine: str, name: str) -> str:
    return f"{machine}:{name}"


class Directory:
    """The directory and presence half of `routing.NatsBackend`, which sets these."""

    store: NatsStore
    layout: Layout
    conn: NatsConnection
    runner: Runner | None
    loop: asyncio.AbstractEventLoop | None
    _ids: itertools.count[int]
    _links: dict[str, LinkConn]
    _records: list[tuple[str, dict[str, Any] | bytes, dict[str, str] | None]]
    _caught_up: set[tuple[str, str]]
    _presence_seen: dict[str, dict[str, Any]]
    _local_online: dict[str, float]
    _heard: dict[str, float]
    _schedule_drain: Callable[[], None]  # (routing) publish the queued records soon
    _on_link: Callable[[LinkConn, dict[str, Any]], None]  # (routing) a frame down a link

    def _kv_callback(
        self, bucket: str, handler: Callable[[str, str, Any], None]
    ) -> Callable[[Any], Awaitable[None]]:
        pre = len(f"$KV.{bucket}.")

        async def on_msg(msg: Any) -> None:
            key = msg.subject[pre:]
            machine, _, tok = key.partition(".")
            if machine == self.layout.machine or self.loop is None:
                return
            if not tok:  # a broker's heartbeat
                self.loop.call_soon(self._heartbeat, machine)
                return
            try:
                record = loads(msg.data) if msg.data else None
            except MeshError:
                return
            self.loop.call_soon(handler, machine, untoken(tok), record)

        return on_msg

    def _local_view(self, machine: str, name: str) -> str:
        """A name as machine ``machine`` wrote it, as this broker names that peer."""
        mine = self.layout.machine + ":"
        if name.startswith(mine):
            return name[len(mine) :]
        return name if ":" in name else remote_name(machine, name)

    def _translate_to(self, machine: str, to: Any) -> Any:
        """A message's `to` as sent on ``machine``, seen here: ``broadcast`` and
        ``#topic`` as they are, names as this broker names those peers."""
        if isinstance(to, str):
            return to if to == "broadcast" or to.startswith("#") else self._local_view(machine, to)
        if isinstance(to, list):
            return [self._local_view(machine, n) if isinstance(n, str) else n for n in to]
        return to

    def _translate_meta(self, machine: str, meta: dict[str, Any]) -> dict[str, Any]:
        """Another machine's peer metadata as seen here: its refusals and its inbound
        policy per sender name peers as this broker names them."""
        meta = {**meta, "machine": machine}
        refuse = meta.get("refuse")
        if isinstance(refuse, list):
            meta["refuse"] = [self._local_view(machine, n) for n in refuse if isinstance(n, str)]
        policy = meta.get("policy")
        if isinstance(policy, dict) and isinstance(policy.get("from"), dict):
            senders = {
                self._local_view(machine, n): v for n, v in policy["from"].items() if isinstance(n, str)
            }
            meta["policy"] = {**policy, "from": senders}
        return meta

    def _directory_changed(self, machine: str, name: str, record: Any) -> None:
        if not isinstance(record, dict):
            return
        remote = remote_name(machine, name)
        meta = self._translate_meta(machine, record.get("meta") or {})
        topics = strings(record.get("topics"))
        self.store.set_remote_topics(remote, topics)
        if remote in self._links:
            assert self.runner is not None
            link = self._links[remote]
            self.runner.carry_out(self.runner.core.update_remote(remote, time.time(), meta=meta))
        else:
            link = self._attach(remote, meta, record)
        self._catch_up(link, [t for t in strings(record.get("catch_up")) if t in topics])

    def _catch_up(self, link: LinkConn, topics: list[str]) -> None:
        """A peer elsewhere subscribed to ``topics`` with catch-up: send it this
        machine's stored messages of each that it has no copy of. That is the core's
        own ``subscribe`` with ``from_start``, run for the link (the store keeps no
        subscription for a name elsewhere); it is done once per run, and a rerun
        sends nothing twice (a message with its receipt here is skipped)."""
        assert self.runner is not None and link.name is not None
        for topic in topics:
            if (link.name, topic) not in self._caught_up:
                self._caught_up.add((link.name, topic))
                args = {"topic": topic, "from_start": True}
                self.runner.submit(Caller(link.name, link.id), "subscribe", args, None)

    def _attach(self, remote: str, meta: dict[str, Any], record: dict[str, Any] | None) -> LinkConn:
        assert self.runner is not None
        link = LinkConn(next(self._ids), remote, self._on_link)
        self._links[remote] = link
        self.runner.conns[link.id] = link  # type: ignore[assignment]
        now = time.time()
        presence = self._presence_seen.get(remote) or {}
        online = self._fresh(presence, now, remote.partition(":")[0])
        last_seen = float(presence.get("last_seen") or (record or {}).get("last_seen") or 0.0)
        self.runner.carry_out(
            self.runner.core.attach_remote(
                link.id,
                remote,
                now,
                meta=meta,
                created_at=float((record or {}).get("created_at") or now),
                online=online,
                since=presence.get("since") if online else None,
                last_seen=last_seen,
            )
        )
        return link

    def _machine_up(self, machine: str) -> bool:
        return time.monotonic() - self._heard.get(machine, -1e9) < MACHINE_TIMEOUT

    def _fresh(self, presence: dict[str, Any], now: float, machine: str) -> bool:
        """Online: its broker says so, said it lately, and is alive."""
        return (
            bool(presence.get("online"))
            and now - float(presence.get("at") or 0) < PRESENCE_TTL
            and self._machine_up(machine)
        )

    def _heartbeat(self, machine: str) -> None:
        was_up = self._machine_up(machine)
        self._heard[machine] = time.monotonic()
        if not was_up:  # back (or first heard of): its peers' presence counts again
            self._recheck(machine)

    def _recheck(self, machine: str | None = None) -> None:
        """Bring remote presence in line with what is known now."""
        assert self.runner is not None
        now = time.time()
        for remote in list(self._links):
            origin = remote.partition(":")[0]
            if machine is not None and origin != machine:
                continue
            record = self._presence_seen.get(remote) or {}
            online = self._fresh(record, now, origin)
            self.runner.carry_out(
                self.runner.core.update_remote(
                    remote, now, online=online, since=record.get("since"), last_seen=record.get("last_seen")
                )
            )

    def _presence_changed(self, machine: str, name: str, record: Any) -> None:
        if not isinstance(record, dict):
            return
        remote = remote_name(machine, name)
        self._presence_seen[remote] = record
        if remote in self._links:
            assert self.runner is not None
            online = self._fresh(record, time.time(), machine)
            self.runner.carry_out(
                self.runner.core.update_remote(
                    remote,
                    time.time(),
                    online=online,
                    since=record.get("since"),
                    last_seen=record.get("last_seen"),
                )
            )

    # -- this machine's presence (the event feed) -------------------------------------
    def _on_event(self, _: LinkConn, frame: dict[str, Any]) -> None:
        name = frame.get("name")
        if frame.get("op") != "event" or not isinstance(name, str) or ":" in name:
            return
        if frame["event"] == "peer_joined":
            self._local_online[name] = frame["ts"]
            self._put_presence(name, frame["ts"])
        elif frame["event"] == "peer_left":
            self._local_online.pop(name, None)
            self._put_presence(name, frame["ts"])

    def _put_presence(self, name: str, now: float) -> None:
        since = self._local_online.get(name)
        record = {"online": since is not None, "since": since, "last_seen": now, "at": now}
        key = f"{self.layout.machine}.{token(name)}"
        subject = self.conn.kv_subject(self.layout.presence_bucket, key)
        self._records.append((subject, dumps_bytes(record), None))
        self._schedule_drain()

    async def _refresh_presence(self) -> None:
        """Say this broker is alive, keep its online entries fresh, and take another
        machine's peers offline when their broker went quiet (it died)."""
        beats_per_refresh = max(1, round(PRESENCE_REFRESH / HEARTBEAT_INTERVAL))
        beat = 0
        while True:
            now = time.time()
            key = self.conn.kv_subject(self.layout.presence_bucket, self.layout.machine)
            self._records.append((key, dumps_bytes({"at": now}), None))
            self._schedule_drain()
            if beat % beats_per_refresh == 0:
                for name in list(self._local_online):
                    self._put_presence(name, now)
            beat += 1
            self._recheck()
            await asyncio.sleep(HEARTBEAT_INTERVAL)
