"""The broker's endpoints: WebSocket sessions and the HTTP JSON API (aiohttp).

Both hand every command to the same `Runner`, so an op behaves the same over either;
this module only translates frames and HTTP requests, and aiohttp's exceptions never
leave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from .codec import dumps, dumps_bytes, loads
from .core.broker import Caller
from .errors import BadFrame, MeshError, Timeout, TooLarge, Unauthorized, WrongHost

if TYPE_CHECKING:
    from .server import Runner


WS_PATH = "/v1/ws"
OBSERVER_OPS = frozenset({"peers", "locks", "log"})  # answered over HTTP without X-Mesh-Name
PERSON_HEADER = "X-Mesh-Person"  # a person session (POST /v1/person/session), to act as human
COALESCE_LIMIT = 500  # messages in one deliver frame


def _error_frame(rid: Any, error: MeshError) -> dict[str, Any]:
    return {"op": "result", "rid": rid, "ok": False, "error": error.to_wire()}


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def host_ok(header: str | None, bound: str) -> bool:
    """Whether a request's ``Host`` names this broker: a loopback name (any port), or
    the address it was told to bind when that is not a wildcard. A broker bound to
    every interface (0.0.0.0) was exposed on purpose and answers any Host."""
    if bound in ("0.0.0.0", "::", ""):
        return True
    if not header:
        return False
    if header.startswith("["):  # [::1]:9474
        host = header[: header.find("]") + 1]
    else:
        host = header.rsplit(":", 1)[0] if ":" in header else header
    return host.lower() in LOOPBACK_NAMES or host == bound


# Each connection's outbound queue is bounded (issue #15: a client that pipelined
# requests and never read its answers grew the broker from 179 MB to 2.5 GB in 50 s).
# Past HIGH_WATER frames the broker stops reading that connection until the queue is
# back under LOW_WATER; past MAX_QUEUED (pushes to a peer that never reads) it closes
# the connection with CLOSE_TOO_SLOW. Its messages stay durable and unread, and come
# again in its backlog when it reconnects.
HIGH_WATER = 1_000  # queued items: a frame, or one message of a deliver frame
LOW_WATER = 250
MAX_QUEUED = 20_000
CLOSE_TOO_SLOW = 4008
CLOSE_TIMEOUT = 2.0
# The broker pings each WebSocket every HEARTBEAT seconds and drops one it has heard
# nothing from (not even the pong) since the last ping. It does this itself rather than
# through aiohttp's heartbeat, which re-arms its timer when the client's close frame
# arrives after a close: each session ended with `bye` stayed in memory for 20-45 s
# (issue #15: 2,000 connections a round grew the broker from 47 to 113 MB).
HEARTBEAT = 20.0
READ_BATCH = 32  # frames read from one connection before the loop runs its answers
# Past this many bytes waiting in a socket's buffer, frames go through the writer task,
# which waits for the socket to drain, instead of straight to the socket.
WRITE_LIMIT = 64 * 1024


class Connection:
    """One live WebSocket; frames queue here and go out in order.

    The frames one turn of the loop queued are written in the next, together: each
    is framed here (an unmasked text frame, RFC 6455 §5.2) and all of them go to the
    socket in one write. A socket whose buffer is past `WRITE_LIMIT` (a client slow
    to read), or a session with compression, hands its queue to the writer task,
    which sends through aiohttp and waits for the socket to drain; once that queue is
    empty, frames go the direct way again."""

    _ids = itertools.count(1)

    def __init__(self, ws: web.WebSocketResponse, transport: Any = None) -> None:
        self.id = next(self._ids)
        self.ws = ws
        self.transport = transport  # the socket's, to drop a client that reads nothing
        self.name: str | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._loop = asyncio.get_running_loop()
        self._scheduled = False  # a direct write of the queue is due in the next turn
        self._slow = False  # the writer task has the queue
        self._wake = asyncio.Event()
        self._closed = False
        self._writable = asyncio.Event()  # set while the queue is under HIGH_WATER
        self._writable.set()
        self._items = 0  # frames queued, counting each message of a deliver frame
        self.heard = time.monotonic()  # when the client last sent anything, a pong included

    async def heartbeat(self) -> None:
        """Ping every `HEARTBEAT` seconds; close the connection when nothing came back."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await asyncio.sleep(HEARTBEAT)
            while not self.ws.closed:
                pinged = time.monotonic()
                await self.ws.ping()
                await asyncio.sleep(HEARTBEAT)
                if self.heard < pinged:
                    if self.transport is not None:
                        self.transport.abort()
                    return

    async def readable(self) -> None:
        """Wait until this connection's answers are being read again (backpressure)."""
        await self._writable.wait()

    def push(self, frame: dict[str, Any]) -> None:
        """Queue a frame; consecutive deliveries are coalesced into one frame. A queue
        past `MAX_QUEUED` closes the connection (`CLOSE_TOO_SLOW`)."""
        if self._closed:
            return
        if self._items >= MAX_QUEUED:
            self._closed = True
            self._queue.clear()
            self._items = 0
            self._writable.set()  # the reader goes on, to see the end
            if self.transport is not None:
                # its socket is full: a close frame could not even be written to it
                self.transport.abort()
            else:
                asyncio.ensure_future(
                    self.ws.close(code=CLOSE_TOO_SLOW, message=b"too slow: read your frames")
                )
            return
        if frame.get("op") == "deliver":
            last = self._queue[-1] if self._queue else None
            if last is not None and last["op"] == "deliver" and len(last["messages"]) < COALESCE_LIMIT:
                last["messages"].extend(frame["messages"])
                self._items += len(frame["messages"])
                if self._items >= HIGH_WATER:
                    self._writable.clear()
                return
            frame = {"op": "deliver", "messages": list(frame["messages"])}  # ours to extend
        self._queue.append(frame)
        self._items += _weight(frame)
        if self._items >= HIGH_WATER:
            self._writable.clear()
        if self._slow:
            self._wake.set()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._write_queued)

    def _write_queued(self) -> None:
        """Write every queued frame to the socket at once, or hand the queue to the
        writer task when the socket is backed up (or the session compresses)."""
        self._scheduled = False
        if self._slow or self._closed or not self._queue:
            return
        transport = self.transport
        if (
            transport is None
            or self.ws.compress
            or transport.is_closing()
            or transport.get_write_buffer_size() > WRITE_LIMIT
        ):
            self._slow = True
            self._wake.set()
            return
        if self.ws.closed:  # nothing may follow a close frame
            self._queue.clear()
            self._items = 0
            return
        parts: list[bytes] = []
        for frame in self._queue:
            data = dumps_bytes(frame)
            parts.append(_text_header(len(data)))
            parts.append(data)
        self._queue.clear()
        self._items = 0
        self._writable.set()
        transport.write(b"".join(parts))

    @property
    def drained(self) -> bool:
        """Nothing is waiting to be written."""
        return not self._queue

    async def writer(self) -> None:
        """Send the queue through aiohttp while the socket is backed up (`_slow`)."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    frame = self._queue.popleft()
                    self._items -= _weight(frame)
                    await self.ws.send_str(dumps(frame))
                    if self._items <= LOW_WATER:
                        self._writable.set()
                self._slow = self.ws.compress != 0  # a compressing session stays here
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            self._closed = True


def _weight(frame: dict[str, Any]) -> int:
    return len(frame["messages"]) if frame.get("op") == "deliver" else 1


def _text_header(length: int) -> bytes:
    """A final, unmasked text frame's header for a payload of ``length`` bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return _LEN16.pack(0x81, 126, length)
    return _LEN64.pack(0x81, 127, length)


