"""Waking an idle agent: what it is doing (``activity``), and the long wait for mail
that a program's waiter makes (``wake``), with bursts and a wake budget.

- ``activity``: an agent's hooks say when a turn starts (``working``), when it waits
  for its user at a dialog (``waiting``: a permission prompt) and when it ends
  (``idle``). Peers see it; a waiting ``wake`` only answers while the agent is idle,
  since a working agent gets new mail from its hooks inside the turn, and a line
  typed into a waiting agent would answer its user's dialog.
- ``wake``: blocks until the caller has unread mail it was not already shown
  (``exclude``), then answers with it. A burst is one wake: after the first such
  message the wake waits ``wake_window`` seconds for more (an urgent message ends the
  wait at once). A budget of ``wake_budget`` wakes per ``wake_budget_window`` seconds
  per agent keeps a chatty peer from burning the agent's tokens: over it, mail waits
  for the agent's next turn or the budget's next slot. Each answered wake is counted.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..envelope import Priority, ReceiptState, check_id
from ..errors import BadFrame, Timeout, UnknownPeer
from .args import float_arg
from .effects import Effect, Respond
from .state import Caller, CoreState

MAX_EXCLUDE = 2000
WAKE_BATCH = 200  # messages handed over by one wake at most


class Activity(enum.StrEnum):
    WORKING = "working"
    IDLE = "idle"
    WAITING = "waiting"  # for its user (a permission dialog): working, but not on its own


@dataclass(slots=True)
class Waker:
    reply_to: Hashable
    name: str
    exclude: frozenset[str]
    deadline: float
    first_seen: float | None = None  # when the oldest mail this wake would take was stored


class WakesMixin(CoreState):
    """Activity per agent, and the waits that wake it."""

    def activity(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        try:
            state = Activity(args.get("state"))
        except ValueError:
            raise BadFrame("'state' must be 'working', 'idle' or 'waiting'") from None
        unknown = set(args) - {"state"}
        if unknown:
            raise BadFrame(f"unknown field(s): {', '.join(sorted(unknown))}", hint="fields: state")
        effects: list[Effect] = []
        previous = self._activity.get(caller.name)
        self._activity[caller.name] = (state, now)
        if previous is None or previous[0] is not state:
            self._event(effects, now, "peer_activity", name=caller.name, activity=state.value)
        effects.append(Respond(reply_to, {"name": caller.name, "activity": state.value, "since": now}))
        if state is Activity.IDLE:
            effects.extend(self._check_wakers(caller.name, now))
            for waiter in self._idle_waiters.pop(caller.name, []):
                effects.append(Respond(waiter[0], {"name": caller.name, "activity": "idle", "since": now}))
        return effects

    def await_idle(
        self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float
    ) -> list[Effect]:
        """Answer when peer ``name`` is idle: at once if its hooks (or its bridge) last
        said so, else when they next do; `Timeout` after ``timeout`` seconds."""
        unknown = set(args) - {"name", "timeout"}
        if unknown:
            raise BadFrame(f"unknown field(s): {', '.join(sorted(unknown))}", hint="fields: name, timeout")
        name = args.get("name")
        if not isinstance(name, str) or name not in self._peer_cache:
            raise UnknownPeer(f"no peer named {name!r}", hint="see 'mesh peers'")
        timeout = float_arg(args, "timeout", 600.0, 0.0, 3600.0)
        seen = self._activity.get(name)
        if seen is not None and seen[0] is Activity.IDLE:
            return [Respond(reply_to, {"name": name, "activity": "idle", "since": seen[1]})]
        self._idle_waiters.setdefault(name, []).append((reply_to, now + timeout))
        return []

    def _end_idle_waits(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for name, waiting in list(self._idle_waiters.items()):
            for reply_to, deadline in waiting:
                if deadline <= now:
                    error = Timeout(
                        f"{name!r} did not go idle in time", hint="its hooks say when a turn ends"
                    )
                    effects.append(Respond(reply_to, error=error))
            kept = [w for w in waiting if w[1] > now]
            if kept:
                self._idle_waiters[name] = kept
            else:
                del self._idle_waiters[name]
        return effects

    def activity_of(self, name: str) -> tuple[str, float] | None:
        """``(working|idle, since)``, or None when no hook has said."""
        seen = self._activity.get(name)
        return (seen[0].value, seen[1]) if seen else None

    def wake(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        timeout = float_arg(args, "timeout", 600.0, 0.0, 3600.0)
        raw = args.get("exclude") or []
        if not isinstance(raw, list) or len(raw) > MAX_EXCLUDE:
            raise BadFrame(f"'exclude' must be a list of at most {MAX_EXCLUDE} message ids")
        exclude = frozenset(check_id(i, what="exclude id") for i in raw)
        unknown = set(args) - {"timeout", "exclude"}
        if unknown:
            raise BadFrame(f"unknown field(s): {', '.join(sorted(unknown))}", hint="fields: timeout, exclude")
        self._wakers.setdefault(caller.name, []).append(Waker(reply_to, caller.name, exclude, now + timeout))
        return self._check_wakers(caller.name, now)

    def wakes_of(self, name: str) -> int:
        """How many times ``name`` was woken since the broker started."""
        return self._wake_counts.get(name, 0)

    def _mail_for(self, names: list[str], now: float) -> list[Effect]:
        """New mail was stored for ``names``: their waits look again."""
        effects: list[Effect] = []
        for name in names:
            if name in self._wakers:
                effects.extend(self._check_wakers(name, now))
        return effects

    def _check_wakers(self, name: str, now: float) -> list[Effect]:
        waiting = self._wakers.get(name)
        if not waiting:
            return []
        seen = self._activity.get(name)
        if seen is not None and seen[0] is not Activity.IDLE:
            return []  # its hooks bring the mail into the turn (or its user has it at a dialog)
        effects: list[Effect] = []
        unread = self.store.unread(name, WAKE_BATCH + MAX_EXCLUDE)
        keep: list[Waker] = []
        woke = False
        for waker in waiting:
            mail = [env for env in unread if env.id not in waker.exclude][:WAKE_BATCH]
            if not mail:
                waker.first_seen = None
                keep.append(waker)
                continue
            # the burst began with the oldest message it would take (mail that waited
            # through a turn wakes at once when the turn ends)
            waker.first_seen = min(env.ts for env in mail)
            urgent = any(env.priority is Priority.URGENT for env in mail)
            if (not urgent and now - waker.first_seen < self.settings.wake_window) or not self._budget_allows(
                name, now, spent=woke
            ):
                keep.append(waker)
                continue
            woke = True
            for env in mail:
                self._advance(effects, env.id, env.sender, name, ReceiptState.DELIVERED, now)
            effects.append(Respond(waker.reply_to, {"messages": [env.to_wire() for env in mail]}))
        if woke:
            self._wake_times.setdefault(name, deque()).append(now)
            self._wake_counts[name] = self._wake_counts.get(name, 0) + 1
            self.counters["wakes"] += 1
            self._audit(now, "peer_woken", {"name": name})
            self._event(effects, now, "peer_woken", name=name)
        self._keep_wakers(name, keep)
        return effects

    def _budget_allows(self, name: str, now: float, *, spent: bool) -> bool:
        """Whether ``name`` may be woken now (``spent``: this check already woke it,
        and the other waits of the same burst share that wake)."""
        if spent:
            return True
        times = self._wake_times.get(name)
        if times is None:
            return True
        while times and times[0] <= now - self.settings.wake_budget_window:
            times.popleft()
        return len(times) < self.settings.wake_budget

    def _end_wakes(self, now: float) -> list[Effect]:
        """Waits that timed out answer empty; a burst's window or the budget may have
        passed for the others."""
        effects: list[Effect] = []
        for name, waiting in list(self._wakers.items()):
            due = [w for w in waiting if w.deadline <= now]
            for waker in due:
                effects.append(Respond(waker.reply_to, {"messages": [], "timed_out": True}))
            self._keep_wakers(name, [w for w in waiting if w.deadline > now])
            if name in self._wakers and any(w.first_seen is not None for w in self._wakers[name]):
                effects.extend(self._check_wakers(name, now))
        return effects

    def release_wakes(self) -> list[Effect]:
        """The broker is stopping: every wait answers now, empty (``stopping``), so no
        long request holds the shutdown up; a waiter asks the next broker again."""
        effects: list[Effect] = [
            Respond(w.reply_to, {"messages": [], "timed_out": True, "stopping": True})
            for waiting in self._wakers.values()
            for w in waiting
        ]
        self._wakers.clear()
        stopping = Timeout("the broker is stopping", hint="ask again")
        effects.extend(Respond(w[0], error=stopping) for ws in self._idle_waiters.values() for w in ws)
        self._idle_waiters.clear()
        return effects

    def _keep_wakers(self, name: str, wakers: list[Waker]) -> None:
        if wakers:
            self._wakers[name] = wakers
        else:
            self._wakers.pop(name, None)

    def _forget_wakers(self, reply_to: Hashable) -> None:
        for name, waiting in list(self._wakers.items()):
            self._keep_wakers(name, [w for w in waiting if w.reply_to != reply_to])
