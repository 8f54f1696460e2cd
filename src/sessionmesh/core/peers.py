"""Peers: names held by secrets, live connections, presence and metadata."""

from __future__ import annotations

import difflib
import enum
import hashlib
import hmac
import secrets
from collections.abc import Hashable
from typing import Any

from ..envelope import PERSON, ReceiptState, check_name, is_person_name
from ..errors import BadFrame, BadSecret, NameTaken, NotApprover, ReservedName, UnknownPeer
from ..storage import PeerRecord
from .effects import Effect, Respond
from .policy import EVERYONE, Policy, check_own, configured, parse_rule, stricter
from .safety import screen_field
from .state import Caller, CoreState, LiveConn

META_KEYS = ("machine", "cwd", "git_root", "client", "role", "status", "refuse")
# a peer's own business, never shown to others
PRIVATE_META = frozenset({"refuse", "policy", "pair_block", "pair_invites"})


class Presence(enum.StrEnum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class PeersMixin(CoreState):
    """Who is on the mesh, holding which name, online or not."""

    def online_names(self) -> list[str]:
        return sorted(n for n in self._online if n not in self._remote)

    def authenticate(
        self,
        name: Any,
        secret: Any,
        now: float,
        *,
        meta: dict[str, Any] | None = None,
        register: bool = True,
        person: bool = False,
    ) -> tuple[str, str | None]:
        """Check ``name``'s secret; register the name if new (and ``register``).

        Returns the name and, for a first join, the secret just issued (else None).
        Raises `InvalidName`, `BadSecret` when the name is held by another secret, or
        `UnknownPeer` for a new name when ``register`` is off. The person's names
        (`is_person_name`) are held by no secret: the caller has checked a person
        session (``person``), and without one they are `ReservedName`.
        """
        check_name(name, claim=True)
        if is_person_name(name) or person:
            return self._person(name, now, meta, person=person)
        peer = self._peer_cache.get(name)
        if peer is None and not register:
            raise UnknownPeer(f"{name!r} has not joined yet", hint="join first: POST /v1/join")
        if peer is None and "#" in name and not self._secret_ok_for_new_variant(name, secret):
            base = name.split("#", 1)[0]
            raise BadSecret(
                f"{name!r} would read as a second session of {base!r}, and only {base!r} may open one",
                hint=f"connect with {base!r}'s secret, or pick a name of your own",
            )
        if peer is None:
            issued = secrets.token_urlsafe(24)
            peer = PeerRecord(name, hash_secret(issued), self._clean_meta(meta, name), now, now)
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

    def _person(
        self, name: str, now: float, meta: dict[str, Any] | None, *, person: bool
    ) -> tuple[str, str | None]:
        if not person or name != PERSON:
            raise ReservedName(
                f"{name!r} is the person's name" if person else f"{name!r} is reserved for the person",
                hint="the person acts as 'human' with their passphrase; pick a name of your own",
            )
        peer = self._peer_cache.get(name)
        if peer is None:  # held by no secret: the hash of one nobody was given
            peer = PeerRecord(
                name, hash_secret(secrets.token_urlsafe(24)), self._clean_meta(meta, PERSON), now, now
            )
            self.store.put_peer(peer)
            self._peer_cache[name] = peer
            self._audit(now, "peer_registered", {"name": name})
        elif meta:
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
        person: bool = False,
    ) -> tuple[dict[str, Any], list[Effect]]:
        """A live connection claims a name, or attaches to it. Returns the welcome and
        the backlog pushes.

        One agent, several attachments: a connection that proves a name's secret
        while another holds it attaches too (an agent's MCP server, its bridge, ``mesh
        watch``); the agent is online while any is attached, each gets the pushes and
        its own backlog, and leaving changes presence only when the last one goes.
        ``unique`` asks for a session of its own instead: the holder of a live name's
        secret gets ``name#2``, ``name#3``...; anyone else asking for a held name gets a
        different name (``name-2``), never one that reads as the holder's session. A
        new ``name#N`` is registered only with ``name``'s secret. Raises `BadSecret`
        for a name held by another secret (or a ``name#N`` without ``name``'s),
        `InvalidName`, `NameTaken` for a name of a peer of another machine.
        """
        check_name(name, claim=True)
        if person or is_person_name(name):
            unique = False  # the person's connections attach to 'human'; nobody else gets a variant
        if unique and name in self._peer_cache and not self._secret_ok(name, secret):
            name = self._free_base(name)  # someone else's name: a different name, not name#2
            secret = None
        elif unique and name in self._online:
            variant = self._free_variant(name)  # the same agent's session of its own: name#2
            self._variant_grants[variant] = name
            name, secret = variant, None
        elif name in self._remote:
            raise NameTaken(f"{name!r} is a peer of another machine", hint="pick another name")
        name, issued = self.authenticate(name, secret, now, meta=meta, person=person)
        self._conns[conn] = LiveConn(name, events, now)
        if events:
            self._watchers.add(conn)
        effects: list[Effect] = []
        attached = self._attachments.setdefault(name, [])
        attached.append(conn)
        self._touch(name, now)
        if len(attached) == 1:  # the agent comes online; more attachments change nothing
            self._online[name] = conn
            self._audit(now, "peer_joined", {"name": name})
            meta = {k: v for k, v in self._peer_cache[name].meta.items() if k not in PRIVATE_META}
            self._event(effects, now, "peer_joined", name=name, presence=Presence.ONLINE.value, meta=meta)
        else:
            self._audit(now, "peer_attached", {"name": name, "attachments": len(attached)})
        welcome = {"name": name, "secret": issued, "server_time": now, "attachments": len(attached)}
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
        attached = self._attachments.get(name, [])
        if conn in attached:
            attached.remove(conn)
        self._touch(name, now)
        for msg_id, awaiting in list(self._awaiters.items()):
            self._keep_awaiters(msg_id, [a for a in awaiting if a.conn != conn])
        if attached:  # the agent stays online through its other attachments
            self._online[name] = attached[0]
            self._audit(now, "peer_detached", {"name": name, "attachments": len(attached)})
            return effects
        self._attachments.pop(name, None)
        if self._online.get(name) == conn:
            del self._online[name]
        self._persist_last_seen(name)
        for pending in list(self._pending.values()):
            if name in pending.waiting:
                pending.waiting.discard(name)
                effects.extend(self._maybe_finish(pending))
        if graceful:
            self._pairs_on_leave(name, now, effects)
            for lease in self.store.leases():
                if lease.holder == name:
                    self.store.delete_lease(lease.resource, name)
                    self._audit(
                        now, "lock_released", {"resource": lease.resource, "holder": name, "why": "leave"}
                    )
                    self._event(effects, now, "lock_released", resource=lease.resource, holder=name)
        self._audit(now, "peer_left", {"name": name, "graceful": graceful})
        self._event(effects, now, "peer_left", name=name, graceful=graceful)
        return effects

    def presence(self, name: str, now: float) -> Presence:
        remote = self._remote_presence(name, now)
        if remote is not None:
            return remote
        if name in self._online:
            return Presence.ONLINE
        seen = self._last_seen.get(name) or (
            self._peer_cache[name].last_seen if name in self._peer_cache else 0
        )
        return Presence.AWAY if now - seen < self.settings.away_window else Presence.OFFLINE

    def peers(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        depths = self.store.queue_depths()
        out = []
        for name in sorted(self._peer_cache):
            peer = self._peer_cache[name]
            out.append(
                {
                    "name": name,
                    "presence": self.presence(name, now).value,
                    "meta": {k: v for k, v in peer.meta.items() if k not in PRIVATE_META},
                    "connected_since": self._since(name),
                    "last_seen": self._last_seen.get(name, peer.last_seen),
                    "unread": depths.get(name, 0),
                    **self._activity_fields(name),
                }
            )
            if caller.name == PERSON:  # the person sees each peer's inbound policy and stop; peers never do
                out[-1]["policy"] = self._policy_summary(name)
                if peer.meta.get("pair_block"):
                    out[-1]["stopped_by"] = peer.meta["pair_block"]["by"]
        return [Respond(reply_to, {"peers": out})]

    def _policy_summary(self, name: str) -> dict[str, Any]:
        """What holds for mail to ``name`` from any sender, and the rules by sender."""
        own_rules = self._peer_cache[name].meta.get("policy") or {}
        default = stricter(
            configured(self.settings.inbound, name, ""), Policy(own_rules.get("default", "accept"))
        )
        return {"default": default.value, "from": dict(own_rules.get("from") or {})}

    def _activity_fields(self, name: str) -> dict[str, Any]:
        """``activity`` (working / idle, as its hooks last said) and ``wakes``."""
        seen = self._activity.get(name)
        fields: dict[str, Any] = {"wakes": self._wake_counts.get(name, 0)}
        if seen is not None:
            fields["activity"], fields["activity_since"] = seen[0].value, seen[1]
        return fields

    def set_status(
        self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float
    ) -> list[Effect]:
        meta = {k: v for k, v in args.items() if k in META_KEYS}
        unknown = set(args) - set(META_KEYS)
        if unknown:
            raise BadFrame(
                f"unknown field(s): {', '.join(sorted(unknown))}", hint="fields: " + ", ".join(META_KEYS)
            )
        peer = self._peer_cache[caller.name]
        self._update_meta(peer, meta, now)
        effects: list[Effect] = []
        self._audit(now, "peer_updated", {"name": caller.name, "fields": sorted(meta)})
        self._event(
            effects,
            now,
            "peer_updated",
            name=caller.name,
            meta={k: v for k, v in peer.meta.items() if k not in PRIVATE_META},
        )
        effects.append(Respond(reply_to, {"name": caller.name, "meta": peer.meta}))
        return effects

    def set_policy(
        self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float
    ) -> list[Effect]:
        """The caller's own inbound policy (core/policy.py): ``default`` for every
        sender and ``from`` per sender; answers it and the person's rules that also
        apply (the stricter of the two wins, so a peer can only add to them)."""
        unknown = set(args) - {"default", "from"}
        if unknown:
            raise BadFrame(f"unknown field(s): {', '.join(sorted(unknown))}", hint="fields: default, from")
        peer = self._peer_cache[caller.name]
        effects: list[Effect] = []
        if args:
            try:
                mine = check_own(args, peer.meta.get("policy"))
            except ValueError as exc:
                raise BadFrame(str(exc)) from None
            peer.meta["policy"] = mine
            peer.last_seen = self._last_seen.get(peer.name, now)
            self.store.put_peer(peer)
            self._audit(now, "policy_set", {"name": caller.name, "policy": mine})
            # to the person's dashboard only: a policy is private
            self._observe(
                effects, now, "peer_policy", name=caller.name, policy=self._policy_summary(caller.name)
            )
        applying = [rule for rule in self.settings.inbound if parse_rule(rule)[0] in (EVERYONE, caller.name)]
        mine = peer.meta.get("policy") or {"default": "accept", "from": {}}
        effects.append(Respond(reply_to, {"name": caller.name, "policy": mine, "configured": applying}))
        return effects

    def forget_peer(
        self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float
    ) -> list[Effect]:
        """The person removes an offline peer: its name (a later join registers it anew,
        with a new secret), its subscriptions and leases, and its unread and held mail,
        each copy ending ``rejected`` (the senders are told). ``dry_run`` only counts."""
        if caller.name != PERSON:
            raise NotApprover(
                f"{caller.name!r} cannot forget a peer", hint="a person decides: mesh forget NAME"
            )
        name = check_name(args.get("name"), claim=True)
        dry_run = args.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise BadFrame("'dry_run' must be true or false")
        if name not in self._peer_cache or name in self._remote:
            raise UnknownPeer(f"no peer named {name!r} on this machine", hint=self._suggest(name))
        if name == PERSON:
            raise ReservedName("the person cannot be forgotten")
        if name in self._online:
            raise NameTaken(f"{name!r} is online", hint="it must leave first (or stop its agent)")
        mail = self.store.unread(name, 1_000_000)
        held = [
            r.msg_id
            for r in self.store.receipts_in_state(ReceiptState.HELD, 1_000_000)
            if r.recipient == name
        ]
        leases = [lease for lease in self.store.leases() if lease.holder == name]
        counts = {"name": name, "unread": len(mail), "held": len(held), "leases": len(leases)}
        if dry_run:
            return [Respond(reply_to, {**counts, "forgotten": False})]
        effects: list[Effect] = []
        for msg_id in [env.id for env in mail] + held:
            self._advance(effects, msg_id, None, name, ReceiptState.REJECTED, now)
        for lease in leases:
            self.store.delete_lease(lease.resource, name)
            self._event(effects, now, "lock_released", resource=lease.resource, holder=name)
        self._pairs_on_leave(name, now, effects)
        self.store.delete_peer(name)
        del self._peer_cache[name]
        self._last_seen.pop(name, None)
        self._audit(now, "peer_forgotten", {**counts, "by": caller.name})
        self._event(effects, now, "peer_forgotten", name=name)
        effects.append(Respond(reply_to, {**counts, "forgotten": True}))
        return effects

    def _clean_meta(self, meta: dict[str, Any] | None, name: str) -> dict[str, Any]:
        """The known keys of ``meta``, checked; only the person may say it is one."""
        clean: dict[str, Any] = {}
        for key, value in (meta or {}).items():
            if key not in META_KEYS:
                continue
            if name != PERSON and key in ("client", "role") and value in ("human", "person"):
                raise ReservedName(
                    f"{key} {value!r} is the person's", hint="say what kind of agent you are instead"
                )
            if key == "refuse":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise BadFrame("'refuse' must be a list of names")
            elif value is not None and (not isinstance(value, str) or len(value) > 2000):
                raise BadFrame(f"'{key}' must be a string of at most 2000 chars")
            elif value is not None:
                screen_field(key, value)
            clean[key] = value
        return clean

    def _update_meta(self, peer: PeerRecord, meta: dict[str, Any], now: float) -> None:
        peer.meta.update(self._clean_meta(meta, peer.name))
        peer.last_seen = self._last_seen.get(peer.name, now)
        self.store.put_peer(peer)

    def _touch(self, name: str, now: float) -> None:
        if name:  # an observer (no name) leaves no trace
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

    def _free_base(self, name: str) -> str:
        """A free name that does not read as ``name``'s session: ``name-2``, ``name-3``…"""
        base = name.split("#", 1)[0][:60]
        for n in range(2, 10000):
            candidate = f"{base}-{n}"
            if candidate not in self._online and candidate not in self._peer_cache:
                return candidate
        raise NameTaken(f"no free name like {base!r}")

    def _secret_ok_for_new_variant(self, name: str, secret: Any) -> bool:
        """``name#N`` is registered only by its base's holder: with the base's secret, or
        as the variant the broker just picked for it (`connect` with ``unique``)."""
        base = name.split("#", 1)[0]
        if self._variant_grants.pop(name, None) == base:
            return True
        return base in self._peer_cache and self._secret_ok(base, secret)

    def _secret_ok(self, name: str, secret: Any) -> bool:
        peer = self._peer_cache.get(name)
        return peer is None or (
            isinstance(secret, str) and hmac.compare_digest(peer.secret_hash, hash_secret(secret))
        )

    def _suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._peer_cache), n=3, cutoff=0.6)
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "? see 'mesh peers'"
        return "see 'mesh peers' for the names on this mesh"

    def flush_presence(self) -> None:
        for name in list(self._last_seen):
            self._persist_last_seen(name)
