"""The broker process: wires settings, store, core and endpoints; runs the effects.

Commands run on one event loop. After a command the core's writes sit in the
store's open transaction and its effects in an outbox; one flush per loop turn
commits the store and only then sends the outbox (group commit), so every answer
and every delivery a peer sees is already durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import itertools
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Hashable
from typing import Any, Protocol

from aiohttp import web

from . import __version__, marks
from .backends import open_backend
from .codec import dumps
from .config import Settings
from .core.broker import Caller, Core
from .core.effects import Effect, Mail, Mark, Push, Respond
from .core.safety import SCREENED, SecretAction, costly, warm
from .dashboard import Dashboard
from .envelope import PERSON, body_size, is_person_name
from .errors import BadFrame, MeshError, PersonRequired, StorageError, Unauthorized, Unavailable
from .gate import Gate, GatedSite, raise_file_limit
from .metrics import Metrics
from .outbox import Outbox
from .person import PersonGate
from .screener import Screener
from .transports import Connection, Endpoints

log = logging.getLogger("sessionmesh.broker")


class OneLine(logging.Filter):
    """A request aiohttp could not parse is one log line, not a traceback: a client
    sending garbage must not fill the log (1,500 malformed requests wrote 501 kB)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            detail = " ".join(str(exc).split())[:200]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {detail}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


TICK_INTERVAL = 0.2
CHECKPOINT_INTERVAL = 1.0
PRESENCE_FLUSH_INTERVAL = 30.0


