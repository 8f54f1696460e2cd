"""Lease commands: take, renew, release and list advisory locks; expiry."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..errors import BadFrame, Contention, NotHolder
from .args import bool_arg, float_arg
from .effects import Effect, Respond
from .locks import Lease, LockOutcome, check_resource, conflicts
from .safety import screen_field
from .state import Caller, CoreState

# A shared lease table (the NATS backend) can change between the read and the write;
# the store then raises `Contention` and the decision is made again on fresh leases.
LOCK_ATTEMPTS = 20


class LeasesMixin(CoreState):
    """The lock ops, over the overlap rules of `locks`."""

    def lock(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        resource = check_resource(args.get("resource"))
        ttl = float_arg(args, "ttl", self.settings.lock_ttl, 1.0, 7 * 24 * 3600.0)
        exclusive = bool_arg(args, "exclusive", True)
        reason = args.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > 1000:
            raise BadFrame("'reason' must be a string of at most 1000 chars")
        screen_field("reason", reason)
        screen_field("resource", resource)
        effects = self._expire_leases(now)
        for attempt in range(LOCK_ATTEMPTS):
            try:
                effects.extend(self._take(caller, resource, ttl, exclusive, reason, reply_to, now))
                return effects
            except Contention:
                if attempt == LOCK_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _take(
        self,
        caller: Caller,
        resource: str,
        ttl: float,
        exclusive: bool,
        reason: str,
        reply_to: Hashable,
        now: float,
    ) -> list[Effect]:
        """Grant, renew or refuse one lock on the leases as they are now."""
        effects: list[Effect] = []
        mine = None
        for lease in self.store.leases():
            if lease.holder == caller.name and lease.resource == resource:
                mine = lease
            elif conflicts(lease, resource, caller.name, exclusive):
                self._audit(
                    now, "lock_conflict", {"resource": resource, "by": caller.name, "holder": lease.holder}
                )
                effects.append(
                    Respond(
                        reply_to,
                        {
                            "outcome": LockOutcome.CONFLICT.value,
                            "resource": resource,
                            "holder": lease.holder,
                            "lease": lease.to_wire(now),
                        },
                    )
                )
                return effects
        lease = Lease(
            resource,
            caller.name,
            exclusive,
            reason or (mine.reason if mine else ""),
            mine.acquired_at if mine else now,
            now + ttl,
        )
        self.store.put_lease(lease)
        outcome = LockOutcome.RENEWED if mine else LockOutcome.GRANTED
        self._audit(now, f"lock_{outcome.value}", lease.to_wire())
        self._event(effects, now, f"lock_{outcome.value}", **lease.to_wire())
        effects.append(Respond(reply_to, {"outcome": outcome.value, "lease": lease.to_wire(now)}))
        return effects

    def unlock(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        resource = check_resource(args.get("resource"))
        held = [
            lease
            for lease in self.store.leases()
            if lease.holder == caller.name and lease.resource == resource
        ]
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
        effects.append(Respond(reply_to, {"locks": [lease.to_wire(now) for lease in self.store.leases()]}))
        return effects

    def _expire_leases(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for lease in self.store.leases():
            if lease.expires_at <= now:
                self.store.delete_lease(lease.resource, lease.holder)
                self._audit(now, "lock_expired", lease.to_wire())
                self._event(effects, now, "lock_expired", resource=lease.resource, holder=lease.holder)
        return effects