_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def token_of(request: web.Request) -> str | None:
    """The broker token a request carries (``Authorization: Bearer``, else ``?token=``)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.query.get("token")


BODY_DEADLINE = 10.0  # seconds a request's body may take to arrive once its headers have


async def read_body(request: web.Request) -> bytes:
    """A request's body, or `Timeout` if it stops coming (a request that stops halfway
    would hold its handler forever)."""
    try:
        return await asyncio.wait_for(request.read(), BODY_DEADLINE)
    except TimeoutError:
        raise Timeout(f"the request body did not arrive within {BODY_DEADLINE:g}s") from None


class Endpoints:
    """aiohttp handlers bound to one runner."""

    def __init__(self, runner: Runner, *, self_guarded: Callable[[str], bool] = lambda path: False) -> None:
        self.runner = runner
        # paths whose handlers check credentials themselves (the dashboard's cookie)
        self._self_guarded = self_guarded

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/metrics", self.metrics),
            web.get(WS_PATH, self.websocket),
            web.post("/v1/join", self.join),
            web.post("/v1/person/session", self.person_session),
            web.post("/v1/shutdown", self.shutdown),
            web.post("/v1/{op}", self.http_op),
        ]

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every path answers only to the broker's own host names; every path but
        /health needs the token; a `MeshError` becomes its JSON answer."""
        try:
            if not host_ok(request.host, self.runner.settings.host):
                raise WrongHost(
                    f"this broker does not answer to Host {request.host!r}",
                    hint="reach it as 127.0.0.1 or localhost (a page on another site cannot)",
                )
            if request.path != "/health":
                self.runner.touch()
            if self.runner.token_ok(token_of(request)):
                self.runner.gate.admitted(request.transport)  # no longer a stranger (gate.py)
            elif request.path != "/health" and not self._self_guarded(request.path):
                raise Unauthorized(
                    "missing or wrong broker token",
                    hint="send 'Authorization: Bearer <token>' with the token from $MESH_HOME/token",
                )
            return await handler(request)
        except MeshError as exc:
            return web.json_response({"error": exc.to_wire()}, status=exc.http_status, dumps=dumps)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.runner.health(), dumps=dumps)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.runner.metrics_text()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            raise TooLarge(
                f"request body over {self.runner.settings.max_frame_bytes} bytes",
                hint=f"bodies are limited to {self.runner.settings.max_body_bytes} bytes",
            ) from None
        if not raw:
            return {}
        args = loads(raw)
        if not isinstance(args, dict):
            raise BadFrame("request body must be a JSON object")
        return args

    async def join(self, request: web.Request) -> web.Response:
        """Register a name (first join issues its secret) or check a held one."""
        args = await self._json_body(request)
        result = self.runner.join(
            args.get("name"), args.get("secret"), args.get("meta"), person=request.headers.get(PERSON_HEADER)
        )
        return web.json_response(result, dumps=dumps)

    async def person_session(self, request: web.Request) -> web.Response:
        """``POST /v1/person/session`` ``{"passphrase"}``: a person session, which
        ``X-Mesh-Person`` (HTTP) or ``person`` (hello) then shows to act as ``human``."""
        args = await self._json_body(request)
        session, expires = await self.runner.person.login(args.get("passphrase"))
        return web.json_response({"session": session, "expires": expires}, dumps=dumps)

    async def shutdown(self, request: web.Request) -> web.Response:
        self.runner.request_stop()
        return web.json_response({"stopping": True, "pid": self.runner.health()["pid"]}, dumps=dumps)

    async def http_op(self, request: web.Request) -> web.Response:
        """``POST /v1/<op>``: one command as the peer named in ``X-Mesh-Name``."""
        args = await self._json_body(request)
        op = request.match_info["op"]
        name = request.headers.get("X-Mesh-Name")
        if name or op not in OBSERVER_OPS:  # an observer reads without a name, and registers none
            name = self.runner.authenticate(
                name, request.headers.get("X-Mesh-Secret"), request.headers.get(PERSON_HEADER)
            )
        await self.runner.prescreen(op, args)
        result = await self.runner.call(Caller(name or ""), op, args)
        return web.json_response(result, dumps=dumps)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        # a close waits at most CLOSE_TIMEOUT for the client's close frame: one that reads
        # nothing (closed as too slow) must not hold its name online for long
        ws = web.WebSocketResponse(
            max_msg_size=self.runner.settings.max_frame_bytes + 1, autoping=False, timeout=CLOSE_TIMEOUT
        )
        await ws.prepare(request)
        conn = Connection(ws, request.transport)
        writer = asyncio.create_task(conn.writer())
        heartbeat = asyncio.create_task(conn.heartbeat())
        graceful = False
        try:
            if not await self._hello(conn):
                return ws
            read = 0
            async for msg in ws:
                conn.heard = time.monotonic()
                if msg.type is WSMsgType.PING:
                    await ws.pong(msg.data)
                    continue
                if msg.type is WSMsgType.PONG:
                    continue
                read += 1
                if read % READ_BATCH == 0:
                    # frames already buffered come without a pause: let their answers
                    # be queued, so the bound below sees them (one turn for the
                    # runner's flush, one for the commit that carries them out)
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                await conn.readable()  # a client that does not read its answers is not read either
                if msg.type is WSMsgType.TEXT:
                    graceful = await self._frame(conn, msg.data) or graceful
                    if graceful:
                        break
                elif msg.type is WSMsgType.BINARY:
                    conn.push(
                        {
                            "op": "error",
                            "error": BadFrame("binary frames are not part of the protocol").to_wire(),
                        }
                    )
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            if conn.name is not None:
                self.runner.disconnect(conn, graceful=graceful)
            try:
                # let queued frames (the answer to 'bye', say) go out before closing
                for _ in range(100):
                    if conn.drained:
                        break
                    await asyncio.sleep(0)
                if not ws.closed:
                    await ws.close(code=WSCloseCode.OK)
            finally:
                writer.cancel()
                heartbeat.cancel()
        return ws

    async def _hello(self, conn: Connection) -> dict[str, Any] | None:
        """The first frame must be ``hello``; answer ``welcome`` or an error and close."""
        try:
            async with asyncio.timeout(10.0):
                msg = await conn.ws.receive()
                while msg.type in (WSMsgType.PING, WSMsgType.PONG):  # no autoping: see HEARTBEAT
                    if msg.type is WSMsgType.PING:
                        await conn.ws.pong(msg.data)
                    msg = await conn.ws.receive()
        except TimeoutError:
            await conn.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no hello")
            return None
        try:
            if msg.type is not WSMsgType.TEXT:
                raise BadFrame("the first frame must be a text 'hello' frame")
            frame = self._decode(msg.data)
            if frame.get("op") != "hello":
                raise BadFrame("the first frame must be {'op': 'hello', ...}")
            args = frame.get("args", {})
            if not isinstance(args, dict):
                raise BadFrame("'args' must be a JSON object")
            welcome = self.runner.connect(conn, args)
        except MeshError as exc:
            await conn.ws.send_str(dumps({"op": "error", "error": exc.to_wire()}))
            await conn.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=exc.code.encode())
            return None
        return welcome

    @staticmethod
    def _decode(data: str) -> dict[str, Any]:
        frame = loads(data)
        if not isinstance(frame, dict):
            raise BadFrame("a frame must be a JSON object")
        return frame

    async def _frame(self, conn: Connection, data: str) -> bool:
        """Handle one frame after hello; returns True when the peer said ``bye``. A
        costly send is screened on a worker thread first, while this connection waits
        (its frames stay in order) and every other one goes on."""
        rid = None
        try:
            frame = self._decode(data)
            rid = frame.get("rid")
            if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))):
                rid = None
                raise BadFrame("'rid' must be an integer or a string")
            op = frame.get("op")
            args = frame.get("args", {})
            if op == "bye":
                conn.push({"op": "result", "rid": rid, "ok": True, "result": {"bye": True}})
                return True
            assert conn.name is not None
            await self.runner.prescreen(op, args)
            self.runner.submit(Caller(conn.name, conn.id), op, args, (conn.id, rid))
        except MeshError as exc:
            conn.push(_error_frame(rid, exc) if rid is not None else {"op": "error", "error": exc.to_wire()})
        return False
