"""Sending: validation, idempotent resends, routing, and the answer a send gives."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from ..envelope import (
    PERSON,
    Draft,
    Envelope,
    Kind,
    ReceiptState,
    ReplyStatus,
    SendStatus,
    Target,
    check_id,
    new_id,
)
from ..errors import (
    BadFrame,
    DuplicateMessage,
    EmptyBody,
    Forbidden,
    Impersonation,
    InvalidName,
    MeshError,
    RateLimited,
    SecretInBody,
    SelfSend,
    TooLarge,
    UnknownMessage,
    UnknownPeer,
    UnsafeText,
)
from .effects import Effect, Mail, Push, Respond
from .holds import POLICY_HOLD, held_note
from .policy import Policy, configured, own, stricter
from .safety import SCREENED, Screen, SecretAction, find_secrets, hold_reason, redact, screen_field
from .state import SENDER_CACHE, Caller, CoreState

OBSERVED_RECIPIENTS = 200  # names listed in a `message` event; the count is always exact


@dataclass(slots=True)
class PendingSend:
    env: Envelope
    answer: dict[str, Any]
    waiting: set[str]
    deadline: float
    reply_tos: list[Hashable] = field(default_factory=list)
    duplicates: list[Hashable] = field(default_factory=list)


class Refusal(Exception):
    """A send the core answers `refused` (with the reason) instead of storing it."""

    def __init__(self, msg_id: str | None, error: MeshError) -> None:
        super().__init__(error.message)
        self.msg_id = msg_id
        self.error = error


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float


def _uuid7_ms(msg_id: str) -> int:
    """The millisecond timestamp of a canonical UUIDv7; 0 for other UUID versions."""
    if msg_id[14] != "7":
        return 0
    return int(msg_id[:8] + msg_id[9:13], 16)


def _empty(body: Any) -> bool:
    return body is None or (isinstance(body, str) and not body.strip())


class SendingMixin(CoreState):
    """The `send` op and everything between a draft and its answer."""

    def send(
        self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float, *, pair: str | None = None
    ) -> list[Effect]:
        """Validate, store, deliver, answer: received, queued, denied, refused or sent.
        ``pair`` marks a message the pair op composes (core/pairs.py); no client sets it."""
        sender = caller.name
        # A message another broker relays (a link's sender): it names the recipients
        # here, and keeps the `to` it was sent with (a topic, broadcast, a list).
        relay = args.pop("recipients", None) if sender in self._remote else None
        screened = args.pop(SCREENED, None)  # done ahead, off the event loop (Runner.prescreen)
        if not isinstance(screened, Screen) or screened.body is not args.get("body"):
            screened = None
        try:
            draft = self._parse_send(sender, args, screened)
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
                if relay is not None and existing.sender == sender:
                    return self._relay_more(existing, relay, reply_to, now)
                return self._duplicate(reply_to, existing, sender)
            if not self._take_token(sender, now):
                raise RateLimited(
                    f"{sender!r} is over {self.settings.rate_limit:g} sends per second",
                    hint="slow down and resend with the same id",
                )
            if pair is not None:
                draft = replace(draft, handoff={**(draft.handoff or {}), "pair": pair})
            env, parent = self._envelope(sender, draft, now)
        except Refusal as refusal:
            return [self._refuse(reply_to, refusal.msg_id, refusal.error, now)]
        except (InvalidName, TooLarge, RateLimited, SelfSend) as exc:
            return [self._refuse(reply_to, args.get("id"), exc, now)]
        ahead = screened is not None and screened.redacted is env.body
        held = screened.hold if ahead and screened is not None else self._hold_reason(env)
        return self._route(env, parent, reply_to, now, relay, held)

    def _relay_more(self, env: Envelope, names: Any, reply_to: Hashable, now: float) -> list[Effect]:
        """A relayed message already stored, named again (its record came twice, or
        the copies for more recipients here came in a later batch): each recipient
        without a copy gets one, queued and delivered if live; one with a copy is
        answered as its receipt stands."""
        statuses: dict[str, str] = {}
        effects: list[Effect] = []
        wire = env.to_wire()
        not_received = (ReceiptState.HELD, ReceiptState.QUEUED, ReceiptState.EXPIRED, ReceiptState.REJECTED)
        for name in self._relay_names(env, names, None):
            receipt = self.store.get_receipt(env.id, name)
            if receipt is None and self._holds(name, env.sender):
                self.store.add_receipts(env, [name], ReceiptState.HELD)
                self._remember(env.id, name, ReceiptState.HELD)
            elif receipt is None:
                self.store.add_receipts(env, [name])
                self._remember(env.id, name, ReceiptState.QUEUED)
                for conn in self._conns_of(name):
                    if self._live(conn, env):
                        effects.append(Push(conn, {"op": "deliver", "messages": [wire]}))
            received = receipt is not None and receipt.state not in not_received
            statuses[name] = SendStatus.RECEIVED.value if received else SendStatus.QUEUED.value
        answer = {**self._answer_of(env), "statuses": statuses, "duplicate": True}
        return [Respond(reply_to, answer), *effects]

    def _relay_names(self, env: Envelope, names: Any, parent: Envelope | None) -> list[str]:
        """The recipients a relay names that are peers of this broker and take it."""
        if not isinstance(names, list):
            return []
        return [
            n
            for n in dict.fromkeys(names)
            if isinstance(n, str)
            and n != env.sender
            and n in self._peer_cache
            and n not in self._remote
            and not self._refuses(n, env.sender, parent)
        ]

    def _stored(self, msg_id: str) -> Envelope | None:
        """The stored envelope with this id, if any, looked up only when it can exist:
        recent ids are cached, and a UUIDv7 minted after this broker started (the
        common case: a new message) cannot be stored unless it is in that cache."""
        if msg_id not in self._senders and _uuid7_ms(msg_id) > self._started_ms:
            return None
        return self.store.get_message(msg_id)

    def _parse_send(self, sender: str, args: dict[str, Any], screened: Screen | None = None) -> Draft:
        if args.get("from") is not None and args["from"] != sender:
            raise Impersonation(
                f"you are {sender!r}; a message cannot be sent as {args['from']!r}",
                hint="the broker sets 'from'; leave it out",
            )
        args["id"] = new_id() if args.get("id") is None else check_id(args["id"])
        draft = Draft.parse(args)
        try:  # what a handoff carries is screened like any field others see
            for path in (draft.handoff or {}).get("paths", ()):
                screen_field("paths", path)
            for item in (draft.handoff or {}).get("evidence", ()):
                for key, value in item.items():
                    screen_field(f"evidence {key}", value)
        except UnsafeText as exc:
            raise Refusal(draft.id, exc) from None
        if _empty(draft.body) and not (draft.re is not None and draft.status is not None):
            raise Refusal(
                draft.id,
                EmptyBody("the message has no body", hint="say something (a reply may carry only a status)"),
            )
        if draft.body_size > self.settings.max_body_bytes:
            raise Refusal(
                draft.id,
                TooLarge(
                    f"body is {draft.body_size} bytes; the limit is {self.settings.max_body_bytes}",
                    hint="send a path or a summary instead of the whole content",
                ),
            )
        return self._screen_secrets(draft, screened)

    def _screen_secrets(self, draft: Draft, screened: Screen | None = None) -> Draft:
        """Refuse (or redact, by configuration) a body that carries a secret."""
        action = SecretAction(self.settings.secret_action)
        if action is SecretAction.ALLOW:
            return draft
        found = screened.secrets if screened is not None else find_secrets(draft.body)
        if not found:
            return draft
        kinds = sorted({f.kind for f in found})
        if action is SecretAction.REFUSE:
            raise Refusal(
                draft.id,
                SecretInBody(
                    f"the body carries a secret ({', '.join(kinds)}); secrets never travel through the mesh",
                    hint="remove it, or say where the recipient can find it",
                ),
            )
        return replace(draft, body=screened.redacted if screened is not None else redact(draft.body))

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
            raise Refusal(
                draft.id, SelfSend("you cannot send a message to yourself", hint="check the recipient name")
            )
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
            handoff=draft.handoff,
        )
        return env, parent

    def _route(
        self,
        env: Envelope,
        parent: Envelope | None,
        reply_to: Hashable,
        now: float,
        relay: Any = None,
        held: str | None = None,
    ) -> list[Effect]:
        """Storage first, then delivery: store the envelope and a receipt per
        recipient, push it to live recipients, and answer (now, or on their acks).
        ``relay``: the recipients here another broker named (see `send`); ``held``: why
        the body waits for a person, if it does."""
        if relay is not None:
            recipients = self._relay_names(env, relay, parent)
            statuses = {n: SendStatus.DENIED.value for n in env.to.names if n not in recipients}
            reasons: dict[str, dict[str, Any]] = {}
        else:
            statuses, reasons, recipients = self._resolve(env, parent)
        if not recipients and env.to.names:
            answer = self._answer(env, statuses, reasons, now)
            self.counters[f"send_{answer['status']}"] += 1
            self._audit(
                now,
                f"send_{answer['status']}",
                {"id": env.id, "from": env.sender, "to": env.to.to_wire(), "reasons": reasons},
            )
            return [Respond(reply_to, answer)]
        try:
            self.store.add_message(env)
        except DuplicateMessage:  # a very old id, past what _stored() could tell
            existing = self.store.get_message(env.id)
            assert existing is not None
            self._senders[existing.id] = existing.sender  # the next resend is found at once
            return self._duplicate(reply_to, existing, env.sender)
        first = ReceiptState.HELD if held else ReceiptState.QUEUED
        kept = [] if held else [n for n in recipients if self._holds(n, env.sender)]
        if kept:  # their inbound policy holds it for the person; the others get it now
            self.store.add_receipts(env, kept, ReceiptState.HELD)
            recipients = [n for n in recipients if n not in kept]
        self.store.add_receipts(env, recipients, first)
        self._senders[env.id] = env.sender
        if len(self._senders) > SENDER_CACHE:
            self._senders.popitem(last=False)
        for name in recipients:
            self._remember(env.id, name, first)
        for name in kept:
            self._remember(env.id, name, ReceiptState.HELD)
        wire = env.to_wire()
        self._audit(now, "message", self._audit_envelope(wire, recipients + kept))
        self._thread_turn(env, now)
        self.counters["messages_stored"] += 1
        observed: list[Effect] = []
        if self._observers:
            self._observe(
                observed,
                now,
                "message",
                message=wire,
                seq=env.seq,
                state=first.value,
                recipients=(recipients + kept)[:OBSERVED_RECIPIENTS],
                recipient_count=len(recipients) + len(kept),
            )
        if held:
            return observed + self._hold(env, held, statuses, reasons, recipients, reply_to, now)
        if kept and not recipients:
            return observed + self._hold(
                env, POLICY_HOLD, statuses, reasons, kept, reply_to, now, policy=True
            )

        effects: list[Effect] = observed
        waiting, awaited = self._fan_out(effects, env, parent, recipients, wire, now)
        for name in recipients:
            received = name in awaited  # a live await already holds it (and has shown it)
            statuses[name] = SendStatus.RECEIVED.value if received else SendStatus.QUEUED.value
        for name in kept:
            statuses[name] = SendStatus.QUEUED.value
        answer = self._answer(env, statuses, reasons, now)
        if kept:
            answer["held"] = held_note(POLICY_HOLD, kept)
            self._audit(
                now, "held", {"id": env.id, "from": env.sender, "recipients": kept, "match": POLICY_HOLD}
            )
        if env.to.is_fanout or not waiting:
            self._keep_answer(env.id, answer)
            self.counters[f"send_{answer['status']}"] += 1
            effects.insert(0, Respond(reply_to, answer))  # the sender first, then the fan-out
            return effects
        self._pending[env.id] = PendingSend(
            env, answer, waiting, now + self.settings.receive_timeout, [reply_to]
        )
        return effects

    def _fan_out(
        self,
        effects: list[Effect],
        env: Envelope,
        parent: Envelope | None,
        recipients: list[str],
        wire: dict[str, Any],
        now: float,
    ) -> tuple[set[str], set[str]]:
        """Hand a stored envelope to its live recipients (and to the awaits of a reply);
        returns the names whose receipt the send waits for, and those an await took."""
        awaited: set[str] = set()
        if parent is not None:
            self._advance(effects, parent.id, parent.sender, env.sender, ReceiptState.ANSWERED, now)
            awaited = self._wake_awaiters(effects, env, now)
        waiting: set[str] = set()
        for name in recipients:
            if name in awaited:
                continue
            for conn in self._conns_of(name):
                if self._live(conn, env):
                    # a unicast waits for this copy's ack: it goes out while the broker
                    # commits (a fan-out's answer comes first instead: §5.5)
                    awaits = not env.to.is_fanout and self._confirms(name)
                    effects.append(Push(conn, {"op": "deliver", "messages": [wire]}, early=awaits))
                    if self._confirms(name):
                        waiting.add(name)
        effects.extend(self._mail_for([n for n in recipients if n not in awaited], now))
        effects.append(Mail(tuple(recipients)))
        return waiting, awaited

    def _hold_reason(self, env: Envelope) -> str | None:
        # A message relayed from another machine is screened here as well: that machine's
        # settings and approvals are its own, and a hold here protects the agents on this one.
        return hold_reason(env.body, self.settings.hold_patterns)

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
                n
                for n in self.store.subscribers(to.topic)
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
                    reasons[name] = UnknownPeer(f"no peer named {name!r}", hint=self._suggest(name)).to_wire()
                elif self._refuses(name, sender, parent):
                    statuses[name] = SendStatus.DENIED.value
                    reasons[name] = Forbidden(f"{name!r} refuses messages from {sender!r}").to_wire()
                else:
                    names.append(name)
        return statuses, reasons, names

    def _refuses(self, name: str, sender: str, parent: Envelope | None) -> bool:
        """``name`` refuses ``sender`` (its ``refuse`` list, or an inbound policy of
        ``refuse``), unless this is a reply to ``name``'s own message."""
        peer = self._peer_cache.get(name)
        refused = peer is not None and (
            sender in peer.meta.get("refuse", ()) or self._inbound(name, sender) is Policy.REFUSE
        )
        return refused and not (parent is not None and parent.sender == name)

    def _holds(self, name: str, sender: str) -> bool:
        """``name``'s inbound policy holds ``sender``'s messages here. A peer on another
        machine is left to its own broker, which holds the copy for its own person: a
        person here could not approve what that machine's rules keep from its agent."""
        return name not in self._remote and self._inbound(name, sender) is Policy.HOLD

    def _inbound(self, name: str, sender: str) -> Policy:
        """The inbound policy for ``sender`` → ``name``: the stricter of the person's
        settings and the peer's own (core/policy.py)."""
        peer = self._peer_cache.get(name)
        found = configured(self.settings.inbound, name, sender)
        if peer is not None and "policy" in peer.meta:
            found = stricter(found, own(peer.meta, sender))
        if found is Policy.HOLD and sender == PERSON:
            return Policy.ACCEPT  # the person's own word needs no approval
        return found

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
        not_received = (ReceiptState.HELD, ReceiptState.QUEUED, ReceiptState.EXPIRED, ReceiptState.REJECTED)
        statuses = {
            r.recipient: SendStatus.QUEUED.value if r.state in not_received else SendStatus.RECEIVED.value
            for r in self.store.receipts(env.id)
        }
        return self._answer(env, statuses, {}, env.ts)

    def _refuse(self, reply_to: Hashable, msg_id: Any, error: MeshError, now: float) -> Respond:
        self.counters["send_refused"] += 1
        self._audit(
            now, "send_refused", {"id": msg_id if isinstance(msg_id, str) else None, **error.to_wire()}
        )
        return Respond(
            reply_to,
            {
                "id": msg_id,
                "status": SendStatus.REFUSED.value,
                "statuses": {},
                "recipients": 0,
                "thread": None,
                "ts": now,
                "reason": error.to_wire(),
            },
        )

    def _maybe_finish(self, pending: PendingSend, *, early: bool = False) -> list[Effect]:
        """The send's answers, once no receipt is awaited (``early``: see `Respond`)."""
        if pending.waiting:
            return []
        self._pending.pop(pending.env.id, None)
        answer = pending.answer
        answer["recipients"] = sum(1 for s in answer["statuses"].values() if s in ("received", "queued"))
        if pending.env.to.is_unicast:
            answer["status"] = answer["statuses"][pending.env.to.names[0]]
        self._keep_answer(pending.env.id, answer)
        self.counters[f"send_{answer['status']}"] += 1
        return [Respond(r, dict(answer), early=early) for r in pending.reply_tos] + [
            Respond(r, {**answer, "duplicate": True}, early=early) for r in pending.duplicates
        ]

    def _take_token(self, name: str, now: float) -> bool:
        rate = self.settings.rate_limit
        if rate <= 0:
            return True
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = Bucket(2 * rate, now)
        bucket.tokens = min(2 * rate, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _end_receipt_waits(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            pending.waiting.clear()  # the copies stay in the durable inboxes: queued
            effects.extend(self._maybe_finish(pending))
        return effects
