"""The live dashboard: a page at ``/``, its JSON API and its WebSocket feed (aiohttp).

The only module with dashboard routes. The dashboard shows every peer's mail and acts
as the person, so the broker token (which every agent holds) does not open it: the
person's passphrase does (`sessionmesh.person`). ``POST /dashboard/v1/login`` trades
the passphrase (typed into the login page, or into ``mesh dashboard`` on a terminal)
for a one-time code, and `/login` trades the code for an HttpOnly, SameSite=Strict
session cookie. Every other dashboard path needs that cookie, or a person session in
``X-Mesh-Person`` (scripts). The feed is one observer of the core (`Runner.observe`): it batches
what the core pushes (events, and each stored message with its body) and sends each
browser one frame per batch. The person acts as the peer ``human`` through the
core's ordinary ops, so statuses, receipts and holds apply to them as to anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import secrets
import socket
import time
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .codec import dumps, loads
from .core.state import Caller
from .envelope import PERSON, Envelope
from .errors import BadFrame, Forbidden, MeshError, PersonRequired, TooLarge, Unauthorized, UnknownOp
from .transports import PERSON_HEADER, read_body, token_of

if TYPE_CHECKING:
    from .server import Runner

HUMAN = PERSON  # the peer a person acts as from the dashboard
HUMAN_META = {"client": "human", "role": "person"}
COOKIE = "mesh_session"
LOGIN_CODE_TTL = 120.0  # a login link works once, within this
SESSION_TTL = 12 * 3600.0
BATCH_INTERVAL = 0.05  # the feed sends at most one frame per browser per interval
BROWSER_BACKLOG = 400  # frames queued for a slow browser before it is told to reload
PAGE_LIMIT = 500  # the most rows one API call returns
RECEIPTS_SHOWN = 200  # receipts listed per message; the count is always exact
GRAPH_WINDOWS = (300.0, 3600.0, 86400.0)
LOGIN_PATH = "/dashboard/v1/login"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSET_TYPES = {"app.js": "text/javascript", "app.css": "text/css", "login.js": "text/javascript"}
PUBLIC_ASSETS = {"app.css", "login.js"}  # the login page's, which hold no data


def _asset(name: str) -> bytes:
    return (resources.files("sessionmesh") / "assets" / "dashboard" / name).read_bytes()


def _page(status: int, title: str, text: str) -> web.Response:
    body = (
        "<!doctype html><meta charset=utf-8><title>sessionmesh</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    )
    return web.Response(
        status=status, text=body, content_type="text/html", headers={"Content-Security-Policy": CSP}
    )


def _int(value: str | None, what: str, lo: int, hi: int, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadFrame(f"'{what}' must be an integer") from None
    if not lo <= number <= hi:
        raise BadFrame(f"'{what}' must be from {lo} to {hi}")
    return number


class Logins:
    """One-time login codes and the sessions they open (in memory: a broker restart
    ends every session; run ``mesh dashboard`` again)."""

    def __init__(self) -> None:
        self._codes: dict[str, float] = {}
        self._sessions: dict[str, float] = {}

    def mint(self, now: float) -> str:
        self._codes = {c: t for c, t in self._codes.items() if t > now}
        code = secrets.token_urlsafe(24)
        self._codes[code] = now + LOGIN_CODE_TTL
        return code

    def redeem(self, code: str, now: float) -> str | None:
        """A new session for a valid code, which is spent; None if unknown, spent or stale."""
        expires = self._codes.pop(code, None)
        if expires is None or expires <= now:
            return None
        self._sessions = {s: t for s, t in self._sessions.items() if t > now}
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + SESSION_TTL
        return session

    def valid(self, session: str | None, now: float) -> bool:
        return session is not None and self._sessions.get(session, 0.0) > now


class Browser:
    """One dashboard WebSocket: frames queue here and a writer sends them in order."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()

    def send(self, text: str) -> None:
        if len(self._queue) >= BROWSER_BACKLOG:
            # too slow to keep up: drop what waits and have the page load afresh
            self._queue.clear()
            text = dumps({"op": "resync"})
        self._queue.append(text)
        self._wake.set()

    async def writer(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self.ws.send_str(self._queue.popleft())


class Feed:
    """The core's observer while at least one browser watches: batches its frames."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.browsers: set[Browser] = set()
        self._key: int | None = None
        self._batch: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, browser: Browser) -> None:
        self.browsers.add(browser)
        if self._key is None:
            self._key = self.runner.observe(self)

    def remove(self, browser: Browser) -> None:
        self.browsers.discard(browser)
        if not self.browsers and self._key is not None:
            self.runner.unobserve(self._key)
            self._key = None

    def push(self, frame: dict[str, Any]) -> None:
        """Called by the runner after each commit, once per event."""
        self._batch.append(frame)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_INTERVAL, self._send)

    def _send(self) -> None:
        self._timer = None
        batch, self._batch = self._batch, []
        if not batch or not self.browsers:
            return
        events = [{k: v for k, v in f.items() if k != "op"} for f in batch]
        events.extend(self._threads(events))
        text = dumps({"op": "events", "events": events})
        for browser in self.browsers:
            browser.send(text)

    def _threads(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The current turn count and state of each thread a message in the batch moved."""
        out = []
        seen: set[str] = set()
        for event in events:
            if event["event"] != "message":
                continue
            msg = event["message"]
            thread_id = msg["thread"]
            if thread_id in seen:
                continue
            seen.add(thread_id)
            record = self.runner.store.get_thread(thread_id)
            if record is not None:
                out.append({"event": "thread", "ts": event["ts"], "thread": record.to_wire()})
            elif thread_id == msg["id"] and msg["kind"] == "request":
                out.append({"event": "thread", "ts": event["ts"], "thread": _first_turn(msg)})
        return out

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._key is not None:
            self.runner.unobserve(self._key)
            self._key = None


def _first_turn(msg: dict[str, Any]) -> dict[str, Any]:
    """A thread before its second turn has no row: describe it from its first message."""
    to = msg["to"]
    names = [n for n in (to if isinstance(to, list) else [to]) if not n.startswith("#") and n != "broadcast"]
    return {
        "id": msg["id"],
        "state": "open",
        "turns": 1,
        "participants": [msg["from"], *names],
        "created_at": msg["ts"],
        "updated_at": msg["ts"],
    }


class Dashboard:
    """The dashboard's routes, bound to one runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.logins = Logins()
        self.feed = Feed(runner)
        self._sockets: set[web.WebSocketResponse] = set()
        self._paths: set[str] = set()

    # -- wiring -------------------------------------------------------------------
    def guards(self, path: str) -> bool:
        """Whether ``path`` is one of the dashboard's (which check the cookie or the token
        themselves); any other path, even under /dashboard/, gets the broker's token check."""
        return path in self._paths

    def install(self, app: web.Application) -> None:
        routes = [
            web.get("/", self.index),
            web.get("/login", self.login),
            web.get("/dashboard/assets/{name}", self.asset),
            web.post(LOGIN_PATH, self.mint_login),
            web.get("/dashboard/v1/feed", self.websocket),
            web.get("/dashboard/v1/state", self.state),
            web.get("/dashboard/v1/peers", self.peers),
            web.get("/dashboard/v1/messages", self.messages),
            web.get("/dashboard/v1/search", self.search),
            web.get("/dashboard/v1/threads", self.threads),
            web.get("/dashboard/v1/locks", self.locks),
            web.get("/dashboard/v1/held", self.held),
            web.get("/dashboard/v1/graph", self.graph),
            web.post("/dashboard/v1/send", self.send),
            web.post("/dashboard/v1/read", self.read),
            web.post("/dashboard/v1/approve", self.approve),
            web.post("/dashboard/v1/reject", self.reject),
        ]
        self._paths = {route.path for route in routes} | {f"/dashboard/assets/{name}" for name in ASSET_TYPES}
        app.add_routes(routes)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, app: web.Application) -> None:
        self.feed.close()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"broker stopping")

    # -- credentials --------------------------------------------------------------
    def _token_ok(self, request: web.Request) -> bool:
        return self.runner.token_ok(token_of(request))

    def _session_ok(self, request: web.Request) -> bool:
        return self.logins.valid(request.cookies.get(COOKIE), time.time())

    def _person_ok(self, request: web.Request) -> bool:
        """A script's person session: the broker token and ``X-Mesh-Person``."""
        return self._token_ok(request) and self.runner.person.valid(request.headers.get(PERSON_HEADER))

    def _check(self, request: web.Request, *, write: bool = False) -> None:
        """The person's session cookie, or a person session with the token; a write by
        cookie must also come from the page itself (same origin, and a header no
        cross-site form can set). The broker token alone is an agent's, and opens nothing."""
        if self._person_ok(request):
            return
        if self._session_ok(request):
            self.runner.gate.admitted(request.transport)  # the page's cookie: not a stranger
        else:
            raise PersonRequired(
                "the dashboard shows every agent's mail and acts as the person: it needs the person's login",
                hint="log in with your passphrase at /, or run 'mesh dashboard' in a terminal",
            )
        if write and request.headers.get("X-Mesh-Dashboard") != "1":
            raise Forbidden("a dashboard write must come from the dashboard page")
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            raise Forbidden(f"requests from {origin!r} are not accepted")

    def _set_session(self, response: web.StreamResponse, session: str) -> None:
        response.set_cookie(
            COOKIE, session, max_age=int(SESSION_TTL), path="/", httponly=True, samesite="Strict"
        )

    # -- the page -----------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        """The dashboard for the person's session; the login page for anyone else."""
        logged_in = self._session_ok(request)
        return web.Response(
            status=200 if logged_in else 401,
            body=_asset("index.html" if logged_in else "login.html"),
            content_type="text/html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
        )

    async def login(self, request: web.Request) -> web.Response:
        session = self.logins.redeem(request.query.get("code", ""), time.time())
        if session is None:
            return _page(
                401,
                "This login link is spent",
                "A login link works once and for two minutes. Run 'mesh dashboard' for a new one.",
            )
        response = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
        self._set_session(response, session)
        return response

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in PUBLIC_ASSETS:
            self._check(request)
        if name not in ASSET_TYPES:
            raise web.HTTPNotFound()
        return web.Response(
            body=_asset(name), content_type=ASSET_TYPES[name], headers={"Cache-Control": "no-cache"}
        )

    async def mint_login(self, request: web.Request) -> web.Response:
        """``POST /dashboard/v1/login`` ``{"passphrase"}`` (or ``{"session"}``, a person
        session): a one-time login link. From the login page (its header) or with the
        broker token; never for the token alone."""
        if not self._token_ok(request) and request.headers.get("X-Mesh-Dashboard") != "1":
            raise Unauthorized("a login comes from the login page or carries the broker token")
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            raise Forbidden(f"requests from {origin!r} are not accepted")
        args = await self._body(request)
        if args.get("session") is not None:
            if not self.runner.person.valid(args["session"]):
                raise PersonRequired("that person session is not valid", hint="log in again")
        else:
            await self.runner.person.login(args.get("passphrase"))
        code = self.logins.mint(time.time())
        return self._json(
            {"code": code, "url": f"{self.runner.url}/login?code={code}", "ttl": LOGIN_CODE_TTL}
        )

    # -- reading ------------------------------------------------------------------
    @staticmethod
    def _json(data: Any) -> web.Response:
        return web.json_response(data, dumps=dumps, headers={"Cache-Control": "no-store"})

    async def _op(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self.runner.call(Caller(HUMAN), op, args)

    async def _held(self) -> list[dict[str, Any]]:
        try:
            return list((await self._op("held", {})).get("messages", []))
        except UnknownOp:  # a broker without safety holds
            return []

    def _message(self, env: Envelope) -> dict[str, Any]:
        receipts = self.runner.store.receipts(env.id)
        return {
            **env.to_wire(),
            "seq": env.seq,
            "receipts": {r.recipient: r.state.value for r in receipts[:RECEIPTS_SHOWN]},
            "recipient_count": len(receipts),
        }

    def _messages(self, envs: list[Envelope], limit: int) -> dict[str, Any]:
        return {
            "messages": [self._message(e) for e in envs],
            "before": envs[-1].seq if len(envs) == limit else None,
        }

    async def state(self, request: web.Request) -> web.Response:
        """Everything the page shows first, in one call."""
        self._check(request)
        store = self.runner.store
        limit = _int(request.query.get("limit"), "limit", 1, PAGE_LIMIT, 100) or 100
        threads = store.recent_threads(before=None, limit=limit)
        return self._json(
            {
                "me": HUMAN,
                "now": time.time(),
                "away_window": self.runner.settings.away_window,
                "peers": (await self._op("peers", {}))["peers"],
                "locks": (await self._op("locks", {}))["locks"],
                "held": await self._held(),
                "threads": [t.to_wire() for t in threads],
                **self._messages(store.recent_messages(before=None, limit=limit), limit),
            }
        )

    async def peers(self, request: web.Request) -> web.Response:
        self._check(request)
        return self._json(await self._op("peers", {}))

    async def messages(self, request: web.Request) -> web.Response:
        """Stored messages newest first; ``before`` (a seq) pages back."""
        self._check(request)
        limit = _int(request.query.get("limit"), "limit", 1, PAGE_LIMIT, 100) or 100
        before = _int(request.query.get("before"), "before", 1, 2**62, None)
        return self._json(
            self._messages(self.runner.store.recent_messages(before=before, limit=limit), limit)
        )

    async def search(self, request: web.Request) -> web.Response:
        """Full-text search over stored bodies (every word, as a prefix), newest first."""
        self._check(request)
        query = request.query.get("q", "")
        if len(query) > 500:
            raise BadFrame("'q' must be at most 500 characters")
        limit = _int(request.query.get("limit"), "limit", 1, PAGE_LIMIT, 100) or 100
        before = _int(request.query.get("before"), "before", 1, 2**62, None)
        found = self.runner.store.search(query, limit=limit, before=before)
        return self._json({"query": query, **self._messages(found, limit)})

    async def threads(self, request: web.Request) -> web.Response:
        self._check(request)
        limit = _int(request.query.get("limit"), "limit", 1, PAGE_LIMIT, 100) or 100
        raw = request.query.get("before")
        try:
            before = float(raw) if raw else None
        except ValueError:
            raise BadFrame("'before' must be a time") from None
        found = self.runner.store.recent_threads(before=before, limit=limit)
        return self._json(
            {
                "threads": [t.to_wire() for t in found],
                "before": found[-1].updated_at if len(found) == limit else None,
            }
        )

    async def locks(self, request: web.Request) -> web.Response:
        self._check(request)
        return self._json({"now": time.time(), **(await self._op("locks", {}))})

    async def held(self, request: web.Request) -> web.Response:
        self._check(request)
        return self._json({"messages": await self._held()})

    async def graph(self, request: web.Request) -> web.Response:
        """Who sent how many messages to whom over the last ``window`` seconds."""
        self._check(request)
        window = float(_int(request.query.get("window"), "window", 1, 7 * 86400, 3600) or 3600)
        now = time.time()
        edges = self.runner.store.traffic(now - window)
        return self._json(
            {"window": window, "now": now, "edges": [{"from": s, "to": t, "count": n} for s, t, n in edges]}
        )

    # -- acting as the human --------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            limit = self.runner.settings.max_body_bytes
            raise TooLarge(
                f"request body over {self.runner.settings.max_frame_bytes} bytes",
                hint=f"bodies are limited to {limit} bytes",
            ) from None
        try:
            args = loads(raw or b"{}")
        except ValueError:
            raise BadFrame("request body is not JSON") from None
        if not isinstance(args, dict):
            raise BadFrame("request body must be a JSON object")
        return args

    def _human(self) -> None:
        """Make sure the peer ``human`` exists (the route has checked the person)."""
        self.runner.join_person({**HUMAN_META, "machine": socket.gethostname()})

    async def send(self, request: web.Request) -> web.Response:
        """Send as ``human``: ``{"to", "body", "priority"?, "kind"?, "re"?}``."""
        self._check(request, write=True)
        args = await self._body(request)
        allowed = {"to", "body", "priority", "kind", "re", "id", "ttl"}
        if set(args) - allowed:
            raise BadFrame("unknown field(s): " + ", ".join(sorted(set(args) - allowed)))
        to = args.get("to")
        if isinstance(to, str) and "," in to:
            args["to"] = [t.strip() for t in to.split(",") if t.strip()]
        self._human()
        return self._json(await self._op("send", args))

    async def read(self, request: web.Request) -> web.Response:
        """The person has seen these messages to ``human`` on the page: ``{"ids": [...]}``
        (their senders see the receipts move to ``read``)."""
        self._check(request, write=True)
        args = await self._body(request)
        self._human()
        return self._json(await self._op("ack", {"ids": args.get("ids"), "state": "read"}))

    async def _decide(self, request: web.Request, op: str) -> web.Response:
        self._check(request, write=True)
        args = await self._body(request)
        self._human()
        return self._json(await self._op(op, {"ids": args.get("ids")}))

    async def approve(self, request: web.Request) -> web.Response:
        """Release held messages: ``{"ids": [...]}``."""
        return await self._decide(request, "approve")

    async def reject(self, request: web.Request) -> web.Response:
        """Drop held messages: ``{"ids": [...]}``."""
        return await self._decide(request, "reject")

    # -- the feed -----------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``GET /dashboard/v1/feed``: one ``{"op": "events", "events": [...]}`` frame per
        batch; ``{"op": "resync"}`` when the page fell behind and should reload its state."""
        self._check(request)
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        browser = Browser(ws)
        writer = asyncio.create_task(browser.writer())
        self._sockets.add(ws)
        self.feed.add(browser)
        try:
            browser.send(dumps({"op": "hello", "now": time.time()}))
            async for msg in ws:  # the page only listens; anything it says is ignored
                if msg.type is WSMsgType.ERROR:
                    break
        finally:
            self.feed.remove(browser)
            self._sockets.discard(ws)
            writer.cancel()
        return ws


__all__ = ["Dashboard", "HUMAN", "MeshError"]
