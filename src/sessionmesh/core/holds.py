"""Held messages: a body that asks for a destructive action waits for a person.

A held envelope is stored like any other, but each copy starts ``held`` instead of
``queued`` and reaches nobody. The person (``human``, a name only a person session
holds) approves it, and it is delivered as if just sent; or rejects it, and each
copy ends ``rejected``. The sender follows both in its receipts.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..envelope import PERSON, Envelope, ReceiptState, SendStatus, check_id
from ..errors import BadFrame, NotApprover, UnknownMessage
from .args import int_arg
from .effects import Effect, Respond
from .state import Caller, CoreState

POLICY_HOLD = "the recipient's inbound policy: hold"


def held_note(match: str, recipients: list[str] | None) -> dict[str, Any]:
    """A send's ``held``: what it asks for (``match``), or with ``recipients`` the
    names whose inbound policy holds it."""
    if recipients is None:
        return {"match": match, "message": f"held until a person approves it: it asks for {match!r}"}
    return {
        "match": match,
        "message": "held for a person by the inbound policy of " + ", ".join(recipients),
        "recipients": recipients,
    }


class HoldsMixin(CoreState):
    """The ``held``, ``approve`` and ``reject`` ops, and holding a new envelope."""

    def _hold(
        self,
        env: Envelope,
        reason: str,
        statuses: dict[str, str],
        reasons: dict[str, Any],
        recipients: list[str],
        reply_to: Hashable,
        now: float,
        *,
        policy: bool = False,
    ) -> list[Effect]:
        """Answer a send whose copies are held: each recipient is ``queued`` (it is
        stored and will arrive once approved), and the answer says it is held: for
        what it asks, or (``policy``) by its recipients' inbound policy."""
        for name in recipients:
            statuses[name] = SendStatus.QUEUED.value
        answer = self._answer(env, statuses, reasons, now)
        answer["held"] = held_note(reason, recipients if policy else None)
        self.store.set_answer(env.id, answer)
        self.counters["messages_held"] += 1
        self.counters[f"send_{answer['status']}"] += 1
        self._audit(
            now, "held", {"id": env.id, "from": env.sender, "recipients": recipients, "match": reason}
        )
        effects: list[Effect] = [Respond(reply_to, answer)]
        self._event(effects, now, "held", id=env.id, sender=env.sender, recipients=recipients, match=reason)
        return effects

    def held(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """Messages waiting for a person, oldest first, with who they are for and why.

        The person sees them all; any other peer only those it sent: a held message
        is the sender's and the person's business, never a third agent's mail."""
        limit = int_arg(args, "limit", 100, 1, 10000)
        everyone = caller.name == PERSON
        waiting: dict[str, list[str]] = {}
        for receipt in self.store.receipts_in_state(ReceiptState.HELD, limit * 64):
            waiting.setdefault(receipt.msg_id, []).append(receipt.recipient)
        out = []
        for msg_id, names in waiting.items():
            if len(out) >= limit:
                break
            env = self.store.get_message(msg_id)
            if env is not None and (everyone or env.sender == caller.name):
                wire = env.to_wire()
                wire["held_for"] = sorted(names)
                wire["match"] = self._held_match(env)
                out.append(wire)
        return [Respond(reply_to, {"messages": out})]

    def _held_match(self, env: Envelope) -> str | None:
        """What the screen found when ``env`` was held (kept in its answer: screening
        again could cost a parse per listed message)."""
        held = self._answer_of(env).get("held")
        if isinstance(held, dict):
            return held.get("match")
        return self._hold_reason(env) or POLICY_HOLD

    def approve(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """Release held messages: each copy becomes ``queued`` and is delivered."""
        envs = self._decidable(caller, args)
        effects: list[Effect] = []
        for env, names in envs:
            for name in names:
                self._advance(effects, env.id, env.sender, name, ReceiptState.QUEUED, now)
            parent = self.store.get_message(env.re) if env.re else None
            self._fan_out(effects, env, parent, names, env.to_wire(), now)
            self._audit(now, "approved", {"id": env.id, "by": caller.name, "recipients": names})
            self._event(effects, now, "approved", id=env.id, by=caller.name, recipients=names)
        effects.append(Respond(reply_to, {"approved": [env.id for env, _ in envs]}))
        return effects

    def reject(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """Refuse held messages for good: each copy ends ``rejected``."""
        envs = self._decidable(caller, args)
        effects: list[Effect] = []
        for env, names in envs:
            for name in names:
                self._advance(effects, env.id, env.sender, name, ReceiptState.REJECTED, now)
            self._audit(now, "rejected", {"id": env.id, "by": caller.name, "recipients": names})
            self._event(effects, now, "rejected", id=env.id, by=caller.name, recipients=names)
        effects.append(Respond(reply_to, {"rejected": [env.id for env, _ in envs]}))
        return effects

    def _decidable(self, caller: Caller, args: dict[str, Any]) -> list[tuple[Envelope, list[str]]]:
        """The envelopes named in ``ids`` with their held recipients; checks that the
        caller may decide and that every id is held, before anything changes."""
        if caller.name != PERSON:
            raise NotApprover(
                f"{caller.name!r} cannot approve or reject held messages",
                hint="a person decides, with their passphrase: mesh approve ID",
            )
        ids = args.get("ids")
        if not isinstance(ids, list) or not ids:
            raise BadFrame("'ids' must be a non-empty list of message ids")
        out = []
        for msg_id in (check_id(i, what="id") for i in ids):
            env = self.store.get_message(msg_id)
            names = [r.recipient for r in self.store.receipts(msg_id) if r.state is ReceiptState.HELD]
            if env is None or not names:
                raise UnknownMessage(f"no held message with id {msg_id}", hint="list them: mesh held")
            out.append((env, names))
        return out
