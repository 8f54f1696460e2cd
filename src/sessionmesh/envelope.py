"""The message envelope: its fields, their enums, and validation. No I/O."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .codec import dumps
from .errors import BadFrame, InvalidName
from .ids import PERSON as PERSON  # re-exported: the rest of the package imports them from here
from .ids import is_person_name as is_person_name
from .ids import new_id

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# A second live claimant that asks for a unique name gets `name#2`, `name#3`, ...
CLAIM_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}(#[0-9]{1,4})?")
TOPIC_RE = re.compile(r"#[a-z0-9][a-z0-9._-]{0,63}")
# A peer on another machine (SPEC §8): its machine's label, ':', its name there.
REMOTE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}:[a-z0-9][a-z0-9._-]{0,63}(#[0-9]{1,4})?")
BROADCAST = "broadcast"


class Kind(enum.StrEnum):
    MESSAGE = "message"
    REQUEST = "request"
    REPLY = "reply"
    EVENT = "event"


class ReplyStatus(enum.StrEnum):
    """End-states a reply to a request carries."""

    PASS = "PASS"
    PARTIAL = "PARTIAL"
    BLOCKED = "BLOCKED"
    ANSWERED = "ANSWERED"
    DECLINED = "DECLINED"


# how bad an end-state is, best first: asking several at once is judged by the worst
SEVERITY = ("PASS", "ANSWERED", "PARTIAL", "BLOCKED", "DECLINED")


def end_states(waiting: Any, replies: dict[str, dict[str, Any]], missing: str) -> tuple[dict[str, str], str]:
    """Each of ``waiting``'s end-state (a reply without one counts as ANSWERED; no
    reply counts as ``missing``, worse than any), and the worst of them."""
    order = [*SEVERITY, missing]
    states = {n: (replies[n].get("status") or "ANSWERED") if n in replies else missing for n in waiting}
    return states, max(states.values(), key=order.index, default=missing)


class Priority(enum.StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"


class SendStatus(enum.StrEnum):
    """What a send answers, per unicast recipient or for the whole fan-out."""

    RECEIVED = "received"
    QUEUED = "queued"
    DENIED = "denied"
    REFUSED = "refused"
    SENT = "sent"
    TIMEOUT = "timeout"


class ReceiptState(enum.StrEnum):
    """Where one recipient's copy of a message is. ``held`` comes first: a held copy
    moves on to ``queued`` when a person approves it, or ends ``rejected``."""

    HELD = "held"
    QUEUED = "queued"
    DELIVERED = "delivered"
    READ = "read"
    ANSWERED = "answered"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def unread(self) -> bool:
        return self in (ReceiptState.QUEUED, ReceiptState.DELIVERED)

    @property
    def final(self) -> bool:
        """No move leaves this state."""
        return self in (ReceiptState.EXPIRED, ReceiptState.REJECTED)


RECEIPT_ORDER = {s: i for i, s in enumerate(ReceiptState)}


def check_name(name: Any, *, what: str = "name", claim: bool = False, remote: bool = False) -> str:
    """Return ``name`` if it is a valid peer name, else raise `InvalidName`; with
    ``remote``, a peer on another machine (``LABEL:name``) is valid too."""
    pattern = CLAIM_RE if claim else NAME_RE
    if remote and isinstance(name, str) and ":" in name and REMOTE_RE.fullmatch(name):
        return name
    if not isinstance(name, str) or not pattern.fullmatch(name) or name == BROADCAST:
        raise InvalidName(
            f"invalid {what} {name!r}",
            hint="names are 1-64 chars of a-z 0-9 . _ -, starting with a letter or digit"
            " ('broadcast' is reserved)",
        )
    return name


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_id(value: Any, *, what: str = "id") -> str:
    """A message id in canonical form (lower-case, hyphenated); raises `BadFrame`."""
    if not isinstance(value, str):
        raise BadFrame(f"{what} must be a UUID string, got {type(value).__name__}")
    if _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadFrame(f"{what} {value!r} is not a UUID") from None


@dataclass(frozen=True, slots=True)
class Target:
    """Who a message is for: one or more names, everyone, or a topic."""

    names: tuple[str, ...] = ()
    broadcast: bool = False
    topic: str | None = None

    @property
    def is_unicast(self) -> bool:
        return not self.broadcast and self.topic is None and len(self.names) == 1

    @property
    def is_fanout(self) -> bool:
        return not self.is_unicast

    def to_wire(self) -> str | list[str]:
        if self.broadcast:
            return BROADCAST
        if self.topic:
            return self.topic
        return self.names[0] if len(self.names) == 1 else list(self.names)

    @staticmethod
    def parse(value: Any) -> Target:
        """Parse the wire ``to``: a name, a list of names, ``broadcast`` or ``#topic``."""
        if value == BROADCAST:
            return Target(broadcast=True)
        if isinstance(value, str) and value.startswith("#"):
            if not TOPIC_RE.fullmatch(value):
                raise InvalidName(f"invalid topic {value!r}", hint="topics are '#' + a valid name")
            return Target(topic=value)
        if isinstance(value, str):
            return Target(names=(check_name(value, what="recipient", claim=True, remote=True),))
        if isinstance(value, list) and value:
            names = []
            for item in value:
                name = check_name(item, what="recipient", claim=True, remote=True)
                if name not in names:
                    names.append(name)
            return Target(names=tuple(names))
        raise BadFrame("'to' must be a name, a non-empty list of names, 'broadcast' or '#topic'")


