"""The broker core: every command a peer can give, as plain method calls.

`Core` owns the live view (which connection holds which name, sends waiting for a
recipient's receipt, awaiters, rate buckets) and reads and writes the durable state
through a `Store`. Each call takes ``now`` and returns a list of effects; the server
commits the store and only then carries the effects out, so no peer ever sees a
message or an answer that a crash could take back.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from ..config import Settings
from ..envelope import (
    RECEIPT_ORDER,
    Draft,
    Envelope,
    Kind,
    Priority,
    ReceiptState,
    ReplyStatus,
    SendStatus,
    Target,
    check_id,
    check_name,
    new_id,
)
from ..errors import (
    BadFrame,
    DuplicateMessage,
    BadSecret,
    Forbidden,
    Impersonation,
    InvalidName,
    MeshError,
    NameTaken,
    NotHolder,
    RateLimited,
    SelfSend,
    Timeout,
    TooLarge,
    UnknownMessage,
    UnknownOp,
    UnknownPeer,
)
from ..storage import PeerRecord, ReceiptUpdate, Store, ThreadRecord
from .effects import Effect, Push, Respond
from .locks import Lease, LockOutcome, check_resource, conflicts

BACKLOG_CHUNK = 500  # messages per deliver frame
BACKLOG_WINDOW = 2000  # backlog messages in flight per connection while catching up
SENDER_CACHE = 100_000
RECEIPT_CACHE = 200_000
META_KEYS = ("machine", "cwd", "git_root", "client", "role", "status", "refuse")


class Presence(str, enum.Enum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class ThreadState(str, enum.Enum):
    OPEN = "open"
    ANSWERED = "answered"
    CLOSED = "closed"


@dataclass(slots=True)
class Caller:
    """Who gives a command: an authenticated name, and its live connection if any."""

    name: str
    conn: int | None = None


@dataclass(slots=True)
class _Conn:
    name: str
    events: bool
    since: float
    # Catch-up after connecting: the backlog goes out a window at a time, the next
    # when the client has acknowledged half of the last. Until it is through, new
    # messages wait in the store behind the older ones (per-pair FIFO).
    catching_up: bool = True
    cursor: tuple[int, int] | None = None  # (urgent, seq) of the last backlog message sent
    in_flight: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _PendingSend:
    env: Envelope
    answer: dict[str, Any]
    waiting: set[str]
    deadline: float
    reply_tos: list[Hashable] = field(default_factory=list)
    duplicates: list[Hashable] = field(default_factory=list)


@dataclass(slots=True)
class _Awaiter:
    reply_to: Hashable
    name: str
    deadline: float
    conn: int | None


class _Refusal(Exception):
    """A send the core answers `refused` (with the reason) instead of storing it."""

    def __init__(self, msg_id: str | None, error: MeshError) -> None:
        super().__init__(error.message)
        self.msg_id = msg_id
        self.error = error


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


def _uuid7_ms(msg_id: str) -> int:
    """The millisecond timestamp of a canonical UUIDv7; 0 for other UUID versions."""
    if msg_id[14] != "7":
        return 0
    return int(msg_id[:8] + msg_id[9:13], 16)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _int_arg(args: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = args.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadFrame(f"'{key}' must be an integer from {lo} to {hi}")
    return value


def _topic_arg(args: dict[str, Any]) -> str:
    value = args.get("topic")
    if not isinstance(value, str) or not value.startswith("#"):
        raise BadFrame("'topic' must look like '#name'")
    topic = Target.parse(value).topic
    assert topic is not None
    return topic


def _bool_arg(args: dict[str, Any], key: str, default: bool) -> bool:
    value = args.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadFrame(f"'{key}' must be true or false")
    return value


def _float_arg(args: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = args.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadFrame(f"'{key}' must be a number from {lo} to {hi}")
    return float(value)


class Core:
    """The sans-I/O broker. Not thread-safe: one event loop drives it."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._conns: dict[int, _Conn] = {}
        self._watchers: set[int] = set()  # connections that asked for events
        # senders and receipt states of recent messages, so an ack needs no lookups
        self._senders: OrderedDict[str, str] = OrderedDict()
        self._states: OrderedDict[tuple[str, str], ReceiptState] = OrderedDict()
        self._online: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self._pending: dict[str, _PendingSend] = {}
        self._awaiters: dict[str, list[_Awaiter]] = defaultdict(list)
        self._buckets: dict[str, _Bucket] = {}
        self._peer_cache: dict[str, PeerRecord] = {p.name: p for p in store.list_peers()}
        # an id minted before this core started (plus a margin for clock skew) may be
        # stored already: a client resending after a broker restart
        self._started_ms = int(time.time() * 1000) + 5_000
        self.counters: dict[str, int] = defaultdict(int)
        self._ops: dict[str, Callable[[Caller, dict[str, Any], Hashable, float], list[Effect]]] = {
            "send": self.send,
            "ack": self.ack,
            "inbox": self.inbox,
            "peers": self.peers,
            "track": self.track,
            "await": self.await_reply,
            "thread": self.thread,
            "lock": self.lock,
            "unlock": self.unlock,
            "locks": self.locks,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "set_status": self.set_status,
            "log": self.log,
            "ping": self.ping,
        }

    # -- identity -----------------------------------------------------------------
    @property
    def ops(self) -> list[str]:
        return sorted(self._ops)

    def online_names(self) -> list[str]:
        return sorted(self._online)

    def authenticate(
        self, name: Any, secret: Any, now: float, *, meta: dict[str, Any] | None = None,
        register: bool = True,
    ) -> tuple[str, str | None]:
        """Check ``name``'s secret; register the name if new (and ``register``).

        Returns the name and, for a first join, the secret just issued (else None).
        Raises `InvalidName`, `BadSecret` when the name is held by another secret, or
        `UnknownPeer` for a new name when ``register`` is off.
        """
        check_name(name, claim=True)
        peer = self._peer_cache.get(name)
        if peer is None and not register:
            raise UnknownPeer(f"{name!r} has not joined yet", hint="join first: POST /v1/join")
        if peer is None:
            issued = secrets.token_urlsafe(24)
            peer = PeerRecord(name, hash_secret(issued), self._clean_meta(meta), now, now)
            self.store.put_peer(peer)
            self._peer_cache[name] = peer
            self._audit(now, "peer_registered", {"name": name})
            return name, issued
        if not isinstance(secret, str) or not hmac.compare_digest(peer.secret_hash, hash_secret(secret)):
            raise BadSecret(
                f"the name {name!r} is held by another secret",
                hint="use the secret saved under $MESH_HOME/secrets, or pick another name",
            )
        if meta:
            self._update_meta(peer, meta, now)
        return name, None

    def connect(
        self,
        conn: int,
        name: Any,
        secret: Any,
        now: float,
        *,
        meta: dict[str, Any] | None = None,
        unique: bool = False,
        events: bool = False,
    ) -> tuple[dict[str, Any], list[Effect]]:
        """A live connection claims a name. Returns the welcome and the backlog pushes.

        Raises `NameTaken` when another live connection holds the name (unless
        ``unique``, which picks ``name#2``, ``name#3``...), `BadSecret`, `InvalidName`.
        """
        check_name(name, claim=True)
        if name in self._online or (unique and not self._secret_ok(name, secret)):
            if not unique:
                raise NameTaken(
                    f"{name!r} is already connected",
                    hint="stop the other session, or connect with unique=true to get name#2",
                )
            name = self._free_variant(name)
            secret = None
        name, issued = self.authenticate(name, secret, now, meta=meta)
        self._conns[conn] = _Conn(name, events, now)
        if events:
            self._watchers.add(conn)
        self._online[name] = conn
        self._touch(name, now)
        effects: list[Effect] = []
        self._audit(now, "peer_joined", {"name": name})
        self._event(effects, now, "peer_joined", name=name, presence=Presence.ONLINE.value)
        welcome = {"name": name, "secret": issued, "server_time": now}
        effects.extend(self._next_page(conn))
        return welcome, effects

    def disconnect(self, conn: int, now: float, *, graceful: bool) -> list[Effect]:
        """A live connection went away; a graceful leave also releases its leases."""
        state = self._conns.pop(conn, None)
        self._watchers.discard(conn)
        if state is None:
            return []
        effects: list[Effect] = []
        name = state.name
        if self._online.get(name) == conn:
            del self._online[name]
        self._touch(name, now)
        self._persist_last_seen(name)
        for pending in list(self._pending.values()):
            if name in pending.waiting:
                pending.waiting.discard(name)
                effects.extend(self._maybe_finish(pending))
        if graceful:
            for lease in self.store.leases():
                if lease.holder == name:
                    self.store.delete_lease(lease.resource, name)
                    self._audit(now, "lock_released", {"resource": lease.resource, "holder": name, "why": "leave"})
                    self._event(effects, now, "lock_released", resource=lease.resource, holder=name)
        for msg_id, awaiting in list(self._awaiters.items()):
            self._keep_awaiters(msg_id, [a for a in awaiting if a.conn != conn])
        self._audit(now, "peer_left", {"name": name, "graceful": graceful})
        self._event(effects, now, "peer_left", name=name, graceful=graceful)
        return effects

    def handle(
        self, caller: Caller, op: Any, args: Any, reply_to: Hashable, now: float
    ) -> list[Effect]:
        """Run one command; errors come back as a `Respond` with the typed error."""
        try:
            if not isinstance(args, dict):
                raise BadFrame("the arguments of an op must be a JSON object")
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise UnknownOp(
                    f"unknown op {op!r}",
                    hint="ops are: " + ", ".join(self.ops),
                )
            self._touch(caller.name, now)
            return handler(caller, args, reply_to, now)
        except MeshError as exc:
            return [Respond(reply_to, error=exc)]

    # -- sending ------------------------------------------------------------------
    def send(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """Validate, store, deliver, answer: received, queued, denied, refused or sent."""
        sender = caller.name
        try:
            draft = self._parse_send(sender, args)
            # A resend of a stored id answers what the first send answered. Recent
            # ids are known here; older ones are caught by the store's unique id.
            pending = self._pending.get(draft.id)
            if pending is not None:
                if pending.env.sender != sender:
                    raise Forbidden(f"message id {draft.id} belongs to another sender")
                pending.duplicates.append(reply_to)
                return []
            existing = self._stored(draft.id)
            if existing is not None:
                return self._duplicate(reply_to, existing, sender)
            if not self._take_token(sender, now):
                raise RateLimited(f"{sender!r} is over {self.settings.rate_limit:g} sends per second",
                                  hint="slow down and resend with the same id")
            env, parent = self._envelope(sender, draft, now)
        except _Refusal as refusal:
            return [self._refuse(reply_to, refusal.msg_id, refusal.error, now)]
        except (InvalidName, TooLarge, RateLimited, SelfSend) as exc:
            return [self._refuse(reply_to, args.get("id"), exc, now)]
        return self._route(env, parent, reply_to, now)

    def _stored(self, msg_id: str) -> Envelope | None:
        """The stored envelope with this id, if any, looked up only when it can exist:
        recent ids are cached, and a UUIDv7 minted after this broker started (the
        common case: a new message) cannot be stored unless it is in that cache."""
        if msg_id not in self._senders and _uuid7_ms(msg_id) > self._started_ms:
            return None
        return self.store.get_message(msg_id)

    def _parse_send(self, sender: str, args: dict[str, Any]) -> Draft:
        if args.get("from") is not None and args["from"] != sender:
            raise Impersonation(
                f"you are {sender!r}; a message cannot be sent as {args['from']!r}",
                hint="the broker sets 'from'; leave it out",
            )
        args["id"] = new_id() if args.get("id") is None else check_id(args["id"])
        draft = Draft.parse(args)
        if draft.body_size > self.settings.max_body_bytes:
            raise _Refusal(draft.id, TooLarge(
                f"body is {draft.body_size} bytes; the limit is {self.settings.max_body_bytes}",
                hint="send a path or a summary instead of the whole content",
            ))
        return draft

    def _envelope(self, sender: str, draft: Draft, now: float) -> tuple[Envelope, Envelope | None]:
        """The envelope to store: a reply goes to its parent's sender, in its thread."""
        parent = None
        to = draft.to
        if draft.re is not None:
            parent = self.store.get_message(draft.re)
            if parent is None:
                raise UnknownMessage(f"no message with id {draft.re} to reply to")
            if parent.sender != sender and self.store.get_receipt(parent.id, sender) is None:
                raise Forbidden(f"you did not receive message {draft.re}, so you cannot reply to it")
            if to is None:
                if parent.sender == sender:
                    raise BadFrame("'to' is required when following up your own message")
                to = Target(names=(parent.sender,))
        assert to is not None
        kind, status = draft.kind, draft.status
        if parent is not None and parent.kind is Kind.REQUEST and parent.sender != sender:
            kind = Kind.REPLY
            status = status or ReplyStatus.ANSWERED
        if to.is_unicast and to.names[0] == sender:
            raise _Refusal(draft.id, SelfSend("you cannot send a message to yourself",
                                              hint="check the recipient name"))
        env = Envelope(
            id=draft.id,
            sender=sender,
            to=to,
            kind=kind,
            body=draft.body,
            re=draft.re,
            thread=parent.thread if parent else draft.id,
            status=status,
            priority=draft.priority,
            ttl=draft.ttl or self.settings.default_ttl,
            ts=now,
        )
        return env, parent

    def _route(self, env: Envelope, parent: Envelope | None, reply_to: Hashable, now: float) -> list[Effect]:
        """Storage first, then delivery: store the envelope and a receipt per
        recipient, push it to live recipients, and answer (now, or on their acks)."""
        statuses, reasons, recipients = self._resolve(env, parent)
        if not recipients and env.to.names:
            answer = self._answer(env, statuses, reasons, now)
            self.counters[f"send_{answer['status']}"] += 1
            self._audit(now, f"send_{answer['status']}",
                        {"id": env.id, "from": env.sender, "to": env.to.to_wire(), "reasons": reasons})
            return [Respond(reply_to, answer)]
        try:
            self.store.add_message(env)
        except DuplicateMessage:  # a very old id, past what _stored() could tell
            existing = self.store.get_message(env.id)
            assert existing is not None
            return self._duplicate(reply_to, existing, env.sender)
        self.store.add_receipts(env, recipients)
        self._senders[env.id] = env.sender
        if len(self._senders) > SENDER_CACHE:
            self._senders.popitem(last=False)
        for name in recipients:
            self._remember(env.id, name, ReceiptState.QUEUED)
        wire = env.to_wire()
        self._audit(now, "message", self._audit_envelope(wire, recipients))
        self._thread_turn(env, now)
        self.counters["messages_stored"] += 1

        effects: list[Effect] = []
        awaited: set[str] = set()
        if parent is not None:
            self._advance(effects, parent.id, parent.sender, env.sender, ReceiptState.ANSWERED, now)
            awaited = self._wake_awaiters(effects, env, now)
        waiting: set[str] = set()
        for name in recipients:
            statuses[name] = SendStatus.QUEUED.value
            if name in awaited:  # a live await already holds it (and has shown it)
                statuses[name] = SendStatus.RECEIVED.value
                continue
            conn = self._online.get(name)
            if conn is not None and self._live(conn, env):
                effects.append(Push(conn, {"op": "deliver", "messages": [wire]}))
                waiting.add(name)
        answer = self._answer(env, statuses, reasons, now)
        if env.to.is_fanout or not waiting:
            self._keep_answer(env.id, answer)
            self.counters[f"send_{answer['status']}"] += 1
            effects.insert(0, Respond(reply_to, answer))  # the sender first, then the fan-out
            return effects
        self._pending[env.id] = _PendingSend(env, answer, waiting, now + self.settings.receive_timeout, [reply_to])
        return effects

    def _resolve(
        self, env: Envelope, parent: Envelope | None
    ) -> tuple[dict[str, str], dict[str, dict[str, Any]], list[str]]:
        """Recipients of a new envelope, and the statuses of those refused or denied."""
        to, sender = env.to, env.sender
        statuses: dict[str, str] = {}
        reasons: dict[str, dict[str, Any]] = {}
        if to.broadcast:
            names = [n for n in self._peer_cache if n != sender and not self._refuses(n, sender, parent)]
        elif to.topic:
            names = [
                n for n in self.store.subscribers(to.topic)
                if n != sender and not self._refuses(n, sender, parent)
            ]
        else:
            names = []
            for name in to.names:
                peer = self._peer_cache.get(name)
                if name == sender:
                    statuses[name] = SendStatus.REFUSED.value
                    reasons[name] = SelfSend("you cannot send a message to yourself").to_wire()
                elif peer is None:
                    statuses[name] = SendStatus.DENIED.value
                    reasons[name] = UnknownPeer(
                        f"no peer named {name!r}", hint=self._suggest(name)
                    ).to_wire()
                elif self._refuses(name, sender, parent):
                    statuses[name] = SendStatus.DENIED.value
                    reasons[name] = Forbidden(f"{name!r} refuses messages from {sender!r}").to_wire()
                else:
                    names.append(name)
        return statuses, reasons, names

    def _refuses(self, name: str, sender: str, parent: Envelope | None) -> bool:
        """``name`` refuses ``sender``, unless this is a reply to ``name``'s own message."""
        peer = self._peer_cache.get(name)
        refused = peer is not None and sender in peer.meta.get("refuse", ())
        return refused and not (parent is not None and parent.sender == name)

    def _answer(
        self, env: Envelope, statuses: dict[str, str], reasons: dict[str, Any], now: float
    ) -> dict[str, Any]:
        if env.to.is_unicast:
            status = statuses[env.to.names[0]]
        elif env.to.names and all(s in ("denied", "refused") for s in statuses.values()):
            # a list of names none of which can be reached: nothing was stored
            refused = all(s == "refused" for s in statuses.values())
            status = SendStatus.REFUSED.value if refused else SendStatus.DENIED.value
        else:
            status = SendStatus.SENT.value
        answer: dict[str, Any] = {
            "id": env.id,
            "status": status,
            "statuses": statuses,
            "recipients": sum(1 for s in statuses.values() if s in ("received", "queued")),
            "thread": env.thread,
            "ts": now,
        }
        if reasons:
            answer["reasons"] = reasons
        return answer

    def _duplicate(self, reply_to: Hashable, existing: Envelope, sender: str) -> list[Effect]:
        if existing.sender != sender:
            raise Forbidden(f"message id {existing.id} belongs to another sender")
        return [Respond(reply_to, {**self._answer_of(existing), "duplicate": True})]

    def _answer_of(self, env: Envelope) -> dict[str, Any]:
        """What a send of ``env`` answers now: while it waits, the answer so far;
        later, the stored answer, or one rebuilt from the receipts."""
        pending = self._pending.get(env.id)
        if pending is not None:
            return dict(pending.answer)
        return self.store.get_answer(env.id) or self._answer_from_receipts(env)

    def _keep_answer(self, msg_id: str, answer: dict[str, Any]) -> None:
        """Store the parts of an answer the receipts cannot tell later (the reasons of
        names refused or denied); a resend rebuilds the rest from the receipts."""
        if answer.get("reasons"):
            self.store.set_answer(msg_id, answer)

    def _answer_from_receipts(self, env: Envelope) -> dict[str, Any]:
        """The answer of a send whose final answer was never stored (a crash while
        it waited for a live recipient): each copy is queued, or received if held."""
        never_held = (ReceiptState.QUEUED, ReceiptState.EXPIRED)
        statuses = {
            r.recipient: SendStatus.QUEUED.value if r.state in never_held else SendStatus.RECEIVED.value
            for r in self.store.receipts(env.id)
        }
        return self._answer(env, statuses, {}, env.ts)

    def _refuse(self, reply_to: Hashable, msg_id: Any, error: MeshError, now: float) -> Respond:
        self.counters["send_refused"] += 1
        self._audit(now, "send_refused", {"id": msg_id if isinstance(msg_id, str) else None, **error.to_wire()})
        return Respond(reply_to, {"id": msg_id, "status": SendStatus.REFUSED.value, "statuses": {},
                                  "recipients": 0, "thread": None, "ts": now, "reason": error.to_wire()})

    def _maybe_finish(self, pending: _PendingSend) -> list[Effect]:
        if pending.waiting:
            return []
        self._pending.pop(pending.env.id, None)
        answer = pending.answer
        answer["recipients"] = sum(1 for s in answer["statuses"].values() if s in ("received", "queued"))
        if pending.env.to.is_unicast:
            answer["status"] = answer["statuses"][pending.env.to.names[0]]
        self._keep_answer(pending.env.id, answer)
        self.counters[f"send_{answer['status']}"] += 1
        return [Respond(r, dict(answer)) for r in pending.reply_tos] + [
            Respond(r, {**answer, "duplicate": True}) for r in pending.duplicates
        ]

    def _take_token(self, name: str, now: float) -> bool:
        rate = self.settings.rate_limit
        if rate <= 0:
            return True
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(2 * rate, now)
        bucket.tokens = min(2 * rate, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    # -- receipts -----------------------------------------------------------------
    def ack(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """The caller holds (``delivered``) or has shown its agent (``read``) these ids."""
        ids = args.get("ids")
        if not isinstance(ids, list):
            raise BadFrame("'ids' must be a list of message ids")
        ids = [check_id(i, what="ack id") for i in ids]
        try:
            state = ReceiptState("delivered" if args.get("state") is None else args["state"])
        except ValueError:
            raise BadFrame("'state' must be 'delivered' or 'read'") from None
        if state not in (ReceiptState.DELIVERED, ReceiptState.READ):
            raise BadFrame("'state' must be 'delivered' or 'read'")
        effects: list[Effect] = []
        changed = 0
        for msg_id in ids:
            if self._advance(effects, msg_id, None, caller.name, state, now) is not None:
                changed += 1
        conn = self._conns.get(caller.conn) if caller.conn is not None else None
        if conn is not None and conn.in_flight:
            conn.in_flight.difference_update(ids)
            if conn.catching_up and len(conn.in_flight) <= BACKLOG_WINDOW // 2:
                assert caller.conn is not None
                effects.extend(self._next_page(caller.conn))
        if reply_to is not None:
            effects.append(Respond(reply_to, {"acked": changed}))
        return effects

    def _advance(
        self,
        effects: list[Effect],
        msg_id: str,
        sender: str | None,
        recipient: str,
        state: ReceiptState,
        now: float,
    ) -> str | None:
        """Move one receipt forward (never back); tell the sender. Returns the sender."""
        current = self._states.get((msg_id, recipient))
        if current is None:
            receipt = self.store.get_receipt(msg_id, recipient)
            if receipt is None:
                return None
            current = receipt.state
        if RECEIPT_ORDER[current] >= RECEIPT_ORDER[state] or current is ReceiptState.EXPIRED:
            return None
        if sender is None:
            sender = self._senders.get(msg_id)
        if sender is None:
            env = self.store.get_message(msg_id)
            if env is None:
                return None
            sender = env.sender
        self.store.update_receipts([ReceiptUpdate(msg_id, recipient, state, now)])
        self._remember(msg_id, recipient, state)
        pending = self._pending.get(msg_id)
        if pending is not None and recipient in pending.waiting:
            pending.waiting.discard(recipient)
            pending.answer["statuses"][recipient] = SendStatus.RECEIVED.value
            effects.extend(self._maybe_finish(pending))
        self.counters[f"receipts_{state.value}"] += 1
        self._audit(now, "receipt", {"id": msg_id, "recipient": recipient, "state": state.value})
        frame = {"op": "receipt", "id": msg_id, "recipient": recipient, "state": state.value, "ts": now}
        conn = self._online.get(sender)
        if conn is not None:
            effects.append(Push(conn, frame))
        self._event(effects, now, "receipt", id=msg_id, sender=sender, recipient=recipient, state=state.value)
        return sender

    def _remember(self, msg_id: str, recipient: str, state: ReceiptState) -> None:
        key = (msg_id, recipient)
        self._states[key] = state
        self._states.move_to_end(key)
        if len(self._states) > RECEIPT_CACHE:
            self._states.popitem(last=False)

    def inbox(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """Unread messages for the caller; they become ``delivered`` (ack ``read`` after)."""
        limit = _int_arg(args, "limit", 1000, 1, 10000)
        envs = self.store.unread(caller.name, limit)
        effects: list[Effect] = []
        for env in envs:
            self._advance(effects, env.id, env.sender, caller.name, ReceiptState.DELIVERED, now)
        effects.append(Respond(reply_to, {"messages": [e.to_wire() for e in envs]}))
        return effects

    def track(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        msg_id = check_id(args.get("id"))
        env = self.store.get_message(msg_id)
        if env is None:
            raise UnknownMessage(f"no message with id {msg_id}")
        receipts = self.store.receipts(msg_id)
        if caller.name != env.sender and caller.name not in {r.recipient for r in receipts}:
            raise Forbidden(f"message {msg_id} is neither from nor to {caller.name!r}")
        return [Respond(reply_to, {
            "id": msg_id,
            "from": env.sender,
            "to": env.to.to_wire(),
            "status": self._answer_of(env)["status"],
            "receipts": {r.recipient: r.state.value for r in receipts},
            "updated": {r.recipient: r.updated_at for r in receipts},
            "replies": [r.id for r in self.store.replies_to(msg_id)],
        })]

    def await_reply(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """Answer with the first reply to ``id`` addressed to the caller, or `Timeout`."""
        msg_id = check_id(args.get("id"))
        timeout = _float_arg(args, "timeout", 30.0, 0.0, 3600.0)
        if self.store.get_message(msg_id) is None:
            raise UnknownMessage(f"no message with id {msg_id}")
        for reply in self.store.replies_to(msg_id):
            if caller.name in reply.to.names:
                effects: list[Effect] = []
                self._advance(effects, reply.id, reply.sender, caller.name, ReceiptState.READ, now)
                effects.append(Respond(reply_to, {"reply": reply.to_wire()}))
                return effects
        self._awaiters[msg_id].append(_Awaiter(reply_to, caller.name, now + timeout, caller.conn))
        return []

    def _wake_awaiters(self, effects: list[Effect], reply: Envelope, now: float) -> set[str]:
        """Answer the awaits this reply ends; returns the names that now have it (read)."""
        waiting = self._awaiters.get(reply.re or "")
        if not waiting:
            return set()
        keep = []
        woken: set[str] = set()
        for awaiter in waiting:
            if awaiter.name in reply.to.names:
                self._advance(effects, reply.id, reply.sender, awaiter.name, ReceiptState.READ, now)
                effects.append(Respond(awaiter.reply_to, {"reply": reply.to_wire()}))
                woken.add(awaiter.name)
            else:
                keep.append(awaiter)
        self._keep_awaiters(reply.re or "", keep)
        return woken

    # -- threads ------------------------------------------------------------------
    def _thread_turn(self, env: Envelope, now: float) -> None:
        """Count a turn. A message that starts a thread writes no row: the row is made
        (from that first message) when the thread gets its second turn."""
        assert env.thread is not None
        if env.thread == env.id:
            return
        thread = self.store.get_thread(env.thread) or self._implicit_thread(env.thread)
        if thread is None:
            return
        thread.turns += 1
        thread.updated_at = now
        for name in (env.sender, *env.to.names):
            if name not in thread.participants:
                thread.participants.append(name)
        if env.kind is Kind.REPLY and env.status is not None:
            thread.state = ThreadState.ANSWERED.value
        elif thread.state == ThreadState.CLOSED.value:
            thread.state = ThreadState.OPEN.value
        self.store.put_thread(thread)

    def _implicit_thread(self, thread_id: str) -> ThreadRecord | None:
        """The one-message thread a message starts, before anyone replies."""
        root = self.store.get_message(thread_id)
        if root is None or root.thread != root.id:
            return None
        participants = [root.sender, *(n for n in root.to.names if n != root.sender)]
        return ThreadRecord(root.id, ThreadState.OPEN.value, 1, participants, root.ts, root.ts)

    def thread(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        thread_id = check_id(args.get("id"))
        thread = self.store.get_thread(thread_id) or self._implicit_thread(thread_id)
        if thread is None:
            env = self.store.get_message(thread_id)
            if env is None or env.thread is None:
                raise UnknownMessage(f"no thread or message with id {thread_id}")
            thread = self.store.get_thread(env.thread) or self._implicit_thread(env.thread)
            if thread is None:
                raise UnknownMessage(f"no thread with id {env.thread}")
        limit = _int_arg(args, "limit", 200, 1, 10000)
        messages = self.store.thread_messages(thread.id, limit)
        if caller.name not in thread.participants and not any(
            self.store.get_receipt(m.id, caller.name) for m in self.store.thread_messages(thread.id, 100_000)
        ):
            raise Forbidden(f"{caller.name!r} is not in thread {thread.id}")
        effects: list[Effect] = []
        if _bool_arg(args, "close", False):
            thread.state = ThreadState.CLOSED.value
            thread.updated_at = now
            self.store.put_thread(thread)
            self._audit(now, "thread_closed", {"thread": thread.id, "by": caller.name})
            self._event(effects, now, "thread_closed", thread=thread.id, by=caller.name)
        effects.append(Respond(reply_to, {**thread.to_wire(), "messages": [m.to_wire() for m in messages]}))
        return effects

    # -- topics -------------------------------------------------------------------
    def subscribe(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        topic = _topic_arg(args)
        from_start = _bool_arg(args, "from_start", False)
        self.store.subscribe(topic, caller.name)
        effects: list[Effect] = []
        caught_up = 0
        if from_start:
            backlog = [
                e for e in self.store.topic_messages(topic)
                if e.sender != caller.name and self.store.get_receipt(e.id, caller.name) is None
                and e.expires_at > now and not self._refuses(caller.name, e.sender, None)
            ]
            for env in backlog:
                self.store.add_receipts(env, [caller.name])
                self._remember(env.id, caller.name, ReceiptState.QUEUED)
            caught_up = len(backlog)
            if backlog and caller.conn is not None:
                effects.append(Push(caller.conn, {"op": "deliver", "messages": [e.to_wire() for e in backlog]}))
        self._audit(now, "subscribed", {"topic": topic, "name": caller.name, "catch_up": caught_up})
        effects.append(Respond(reply_to, {"topic": topic, "catch_up": caught_up}))
        return effects

    def unsubscribe(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        topic = _topic_arg(args)
        self.store.unsubscribe(topic, caller.name)
        self._audit(now, "unsubscribed", {"topic": topic, "name": caller.name})
        return [Respond(reply_to, {"topic": topic})]

    # -- locks --------------------------------------------------------------------
    def lock(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        resource = check_resource(args.get("resource"))
        ttl = _float_arg(args, "ttl", self.settings.lock_ttl, 1.0, 7 * 24 * 3600.0)
        exclusive = _bool_arg(args, "exclusive", True)
        reason = args.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > 1000:
            raise BadFrame("'reason' must be a string of at most 1000 chars")
        effects: list[Effect] = []
        effects.extend(self._expire_leases(now))
        mine = None
        for lease in self.store.leases():
            if lease.holder == caller.name and lease.resource == resource:
                mine = lease
            elif conflicts(lease, resource, caller.name, exclusive):
                self._audit(now, "lock_conflict", {"resource": resource, "by": caller.name, "holder": lease.holder})
                effects.append(Respond(reply_to, {
                    "outcome": LockOutcome.CONFLICT.value,
                    "resource": resource,
                    "holder": lease.holder,
                    "lease": lease.to_wire(now),
                }))
                return effects
        lease = Lease(resource, caller.name, exclusive, reason or (mine.reason if mine else ""),
                      mine.acquired_at if mine else now, now + ttl)
        self.store.put_lease(lease)
        outcome = LockOutcome.RENEWED if mine else LockOutcome.GRANTED
        self._audit(now, f"lock_{outcome.value}", lease.to_wire())
        self._event(effects, now, f"lock_{outcome.value}", **lease.to_wire())
        effects.append(Respond(reply_to, {"outcome": outcome.value, "lease": lease.to_wire(now)}))
        return effects

    def unlock(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        resource = check_resource(args.get("resource"))
        held = [l for l in self.store.leases() if l.holder == caller.name and l.resource == resource]
        if not held:
            raise NotHolder(f"{caller.name!r} holds no lease on {resource!r}", hint="see 'mesh locks'")
        self.store.delete_lease(resource, caller.name)
        effects: list[Effect] = []
        self._audit(now, "lock_released", {"resource": resource, "holder": caller.name, "why": "unlock"})
        self._event(effects, now, "lock_released", resource=resource, holder=caller.name)
        effects.append(Respond(reply_to, {"released": resource}))
        return effects

    def locks(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        effects = self._expire_leases(now)
        effects.append(Respond(reply_to, {"locks": [l.to_wire(now) for l in self.store.leases()]}))
        return effects

    def _expire_leases(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for lease in self.store.leases():
            if lease.expires_at <= now:
                self.store.delete_lease(lease.resource, lease.holder)
                self._audit(now, "lock_expired", lease.to_wire())
                self._event(effects, now, "lock_expired", resource=lease.resource, holder=lease.holder)
        return effects

    # -- peers --------------------------------------------------------------------
    def presence(self, name: str, now: float) -> Presence:
        if name in self._online:
            return Presence.ONLINE
        seen = self._last_seen.get(name) or (self._peer_cache[name].last_seen if name in self._peer_cache else 0)
        return Presence.AWAY if now - seen < self.settings.away_window else Presence.OFFLINE

    def peers(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        depths = self.store.queue_depths()
        out = []
        for name in sorted(self._peer_cache):
            peer = self._peer_cache[name]
            conn = self._online.get(name)
            out.append({
                "name": name,
                "presence": self.presence(name, now).value,
                "meta": {k: v for k, v in peer.meta.items() if k != "refuse"},
                "connected_since": self._conns[conn].since if conn is not None else None,
                "last_seen": self._last_seen.get(name, peer.last_seen),
                "unread": depths.get(name, 0),
            })
        return [Respond(reply_to, {"peers": out})]

    def set_status(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        meta = {k: v for k, v in args.items() if k in META_KEYS}
        unknown = set(args) - set(META_KEYS)
        if unknown:
            raise BadFrame(f"unknown field(s): {', '.join(sorted(unknown))}", hint="fields: " + ", ".join(META_KEYS))
        peer = self._peer_cache[caller.name]
        self._update_meta(peer, meta, now)
        effects: list[Effect] = []
        self._audit(now, "peer_updated", {"name": caller.name, "fields": sorted(meta)})
        self._event(effects, now, "peer_updated", name=caller.name,
                    meta={k: v for k, v in peer.meta.items() if k != "refuse"})
        effects.append(Respond(reply_to, {"name": caller.name, "meta": peer.meta}))
        return effects

    def _clean_meta(self, meta: dict[str, Any] | None) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in (meta or {}).items():
            if key not in META_KEYS:
                continue
            if key == "refuse":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise BadFrame("'refuse' must be a list of names")
            elif value is not None and (not isinstance(value, str) or len(value) > 2000):
                raise BadFrame(f"'{key}' must be a string of at most 2000 chars")
            clean[key] = value
        return clean

    def _update_meta(self, peer: PeerRecord, meta: dict[str, Any], now: float) -> None:
        peer.meta.update(self._clean_meta(meta))
        peer.last_seen = self._last_seen.get(peer.name, now)
        self.store.put_peer(peer)

    def _touch(self, name: str, now: float) -> None:
        self._last_seen[name] = now

    def _persist_last_seen(self, name: str) -> None:
        peer = self._peer_cache.get(name)
        if peer is not None:
            peer.last_seen = self._last_seen.get(name, peer.last_seen)
            self.store.put_peer(peer)

    def _free_variant(self, name: str) -> str:
        base = name.split("#", 1)[0]
        for n in range(2, 10000):
            candidate = f"{base}#{n}"
            if candidate not in self._online and candidate not in self._peer_cache:
                return candidate
        raise NameTaken(f"no free variant of {base!r}")

    def _secret_ok(self, name: str, secret: Any) -> bool:
        peer = self._peer_cache.get(name)
        return peer is None or (isinstance(secret, str) and hmac.compare_digest(peer.secret_hash, hash_secret(secret)))

    def _suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._peer_cache), n=3, cutoff=0.6)
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "? see 'mesh peers'"
        return "see 'mesh peers' for the names on this mesh"

    # -- misc ---------------------------------------------------------------------
    def log(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        after = _int_arg(args, "after", 0, 0, 2**62)
        limit = _int_arg(args, "limit", 1000, 1, 100000)
        return [Respond(reply_to, {"entries": self.store.read_audit(after=after, limit=limit)})]

    def ping(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        return [Respond(reply_to, {"pong": now, "name": caller.name})]

    def tick(self, now: float) -> list[Effect]:
        """Time passes: receipt waits end, awaits time out, TTLs expire, leases lapse."""
        return [
            *self._end_receipt_waits(now),
            *self._end_awaits(now),
            *self._expire_copies(now),
            *self._expire_leases(now),
        ]

    def _end_receipt_waits(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            pending.waiting.clear()  # the copies stay in the durable inboxes: queued
            effects.extend(self._maybe_finish(pending))
        return effects

    def _end_awaits(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for msg_id, waiting in list(self._awaiters.items()):
            for awaiter in (a for a in waiting if a.deadline <= now):
                effects.append(Respond(awaiter.reply_to, error=Timeout(
                    f"no reply to {msg_id} yet", hint=f"try again later: mesh await {msg_id}"
                )))
            self._keep_awaiters(msg_id, [a for a in waiting if a.deadline > now])
        return effects

    def _keep_awaiters(self, msg_id: str, awaiters: list[_Awaiter]) -> None:
        if awaiters:
            self._awaiters[msg_id] = awaiters
        else:
            self._awaiters.pop(msg_id, None)

    def _expire_copies(self, now: float) -> list[Effect]:
        """Copies still queued past their TTL expire; their senders are told."""
        effects: list[Effect] = []
        for msg_id, recipient, sender in self.store.expire_due(now):
            self._remember(msg_id, recipient, ReceiptState.EXPIRED)
            self.counters["receipts_expired"] += 1
            self._audit(now, "receipt", {"id": msg_id, "recipient": recipient, "state": "expired"})
            conn = self._online.get(sender)
            if conn is not None:
                effects.append(Push(conn, {"op": "receipt", "id": msg_id, "recipient": recipient,
                                           "state": "expired", "ts": now}))
            self._event(effects, now, "receipt", id=msg_id, sender=sender, recipient=recipient, state="expired")
        return effects

    def forget(self, reply_to: Hashable) -> None:
        """The caller behind ``reply_to`` is gone: drop its awaits."""
        for msg_id, awaiting in list(self._awaiters.items()):
            self._keep_awaiters(msg_id, [a for a in awaiting if a.reply_to != reply_to])

    def idle(self) -> bool:
        return not self._online

    def queue_depth(self) -> int:
        return sum(self.store.queue_depths().values())

    def flush_presence(self) -> None:
        for name in list(self._last_seen):
            self._persist_last_seen(name)

    # -- helpers ------------------------------------------------------------------
    def _next_page(self, conn: int) -> list[Effect]:
        """The next window of a connection's backlog, oldest first (urgent ahead)."""
        state = self._conns[conn]
        envs = self.store.unread(state.name, BACKLOG_WINDOW, after=state.cursor)
        if envs:
            last = envs[-1]
            state.cursor = (1 if last.priority is Priority.URGENT else 0, last.seq)
            state.in_flight.update(e.id for e in envs)
        if len(envs) < BACKLOG_WINDOW:
            state.catching_up = False
        return [
            Push(conn, {"op": "deliver", "messages": [e.to_wire() for e in envs[i : i + BACKLOG_CHUNK]]})
            for i in range(0, len(envs), BACKLOG_CHUNK)
        ]

    def _live(self, conn: int, env: Envelope) -> bool:
        """Whether a new message goes to this connection now, or waits for its page."""
        state = self._conns[conn]
        if not state.catching_up:
            return True
        # an urgent message cannot wait behind normal ones the pages have reached
        return env.priority is Priority.URGENT and state.cursor is not None and state.cursor[0] == 0

    def _audit_envelope(self, wire: dict[str, Any], recipients: list[str]) -> dict[str, Any]:
        data = dict(wire)
        if not self.settings.audit_bodies:
            data.pop("body")
        data["recipients"] = recipients
        return data

    def _audit(self, now: float, event: str, data: dict[str, Any]) -> None:
        self.store.append_audit(now, event, data)

    def _event(self, effects: list[Effect], now: float, event: str, **data: Any) -> None:
        if not self._watchers:
            return
        frame = {"op": "event", "event": event, "ts": now, **data}
        for conn in self._watchers:
            effects.append(Push(conn, frame))
