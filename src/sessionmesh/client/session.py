"""The client session core, with no I/O: request ids, outstanding requests to resend
after a reconnect, and de-duplication so the application never sees an id twice.

Both front ends (`aio.AsyncClient` and the `sync.SyncClient` over it) drive this.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..envelope import Envelope, SendStatus

SEEN_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a send answered: one status overall and one per unicast recipient."""

    id: str
    status: SendStatus
    statuses: dict[str, str] = field(default_factory=dict)
    recipients: int = 0
    thread: str | None = None
    reason: dict[str, Any] | None = None
    reasons: dict[str, Any] = field(default_factory=dict)
    duplicate: bool = False
    held: dict[str, Any] | None = None  # the copies wait for a person's approval

    @property
    def ok(self) -> bool:
        return self.status in (SendStatus.RECEIVED, SendStatus.QUEUED, SendStatus.SENT)

    @staticmethod
    def from_wire(data: dict[str, Any]) -> SendResult:
        return SendResult(
            id=data.get("id") or "",
            status=SendStatus(data["status"]),
            statuses=dict(data.get("statuses") or {}),
            recipients=int(data.get("recipients") or 0),
            thread=data.get("thread"),
            reason=data.get("reason"),
            reasons=dict(data.get("reasons") or {}),
            duplicate=bool(data.get("duplicate")),
            held=data.get("held"),
        )

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "statuses": self.statuses,
            "recipients": self.recipients,
            "thread": self.thread,
        }
        if self.reason:
            wire["reason"] = self.reason
        if self.reasons:
            wire["reasons"] = self.reasons
        if self.held:
            wire["held"] = self.held
        return wire


@dataclass(frozen=True, slots=True)
class Result:
    rid: int
    ok: bool
    value: dict[str, Any]


class SessionCore:
    """Pure bookkeeping for one logical session that may span many connections."""

    def __init__(self) -> None:
        self._next_rid = 0
        self.outstanding: dict[int, dict[str, Any]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()

    def request(self, op: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Register a request; returns its rid and the frame to send (now or on resume)."""
        self._next_rid += 1
        frame = {"op": op, "rid": self._next_rid, "args": args}
        self.outstanding[self._next_rid] = frame
        return self._next_rid, frame

    def resend(self) -> list[dict[str, Any]]:
        """Frames to send again on a new connection, in the order first sent.

        Sends carry their message id, so the broker answers a resend of a stored
        message with its first answer instead of storing it twice.
        """
        return [self.outstanding[rid] for rid in sorted(self.outstanding)]

    def forget(self, rid: int) -> None:
        self.outstanding.pop(rid, None)

    def on_result(self, frame: dict[str, Any]) -> Result | None:
        rid = frame.get("rid")
        if not isinstance(rid, int) or self.outstanding.pop(rid, None) is None:
            return None
        if frame.get("ok"):
            return Result(rid, True, frame.get("result") or {})
        return Result(rid, False, frame.get("error") or {})

    def on_deliver(self, frame: dict[str, Any]) -> tuple[list[str], list[Envelope]]:
        """Ids to acknowledge as delivered (all of them) and envelopes new to the app."""
        ids: list[str] = []
        fresh: list[Envelope] = []
        for wire in frame.get("messages") or ():
            msg_id = wire.get("id")
            if not isinstance(msg_id, str):
                continue
            ids.append(msg_id)
            if msg_id in self._seen:
                continue
            self._seen[msg_id] = None
            if len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            fresh.append(Envelope.from_wire(wire))
        return ids, fresh