@dataclass(slots=True)
class Envelope:
    """One message as stored and delivered."""

    id: str
    sender: str
    to: Target
    kind: Kind = Kind.MESSAGE
    body: Any = None
    re: str | None = None
    thread: str | None = None
    status: ReplyStatus | None = None
    priority: Priority = Priority.NORMAL
    ttl: float = 7 * 24 * 3600.0
    ts: float = 0.0
    seq: int = field(default=0, compare=False)
    # what a handoff carries beside the body (`Handoff`): paths, ack_required, evidence;
    # and ``pair``, the kind of a pair-mode message, which only the broker sets
    handoff: dict[str, Any] | None = None

    @property
    def expires_at(self) -> float:
        return self.ts + self.ttl

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.to.to_wire(),
            "re": self.re,
            "thread": self.thread,
            "kind": self.kind.value,
            "status": self.status.value if self.status else None,
            "priority": self.priority.value,
            "body": self.body,
            "ttl": self.ttl,
            "ts": self.ts,
            **(self.handoff or {}),
        }

    @staticmethod
    def from_wire(data: dict[str, Any]) -> Envelope:
        """Rebuild an envelope the broker produced (trusted shape)."""
        return Envelope(
            id=data["id"],
            sender=data["from"],
            to=Target.parse(data["to"]),
            kind=Kind(data.get("kind", "message")),
            body=data.get("body"),
            re=data.get("re"),
            thread=data.get("thread"),
            status=ReplyStatus(data["status"]) if data.get("status") else None,
            priority=Priority(data.get("priority", "normal")),
            ttl=float(data.get("ttl", 0.0)),
            ts=float(data.get("ts", 0.0)),
            handoff={k: data[k] for k in (*HANDOFF_FIELDS, "pair") if k in data} or None,
        )


HANDOFF_FIELDS = ("paths", "ack_required", "evidence")
MAX_PATHS = 100
MAX_EVIDENCE = 50
MAX_PATH_CHARS = 4096
MAX_NOTE_CHARS = 2000


