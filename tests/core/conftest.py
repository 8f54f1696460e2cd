"""A broker core on a memory store with a hand-driven clock, and short ways to talk to it.

`Mesh` plays the server: it hands out connection ids and reply ids, keeps each
peer's secret, and lets a test read what the core answered or pushed.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import pytest

from sessionmesh.config import Settings
from sessionmesh.core.broker import Caller, Core
from sessionmesh.core.effects import Effect, Push, Respond
from sessionmesh.envelope import PERSON
from sessionmesh.errors import MeshError
from sessionmesh.storage.memory import MemoryStore

T0 = 1_000_000.0


def base_settings(**changes: Any) -> Settings:
    # The core never touches the home directory; it only needs a value.
    return Settings(home="/nonexistent/sessionmesh-core-tests").with_(**changes)


@dataclass
class Call:
    """What one command produced: its effects and the reply id it was given."""

    effects: list[Effect]
    reply_to: Hashable

    @property
    def responses(self) -> list[Respond]:
        return responses(self.effects, self.reply_to)

    @property
    def answered(self) -> bool:
        return bool(self.responses)

    @property
    def result(self) -> dict[str, Any]:
        return result_of(self.effects, self.reply_to)

    @property
    def error(self) -> MeshError:
        return error_of(self.effects, self.reply_to)


def responses(effects: list[Effect], reply_to: Hashable) -> list[Respond]:
    return [e for e in effects if isinstance(e, Respond) and e.reply_to == reply_to]


def result_of(effects: list[Effect], reply_to: Hashable) -> dict[str, Any]:
    found = responses(effects, reply_to)
    assert len(found) == 1, f"expected one answer to {reply_to!r}, got {found!r}"
    assert found[0].error is None, f"expected a result, got error {found[0].error!r}"
    assert found[0].result is not None
    return found[0].result


def error_of(effects: list[Effect], reply_to: Hashable) -> MeshError:
    found = responses(effects, reply_to)
    assert len(found) == 1, f"expected one answer to {reply_to!r}, got {found!r}"
    assert found[0].error is not None, f"expected an error, got result {found[0].result!r}"
    return found[0].error


class Mesh:
    def __init__(self, settings: Settings, store: MemoryStore | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else MemoryStore()
        self.core = Core(self.store, settings)
        self.now = T0
        self.secrets: dict[str, str] = {}
        self.conns: dict[str, int] = {}
        self.last_connect_effects: list[Effect] = []  # the backlog and events of the last join
        self._next_conn = 0
        self._next_reply = 0

    # -- identity ---------------------------------------------------------------
    def register(self, name: str, **meta: Any) -> str:
        """A peer that has joined once (it has a secret) but holds no connection."""
        got, issued = self.core.authenticate(name, None, self.now, meta=meta or None)
        assert issued is not None
        self.secrets[got] = issued
        return got

    def register_person(self) -> str:
        """``human``, as the broker registers it once a person session is shown."""
        got, issued = self.core.authenticate(PERSON, None, self.now, person=True)
        assert issued is None  # the person's name has no secret to give out
        return got

    def join(self, name: str, *, events: bool = False, unique: bool = False, **meta: Any) -> str:
        """Connect ``name`` (with its saved secret, if any); returns the name granted."""
        welcome, effects = self.connect(name, events=events, unique=unique, meta=meta or None)
        return welcome["name"]

    def connect(self, name: str, secret: Any = ..., **kw: Any) -> tuple[dict[str, Any], list[Effect]]:
        self._next_conn += 1
        conn = self._next_conn
        if secret is ...:
            secret = self.secrets.get(name)
        welcome, effects = self.core.connect(conn, name, secret, self.now, **kw)
        if welcome["secret"] is not None:
            self.secrets[welcome["name"]] = welcome["secret"]
        self.conns[welcome["name"]] = conn
        self.last_connect_effects = effects
        return welcome, effects

    def leave(self, name: str, *, graceful: bool = True) -> list[Effect]:
        return self.core.disconnect(self.conns.pop(name), self.now, graceful=graceful)

    # -- commands ---------------------------------------------------------------
    def call(self, name: str, op: Any, args: Any = ..., **kw: Any) -> Call:
        """Give ``op`` with ``args`` (or, when left out, the keyword arguments)."""
        self._next_reply += 1
        reply_to = f"r{self._next_reply}"
        if args is ...:
            args = kw
        caller = Caller(name, self.conns.get(name))
        return Call(self.core.handle(caller, op, args, reply_to, self.now), reply_to)

    def ok(self, name: str, op: str, **args: Any) -> dict[str, Any]:
        return self.call(name, op, **args).result

    def fails(self, name: str, op: Any, args: Any = ..., **kw: Any) -> MeshError:
        return self.call(name, op, args, **kw).error

    def send(self, sender: str, to: Any, body: Any = "hi", **args: Any) -> dict[str, Any]:
        """A send that must be answered at once (recipient offline, fan-out, refusal)."""
        return self.ok(sender, "send", to=to, body=body, **args)

    def ack(self, name: str, ids: list[str], state: str = "delivered") -> list[Effect]:
        return self.call(name, "ack", ids=ids, state=state).effects

    # -- time -------------------------------------------------------------------
    def advance(self, seconds: float) -> list[Effect]:
        self.now += seconds
        return self.core.tick(self.now)

    def responses_after_tick(self, seconds: float, reply_to: Hashable) -> list[Respond]:
        return responses(self.advance(seconds), reply_to)

    # -- what came out ------------------------------------------------------------
    def frames(self, effects: list[Effect], name: str, op: str | None = None) -> list[dict[str, Any]]:
        conn = self.conns[name]
        return [
            e.frame
            for e in effects
            if isinstance(e, Push) and e.conn == conn and (op is None or e.frame["op"] == op)
        ]

    def delivered(self, effects: list[Effect], name: str) -> list[dict[str, Any]]:
        """Envelopes (wire form) pushed to ``name`` in these effects, in order."""
        return [m for f in self.frames(effects, name, "deliver") for m in f["messages"]]

    def receipt_states(self, effects: list[Effect], name: str, msg_id: str) -> list[str]:
        return [f["state"] for f in self.frames(effects, name, "receipt") if f["id"] == msg_id]

    def track(self, name: str, msg_id: str) -> dict[str, str]:
        return self.ok(name, "track", id=msg_id)["receipts"]

    def audit(self, event: str | None = None) -> list[dict[str, Any]]:
        entries = self.store.read_audit(after=0, limit=100_000)
        return [e for e in entries if event is None or e["event"] == event]

    def snapshot(self) -> dict[str, Any]:
        """Everything the memory store holds, to prove a call changed nothing."""
        return copy.deepcopy(vars(self.store))


@pytest.fixture
def mesh() -> Mesh:
    return Mesh(base_settings())


@pytest.fixture
def make_mesh() -> Any:
    def make(**changes: Any) -> Mesh:
        return Mesh(base_settings(**changes))

    return make