def ensure_token(settings: Settings) -> str:
    """The broker token: read it, or create it 0600 on first use."""
    os.makedirs(settings.home, mode=0o700, exist_ok=True)
    try:
        fd = os.open(settings.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(settings.token_path) as fh:
            return fh.read().strip()
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


class Sink(Protocol):
    """Where an observer's frames go (see `Runner.observe`)."""

    def push(self, frame: dict[str, Any]) -> None: ...


class AlreadyRunning(Unavailable):
    code = "already_running"
    http_status = 409


class Runner:
    """One broker: the core, its store, the live connections and the outbox."""

    def __init__(self, settings: Settings, *, autostarted: bool = False, any_port: bool = False) -> None:
        self.settings = settings
        self.autostarted = autostarted
        self.any_port = any_port or autostarted  # a taken port is no failure: take a free one
        self.token = settings.token or ensure_token(settings)
        self.backend = open_backend(settings)
        self.store = self.backend.store
        self.core = Core(self.store, settings)
        marks.sync_blocks(settings.home, self.core.blocks())  # pair mode's stops, for the grips' hooks
        self.mail_marks = marks.MailMarks(settings.home)
        # mail a crash stored before its mark was touched: each name with unread mail
        self.mail_marks.touch(set(self.store.queue_depths()))
        self.metrics = Metrics(self)
        self.person = PersonGate(settings, self._audit)
        self.gate = Gate()  # connections that have not shown the token (gate.py)
        self.screener = Screener(SecretAction(settings.secret_action), settings.hold_patterns)
        self.conns: dict[int, Connection] = {}
        self.observers: dict[int, Sink] = {}
        self._observer_ids = itertools.count(-1, -1)  # never a connection's id
        self.started_at = time.time()
        self.last_activity = time.monotonic()
        self.outbox = Outbox(self.store, self._carry, self._redelivers, self._commit_failed)
        self._http_waiters: dict[Hashable, asyncio.Future[dict[str, Any]]] = {}
        self._send_started: dict[Hashable, float] = {}
        self._http_ids = 0
        self._stop = asyncio.Event()
        self.url = ""

    # -- auth ---------------------------------------------------------------------
    def token_ok(self, token: str | None) -> bool:
        return token is not None and secrets.compare_digest(token, self.token)

    def _audit(self, event: str, data: dict[str, Any]) -> None:
        self.store.append_audit(time.time(), event, data)
        self.outbox.schedule()

    def is_person(self, name: Any, session: Any) -> bool:
        """Whether a caller naming ``name`` acts as the person: it must show a person
        session (`PersonGate`) to use any of the person's names."""
        if not is_person_name(name):
            return False
        if not self.person.valid(session):
            raise PersonRequired(
                f"{name!r} is the person's name, and acting as the person needs a person session",
                hint="the person runs the command in a terminal and types their passphrase",
            )
        return True

    def join(self, name: Any, secret: Any, meta: Any, *, person: Any = None) -> dict[str, Any]:
        if meta is not None and not isinstance(meta, dict):
            raise BadFrame("'meta' must be a JSON object")
        as_person = self.is_person(name, person)
        name, issued = self.core.authenticate(name, secret, time.time(), meta=meta, person=as_person)
        self.outbox.schedule()
        return {"name": name, "secret": issued}

    def join_person(self, meta: dict[str, Any]) -> None:
        """Register ``human`` for a caller that has already checked the person (the
        dashboard's routes)."""
        self.core.authenticate(PERSON, None, time.time(), meta=meta, person=True)
        self.outbox.schedule()

    def authenticate(self, name: Any, secret: Any, person: Any = None) -> str:
        """The peer an HTTP call acts as; the name must have joined (POST /v1/join),
        except the person's, which a person session opens."""
        if not name:
            raise Unauthorized("missing X-Mesh-Name header", hint="name the peer you act as")
        as_person = self.is_person(name, person)
        return self.core.authenticate(name, secret, time.time(), register=as_person, person=as_person)[0]

    # -- commands -----------------------------------------------------------------
    def connect(self, conn: Connection, args: dict[str, Any]) -> dict[str, Any]:
        meta = args.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise BadFrame("'meta' must be a JSON object")
        for flag in ("unique", "events"):
            if args.get(flag) is not None and not isinstance(args[flag], bool):
                raise BadFrame(f"'{flag}' must be true or false")
        as_person = self.is_person(args.get("name"), args.get("person"))
        welcome, effects = self.core.connect(
            conn.id,
            args.get("name"),
            args.get("secret"),
            time.time(),
            meta=meta,
            unique=bool(args.get("unique")),
            events=bool(args.get("events")),
            person=as_person,
        )
        conn.name = welcome["name"]
        self.conns[conn.id] = conn
        conn.push({"op": "welcome", **welcome, "version": __version__, "limits": self.limits()})
        self.outbox.add(effects)
        return welcome

    def disconnect(self, conn: Connection, *, graceful: bool) -> None:
        self.conns.pop(conn.id, None)
        self.outbox.add(self.core.disconnect(conn.id, time.time(), graceful=graceful))

    async def prescreen(self, op: Any, args: Any) -> None:
        """Screen a costly send's body in a worker process before the core sees it
        (issue #15: one 200 kB body took 60 ms of the event loop, and every other peer
        waited; screener.py). The core takes the result from ``args``; an ordinary
        small body is screened by the core where it is."""
        if op != "send" or not isinstance(args, dict) or "body" not in args:
            return
        body = args["body"]
        size = body_size(body)
        if size > self.settings.max_body_bytes * 4 or not costly(body, size):
            return  # too large to be sent at all (the core refuses it) or cheap
        args[SCREENED] = await self.screener.screen(body)

    def observe(self, sink: Sink) -> int:
        """Hand ``sink`` every event, and each stored message, after its commit."""
        key = next(self._observer_ids)
        self.observers[key] = sink
        self.core.observe(key)
        return key

    def unobserve(self, key: int) -> None:
        self.observers.pop(key, None)
        self.core.unobserve(key)

    def touch(self) -> None:
        """Someone used the broker: an auto-started broker's idle clock restarts."""
        self.last_activity = time.monotonic()

    def submit(self, caller: Caller, op: Any, args: Any, reply_to: Hashable | None) -> None:
        self.touch()
        if op == "send" and reply_to is not None and reply_to[-1] is not None:  # type: ignore[index]
            self._send_started[reply_to] = time.perf_counter()
        self.outbox.add(self.core.handle(caller, op, args, reply_to, time.time()))

    async def call(self, caller: Caller, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a command and wait for its answer (the HTTP path)."""
        self._http_ids += 1
        key = ("http", self._http_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._http_waiters[key] = future
        try:
            self.submit(caller, op, args, key)
            return await future
        finally:
            self._http_waiters.pop(key, None)
            self._send_started.pop(key, None)
            if future.cancelled() or not future.done():  # the client hung up: nobody awaits it
                self.core.forget(key)

    # -- effects ------------------------------------------------------------------
    def carry_out(self, effects: list[Effect]) -> None:
        """Effects of a core call made outside `submit` (a backend's links): they go
        out after the next commit, like every other effect."""
        self.outbox.add(effects)

    def _redelivers(self, conn_id: Hashable) -> bool:
        """What ``conn_id`` brings stays in JetStream until this broker stored what it
        caused (a link to another machine's broker, `LinkConn`)."""
        return getattr(self.conns.get(conn_id), "redelivers", False)  # type: ignore[call-overload]

    def _commit_failed(self, exc: StorageError) -> None:
        """A commit failed: early frames of its batch may be out, so the broker stops
        at once and answers nothing more (`Outbox`). One that ends with the stop (its
        write cancelled as the loop closes) is only what a stop leaves unanswered."""
        if self._stop.is_set():
            log.warning("the broker stopped before its store took a batch; it was not answered: %s", exc)
            return
        log.critical("a commit failed; the broker stops without answering the batch: %s", exc)
        for conn in self.conns.values():
            if conn.transport is not None:
                conn.transport.abort()
        self._stop.set()

    def _carry(self, outbox: list[Effect]) -> None:
        mailed: set[str] = set()
        for effect in outbox:
            if isinstance(effect, Push):
                conn = self.conns.get(effect.conn) or self.observers.get(effect.conn)
                if conn is not None:
                    conn.push(effect.frame)
            elif isinstance(effect, Respond):
                self._respond(effect)
            elif isinstance(effect, Mark):
                marks.write_block(self.settings.home, effect.name, effect.block)
            elif isinstance(effect, Mail):
                mailed.update(effect.names)
        if mailed:  # after the commit, so a hook that sees the mark finds the mail
            try:
                self.mail_marks.touch(mailed)
            except OSError as exc:  # hooks then ask the broker every time (quiet.py)
                log.warning("cannot touch the mail marks in %s: %s", self.mail_marks.folder, exc)

    def _respond(self, effect: Respond) -> None:
        key = effect.reply_to
        if key is None:
            return
        started = self._send_started.pop(key, None)
        if started is not None:
            self.metrics.observe_send(time.perf_counter() - started)
        future = self._http_waiters.get(key)
        if future is not None:
            if not future.done():
                if effect.error is not None:
                    future.set_exception(effect.error)
                else:
                    future.set_result(effect.result or {})
            return
        conn_id, rid = key  # type: ignore[misc]
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if rid is None:
            # a frame without rid wants no answer, but a failure must not pass silently
            if effect.error is not None:
                conn.push({"op": "error", "error": effect.error.to_wire()})
            return
        if effect.error is not None:
            conn.push({"op": "result", "rid": rid, "ok": False, "error": effect.error.to_wire()})
        else:
            conn.push({"op": "result", "rid": rid, "ok": True, "result": effect.result})

    # -- status -------------------------------------------------------------------
    def limits(self) -> dict[str, int]:
        """What a client must know before it sends: a body over ``max_body_bytes`` is
        refused; a frame of ``max_frame_bytes`` or more closes the connection (1009)."""
        return {
            "max_body_bytes": self.settings.max_body_bytes,
            "max_frame_bytes": self.settings.max_frame_bytes,
        }

    def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "version": __version__,
            "pid": os.getpid(),
            "url": self.url,
            "online": len(self.core.online_names()),
            "uptime": round(time.time() - self.started_at, 3),
            "autostarted": self.autostarted,
            "limits": self.limits(),
            **self.backend.health(),
        }

    def metrics_text(self) -> tuple[bytes, str]:
        return self.metrics.render()

    def request_stop(self) -> None:
        self._stop.set()

    # -- lifecycle ----------------------------------------------------------------
    async def _checkpointer(self) -> None:
        """Copy the WAL back into the database off the event loop, so no commit on
        the loop ever pays for a checkpoint (a passive one never blocks the writer)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            await loop.run_in_executor(None, self.store.checkpoint)

    async def _ticker(self) -> None:
        last_presence = time.monotonic()
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            self.outbox.add(self.core.tick(time.time()))
            mono = time.monotonic()
            if mono - last_presence > PRESENCE_FLUSH_INTERVAL:
                self.core.flush_presence()
                last_presence = mono
            if self.core.online_names() or self.observers:  # a peer, or an open dashboard
                self.last_activity = mono
            elif self.autostarted and mono - self.last_activity > self.settings.idle_timeout:
                log.info("idle for %.0fs with no peers; stopping", self.settings.idle_timeout)
                self._stop.set()

    async def serve(self, *, ready: asyncio.Future[str] | None = None) -> None:
        """Bind, write broker.json, serve until stopped, then shut down cleanly."""
        dashboard = Dashboard(self)
        endpoints = Endpoints(self, self_guarded=dashboard.guards)
        app = web.Application(client_max_size=self.settings.max_frame_bytes, middlewares=[endpoints.guard])
        app.add_routes(endpoints.routes())
        dashboard.install(app)
        runner = web.AppRunner(
            # cancel a handler when its client hangs up, so a long-polling await is dropped
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
        )
        await runner.setup()
        files = raise_file_limit()
        self.gate.limit = min(self.gate.limit, max(16, files // 4))  # the rest is for those who authenticate
        site = GatedSite(runner, self.gate, self.settings.host, self.settings.port)
        try:
            try:
                await site.start()
            except OSError as exc:
                # another home's broker (or another program) has the port: an autostarted
                # broker, or `mesh up` without --port, takes any free one (its clients
                # find it through broker.json)
                if not (self.any_port and exc.errno == errno.EADDRINUSE):
                    raise
                log.info("port %s is taken; listening on a free port", self.settings.port)
                site = GatedSite(runner, self.gate, self.settings.host, 0)
                await site.start()
        except OSError as exc:
            await runner.cleanup()
            taken = exc.errno == errno.EADDRINUSE
            raise Unavailable(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {exc.strerror}",
                hint="another program has that port: pick another with --port N, or --port 0 for any free one"
                if taken
                else None,
            ) from None
        host, port = site.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.gate.start()
        # the screen's parsers, for the small bodies the core screens itself (off the loop)
        warming = asyncio.create_task(asyncio.to_thread(warm))
        # What start-up made (modules, parsers, rules) lives as long as the broker: the
        # collector need not walk it again on every full collection.
        warming.add_done_callback(lambda _: gc.freeze())
        await self.backend.start(self)
        self._write_broker_file()
        ticker = asyncio.create_task(self._ticker())
        checkpointer = asyncio.create_task(self._checkpointer())
        log.info("broker %s listening on %s (home %s)", __version__, self.url, self.settings.home)
        if ready is not None and not ready.done():
            ready.set_result(self.url)
        try:
            await self._stop.wait()
        finally:
            warming.cancel()
            self.screener.close()
            self.gate.stop()
            ticker.cancel()
            checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpointer
            self.outbox.add(self.core.release_wakes())  # long waits answer before the HTTP server drains
            for conn in list(self.conns.values()):
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1001, message=b"broker stopping")
            await runner.cleanup()
            await self.backend.stop()
            self.outbox.finish()
            self.core.flush_presence()
            self.store.close()
            self._remove_broker_file()

    def _write_broker_file(self) -> None:
        info = {
            "url": self.url,
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "autostarted": self.autostarted,
        }
        tmp = self.settings.broker_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(dumps(info) + "\n")
        os.replace(tmp, self.settings.broker_file)

    def _remove_broker_file(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            with open(self.settings.broker_file) as fh:
                if json.load(fh).get("pid") == os.getpid():
                    os.unlink(self.settings.broker_file)


class HomeLock:
    """An exclusive flock on ``$MESH_HOME/broker.lock``: one broker per home."""

    def __init__(self, settings: Settings) -> None:
        os.makedirs(settings.home, mode=0o700, exist_ok=True)
        self.path = os.path.join(settings.home, "broker.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                f"a broker already runs for {os.path.dirname(self.path)}",
                hint="'mesh status' shows it; 'mesh down' stops it",
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def run(settings: Settings, *, autostarted: bool = False, any_port: bool = False) -> None:
    """Run a broker in the foreground until SIGINT/SIGTERM or ``mesh down``."""
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access"):
        logging.getLogger(name).addFilter(OneLine())
    lock = HomeLock(settings)
    lock.acquire()
    try:
        try:
            import uvloop  # a faster event loop where it is available
        except ImportError:
            asyncio.run(_main(settings, autostarted, any_port))
        else:
            uvloop.run(_main(settings, autostarted, any_port))
    finally:
        lock.release()


async def _main(settings: Settings, autostarted: bool, any_port: bool) -> None:
    runner = Runner(settings, autostarted=autostarted, any_port=any_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.request_stop)
    ready: asyncio.Future[str] = loop.create_future()
    serving = asyncio.create_task(runner.serve(ready=ready))
    done, _ = await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        print(f"mesh broker listening on {ready.result()} (home {settings.home})", flush=True)
    await serving


__all__ = ["Runner", "HomeLock", "run", "ensure_token", "AlreadyRunning", "MeshError"]
