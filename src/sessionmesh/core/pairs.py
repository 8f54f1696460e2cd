"""Pair mode: two agents on one piece of work, one building and one watching.

One peer invites another, which accepts or declines. The pair then has two roles:
the ``grip`` builds (edits, runs tools, commits) and the ``guard`` reviews and steers.

- ``steer``: the guard's note reaches the grip's next turn, framed as its guard's.
- ``intercept``: the guard asks to take over; the grip hands over when it is ready
  (``swap``, which only the grip may do).
- ``intercept`` with ``urgent``: a stop for a safety concern. The grip's tool calls
  are blocked, with the guard's reason, until the grip acknowledges (``ack``). The
  core marks the block (a `Mark` effect); the grip's pre-tool hook reads the mark, so
  a tool call costs no broker round trip.
- ``unpair`` by either, a member's graceful leave, or the person forgetting one ends
  the pair.

Everything a member must see arrives as a message (its ``pair`` field says which
kind), so it reaches the model through the hooks, MCP and watch like any mail, and
everyone watching events sees ``pair_*`` events. The state lives in each member's
peer record: ``pair`` (public: with whom, which role, since when), ``pair_block``
and ``pair_invites`` (private). A pair is between two peers of one broker.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import Any

from ..envelope import PERSON, check_name, is_person_name, new_id
from ..errors import BadFrame, Forbidden, MeshError, PairState, UnknownPeer, WrongRole
from .effects import Effect, Mark, Respond
from .safety import screen_field
from .sending import SendingMixin
from .state import Caller

MAX_NOTE = 4000  # characters of a steering note, a reason, an invitation's note


class Role(enum.StrEnum):
    GRIP = "grip"
    GUARD = "guard"

    @property
    def other(self) -> Role:
        return Role.GUARD if self is Role.GRIP else Role.GRIP


class PairKind(enum.StrEnum):
    """What a pair message is (the envelope's ``pair`` field)."""

    INVITE = "invite"
    ACCEPT = "accept"
    DECLINE = "decline"
    STEER = "steer"
    INTERCEPT = "intercept"
    STOP = "intercept!"
    ACK = "ack"
    SWAP = "swap"
    UNPAIR = "unpair"


ACTIONS = ("status", "invite", "accept", "decline", "steer", "intercept", "ack", "swap", "unpair")


class PairsMixin(SendingMixin):
    """The ``pair`` op, and the end of a pair when a member leaves."""

    def pair(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        action = args.get("action", "status")
        if action not in ACTIONS:
            raise BadFrame(f"unknown pair action {action!r}", hint="actions: " + ", ".join(ACTIONS))
        unknown = set(args) - {"action", "to", "from", "role", "body", "urgent"}
        if unknown:
            raise BadFrame(f"unknown field(s): {', '.join(sorted(unknown))}")
        if caller.name == PERSON or caller.name not in self._peer_cache:
            raise Forbidden(f"{caller.name or 'an observer'!r} cannot pair: pairs are between agents")
        effects: list[Effect] = []
        if action != "status":
            getattr(self, f"_pair_{action}")(caller.name, args, now, effects)
        effects.append(Respond(reply_to, self._pair_status(caller.name)))
        return effects

    # -- the actions -------------------------------------------------------------
    def _pair_invite(self, me: str, args: dict[str, Any], now: float, effects: list[Effect]) -> None:
        to = self._pair_peer(args.get("to"), me)
        role = _role(args.get("role", Role.GRIP.value))
        self._not_paired(me, "you are")
        self._not_paired(to, f"{to!r} is")
        invites = self._peer_cache[to].meta.get("pair_invites") or {}
        if me in invites:
            raise PairState(
                f"you have already invited {to!r}", hint="wait for an answer, or unpair to withdraw it"
            )
        note = _note(args.get("body"), required=False)
        text = (
            f"{me} invites you to pair: {me} as {role.value} ({_DOES[role]}), "
            f"you as {role.other.value} ({_DOES[role.other]})."
        )
        msg_id = self._pair_message(
            effects, me, to, PairKind.INVITE, f"{text}\n{note}" if note else text, now, request=True
        )
        self._pair_meta(
            to, "pair_invites", {**invites, me: {"role": role.other.value, "at": now, "id": msg_id}}, now
        )
        self._audit(now, "pair_invited", {"from": me, "to": to, "role": role.value})
        self._event(effects, now, "pair_invited", **{"from": me, "to": to, "role": role.value})

    def _pair_accept(self, me: str, args: dict[str, Any], now: float, effects: list[Effect]) -> None:
        inviter, invite = self._invite_to(me, args.get("from"))
        self._not_paired(me, "you are")
        self._not_paired(inviter, f"{inviter!r} is")
        mine = Role(invite["role"])
        self._drop_invite(me, inviter, now)
        self._pair_meta(me, "pair", {"with": inviter, "role": mine.value, "since": now}, now)
        self._pair_meta(inviter, "pair", {"with": me, "role": mine.other.value, "since": now}, now)
        self._pair_message(
            effects,
            me,
            inviter,
            PairKind.ACCEPT,
            f"{me} accepted: you are the {mine.other.value}, {me} is the {mine.value}.",
            now,
            re=invite.get("id"),
        )
        grip, guard = (me, inviter) if mine is Role.GRIP else (inviter, me)
        self._audit(now, "pair_started", {"grip": grip, "guard": guard})
        self._event(effects, now, "pair_started", grip=grip, guard=guard)

    def _pair_decline(self, me: str, args: dict[str, Any], now: float, effects: list[Effect]) -> None:
        inviter, invite = self._invite_to(me, args.get("from"))
        self._drop_invite(me, inviter, now)
        reason = _note(args.get("body"), required=False)
        text = f"{me} declined to pair." + (f"\n{reason}" if reason else "")
        self._pair_message(
            effects, me, inviter, PairKind.DECLINE, text, now, re=invite.get("id"), declined=True
        )
        self._audit(now, "pair_declined", {"from": inviter, "to": me})
        self._event(effects, now, "pair_declined", **{"from": inviter, "to": me})

    def _pair_steer(self, me: str, args: dict[str, Any], now: float, effects: list[Effect]) -> None:
        grip = self._partner(me, Role.GUARD, "steers")
        self._pair_message(effects, me, grip, PairKind.STEER, _note(args.get("body")), now)
        self._audit(now, "pair_steered", {"guard": me, "grip": grip})
        self._event(effects, now, "pair_steered", guard=me, grip=grip)

    def _pair_intercept(self, me: str, args: dict[str, Any], now: float, effects: list[Effect]) -> None:
        grip = self._partner(me, Role.GUARD, "intercepts")
        reason = _note(args.get("body"))
        urgent = args.get("urgent", False)
        if not isinstance(urgent, bool):
            raise BadFrame("'urgent' must be true or false")
        if urgent:  # the reason reaches the grip's model through its hook, past any hold
            screen_field("reason", reason)
        kind = PairKind.STOP if urgent else PairKind.INTERCEPT
        msg_id = self._pair_message(effects, me, grip, kind, reason, now, urgent=urgent)
        if urgent:
            block = {"by": me, "reason": reason, "id": msg_id, "at": now}
            self._pair_meta(grip, "pair_block", block, now)
            effects.append(Mark(grip, block))
        self._audit(now, "pair_intercepted", {"guard": me, "grip": grip, "urgent": urgent})
        self._event(effects, now, "pair_intercepted", guard=me, grip=grip, urgent=urgent)

    def _pair_ack(self, me: str, args: dict[str, Any], now: float, effects: list[Effect]) -> None:
        block = self._peer_cache[me].meta.get("pair_block")
        if block is None:
            raise PairState("nothing to acknowledge: your guard has not stopped you")
        self._pair_meta(me, "pair_block", None, now)
        effects.append(Mark(me, None))
        note = _note(args.get("body"), required=False)
        text = f"{me} acknowledged your stop and goes on." + (f"\n{note}" if note else "")
        self._pair_message(effects, me, block["by"], PairKind.ACK, text, now, re=block.get("id"))
        self._audit(now, "pair_acked", {"grip": me, "guard": block["by"]})
        self._event(effects, now, "pair_acked", grip=me, guard=block["by"])

    def _pair_swap(self, me: str, args: dict[str, Any], now: float, effects: list[Effect]) -> None:
        guard = self._partner(me, Role.GRIP, "hands over")
        if self._peer_cache[me].meta.get("pair_block"):
            raise PairState("acknowledge your guard's stop first", hint="mesh pair ack")
        since = now
        self._pair_meta(me, "pair", {"with": guard, "role": Role.GUARD.value, "since": since}, now)
        self._pair_meta(guard, "pair", {"with": me, "role": Role.GRIP.value, "since": since}, now)
        self._pair_message(
            effects, me, guard, PairKind.SWAP, f"{me} handed over: you are the grip now, {me} guards.", now
        )
        self._audit(now, "pair_swapped", {"grip": guard, "guard": me})
        self._event(effects, now, "pair_swapped", grip=guard, guard=me)

    def _pair_unpair(self, me: str, args: dict[str, Any], now: float, effects: list[Effect]) -> None:
        mine = self._peer_cache[me].meta.get("pair")
        withdrawn = [
            to for to, peer in self._peer_cache.items() if me in (peer.meta.get("pair_invites") or {})
        ]
        if mine is None and not withdrawn:
            raise PairState("you are not paired and have no invitation out")
        for to in withdrawn:
            self._drop_invite(to, me, now)
        if mine is not None:
            self._end_pair(me, "unpaired", now, effects, tell=True)

    # -- ending ------------------------------------------------------------------
    def _end_pair(self, name: str, why: str, now: float, effects: list[Effect], *, tell: bool) -> None:
        """End ``name``'s pair (and lift any block on either member)."""
        mine = self._peer_cache[name].meta.get("pair")
        if mine is None:
            return
        other = mine["with"]
        for member in (name, other):
            if member not in self._peer_cache:
                continue
            if self._peer_cache[member].meta.get("pair_block"):
                effects.append(Mark(member, None))
            self._pair_meta(member, "pair_block", None, now)
            self._pair_meta(member, "pair", None, now)
        if tell and other in self._peer_cache:
            text = (
                f"{name} left the mesh: the pair has ended."
                if why == "left"
                else f"{name} ended the pair: you work on your own again."
            )
            self._pair_message(effects, name, other, PairKind.UNPAIR, text, now, quiet=True)
        self._audit(now, "pair_ended", {"members": [name, other], "why": why})
        self._event(effects, now, "pair_ended", members=[name, other], why=why)

    def _pairs_on_leave(self, name: str, now: float, effects: list[Effect]) -> None:
        """A member left gracefully (or is forgotten): its pair ends, its invitations lapse."""
        if name not in self._peer_cache:
            return
        self._end_pair(name, "left", now, effects, tell=True)
        for to, peer in list(self._peer_cache.items()):
            if name in (peer.meta.get("pair_invites") or {}):
                self._drop_invite(to, name, now)

    def blocks(self) -> dict[str, dict[str, Any]]:
        """Every grip's standing block, to mark when the broker starts."""
        return {n: p.meta["pair_block"] for n, p in self._peer_cache.items() if p.meta.get("pair_block")}

    # -- helpers -----------------------------------------------------------------
    def _pair_status(self, name: str) -> dict[str, Any]:
        meta = self._peer_cache[name].meta
        out: dict[str, Any] = {"name": name, "pair": meta.get("pair"), "block": meta.get("pair_block")}
        out["invites"] = meta.get("pair_invites") or {}
        out["invited"] = sorted(
            to for to, p in self._peer_cache.items() if name in (p.meta.get("pair_invites") or {})
        )
        return out

    def _pair_peer(self, value: Any, me: str) -> str:
        try:
            name = check_name(value, what="'to'")
        except MeshError as exc:
            raise BadFrame(exc.message) from None
        if is_person_name(name):
            raise Forbidden("the person is not an agent to pair with")
        if name == me:
            raise BadFrame("you cannot pair with yourself")
        if name not in self._peer_cache or name in self._remote:
            raise UnknownPeer(
                f"no peer named {name!r} on this broker", hint="pairs are between peers of one broker"
            )
        return name

    def _not_paired(self, name: str, who: str) -> None:
        mine = self._peer_cache[name].meta.get("pair")
        if mine is not None:
            raise PairState(f"{who} already paired with {mine['with']!r}", hint="unpair first")

    def _partner(self, me: str, role: Role, does: str) -> str:
        mine = self._peer_cache[me].meta.get("pair")
        if mine is None:
            raise PairState("you are not paired", hint="mesh pair NAME invites a peer")
        if mine["role"] != role.value:
            raise WrongRole(f"only the {role.value} {does}; you are the {mine['role']}")
        return str(mine["with"])

    def _invite_to(self, me: str, inviter: Any) -> tuple[str, dict[str, Any]]:
        invites = self._peer_cache[me].meta.get("pair_invites") or {}
        if inviter is None:
            if len(invites) != 1:
                raise PairState(
                    "no invitation to answer" if not invites else "several invitations: name the inviter",
                    hint="invitations from: " + (", ".join(sorted(invites)) or "nobody"),
                )
            inviter = next(iter(invites))
        if inviter not in invites:
            raise PairState(f"no invitation from {inviter!r}")
        return str(inviter), invites[inviter]

    def _drop_invite(self, invitee: str, inviter: str, now: float) -> None:
        invites = dict(self._peer_cache[invitee].meta.get("pair_invites") or {})
        invites.pop(inviter, None)
        self._pair_meta(invitee, "pair_invites", invites or None, now)

    def _pair_meta(self, name: str, key: str, value: Any, now: float) -> None:
        peer = self._peer_cache[name]
        if value is None:
            if key not in peer.meta:
                return
            del peer.meta[key]
        else:
            peer.meta[key] = value
        peer.last_seen = self._last_seen.get(name, peer.last_seen)
        self.store.put_peer(peer)

    def _pair_message(
        self,
        effects: list[Effect],
        sender: str,
        to: str,
        kind: PairKind,
        body: str,
        now: float,
        *,
        request: bool = False,
        re: str | None = None,
        urgent: bool = False,
        declined: bool = False,
        quiet: bool = False,
    ) -> str:
        """Send ``body`` from ``sender`` to ``to`` as a pair message of ``kind``; raises
        the reason when it is refused (the other's inbound policy, a rate limit),
        unless ``quiet``. Returns its id."""
        args: dict[str, Any] = {
            "id": new_id(),
            "to": to,
            "body": body,
            "priority": "urgent" if urgent else "normal",
        }
        if request:
            args["kind"] = "request"
        if re is not None:
            args.update(re=re, status="DECLINED" if declined else "PASS")
        answers = self.send(Caller(sender), args, None, now, pair=kind.value)
        for effect in answers:
            if isinstance(effect, Respond) and effect.reply_to is None and effect.result:
                if effect.result.get("status") in ("refused", "denied") and not quiet:
                    reason = effect.result.get("reason") or {}
                    raise Forbidden(
                        f"{to!r} does not take this message: {reason.get('message', effect.result['status'])}"
                    )
        effects.extend(e for e in answers if not (isinstance(e, Respond) and e.reply_to is None))
        return str(args["id"])


_DOES = {Role.GRIP: "builds: edits, runs tools, commits", Role.GUARD: "reviews and steers"}


def _role(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise BadFrame(f"'role' must be grip or guard; got {value!r}") from None


def _note(value: Any, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise BadFrame("'body' must be a non-empty string" if required else "'body' must be a string")
    if len(value) > MAX_NOTE:
        raise BadFrame(f"'body' is {len(value)} characters; the limit is {MAX_NOTE}")
    return value.strip()
