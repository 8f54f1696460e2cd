"""Routes between machines: the `NatsBackend` gives every peer of another machine a
link in this broker's core, carries deliveries, receipts and answers over the route
stream, and follows the peer directory and presence in KV (`directory.Directory`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from nats.js import api

from ...codec import dumps_bytes, loads
from ...config import Settings
from ...core.broker import Caller
from ...errors import MeshError
from .connection import NATS_ERRORS, NatsConnection, translate
from .directory import Directory, LinkConn, remote_name, strings
from .store import NatsStore, open_store

if TYPE_CHECKING:
    from ...server import Runner

log = logging.getLogger("sessionmesh.nats")
T = TypeVar("T")

ROUTE_BATCH = 500  # route records given to the broker at once


# the receipts of a local recipient that the sender's machine is told of: a copy held
# here ends rejected if this machine's person rejects it, or expired
LINK_RECEIPTS = ("delivered", "read", "rejected", "expired")


def _encoded(
    records: list[tuple[str, dict[str, Any] | bytes, dict[str, str] | None]],
) -> list[tuple[str, bytes, dict[str, str] | None]]:
    """A drain's records as published. An ``answer`` that says only ``received`` is
    left out when the same drain carries a ``delivered`` or ``read`` receipt for each
    of its names: that receipt's ack ends the send's wait on the other machine just
    as well, and one record and one ack fewer per message is what throughput needs."""
    taken = {
        (subject, r["id"], r["recipient"])
        for subject, r, _ in records
        if isinstance(r, dict) and r["op"] == "receipt" and r["state"] in ("delivered", "read")
    }
    out: list[tuple[str, bytes, dict[str, str] | None]] = []
    for subject, record, headers in records:
        if isinstance(record, dict):
            if (
                record["op"] == "answer"
                and record["statuses"]
                and all(
                    status == "received" and (subject, record["id"], name) in taken
                    for name, status in record["statuses"].items()
                )
            ):
                continue
            record = dumps_bytes(record)
        out.append((subject, record, headers))
    return out


class NatsBackend(Directory):
    """The broker on NATS: its store, and the routes to brokers on other machines.

    Every peer of another machine gets a link (`LinkConn`) in this broker's core.
    Down a link go deliveries (published to ``ns.route.<its machine>``) and receipts
    for messages it sent; from this machine's route subject come deliveries for
    local peers (given to the core as a ``send`` from ``LABEL:name`` that keeps the
    message's ``to`` and names its ``recipients`` here), receipts
    (an ``ack`` by ``LABEL:name``) and the answers of sends made there (``queued``
    ones `release` the wait here). Presence and the peer directory come from KV.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: NatsStore = open_store(settings)
        self.layout = self.store.layout
        # the routes, the directory, presence and the store's commits go through a
        # client on the broker's own loop once it runs (`start`): no thread hand-over
        self.conn = self.store._conn
        self.boot = secrets.token_hex(4)  # tells this run's publish retries from a later re-send
        self.runner: Runner | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(-1, -1)  # link ids: negative, never a socket's
        self._links: dict[str, LinkConn] = {}
        self._events: LinkConn | None = None
        self._rids = itertools.count(1)
        self._asked: dict[int, tuple[str, str, list[str]]] = {}  # rid -> (machine, msg id, names)
        self._deliveries: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {}
        # what to publish: (subject, a route record or an encoded KV value, headers)
        self._records: list[tuple[str, dict[str, Any] | bytes, dict[str, str] | None]] = []
        self._drain_scheduled = False
        self._caught_up: set[tuple[str, str]] = set()  # (LABEL:name, topic) sent its backlog this run
        self._presence_seen: dict[str, dict[str, Any]] = {}  # remote name -> last presence record
        self._local_online: dict[str, float] = {}  # local name -> online since
        self._heard: dict[str, float] = {}  # machine -> when its heartbeat arrived (monotonic)
        self._queue: asyncio.Queue[list[tuple[str, bytes, dict[str, str] | None]]] | None = None
        self._arrived: asyncio.Queue[Any] | None = None
        self._nats_tasks: list[asyncio.Task[Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._subs: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, runner: Runner) -> None:
        self.runner = runner
        self.loop = asyncio.get_running_loop()
        self._events = LinkConn(next(self._ids), "", self._on_event)
        runner.conns[self._events.id] = self._events  # type: ignore[assignment]
        runner.core.watch_events(self._events.id)
        self.conn = await NatsConnection.here(self.settings)
        self.store.commit_through(self.conn)
        await self._on_nats(self._start_nats())
        self._tasks.append(asyncio.create_task(self._refresh_presence()))

    async def _on_nats(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro``, its nats errors as `MeshError`."""
        try:
            return await coro
        except NATS_ERRORS as exc:
            raise translate(exc, "routes") from None

    async def _start_nats(self) -> None:
        self._queue = asyncio.Queue()
        js = self.conn.js
        for bucket, handler in (
            (self.layout.peers_bucket, self._directory_changed),
            (self.layout.presence_bucket, self._presence_changed),
        ):
            sub = await js.subscribe(
                f"$KV.{bucket}.>",
                stream=f"KV_{bucket}",
                cb=self._kv_callback(bucket, handler),
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )
            self._subs.append(sub)
        # the lease table, watched: the tick reads it every 0.2 s without a NATS call
        leases = self.layout.leases_bucket
        self.store.lease_table_seen(*await self.conn.kv_get(leases, "table"))

        async def on_leases(msg: Any) -> None:
            self.store.lease_table_seen(msg.data or None, msg.metadata.sequence.stream)

        self._subs.append(
            await js.subscribe(
                f"$KV.{leases}.table",
                stream=f"KV_{leases}",
                cb=on_leases,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )
        )
        # A durable push consumer: records arrive as they are stored (a pull consumer's
        # fetch waits for a batch to fill or its request to expire).
        durable = f"route-{self.layout.machine}"
        self._arrived = asyncio.Queue()
        arrived = self._arrived

        async def on_record(msg: Any) -> None:
            arrived.put_nowait(msg)

        route = await js.subscribe(
            self.layout.route_filter,
            stream=self.layout.route_stream,
            durable=durable,
            cb=on_record,
            manual_ack=True,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=60.0,
                max_ack_pending=20_000,
                deliver_policy=api.DeliverPolicy.ALL,
                flow_control=True,
                idle_heartbeat=5.0,
                num_replicas=self.settings.nats_replicas,
            ),
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
        self._subs.append(route)
        self._nats_tasks = [asyncio.create_task(self._forward()), asyncio.create_task(self._consume())]

    async def stop(self) -> None:
        """Hand NATS the last records and unsubscribe, all within the stop's budget
        (`NatsConnection.begin_stop`), whatever state NATS is in: a route record not
        published by then is sent again when the link comes back (its message waits
        in the store, queued). The store's commits go back to its own connection."""
        self.conn.begin_stop()
        self.store._conn.begin_stop()
        for task in self._tasks:
            task.cancel()
        # the last deliveries, receipts and presence records (peers just left)
        for _ in range(3):
            await asyncio.sleep(0)
        self._drain()
        if self.conn.connected:
            with contextlib.suppress(MeshError, asyncio.TimeoutError):
                await asyncio.wait_for(self._on_nats(self._wait_forwarded()), self.conn.time_left(10.0))
        for future in self._nats_tasks:
            future.cancel()
        if self.conn.connected:
            with contextlib.suppress(MeshError, asyncio.TimeoutError):
                await asyncio.wait_for(self._on_nats(self._unsubscribe()), self.conn.time_left(5.0))
        if self.conn is not self.store._conn:
            with contextlib.suppress(MeshError, *NATS_ERRORS):  # the last commit through this loop
                await asyncio.wait_for(asyncio.shield(self.store.commit_async()), self.conn.time_left(5.0))
            self.store.commit_through(None)
            await self.conn.aclose()

    async def _wait_forwarded(self) -> None:
        assert self._queue is not None
        await self._queue.join()

    async def _unsubscribe(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()

    def health(self) -> dict[str, object]:
        return {
            "backend": "nats",
            "machine": self.layout.machine,
            "nats_connected": self.conn.connected,
            "remote_peers": len(self._links),
            "state_log_bytes": self.store.compactor.log_bytes,
            "snapshot_bytes": self.store.compactor.snapshot_bytes,
            "compactions": self.store.compactor.done,
        }

    # -- out: what the core pushes down links (broker loop) ---------------------------
    def _on_link(self, link: LinkConn, frame: dict[str, Any]) -> None:
        assert link.name is not None
        machine, _, name = link.name.partition(":")
        op = frame.get("op")
        if op == "deliver":
            for wire in frame["messages"]:
                key = (machine, wire["id"])
                entry = self._deliveries.get(key)
                if entry is None:
                    self._deliveries[key] = (wire, [name])
                elif name not in entry[1]:
                    entry[1].append(name)
        elif op == "receipt":
            if frame["state"] in LINK_RECEIPTS and ":" not in frame["recipient"]:
                self._route(machine, {"op": "receipt", **{k: frame[k] for k in ("id", "recipient", "state")}})
        elif op == "result":
            asked = self._asked.pop(frame["rid"], None)
            if asked is not None:
                origin, msg_id, names = asked
                result = frame["result"] if frame.get("ok") else {}
                statuses = result.get("statuses") or {}
                record: dict[str, Any] = {
                    "op": "answer",
                    "id": msg_id,
                    "statuses": {n: statuses.get(n, "denied") for n in names},
                }
                held = result.get("held")
                if isinstance(held, dict):  # held here for this machine's person
                    kept = strings(held.get("recipients")) or names
                    record["held"] = {
                        "match": str(held.get("match")),
                        "names": [n for n in kept if n in names],
                    }
                self._route(origin, record)
        elif op == "error":
            log.warning("a command from %s failed: %s", link.name, frame.get("error"))
        self._schedule_drain()

    def _route(self, machine: str, record: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        record["from"] = self.layout.machine
        self._records.append((self.layout.route_subject(machine), record, headers))
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self.loop is not None:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Hand this loop turn's records to the forwarder, deliveries grouped per
        message and machine (one record names every recipient there). The flag
        stays set while the deliveries become records, so `_route` schedules no
        second drain for them."""
        deliveries, self._deliveries = self._deliveries, {}
        for (machine, msg_id), (wire, names) in deliveries.items():
            headers = {
                "Nats-Msg-Id": f"{msg_id}.{machine}.{self.boot}.{'.'.join(sorted(names))}",
                "Nats-TTL": str(max(1, int(wire.get("ttl") or self.settings.default_ttl))),
            }
            self._route(machine, {"op": "deliver", "to": names, "msg": wire}, headers)
        self._drain_scheduled = False
        records, self._records = self._records, []
        if records and self._queue is not None:
            self._queue.put_nowait(_encoded(records))

    async def _forward(self) -> None:
        """Publish handed-over records in order, each batch acknowledged before the next."""
        assert self._queue is not None
        while True:
            batch = await self._queue.get()
            try:
                await self.conn.publish_all(batch)
            except (MeshError, *NATS_ERRORS) as exc:
                log.error("routes: %d record(s) not published: %s", len(batch), exc)
            finally:
                self._queue.task_done()

    # -- in: this machine's route subject -----------------------------------------------
    async def _consume(self) -> None:
        """Hand what arrived to the broker in batches (all that waits, up to
        `ROUTE_BATCH`), one batch at a time, in order."""
        assert self.loop is not None and self._arrived is not None
        while True:
            msgs = [await self._arrived.get()]
            while not self._arrived.empty() and len(msgs) < ROUTE_BATCH:
                msgs.append(self._arrived.get_nowait())
            records = []
            for msg in msgs:
                try:
                    records.append(self._checked(msg.subject, loads(msg.data)))
                except MeshError:
                    log.error("routes: dropped a record that is not JSON")
                    records.append(None)
            try:
                committed = await self._inbound(records)
            except Exception as exc:  # a bug in a record's handling must not stop the routes
                log.exception("routes: inbound batch failed: %s", exc)
                committed = False
            if committed:
                for msg in msgs:
                    with contextlib.suppress(*NATS_ERRORS):
                        await msg.ack()

    def _checked(self, subject: str, record: Any) -> dict[str, Any] | None:
        """``record`` if the machine it claims to come from is the one its subject names
        (a machine's NATS user publishes only under its own label), else None: the
        record is dropped, and the broker audits the attempt (``route_refused``)."""
        sender = self.layout.route_sender(subject)
        claimed = record.get("from") if isinstance(record, dict) else None
        if sender is not None and claimed == sender:
            return record
        log.warning("routes: refused a record on %s that claims to come from %r", subject, claimed)
        # the audit entry is committed with the batch (`_inbound`)
        event = {"subject": subject, "sender": sender, "claimed": str(claimed)}
        self.store.append_audit(time.time(), "route_refused", event)
        return None

    async def _inbound(self, records: list[dict[str, Any] | None]) -> bool:
        """Give a batch of records to the core; True once what they wrote is committed
        (then they are acknowledged, else JetStream delivers them again)."""
        for record in records:
            if record is not None:
                self._apply(record)
        assert self.runner is not None
        for _ in range(3):  # the runner's flush, then the commit it starts, go first (a turn each)
            await asyncio.sleep(0)
            if not self.runner.outbox.flushing:
                break
        try:
            await asyncio.wrap_future(self.store.commit_async())
        except (MeshError, *NATS_ERRORS):
            return False
        return True

    def _apply(self, record: dict[str, Any]) -> None:
        assert self.runner is not None
        origin = record.get("from")
        op = record.get("op")
        if not isinstance(origin, str) or origin == self.layout.machine:
            return
        if op == "deliver":
            wire = record["msg"]
            sender = remote_name(origin, wire["from"])
            link = self._links.get(sender) or self._attach(sender, {}, None)
            names = [n for n in record["to"] if isinstance(n, str)]
            rid = next(self._rids)
            self._asked[rid] = (origin, wire["id"], names)
            args = {k: wire.get(k) for k in ("id", "kind", "body", "re", "status", "priority", "ttl")}
            args["to"] = self._translate_to(origin, wire.get("to"))
            args["recipients"] = names
            self.runner.submit(Caller(sender, link.id), "send", args, (link.id, rid))
        elif op == "receipt":
            link = self._links.get(remote_name(origin, record["recipient"]))
            if link is not None:
                self.runner.submit(
                    Caller(link.name or "", link.id),
                    "ack",
                    {"ids": [record["id"]], "state": record["state"]},
                    None,
                )
        elif op == "answer":
            held = record.get("held") if isinstance(record.get("held"), dict) else {}
            held_names = set(strings(held.get("names")))
            for name, status in record["statuses"].items():
                link = self._links.get(remote_name(origin, name))
                if link is None:
                    continue
                if status == "received":
                    self.runner.submit(
                        Caller(link.name or "", link.id),
                        "ack",
                        {"ids": [record["id"]], "state": "delivered"},
                        None,
                    )
                else:
                    match = str(held.get("match")) if name in held_names else None
                    self.runner.carry_out(
                        self.runner.core.release(link.id, [record["id"]], time.time(), held=match)
                    )
