"""Topics: many-to-many channels with durable per-subscriber copies and catch-up."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..envelope import ReceiptState
from .args import bool_arg, topic_arg
from .effects import Effect, Push, Respond
from .state import Caller, CoreState


class TopicsMixin(CoreState):
    """Subscriptions to `#topics`."""

    def subscribe(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        topic = topic_arg(args)
        from_start = bool_arg(args, "from_start", False)
        self.store.subscribe(topic, caller.name, catch_up=from_start)
        effects: list[Effect] = []
        caught_up = 0
        if from_start:
            backlog = [
                e
                for e in self.store.topic_messages(topic)
                if e.sender != caller.name
                and self.store.get_receipt(e.id, caller.name) is None
                and e.expires_at > now
                and not self._refuses(caller.name, e.sender, None)
            ]
            for env in backlog:
                self.store.add_receipts(env, [caller.name])
                self._remember(env.id, caller.name, ReceiptState.QUEUED)
            caught_up = len(backlog)
            if backlog and caller.conn is not None:
                effects.append(
                    Push(caller.conn, {"op": "deliver", "messages": [e.to_wire() for e in backlog]})
                )
        self._audit(now, "subscribed", {"topic": topic, "name": caller.name, "catch_up": caught_up})
        effects.append(Respond(reply_to, {"topic": topic, "catch_up": caught_up}))
        return effects

    def unsubscribe(
        self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float
    ) -> list[Effect]:
        topic = topic_arg(args)
        self.store.unsubscribe(topic, caller.name)
        self._audit(now, "unsubscribed", {"topic": topic, "name": caller.name})
        return [Respond(reply_to, {"topic": topic})]
