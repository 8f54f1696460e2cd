"""The NATS backend: a broker's state in JetStream and KV, and routes between machines.

The only module that imports nats-py; every nats error becomes a `MeshError` here.

What lives where (``ns`` is ``nats_namespace``, ``L`` this machine's label):

- ``ns_state_L`` (stream, one message per subject): the broker's durable state, one
  record per peer, message, receipt, thread and subscription under
  ``ns.state.L.<kind>.<key>``. The broker keeps a working copy in memory and writes
  every changed record here, acknowledged by JetStream, before any peer is told
  (the same group commit as SQLite's); on start it reads the stream back.
- ``ns_audit_L`` (stream): the audit log; an entry's sequence is its stream sequence.
- ``ns_route`` (stream, per-message TTL): what one broker hands another: messages for
  a peer on machine ``L`` under ``ns.route.L``, and the receipts and answers that
  come back. Each broker reads its own subject with a durable pull consumer.
- KV ``ns_peers``: every machine's peers (no secrets) and the topics each subscribes
  to, key ``L.<name>``.
- KV ``ns_presence``: who is online where, key ``L.<name>``; entries age out, so a
  broker that dies takes its peers offline with it.
- KV ``ns_leases``: the one lease table of the whole mesh, written only by a
  compare-and-set on its revision, so two brokers never both grant overlapping locks.

The NATS client runs on a thread of its own with its own event loop: the store's
methods are synchronous (the core calls them inline), and block on that loop only
for what must be remote (a commit, the lease table, the audit log).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from ..codec import dumps, loads
from ..config import Settings
from ..core.broker import Caller
from ..core.locks import Lease
from ..envelope import Envelope, ReceiptState
from ..errors import BadRequest, Contention, DuplicateMessage, MeshError, StorageError, Unavailable
from ..storage import PeerRecord, ReceiptUpdate, ThreadRecord
from ..storage.memory import MemoryStore

if TYPE_CHECKING:
    from ..server import Runner

log = logging.getLogger("sessionmesh.nats")
T = TypeVar("T")

LABEL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
PRESENCE_TTL = 30.0  # a presence entry not refreshed for this long is gone
PRESENCE_REFRESH = 10.0
HEARTBEAT_INTERVAL = 1.0  # each broker says it is alive this often (presence key LABEL)
MACHINE_TIMEOUT = 5.0  # a broker not heard from for this long is down: its peers are offline
PUBLISH_CHUNK = 2000  # records in flight at once during a commit
ROUTE_BATCH = 500  # route records given to the broker at once
COMMIT_TIMEOUT = 60.0  # a commit retries (a node lost, a leader elected) this long
_WRONG_LAST_SEQUENCE = (10071, 10164)
_STREAM_IN_USE = 10058

NATS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    asyncio.TimeoutError,
    concurrent.futures.TimeoutError,
    OSError,
)


# -- names -----------------------------------------------------------------------------


def check_label(label: Any, *, what: str = "machine label") -> str:
    """A valid machine label or namespace, else `BadRequest`."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise BadRequest(
            f"invalid {what} {label!r}", hint="1-32 chars of a-z 0-9 _ -, starting with a letter or digit"
        )
    return label


def default_machine() -> str:
    """This host's name as a label: the first part, lower-cased, other chars as '-'."""
    host = socket.gethostname().split(".", 1)[0].lower()
    label = re.sub(r"[^a-z0-9_-]", "-", host).strip("-_")[:32]
    return label or "machine"


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def token(text: str) -> str:
    """``text`` as one subject token and KV key part: a-z 0-9 - kept, every other
    byte as ``_xx`` (so ``#``, ``.``, ``:`` and ``_`` never clash)."""
    if all(c in _SAFE for c in text):
        return text
    return "".join(c if c in _SAFE else "".join(f"_{b:02x}" for b in c.encode()) for c in text)


