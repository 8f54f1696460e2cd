"""The asyncio client: one live WebSocket session that survives broker restarts.

It reconnects with backoff, reclaims its name with the saved secret, resends every
request that had no answer (sends keep their ids, so nothing is stored twice) and
hands each message id to the application once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..codec import dumps, loads
from ..config import Settings
from ..envelope import Envelope, Kind, Priority, new_id
from ..errors import Conflict, MeshError, NameTaken, Timeout, TooLarge, Unavailable, from_wire
from ..quiet import default_name
from . import discovery
from .session import SendResult, SessionCore

log = logging.getLogger("sessionmesh.client")
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0
NOTICE_BACKLOG = 10_000  # receipts and events kept for an application that never reads them


def _offer(queue: asyncio.Queue[dict[str, Any]], item: dict[str, Any]) -> None:
    """Queue a notice, dropping the oldest once ``NOTICE_BACKLOG`` wait unread."""
    if queue.qsize() >= NOTICE_BACKLOG:
        queue.get_nowait()
    queue.put_nowait(item)


TAKEN_LIMIT = 100_000
HAD_KEEP = 100_000  # ids noted read, remembered to ack read again after a reconnect


class AsyncClient:
    """A peer on the mesh. Use ``async with AsyncClient(settings, "name") as peer:``."""

    def __init__(
        self,
        settings: Settings,
        name: str | None = None,
        *,
        role: str | None = None,
        client_kind: str = "python",
        unique: bool = False,
        events: bool = False,
        auto_read: bool = True,
        reconnect: bool = True,
        person: str | None = None,
    ) -> None:
        self.settings = settings
        self.name = name or settings.name or default_name()
        self.meta = discovery.peer_meta(client_kind, role)
        self.unique = unique
        self.events_wanted = events
        self.auto_read = auto_read
        self.reconnect = reconnect
        self.person = person
        self.core = SessionCore()
        self.inbox: asyncio.Queue[Envelope] = asyncio.Queue()
        # ids another attachment of this agent (its hooks, MCP server, bridge) already
        # handed to the agent: recv() skips them (docs/protocol.md §5.6)
        self.taken: OrderedDict[str, None] = OrderedDict()
        self.receipts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._futures: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._acks: dict[str, str] = {}  # id -> 'delivered' | 'read', sent once per loop turn
        # ids the application has had (note_read): delivered again after a reconnect, when
        # the broker lost the read ack, they are acknowledged read, not delivered
        self._had: OrderedDict[str, None] = OrderedDict()
        self._ack_scheduled = False
        self._ack_task: asyncio.Future[None] | None = None  # held: the loop keeps only weak refs
        self.address: discovery.BrokerAddress | None = None
        self.reconnects = 0
        self._keepers: list[asyncio.Task[None]] = []  # lease renewals

    # -- lifecycle ----------------------------------------------------------------
    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self) -> None:
        """Find (or start) the broker, claim the name, and start reading.

        Raises `NameTaken`, `BadSecret`, `InvalidName`, `Unauthorized`, `Unavailable`.
        """
        loop = asyncio.get_running_loop()
        self.address = await loop.run_in_executor(None, discovery.locate, self.settings)
        self._http = aiohttp.ClientSession()
        try:
            await self._open()
        except BaseException:
            await self._http.close()
            raise
        self._reader = asyncio.create_task(self._read_loop())

    async def _open(self) -> None:
        assert self._http is not None and self.address is not None
        try:
            ws = await self._http.ws_connect(
                self.address.ws_url,
                headers={"Authorization": f"Bearer {self.address.token}"},
                max_msg_size=0,
                heartbeat=20.0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                from ..errors import Unauthorized

                raise Unauthorized(
                    "the broker refused the token", hint="check MESH_TOKEN / $MESH_HOME/token"
                ) from None
            raise Unavailable(f"cannot open a session with {self.address.url}: {exc.status}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"cannot reach the broker at {self.address.url}: {exc}") from None
        secret = discovery.load_secret(self.settings, self.name)
        hello = {
            "name": self.name,
            "secret": secret,
            "meta": self.meta,
            "unique": self.unique,
            "events": self.events_wanted,
        }
        if self.person is not None:  # a person session: acting as 'human'
            hello["person"] = self.person
        await ws.send_str(dumps({"op": "hello", "args": hello}))
        msg = await ws.receive(timeout=self.settings.request_timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            await ws.close()
            raise Unavailable("the broker closed the session during hello")
        frame = loads(msg.data)
        if frame.get("op") == "error":
            await ws.close()
            raise from_wire(frame.get("error") or {})
        self.name = frame["name"]
        if frame.get("secret"):
            discovery.save_secret(self.settings, self.name, frame["secret"])
        self._ws = ws
        self._connected.set()
        for pending in self.core.resend():
            await ws.send_str(dumps(pending))

    async def close(self, *, graceful: bool = True) -> None:
        """Leave the mesh; a graceful leave also releases this peer's leases."""
        self._closing = True
        for keeper in self._keepers:
            keeper.cancel()
        await self._send_acks()  # before 'bye': the broker reads nothing after it
        ws = self._ws
        if ws is not None and not ws.closed and graceful:
            with contextlib.suppress(Exception):
                await ws.send_str(dumps({"op": "bye", "rid": 0}))
                await asyncio.wait_for(self._drain_until_closed(ws), timeout=2.0)
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for future in self._futures.values():
            if not future.done():
                future.set_exception(Unavailable("the client closed"))
        if self._http is not None:
            await self._http.close()

    def _fail_pending(self, error: Exception) -> None:
        """Nothing will answer the requests in flight (no reconnect): end their waits
        now. A send's outcome is unknown, so it answers ``timeout``."""
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)

    async def _drain_until_closed(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(0.01)

    # -- the read loop ------------------------------------------------------------
    async def _read_loop(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._on_frame(loads(msg.data))
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                    break
            self._connected.clear()
            if self._closing or not self.reconnect:
                self._fail_pending(Timeout("the connection to the broker ended before it answered"))
                return
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay = BACKOFF_START
        while not self._closing:
            await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                loop = asyncio.get_running_loop()
                self.address = await loop.run_in_executor(
                    None,
                    lambda: (
                        discovery.locate(self.settings, autostart=False)
                        if not self.settings.url
                        else discovery.locate(self.settings)
                    ),
                )
                await self._open()
                self.reconnects += 1
                log.info("reconnected as %s", self.name)
                return
            except (TimeoutError, MeshError, aiohttp.ClientError, OSError) as exc:
                if isinstance(exc, MeshError) and not isinstance(exc, (Unavailable, NameTaken)):
                    log.error("cannot resume the session: %s", exc)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "deliver":
            ids, fresh = self.core.on_deliver(frame)
            # the application's recv() wakes before the acks go out, so what it takes at
            # once is acknowledged 'read' directly, one frame instead of two
            for env in fresh:
                self.inbox.put_nowait(env)
            self._ack([i for i in ids if i not in self._had], "delivered")
            self._ack([i for i in ids if i in self._had], "read")
        elif op == "result":
            result = self.core.on_result(frame)
            future = self._futures.pop(result.rid, None) if result else None
            if result is not None and future is not None and not future.done():
                if result.ok:
                    future.set_result(result.value)
                else:
                    future.set_exception(from_wire(result.value))
        elif op == "taken":
            # another attachment of this agent handed these to it: never present them
            for msg_id in frame.get("ids") or []:
                self.taken[msg_id] = None
                if len(self.taken) > TAKEN_LIMIT:
                    self.taken.popitem(last=False)
        elif op == "receipt":
            _offer(self.receipts, frame)
        elif op == "event":
            _offer(self.events, frame)
        elif op == "error":
            log.warning("broker error: %s", frame.get("error"))

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        await self._send_text(dumps(frame))

    async def _send_text(self, text: str) -> None:
        ws = self._ws
        if ws is None or ws.closed or not self._connected.is_set():
            return  # requests are resent on resume; acks are re-earned by redelivery
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await ws.send_str(text)

    # -- requests -----------------------------------------------------------------
    async def request(self, op: str, *, answer_timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Run one broker op and return its result; raises the broker's `MeshError`.

        ``answer_timeout`` bounds the wait for the answer (default: request_timeout).
        """
        rid, frame = self.core.request(op, args)
        text = dumps(frame)
        if len(text.encode()) > self.settings.max_frame_bytes:
            self.core.forget(rid)
            raise TooLarge(
                f"the '{op}' request is over {self.settings.max_frame_bytes} bytes",
                hint=f"bodies are limited to {self.settings.max_body_bytes} bytes",
            )
        if not self.reconnect and self._ws is not None and not self._connected.is_set():
            self.core.forget(rid)
            raise Unavailable("the connection to the broker has ended", hint="open a new client")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._futures[rid] = future
        await self._send_text(text)
        try:
            # (asyncio.timeout, not wait_for: on 3.11 wait_for wakes the caller a turn later)
            async with asyncio.timeout(answer_timeout or self.settings.request_timeout):
                return await future
        except TimeoutError:
            raise Timeout(f"the broker did not answer '{op}' in time") from None
        finally:
            self._futures.pop(rid, None)
            self.core.forget(rid)

    async def send(
        self,
        to: str | list[str],
        body: Any,
        *,
        kind: Kind | str = Kind.MESSAGE,
        re: str | None = None,
        status: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        ttl: float | None = None,
        id: str | None = None,
        paths: list[str] | None = None,
        ack_required: bool = False,
    ) -> SendResult:
        """Send a message; the answer says `received`, `queued`, `denied`, `refused` or `sent`.
        ``paths`` and ``ack_required`` make it a handoff (docs/protocol.md §4.4).

        A broker that does not answer in time gives status `timeout`; resending with
        the same ``id`` is safe.
        """
        msg_id = id or new_id()
        args: dict[str, Any] = {
            "id": msg_id,
            "to": to,
            "body": body,
            "kind": Kind(kind).value,
            "priority": Priority(priority).value,
        }
        if re is not None:
            args["re"] = re
        if status is not None:
            args["status"] = status
        if paths:
            args["paths"] = paths
        if ack_required:
            args["ack_required"] = True
        if ttl is not None:
            args["ttl"] = ttl
        return await self._send(args)

    async def _send(self, args: dict[str, Any]) -> SendResult:
        """Run a send op; a missing answer or an oversize frame is a status, not an error."""
        if "id" not in args:  # (not setdefault: a new id costs a clock read and random bytes)
            args["id"] = new_id()
        try:
            return SendResult.from_wire(await self.request("send", **args))
        except Timeout:
            return SendResult.from_wire({"id": args["id"], "status": "timeout"})
        except TooLarge as exc:
            return SendResult.from_wire({"id": args["id"], "status": "refused", "reason": exc.to_wire()})

    async def ask(self, to: str, body: Any, **kw: Any) -> SendResult:
        """Send a request: the recipient is expected to reply with an end-state status."""
        return await self.send(to, body, kind=Kind.REQUEST, **kw)

    async def reply(
        self,
        message: Envelope | str,
        body: Any,
        *,
        status: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        evidence: list[dict[str, str]] | None = None,
    ) -> SendResult:
        """Reply to a message (to its sender); replies to requests carry an end-state,
        and may carry ``evidence`` (``{"path"?, "note"?}`` items) behind it."""
        re = message.id if isinstance(message, Envelope) else message
        args: dict[str, Any] = {"re": re, "body": body, "kind": "reply", "priority": Priority(priority).value}
        if status:
            args["status"] = status
        if evidence:
            args["evidence"] = evidence
        return await self._send(args)

    async def await_reply(self, msg_id: str, timeout: float = 30.0) -> Envelope:
        """Block until a reply to ``msg_id`` arrives; raises `Timeout`."""
        result = await self.request("await", answer_timeout=timeout + 5.0, id=msg_id, timeout=timeout)
        return Envelope.from_wire(result["reply"])

    async def recv(self, timeout: float | None = None) -> Envelope:
        """The next message for this peer (marked read unless auto_read is off)."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
            try:
                env = await asyncio.wait_for(self.inbox.get(), left)
            except TimeoutError:
                raise Timeout("no message arrived in time") from None
            if env.id not in self.taken:
                break
        if self.auto_read:
            self.note_read(env.id)
        return env

    def note_read(self, msg_id: str) -> None:
        """Mark a message read (batched, not awaited): call once the agent has it."""
        self._had[msg_id] = None
        if len(self._had) > HAD_KEEP:
            self._had.popitem(last=False)
        self._ack([msg_id], "read")

    def _ack(self, ids: list[str], state: str) -> None:
        for msg_id in ids:
            if state == "read" or msg_id not in self._acks:
                self._acks[msg_id] = state
        if not self._ack_scheduled:  # the sending task runs in the loop's next turn,
            self._ack_scheduled = True  # after an application woken by this frame took it
            self._ack_task = asyncio.ensure_future(self._send_acks())

    async def messages(self) -> AsyncIterator[Envelope]:
        while True:
            yield await self.recv()

    async def _send_acks(self) -> None:
        """One ack frame per state for everything acknowledged in this loop turn."""
        self._ack_scheduled = False
        acks, self._acks = self._acks, {}
        for state in ("delivered", "read"):
            ids = [msg_id for msg_id, s in acks.items() if s == state]
            if ids:
                await self._send_frame({"op": "ack", "args": {"ids": ids, "state": state}})

    async def mark_read(self, ids: list[str]) -> int:
        """Tell the senders these messages reached the agent."""
        return int((await self.request("ack", ids=ids, state="read"))["acked"])

    async def next_receipt(self, timeout: float | None = None) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self.receipts.get(), timeout)
        except TimeoutError:
            raise Timeout("no receipt arrived in time") from None

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            raise Timeout("no event arrived in time") from None

    async def peers(self) -> list[dict[str, Any]]:
        return list((await self.request("peers"))["peers"])

    async def lock(
        self, resource: str, *, ttl: float | None = None, exclusive: bool = True, reason: str = ""
    ) -> dict[str, Any]:
        """Take or renew a lease: ``outcome`` is granted, renewed or conflict."""
        args: dict[str, Any] = {"resource": resource, "exclusive": exclusive, "reason": reason}
        if ttl is not None:
            args["ttl"] = ttl
        return await self.request("lock", **args)

    async def hold(self, resource: str, *, reason: str = "", ttl: float | None = None) -> dict[str, Any]:
        """Take an exclusive lease and keep renewing it while this client lives (the
        graceful leave releases it; a crash lets it expire). Raises `Conflict` naming
        the holder when someone else has it."""
        lease = await self.lock(resource, ttl=ttl, reason=reason)
        if lease["outcome"] == "conflict":
            theirs = lease["lease"]
            raise Conflict(
                f"{theirs['holder']!r} holds {theirs['resource']!r}"
                + (f" ({theirs['reason']})" if theirs.get("reason") else ""),
                hint="work from another folder, or ask the holder to leave",
            )
        period = (ttl or self.settings.lock_ttl) / 3

        async def renew() -> None:
            while True:
                await asyncio.sleep(period)
                with contextlib.suppress(MeshError):
                    await self.lock(resource, ttl=ttl, reason=reason)

        self._keepers.append(asyncio.create_task(renew()))
        return lease

    async def unlock(self, resource: str) -> dict[str, Any]:
        return await self.request("unlock", resource=resource)

    async def locks(self) -> list[dict[str, Any]]:
        return list((await self.request("locks"))["locks"])

    async def track(self, msg_id: str) -> dict[str, Any]:
        return await self.request("track", id=msg_id)

    async def thread(self, thread_id: str, *, close: bool = False) -> dict[str, Any]:
        return await self.request("thread", id=thread_id, close=close)

    async def subscribe(self, topic: str, *, from_start: bool = False) -> dict[str, Any]:
        return await self.request("subscribe", topic=topic, from_start=from_start)

    async def unsubscribe(self, topic: str) -> dict[str, Any]:
        return await self.request("unsubscribe", topic=topic)

    async def set_status(self, **meta: Any) -> dict[str, Any]:
        return await self.request("set_status", **meta)

    async def log(self, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return list((await self.request("log", after=after, limit=limit))["entries"])
