"""One NATS client on a thread of its own, and the ordered, pipelined writer of
commits (`Committer`). Every nats error becomes a `MeshError` here."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from ...config import Settings
from ...errors import Contention, MeshError, StorageError, Unavailable
from .auth import auth_options

log = logging.getLogger("sessionmesh.nats")
T = TypeVar("T")

PUBLISH_CHUNK = 2000  # records in flight at once during a commit
COMMIT_TIMEOUT = 60.0  # a commit retries (a node lost, a leader elected) this long
READ_BYTES = 8 * 1024 * 1024  # a read of a stream fetches about this much at a time
READ_ATTEMPTS = 10  # a read that keeps losing messages on the way gives up after this many consumers
STOP_TIMEOUT = 2.5  # from a stop's start, NATS has this long to take what is left; then it is given up
# A new cluster can take a while to answer its first stream requests (each replicated
# stream elects a leader): a request that times out is tried again for this long,
# unless the server said the broker may not make it.
LAYOUT_PATIENCE = 20.0
# a stream a forming cluster cannot place yet: "no suitable peers for placement"
_PLACEMENT = 10005
# what JetStream answers while it cannot serve a request for a moment (or it does
# not answer at all: a cluster electing a stream's leader)
_TRANSIENT = (nats.js.errors.ServiceUnavailableError, TimeoutError, nats.errors.TimeoutError)


def _waited_out(exc: BaseException, *, unplaced: bool) -> bool:
    """``exc`` says JetStream cannot serve the request for a moment (`_TRANSIENT`), or,
    with ``unplaced``, that a forming cluster cannot place a stream yet."""
    if isinstance(exc, _TRANSIENT):
        return True
    return unplaced and isinstance(exc, nats.js.errors.APIError) and exc.err_code == _PLACEMENT


_WRONG_LAST_SEQUENCE = (10071, 10164)


NATS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    asyncio.TimeoutError,
    concurrent.futures.TimeoutError,
    OSError,
)


def translate(exc: BaseException, doing: str) -> MeshError:
    if isinstance(exc, MeshError):
        return exc
    if isinstance(exc, nats.errors.NoServersError | nats.errors.ConnectionClosedError):
        return Unavailable(f"NATS is not reachable ({doing}): {exc}", hint="check nats_url and the cluster")
    return StorageError(f"NATS failed ({doing}): {type(exc).__name__}: {exc}")


def _differs(wanted: api.StreamConfig, have: api.StreamConfig) -> bool:
    """Whether a stream's configuration lacks something ``wanted`` sets (a field left
    at nats-py's default is the server's to fill in)."""
    for field in dataclasses.fields(wanted):
        value = getattr(wanted, field.name)
        if value is None or value == field.default:
            continue
        if getattr(have, field.name, None) != value:
            return True
    return False


class NatsConnection:
    """One NATS client: on a thread of its own, callable from synchronous code (`open`,
    `call`), or on the caller's running loop (`here`: no hand-over between threads,
    for the broker's hot path; `call` is not for it)."""

    def __init__(self, settings: Settings, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.settings = settings
        self.timeout = settings.nats_timeout
        self.loop = loop or asyncio.new_event_loop()
        self._thread = (
            threading.Thread(target=self._run, name="mesh-nats", daemon=True) if loop is None else None
        )
        self.nc: Any = None
        self.js: Any = None
        self.connected = False
        self.denied: str | None = None  # the last permissions violation the server reported
        self._stop_by: float | None = None

    def begin_stop(self, budget: float = STOP_TIMEOUT) -> None:
        """The broker is stopping: from now on every wait on NATS ends within ``budget``
        seconds in all (what is not acknowledged by then was never answered)."""
        if self._stop_by is None:
            self._stop_by = time.monotonic() + budget

    def time_left(self, cap: float) -> float:
        """How long a wait on NATS may take: ``cap``, or once a stop has begun, what is
        left of its budget (a moment at least, so a healthy NATS still gets its turn)."""
        if self._stop_by is None:
            return cap
        return max(0.05, min(cap, self._stop_by - time.monotonic()))

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @classmethod
    async def here(cls, settings: Settings) -> NatsConnection:
        """A client on the running loop; raises `Unavailable` when no server answers."""
        conn = cls(settings, loop=asyncio.get_running_loop())
        try:
            await asyncio.wait_for(conn._connect(), conn.timeout + 5)
        except TimeoutError:
            raise Unavailable(f"cannot connect to NATS at {settings.nats_url}: timed out") from None
        return conn

    def open(self) -> NatsConnection:
        """Connect; raises `Unavailable` when no server answers in time."""
        assert self._thread is not None, "open() starts the connection's own thread"
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
        opts.update(auth_options(s, servers))
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
        if "permissions violation" in str(exc).lower():
            self.denied = str(exc)
        log.debug("nats: %s", exc)

    async def _on_disconnected(self) -> None:
        self.connected = False
        log.warning("nats: disconnected")

    async def _on_reconnected(self) -> None:
        self.connected = True
        log.warning("nats: reconnected to %s", self.nc.connected_url.netloc if self.nc else "?")

    def call(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None, doing: str = "") -> T:
        """Run ``coro`` on the NATS loop and wait for it; nats errors become `MeshError`.

        While the client is disconnected this raises `Unavailable` at once: the
        caller is the broker's loop, which must not stall on a NATS that is gone
        (nor hold up a stop)."""
        assert self._thread is not None, "call() blocks: only for a connection on its own thread"
        if self.nc is not None and not self.connected:
            coro.close()
            raise Unavailable(f"NATS is not reachable ({doing})", hint="check nats_url and the cluster")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.time_left(self.timeout if timeout is None else timeout))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StorageError(f"NATS did not answer in time ({doing})") from None
        except concurrent.futures.CancelledError:  # the connection closed under the call
            raise Unavailable(f"the NATS connection closed ({doing})") from None
        except NATS_ERRORS as exc:
            raise translate(exc, doing) from None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any] | asyncio.Future[Any]:
        """Start ``coro`` on the connection's loop without waiting for it: a
        concurrent future from its own thread, a task on the running loop (`here`)."""
        if self._thread is None:
            return asyncio.ensure_future(coro)
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def aclose(self) -> None:
        """Close a client on the running loop (`here`), within what is left of a stop's budget."""
        self.begin_stop()
        if self.nc is not None:
            with contextlib.suppress(*NATS_ERRORS, RuntimeError):
                await asyncio.wait_for(self.nc.close(), self.time_left(1.0))

    def close(self) -> None:
        """Close the client and stop its thread, within what is left of a stop's budget
        (a NATS that is gone or slow does not hold the broker up)."""
        self.begin_stop()
        if self._thread is not None and self._thread.is_alive():
            if self.nc is not None:
                with contextlib.suppress(*NATS_ERRORS, RuntimeError):
                    asyncio.run_coroutine_threadsafe(self.nc.close(), self.loop).result(self.time_left(1.0))
            # what still runs there (a commit waiting for a NATS that is gone) ends now,
            # rather than being dropped pending when the loop closes
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(_end_tasks(), self.loop).result(self.time_left(1.0))
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(self.time_left(1.0))
        if self._thread is not None and not self.loop.is_running():
            self.loop.close()

    # -- streams and buckets -----------------------------------------------------------
    async def ensure_stream(self, config: api.StreamConfig) -> None:
        """Create the stream, or bring an existing one to this configuration. One that
        is there as wanted is only looked at: a machine's own credentials may neither
        create nor change a stream (`cluster.machine_permissions`), the admin made it.
        Raises `StorageError` when it is missing or differs and may not be made so.

        A refused API call never answers, and neither does a cluster still electing a
        stream's leaders; one whose nodes are still finding each other answers "no
        suitable peers for placement". Each is tried again (`patiently`), unless the
        server reported a permissions violation."""
        seen: list[api.StreamInfo] = []

        async def once() -> None:
            try:
                info = await self.js.stream_info(config.name)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(config)
                return
            seen.append(info)
            if _differs(config, info.config):
                await self.js.update_stream(config)

        try:
            await self.patiently(once, f"stream {config.name}", unplaced=True)
        except (*_TRANSIENT, nats.js.errors.APIError) as exc:
            if not _waited_out(exc, unplaced=True):
                raise
            raise StorageError(
                f"stream {config.name} is {'not as this version wants it' if seen else 'missing'},"
                " and NATS did not let this broker " + ("update" if seen else "create") + " it",
                hint="with per-machine credentials the admin makes the streams: mesh cluster setup,"
                " or mesh hub",
            ) from exc

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

    async def patiently(self, make: Callable[[], Awaitable[T]], what: str, *, unplaced: bool = False) -> T:
        """Await ``make()``, and again while JetStream answers that it is not available
        now (503: a cluster electing a leader, or busy) or not in time, and with
        ``unplaced`` while a forming cluster cannot place a stream yet, for
        `LAYOUT_PATIENCE` seconds; then the error is raised. A permissions violation
        the server reported ends the wait at once."""
        deadline = time.monotonic() + LAYOUT_PATIENCE
        while True:
            try:
                return await make()
            except (*_TRANSIENT, nats.js.errors.APIError) as exc:
                if not _waited_out(exc, unplaced=unplaced):
                    raise
                if self.denied is not None or time.monotonic() >= deadline:
                    raise
                log.warning("nats: %s: %s; asking again", what, type(exc).__name__)
                await asyncio.sleep(0.2)

    async def read_stream(
        self, stream: str, subject: str, start_seq: int, limit: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """(sequence, subject, data) of a stream's messages on ``subject`` from
        ``start_seq`` on, at most ``limit``, read by short-lived consumers. A message
        lost on the way (a slow consumer cut off, a reconnect) is read again: the
        messages come back whole and in order, or this raises `StorageError`.
        JetStream not available for a moment is waited out (`patiently`)."""
        info = await self.patiently(lambda: self.js.stream_info(stream), f"reading {stream}")
        if info.state.messages == 0 or info.state.last_seq < start_seq:
            return []
        out: list[tuple[int, str, bytes]] = []
        fruitless = 0
        while fruitless < READ_ATTEMPTS:
            left = None if limit is None else limit - len(out)
            part, whole = await self.patiently(
                functools.partial(self._read_once, stream, subject, start_seq, left, info.state.last_seq),
                f"reading {stream}",
            )
            out += part
            if whole or (limit is not None and len(out) >= limit):
                return out if limit is None else out[:limit]
            log.warning("nats: messages of %s were lost on the way; reading on from there again", stream)
            fruitless = 0 if part else fruitless + 1
            start_seq = out[-1][0] + 1 if out else start_seq
        raise StorageError(f"reading {stream} lost messages {READ_ATTEMPTS} times in a row")

    async def _read_once(
        self, stream: str, subject: str, start_seq: int, limit: int | None, last_seq: int
    ) -> tuple[list[tuple[int, str, bytes]], bool]:
        """What one consumer reads, up to the first message lost on the way (its
        delivery count skips one, or it ends with messages still pending), and
        whether nothing was lost."""
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
        created = await self.js.add_consumer(stream, config=config)
        if not created.num_pending:  # nothing on that subject: no fetch waiting for its timeout
            with contextlib.suppress(*NATS_ERRORS):
                await self.js.delete_consumer(stream, name)
            return [], True
        # what may wait in the client is bounded: past it nats-py drops messages, which
        # the delivery count shows and the next consumer reads again
        sub = await self.js.pull_subscribe_bind(
            consumer=name, stream=stream, pending_bytes_limit=4 * READ_BYTES
        )
        out: list[tuple[int, str, bytes]] = []
        size = 0
        pending = created.num_pending
        try:
            while limit is None or len(out) < limit:
                # about READ_BYTES a fetch: a big batch of big messages could outrun the client
                want = min(1000, max(1, READ_BYTES * len(out) // size) if size else 100)
                if limit is not None:
                    want = min(want, limit - len(out))
                try:
                    msgs = await sub.fetch(want, timeout=2.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    return out, pending == 0  # still pending: the last ones were lost
                for msg in msgs:
                    meta = msg.metadata
                    if meta.sequence.consumer != len(out) + 1:
                        return out, False
                    out.append((meta.sequence.stream, msg.subject, msg.data))
                    size += len(msg.data)
                    pending = meta.num_pending
                if not msgs:
                    return out, pending == 0
                if pending == 0 or out[-1][0] >= last_seq:
                    return out, True
            return out, True
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
            with contextlib.suppress(*NATS_ERRORS):
                await self.js.delete_consumer(stream, name)

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


async def _end_tasks() -> None:
    """Cancel every other task of the running loop and wait (briefly) for them to end."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=0.5)


@dataclass(slots=True)
class _Batch:
    records: list[Record]
    done: asyncio.Future[list[Any]]
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

    async def submit(self, records: list[Record]) -> list[Any]:
        """Write ``records``; return once they and everything before are stored, with
        JetStream's acknowledgement of each (``.stream``, ``.seq``), in order."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        batch = _Batch(records, asyncio.get_running_loop().create_future(), [])
        async with self._lock:
            await self._write(batch)
            self._inflight.append(batch)
        if self._acker is None or self._acker.done():
            self._acker = asyncio.create_task(self._ack_in_order())
        return await batch.done

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
                    head.done.set_result([f.result() for f in head.futures])
                continue
            errors = [f.exception() for f in head.futures if f.done() and not f.cancelled() and f.exception()]
            log.warning("nats: a commit was not acknowledged (%s); writing it again", errors[:1] or "timeout")
            await asyncio.sleep(0.2)
            assert self._lock is not None
            async with self._lock:
                for batch in self._inflight:
                    await self._write(batch)