def untoken(tok: str) -> str:
    """The inverse of `token`."""
    if "_" not in tok:
        return tok
    out = bytearray()
    i = 0
    while i < len(tok):
        if tok[i] == "_":
            out.append(int(tok[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(tok[i].encode())
            i += 1
    return out.decode()


@dataclass(frozen=True, slots=True)
class Layout:
    """The names of every stream, subject and bucket of one mesh, seen from one machine."""

    namespace: str
    machine: str

    @property
    def state_stream(self) -> str:
        return f"{self.namespace}_state_{self.machine}"

    @property
    def state_prefix(self) -> str:
        return f"{self.namespace}.state.{self.machine}."

    @property
    def audit_stream(self) -> str:
        return f"{self.namespace}_audit_{self.machine}"

    @property
    def audit_subject(self) -> str:
        return f"{self.namespace}.audit.{self.machine}"

    @property
    def route_stream(self) -> str:
        return f"{self.namespace}_route"

    def route_subject(self, machine: str) -> str:
        return f"{self.namespace}.route.{machine}"

    @property
    def peers_bucket(self) -> str:
        return f"{self.namespace}_peers"

    @property
    def presence_bucket(self) -> str:
        return f"{self.namespace}_presence"

    @property
    def leases_bucket(self) -> str:
        return f"{self.namespace}_leases"


# -- the connection --------------------------------------------------------------------


def _translate(exc: BaseException, doing: str) -> MeshError:
    if isinstance(exc, MeshError):
        return exc
    if isinstance(exc, nats.errors.NoServersError | nats.errors.ConnectionClosedError):
        return Unavailable(f"NATS is not reachable ({doing}): {exc}", hint="check nats_url and the cluster")
    return StorageError(f"NATS failed ({doing}): {type(exc).__name__}: {exc}")


class NatsConnection:
    """One NATS client on a thread of its own, callable from synchronous code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.nats_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="mesh-nats", daemon=True)
        self.nc: Any = None
        self.js: Any = None
        self.connected = False

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def open(self) -> NatsConnection:
        """Connect; raises `Unavailable` when no server answers in time."""
        self._thread.start()
        try:
            self.call(self._connect(), timeout=self.timeout + 5, doing="connecting")
        except BaseException:
            self.close()
            raise
        return self

    def _connect_options(self) -> dict[str, Any]:
        s = self.settings
        servers = [u.strip() for u in s.nats_url.split(",") if u.strip()]
        opts: dict[str, Any] = {
            "servers": servers,
            "name": f"sessionmesh {s.machine or ''}".strip(),
            "connect_timeout": min(self.timeout, 5.0),
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if s.nats_creds:
            opts["user_credentials"] = s.nats_creds
        if s.nats_nkey_seed:
            opts["nkeys_seed"] = s.nats_nkey_seed
        if s.nats_user:
            opts["user"] = s.nats_user
            opts["password"] = s.nats_password or ""
        if s.nats_token:
            opts["token"] = s.nats_token
        if s.nats_tls_ca or s.nats_tls_cert or any(u.startswith("tls://") for u in servers):
            ctx = ssl.create_default_context(cafile=s.nats_tls_ca)
            if s.nats_tls_cert:
                ctx.load_cert_chain(s.nats_tls_cert, s.nats_tls_key)
            opts["tls"] = ctx
        return opts

    async def _connect(self) -> None:
        opts = self._connect_options()
        try:
            # the first connect is bounded: a wrong URL is an error, not an endless retry
            self.nc = await nats.connect(**{**opts, "max_reconnect_attempts": 1})
        except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
            raise Unavailable(
                f"cannot connect to NATS at {self.settings.nats_url}: {exc}",
                hint="is nats-server running? check nats_url, credentials and TLS",
            ) from None
        # from here on, reconnect for as long as it takes
        self.nc.options["max_reconnect_attempts"] = -1
        self.js = self.nc.jetstream(domain=self.settings.nats_domain, timeout=self.timeout)
        self.connected = True

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats: %s", exc)

    async def _on_disconnected(self) -> None:
        self.connected = False
        log.warning("nats: disconnected")

    async def _on_reconnected(self) -> None:
        self.connected = True
        log.warning("nats: reconnected to %s", self.nc.connected_url.netloc if self.nc else "?")

    def call(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None, doing: str = "") -> T:
        """Run ``coro`` on the NATS loop and wait for it; nats errors become `MeshError`."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StorageError(f"NATS did not answer in time ({doing})") from None
        except NATS_ERRORS as exc:
            raise _translate(exc, doing) from None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Start ``coro`` on the NATS loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        if self._thread.is_alive():
            if self.nc is not None:
                with contextlib.suppress(*NATS_ERRORS, RuntimeError):
                    asyncio.run_coroutine_threadsafe(self.nc.close(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()

    # -- streams and buckets -----------------------------------------------------------
    async def ensure_stream(self, config: api.StreamConfig) -> None:
        """Create the stream, or bring an existing one to this configuration."""
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_IN_USE:
                raise
            await self.js.update_stream(config)

    async def ensure_bucket(self, bucket: str, *, replicas: int, ttl: float | None = None) -> None:
        """A KV bucket (a stream named ``KV_<bucket>``), created or updated."""
        await self.ensure_stream(
            api.StreamConfig(
                name=f"KV_{bucket}",
                subjects=[f"$KV.{bucket}.>"],
                max_msgs_per_subject=1,
                max_age=ttl,
                allow_rollup_hdrs=True,
                deny_delete=True,
                allow_direct=True,
                allow_msg_ttl=True,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=min(ttl, 120.0) if ttl else 120.0,
                num_replicas=replicas,
                storage=api.StorageType.FILE,
            )
        )

    def kv_subject(self, bucket: str, key: str) -> str:
        """The subject a KV write goes to. With a JetStream domain it carries the
        domain's API prefix (``$JS.<domain>.API.$KV...``): a leaf node maps that to
        ``$KV...`` in the domain it leads to, while a bare ``$KV...`` published on a
        leaf with JetStream of its own finds no stream (ADR-19)."""
        domain = self.settings.nats_domain
        return f"$JS.{domain}.API.$KV.{bucket}.{key}" if domain else f"$KV.{bucket}.{key}"

    async def kv_get(self, bucket: str, key: str) -> tuple[bytes | None, int]:
        """A key's value (None if absent or emptied) and its revision (0 if absent)."""
        try:
            msg = await self.js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}")
        except nats.js.errors.NotFoundError:
            return None, 0
        return (msg.data or None), int(msg.seq or 0)

    async def kv_put(self, bucket: str, key: str, value: bytes, *, last: int | None = None) -> int:
        """Write a key; with ``last``, only if its revision is still ``last`` (0: absent),
        else `Contention`. Returns the new revision."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last)} if last is not None else None
        try:
            ack = await self.js.publish(self.kv_subject(bucket, key), value, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise Contention(f"{bucket}/{key} changed under this write") from None
            raise
        return int(ack.seq)

    async def kv_entries(self, bucket: str) -> dict[str, bytes]:
        """Every key of a bucket that holds a value."""
        records = await self.read_stream(f"KV_{bucket}", f"$KV.{bucket}.>", 1)
        pre = len(f"$KV.{bucket}.")
        return {subject[pre:]: data for _, subject, data in records if data}

    async def read_stream(
        self, stream: str, subject: str, start_seq: int, limit: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """(sequence, subject, data) of a stream's messages on ``subject`` from
        ``start_seq`` on, at most ``limit``, read by a short-lived consumer."""
        info = await self.js.stream_info(stream)
        if info.state.messages == 0 or info.state.last_seq < start_seq:
            return []
        name = f"read-{secrets.token_hex(8)}"
        config = api.ConsumerConfig(
            name=name,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=60.0,
            filter_subject=subject,
            mem_storage=True,
            num_replicas=1,
        )
        await self.js.add_consumer(stream, config=config)
        sub = await self.js.pull_subscribe_bind(consumer=name, stream=stream)
        out: list[tuple[int, str, bytes]] = []
        try:
            while limit is None or len(out) < limit:
                want = 1000 if limit is None else min(1000, limit - len(out))
                try:
                    msgs = await sub.fetch(want, timeout=2.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                for msg in msgs:
                    out.append((msg.metadata.sequence.stream, msg.subject, msg.data))
                last = msgs[-1].metadata if msgs else None
                if last is None or last.num_pending == 0 or last.sequence.stream >= info.state.last_seq:
                    break
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
            with contextlib.suppress(*NATS_ERRORS):
                await self.js.delete_consumer(stream, name)
        return out if limit is None else out[:limit]

    async def publish_all(self, records: list[tuple[str, bytes, dict[str, str] | None]]) -> None:
        """Publish every record and wait until JetStream has acknowledged each one.
        What fails (a node lost, a leader being elected) is sent again until
        `COMMIT_TIMEOUT`; records carry ids or are idempotent, so a retry never
        doubles one."""
        deadline = time.monotonic() + COMMIT_TIMEOUT
        todo = records
        last_error: BaseException | None = None
        while todo:
            failed: list[tuple[str, bytes, dict[str, str] | None]] = []
            for i in range(0, len(todo), PUBLISH_CHUNK):
                chunk = todo[i : i + PUBLISH_CHUNK]
                futures = []
                for subject, payload, headers in chunk:
                    try:
                        futures.append(await self.js.publish_async(subject, payload, headers=headers))
                    except NATS_ERRORS as exc:
                        last_error = exc
                        futures.append(None)
                pending = [f for f in futures if f is not None]
                if pending:
                    await asyncio.wait(pending, timeout=min(self.timeout, 5.0))
                for record, future in zip(chunk, futures, strict=True):
                    if future is None or not future.done() or future.cancelled():
                        failed.append(record)
                        if future is not None:
                            future.cancel()
                    elif future.exception() is not None:
                        last_error = future.exception()
                        failed.append(record)
            if failed and time.monotonic() > deadline:
                raise StorageError(f"JetStream did not store {len(failed)} record(s): {last_error}")
            if failed:
                log.warning("nats: %d record(s) not acknowledged; sending again", len(failed))
                await asyncio.sleep(0.2)
            todo = failed


Record = tuple[str, bytes, dict[str, str] | None]


@dataclass(slots=True)
class _Batch:
    records: list[Record]
    done: asyncio.Future[None]
    futures: list[asyncio.Future[Any]]


class Committer:
    """Commits in order, pipelined: a batch is written while earlier ones still wait
    for their acknowledgements, and each batch counts as committed once it and every
    batch before it are acknowledged. If a write fails (a node lost, a leader being
    elected), the failed batch and every later one are written again, in order, so a
    record never lands after a newer version of itself. Runs on the NATS loop."""

    def __init__(self, conn: NatsConnection) -> None:
        self.conn = conn
        self._lock: asyncio.Lock | None = None
        self._inflight: collections.deque[_Batch] = collections.deque()
        self._acker: asyncio.Task[None] | None = None

    async def submit(self, records: list[Record]) -> None:
        """Write ``records``; return once they and everything before are stored."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        batch = _Batch(records, asyncio.get_running_loop().create_future(), [])
        async with self._lock:
            await self._write(batch)
            self._inflight.append(batch)
        if self._acker is None or self._acker.done():
            self._acker = asyncio.create_task(self._ack_in_order())
        await batch.done

    async def _write(self, batch: _Batch) -> None:
        for future in batch.futures:
            future.cancel()
        batch.futures = []
        for subject, payload, headers in batch.records:
            try:
                batch.futures.append(await self.conn.js.publish_async(subject, payload, headers=headers))
            except NATS_ERRORS as exc:
                failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                batch.futures.append(failed)

    @staticmethod
    def _stored(batch: _Batch) -> bool:
        return all(f.done() and not f.cancelled() and f.exception() is None for f in batch.futures)

    async def _ack_in_order(self) -> None:
        while self._inflight:
            head = self._inflight[0]
            if head.futures:
                await asyncio.wait(head.futures, timeout=min(self.conn.timeout, 5.0))
            if self._stored(head):
                self._inflight.popleft()
                if not head.done.done():
                    head.done.set_result(None)
                continue
            errors = [f.exception() for f in head.futures if f.done() and not f.cancelled() and f.exception()]
            log.warning("nats: a commit was not acknowledged (%s); writing it again", errors[:1] or "timeout")
            await asyncio.sleep(0.2)
            assert self._lock is not None
            async with self._lock:
                for batch in self._inflight:
                    await self._write(batch)


# -- the store -------------------------------------------------------------------------


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
        if self._closed:
            return
        self._closed = True
        try:
            self.commit()
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
            self._conn.kv_get(self.layout.leases_bucket, "table"), doing="reading the lease table"
        )
        self._lease_rows = loads(data)["leases"] if data else []
        self._lease_rev = rev

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
        self._read_leases()
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


# -- opening ---------------------------------------------------------------------------


def layout_of(settings: Settings) -> Layout:
    return Layout(
        check_label(settings.nats_namespace, what="nats_namespace"),
        check_label(settings.machine or default_machine()),
    )


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
            subjects=[f"{layout.namespace}.route.>"],
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


class LinkConn:
    """What the `Runner` sees of a link or of the backend's event feed: a connection
    whose frames go to the backend instead of a socket."""

    def __init__(self, conn_id: int, name: str, sink: Callable[[LinkConn, dict[str, Any]], None]) -> None:
        self.id = conn_id
        self.name: str | None = name
        self._sink = sink
        self.ws = self  # the Runner closes each connection's socket when it stops
        self.drained = True

    def push(self, frame: dict[str, Any]) -> None:
        self._sink(self, frame)

    async def close(self, **_: Any) -> None:
        return None


def _remote_name(machine: str, name: str) -> str:
    return f"{machine}:{name}"


class NatsBackend:
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
        self._records: list[tuple[str, bytes, dict[str, str] | None]] = []
        self._drain_scheduled = False
        self._presence_seen: dict[str, dict[str, Any]] = {}  # remote name -> last presence record
        self._local_online: dict[str, float] = {}  # local name -> online since
        self._heard: dict[str, float] = {}  # machine -> when its heartbeat arrived (monotonic)
        self._queue: asyncio.Queue[list[tuple[str, bytes, dict[str, str] | None]]] | None = None
        self._arrived: asyncio.Queue[Any] | None = None
        self._nats_tasks: list[concurrent.futures.Future[Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._subs: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, runner: Runner) -> None:
        self.runner = runner
        self.loop = asyncio.get_running_loop()
        self._events = LinkConn(next(self._ids), "", self._on_event)
        runner.conns[self._events.id] = self._events  # type: ignore[assignment]
        runner.core.watch_events(self._events.id)
        await self._on_nats(self._start_nats())
        self._tasks.append(asyncio.create_task(self._refresh_presence()))

    async def _on_nats(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the NATS loop and await it from the broker's loop."""
        try:
            return await asyncio.wrap_future(self.conn.spawn(coro))
        except NATS_ERRORS as exc:
            raise _translate(exc, "routes") from None

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
        # A durable push consumer: records arrive as they are stored (a pull consumer's
        # fetch waits for a batch to fill or its request to expire).
        durable = f"route-{self.layout.machine}"
        self._arrived = asyncio.Queue()
        arrived = self._arrived

        async def on_record(msg: Any) -> None:
            arrived.put_nowait(msg)

        route = await js.subscribe(
            self.layout.route_subject(self.layout.machine),
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
        loop = asyncio.get_running_loop()
        self._nats_tasks = [
            asyncio.run_coroutine_threadsafe(self._forward(), loop),
            asyncio.run_coroutine_threadsafe(self._consume(), loop),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        # the last deliveries, receipts and presence records (peers just left)
        for _ in range(3):
            await asyncio.sleep(0)
        self._drain()
        with contextlib.suppress(MeshError):
            await asyncio.wait_for(self._on_nats(self._wait_forwarded()), 10)
        for future in self._nats_tasks:
            future.cancel()
        with contextlib.suppress(MeshError, asyncio.TimeoutError):
            await asyncio.wait_for(self._on_nats(self._unsubscribe()), 5)

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
            if frame["state"] in ("delivered", "read") and ":" not in frame["recipient"]:
                self._route(machine, {"op": "receipt", **{k: frame[k] for k in ("id", "recipient", "state")}})
        elif op == "result":
            asked = self._asked.pop(frame["rid"], None)
            if asked is not None:
                origin, msg_id, names = asked
                statuses = frame["result"]["statuses"] if frame.get("ok") else {}
                answer = {n: statuses.get(n, "denied") for n in names}
                self._route(origin, {"op": "answer", "id": msg_id, "statuses": answer})
        elif op == "error":
            log.warning("a command from %s failed: %s", link.name, frame.get("error"))
        self._schedule_drain()

    def _route(self, machine: str, record: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        record["from"] = self.layout.machine
        self._records.append((self.layout.route_subject(machine), dumps(record).encode(), headers))
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self.loop is not None:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Hand this loop turn's records to the forwarder, deliveries grouped per
        message and machine (one record names every recipient there)."""
        self._drain_scheduled = False
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
            self.conn.loop.call_soon_threadsafe(self._queue.put_nowait, records)

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

    # -- in: this machine's route subject (NATS loop, then the broker loop) ----------
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
                    records.append(loads(msg.data))
                except MeshError:
                    log.error("routes: dropped a record that is not JSON")
                    records.append(None)
            done = asyncio.run_coroutine_threadsafe(self._inbound(records), self.loop)
            try:
                committed = await asyncio.wrap_future(done)
            except Exception as exc:  # a bug in a record's handling must not stop the routes
                log.exception("routes: inbound batch failed: %s", exc)
                committed = False
            if committed:
                for msg in msgs:
                    with contextlib.suppress(*NATS_ERRORS):
                        await msg.ack()

    async def _inbound(self, records: list[dict[str, Any] | None]) -> bool:
        """Give a batch of records to the core; True once what they wrote is committed
        (then they are acknowledged, else JetStream delivers them again)."""
        for record in records:
            if record is not None:
                self._apply(record)
        await asyncio.sleep(0)  # the runner's flush (which starts their commit) runs first
        try:  # a barrier: done when everything written so far is stored
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
            sender = _remote_name(origin, wire["from"])
            link = self._links.get(sender) or self._attach(sender, {}, None)
            names = [n for n in record["to"] if isinstance(n, str)]
            rid = next(self._rids)
            self._asked[rid] = (origin, wire["id"], names)
            args = {k: wire.get(k) for k in ("id", "kind", "body", "re", "status", "priority", "ttl")}
            args["to"] = self._translate_to(origin, wire.get("to"))
            args["recipients"] = names
            self.runner.submit(Caller(sender, link.id), "send", args, (link.id, rid))
        elif op == "receipt":
            link = self._links.get(_remote_name(origin, record["recipient"]))
            if link is not None:
                self.runner.submit(
                    Caller(link.name or "", link.id),
                    "ack",
                    {"ids": [record["id"]], "state": record["state"]},
                    None,
                )
        elif op == "answer":
            for name, status in record["statuses"].items():
                link = self._links.get(_remote_name(origin, name))
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
                    self.runner.carry_out(self.runner.core.release(link.id, [record["id"]], time.time()))

    # -- the directory and presence (KV watchers) --------------------------------------
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
                self.loop.call_soon_threadsafe(self._heartbeat, machine)
                return
            try:
                record = loads(msg.data) if msg.data else None
            except MeshError:
                return
            self.loop.call_soon_threadsafe(handler, machine, untoken(tok), record)

        return on_msg

    def _local_view(self, machine: str, name: str) -> str:
        """A name as machine ``machine`` wrote it, as this broker names that peer."""
        mine = self.layout.machine + ":"
        if name.startswith(mine):
            return name[len(mine) :]
        return name if ":" in name else _remote_name(machine, name)

    def _translate_to(self, machine: str, to: Any) -> Any:
        """A message's `to` as sent on ``machine``, seen here: ``broadcast`` and
        ``#topic`` as they are, names as this broker names those peers."""
        if isinstance(to, str):
            return to if to == "broadcast" or to.startswith("#") else self._local_view(machine, to)
        if isinstance(to, list):
            return [self._local_view(machine, n) if isinstance(n, str) else n for n in to]
        return to

    def _translate_meta(self, machine: str, meta: dict[str, Any]) -> dict[str, Any]:
        """Another machine's peer metadata as seen here: its refusals name peers as
        this broker names them."""
        meta = {**meta, "machine": machine}
        refuse = meta.get("refuse")
        if isinstance(refuse, list):
            meta["refuse"] = [self._local_view(machine, n) for n in refuse if isinstance(n, str)]
        return meta

    def _directory_changed(self, machine: str, name: str, record: Any) -> None:
        if not isinstance(record, dict):
            return
        remote = _remote_name(machine, name)
        meta = self._translate_meta(machine, record.get("meta") or {})
        topics = record.get("topics")
        self.store.set_remote_topics(
            remote, [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []
        )
        if remote in self._links:
            assert self.runner is not None
            self.runner.carry_out(self.runner.core.update_remote(remote, time.time(), meta=meta))
        else:
            self._attach(remote, meta, record)

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
        remote = _remote_name(machine, name)
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
        self._records.append((subject, dumps(record).encode(), None))
        self._schedule_drain()

    async def _refresh_presence(self) -> None:
        """Say this broker is alive, keep its online entries fresh, and take another
        machine's peers offline when their broker went quiet (it died)."""
        beats_per_refresh = max(1, round(PRESENCE_REFRESH / HEARTBEAT_INTERVAL))
        beat = 0
        while True:
            now = time.time()
            key = self.conn.kv_subject(self.layout.presence_bucket, self.layout.machine)
            self._records.append((key, dumps({"at": now}).encode(), None))
            self._schedule_drain()
            if beat % beats_per_refresh == 0:
                for name in list(self._local_online):
                    self._put_presence(name, now)
            beat += 1
            self._recheck()
            await asyncio.sleep(HEARTBEAT_INTERVAL)


__all__ = [
    "NatsBackend",
    "NatsConnection",
    "NatsStore",
    "Layout",
    "open_store",
    "token",
    "untoken",
    "check_label",
    "default_machine",
]
