"""The broker core: every command a peer can give, as plain method calls.

`Core` owns the live view (which connection holds which name, sends waiting for a
recipient's receipt, awaiters, rate buckets) and reads and writes the durable state
through a `Store`. Each call takes ``now`` and returns a list of effects; the server
commits the store and only then carries the effects out, so no peer ever sees a
message or an answer that a crash could take back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any

from ..config import Settings
from ..envelope import PERSON
from ..errors import BadFrame, MeshError, UnknownOp
from ..storage import Store
from .args import int_arg
from .effects import Effect, Respond
from .holds import HoldsMixin
from .leases import LeasesMixin
from .pairs import PairsMixin
from .peers import META_KEYS, PeersMixin, Presence, hash_secret
from .receipts import ReceiptsMixin
from .remote import RemoteMixin
from .sending import SendingMixin
from .state import BACKLOG_CHUNK, BACKLOG_WINDOW, Caller, CoreState
from .threads import ThreadsMixin, ThreadState
from .topics import TopicsMixin
from .wakes import Activity, WakesMixin

ID_PREFIX = re.compile(r"[0-9a-f-]{8,36}")  # what `resolve` takes: an id as the CLI prints it
RESOLVE_SCAN = 64  # ids read for one prefix (others' messages are skipped)
RESOLVE_LIMIT = 10  # ids answered: enough to show an ambiguity


class Core(
    PairsMixin,
    PeersMixin,
    SendingMixin,
    HoldsMixin,
    ReceiptsMixin,
    ThreadsMixin,
    TopicsMixin,
    LeasesMixin,
    RemoteMixin,
    WakesMixin,
    CoreState,
):
    """The sans-I/O broker. Not thread-safe: one event loop drives it."""

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__(store, settings)
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
            "forget": self.forget_peer,
            "policy": self.set_policy,
            "await_idle": self.await_idle,
            "pair": self.pair,
            "log": self.log,
            "held": self.held,
            "approve": self.approve,
            "reject": self.reject,
            "ping": self.ping,
            "resolve": self.resolve,
            "activity": self.activity,
            "wake": self.wake,
        }

    @property
    def ops(self) -> list[str]:
        return sorted(self._ops)

    def handle(self, caller: Caller, op: Any, args: Any, reply_to: Hashable, now: float) -> list[Effect]:
        """Run one command; errors come back as a `Respond` with the typed error."""
        try:
            if not isinstance(args, dict):
                raise BadFrame("the arguments of an op must be a JSON object")
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise UnknownOp(f"unknown op {op!r}", hint="ops are: " + ", ".join(self.ops))
            self._touch(caller.name, now)
            return handler(caller, args, reply_to, now)
        except MeshError as exc:
            return [Respond(reply_to, error=exc)]

    def log(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        after = int_arg(args, "after", 0, 0, 2**62)
        limit = int_arg(args, "limit", 1000, 1, 100000)
        return [Respond(reply_to, {"entries": self.store.read_audit(after=after, limit=limit)})]

    def resolve(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """The full ids of the messages the caller sent or received (the person: any)
        that start with ``prefix``, at least 8 characters of an id as printed."""
        prefix = args.get("prefix")
        if not isinstance(prefix, str) or not ID_PREFIX.fullmatch(prefix.lower()):
            raise BadFrame("'prefix' must be at least 8 characters of a message id (hex digits and '-')")
        found = []
        for msg_id in self.store.ids_with_prefix(prefix.lower(), RESOLVE_SCAN):
            env = self.store.get_message(msg_id)
            if env is None:
                continue
            if caller.name in (PERSON, env.sender) or self.store.get_receipt(msg_id, caller.name) is not None:
                found.append(msg_id)
                if len(found) == RESOLVE_LIMIT:
                    break
        return [Respond(reply_to, {"ids": found})]

    def ping(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        return [Respond(reply_to, {"pong": now, "name": caller.name})]

    def tick(self, now: float) -> list[Effect]:
        """Time passes: receipt waits end, awaits time out, TTLs expire, leases lapse."""
        return [
            *self._end_receipt_waits(now),
            *self._end_awaits(now),
            *self._expire_copies(now),
            *self._expire_leases(now),
            *self._end_wakes(now),
            *self._end_idle_waits(now),
        ]


__all__ = [
    "Core",
    "Caller",
    "Presence",
    "Activity",
    "ThreadState",
    "META_KEYS",
    "BACKLOG_CHUNK",
    "BACKLOG_WINDOW",
    "hash_secret",
    "CoreState",
]