def parse_handoff(args: dict[str, Any], *, is_reply: bool) -> dict[str, Any] | None:
    """The handoff fields of a send, checked: ``paths`` (the files the work is about)
    and ``ack_required`` (the recipient acknowledges before it starts), and on a reply
    ``evidence`` (``{"path"?, "note"?}`` items: what backs its end-state). Raises
    `BadFrame`; None when the send has none."""
    out: dict[str, Any] = {}
    paths = args.get("paths")
    if paths is not None:
        if (
            not isinstance(paths, list)
            or len(paths) > MAX_PATHS
            or not all(isinstance(p, str) and 0 < len(p) <= MAX_PATH_CHARS for p in paths)
        ):
            raise BadFrame(f"'paths' must be a list of at most {MAX_PATHS} non-empty paths")
        if paths:
            out["paths"] = list(paths)
    ack = args.get("ack_required")
    if ack is not None:
        if not isinstance(ack, bool):
            raise BadFrame("'ack_required' must be true or false")
        if ack:
            out["ack_required"] = True
    evidence = args.get("evidence")
    if evidence is not None:
        if not is_reply:
            raise BadFrame("'evidence' belongs on replies (set 're')")
        if not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE:
            raise BadFrame(f"'evidence' must be a list of at most {MAX_EVIDENCE} items")
        items = []
        for item in evidence:
            if not isinstance(item, dict) or set(item) - {"path", "note"} or not item:
                raise BadFrame("each evidence item is {'path': ..., 'note': ...} (one or both)")
            path, note = item.get("path"), item.get("note")
            if path is not None and not (isinstance(path, str) and 0 < len(path) <= MAX_PATH_CHARS):
                raise BadFrame("an evidence 'path' must be a non-empty string")
            if note is not None and not (isinstance(note, str) and 0 < len(note) <= MAX_NOTE_CHARS):
                raise BadFrame(f"an evidence 'note' must be a string of 1 to {MAX_NOTE_CHARS} chars")
            items.append({k: v for k, v in (("path", path), ("note", note)) if v is not None})
        if items:
            out["evidence"] = items
    return out or None


def body_size(body: Any) -> int:
    """Bytes the body takes on the wire (UTF-8 for strings, compact JSON otherwise)."""
    if isinstance(body, str):
        return len(body) if body.isascii() else len(body.encode())
    return len(dumps(body).encode())


def _enum(cls: type[enum.Enum], value: Any, field_name: str, default: Any) -> Any:
    if value is None:
        return default
    member = cls._value2member_map_.get(value) if isinstance(value, str) else None
    if member is not None:  # the common case, without Enum.__call__
        return member
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
        raise BadFrame(f"{field_name} must be one of {allowed}, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class Draft:
    """A send as a client submitted it, validated but not yet routed."""

    id: str
    to: Target | None
    kind: Kind
    body: Any
    re: str | None
    status: ReplyStatus | None
    priority: Priority
    ttl: float | None
    body_size: int
    handoff: dict[str, Any] | None = None

    @staticmethod
    def parse(args: dict[str, Any]) -> Draft:
        """Validate the arguments of a ``send`` op; raises `BadFrame` / `InvalidName`."""
        known = {"id", "to", "kind", "body", "re", "status", "priority", "ttl", "from", *HANDOFF_FIELDS}
        extra = set(args) - known
        if extra:
            raise BadFrame(f"unknown send field(s): {', '.join(sorted(extra))}")
        msg_id = check_id(args.get("id"), what="id") if args.get("id") is not None else new_id()
        kind = _enum(Kind, args.get("kind"), "kind", Kind.MESSAGE)
        re_id = check_id(args["re"], what="re") if args.get("re") is not None else None
        if kind is Kind.REPLY and re_id is None:
            raise BadFrame("a reply needs 're': the id of the message it answers")
        status = _enum(ReplyStatus, args.get("status"), "status", None)
        if status is not None and re_id is None:
            raise BadFrame("'status' belongs on replies only (set 're')")
        to = Target.parse(args["to"]) if args.get("to") is not None else None
        if to is None and re_id is None:
            raise BadFrame("'to' is required unless replying ('re')")
        ttl = args.get("ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
            raise BadFrame("'ttl' must be a positive number of seconds")
        return Draft(
            id=msg_id,
            to=to,
            kind=kind,
            body=args.get("body"),
            re=re_id,
            status=status,
            priority=_enum(Priority, args.get("priority"), "priority", Priority.NORMAL),
            ttl=float(ttl) if ttl is not None else None,
            body_size=body_size(args.get("body")),
            handoff=parse_handoff(args, is_reply=re_id is not None),
        )
