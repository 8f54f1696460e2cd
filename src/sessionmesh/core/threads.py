"""Threads and awaits: turns and states of a conversation, and waiting for a reply."""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..envelope import Envelope, Kind, ReceiptState, check_id
from ..errors import BadFrame, Forbidden, Timeout, UnknownMessage
from ..storage import ThreadRecord
from .args import bool_arg, float_arg, int_arg
from .effects import Effect, Respond
from .state import Caller, CoreState

MAX_EXCLUDED_REPLIES = 1000


class ThreadState(enum.StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    CLOSED = "closed"


@dataclass(slots=True)
class Awaiter:
    reply_to: Hashable
    name: str
    deadline: float
    conn: int | None


class ThreadsMixin(CoreState):
    """Thread turns and states; awaits for replies."""

    def _thread_turn(self, env: Envelope, now: float) -> None:
        """Count a turn. A message that starts a thread writes no row: the row is made
        (from that first message) when the thread gets its second turn."""
        assert env.thread is not None
        if env.thread == env.id:
            return
        thread = self.store.get_thread(env.thread) or self._implicit_thread(env.thread)
        if thread is None:
            return
        thread.turns += 1
        thread.updated_at = now
        for name in (env.sender, *env.to.names):
            if name not in thread.participants:
                thread.participants.append(name)
        if env.kind is Kind.REPLY and env.status is not None:
            thread.state = ThreadState.ANSWERED.value
        elif thread.state == ThreadState.CLOSED.value:
            thread.state = ThreadState.OPEN.value
        self.store.put_thread(thread)

    def _implicit_thread(self, thread_id: str) -> ThreadRecord | None:
        """The one-message thread a message starts, before anyone replies."""
        root = self.store.get_message(thread_id)
        if root is None or root.thread != root.id:
            return None
        participants = [root.sender, *(n for n in root.to.names if n != root.sender)]
        return ThreadRecord(root.id, ThreadState.OPEN.value, 1, participants, root.ts, root.ts)

    def thread(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        thread_id = check_id(args.get("id"))
        thread = self.store.get_thread(thread_id) or self._implicit_thread(thread_id)
        if thread is None:
            env = self.store.get_message(thread_id)
            if env is None or env.thread is None:
                raise UnknownMessage(f"no thread or message with id {thread_id}")
            thread = self.store.get_thread(env.thread) or self._implicit_thread(env.thread)
            if thread is None:
                raise UnknownMessage(f"no thread with id {env.thread}")
        limit = int_arg(args, "limit", 200, 1, 10000)
        messages = self.store.thread_messages(thread.id, limit)
        if caller.name not in thread.participants and not any(
            self.store.get_receipt(m.id, caller.name) for m in self.store.thread_messages(thread.id, 100_000)
        ):
            raise Forbidden(f"{caller.name!r} is not in thread {thread.id}")
        effects: list[Effect] = []
        if bool_arg(args, "close", False):
            thread.state = ThreadState.CLOSED.value
            thread.updated_at = now
            self.store.put_thread(thread)
            self._audit(now, "thread_closed", {"thread": thread.id, "by": caller.name})
            self._event(effects, now, "thread_closed", thread=thread.id, by=caller.name)
        effects.append(Respond(reply_to, {**thread.to_wire(), "messages": [m.to_wire() for m in messages]}))
        return effects

    def await_reply(
        self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float
    ) -> list[Effect]:
        """Answer with the first reply to ``id`` addressed to the caller and not in
        ``exclude`` (the replies it already has: a request to several answers several
        times), or `Timeout`."""
        msg_id = check_id(args.get("id"))
        timeout = float_arg(args, "timeout", 30.0, 0.0, 3600.0)
        raw = args.get("exclude") or []
        if not isinstance(raw, list) or len(raw) > MAX_EXCLUDED_REPLIES:
            raise BadFrame(f"'exclude' must be a list of at most {MAX_EXCLUDED_REPLIES} reply ids")
        exclude = {check_id(i, what="exclude id") for i in raw}
        env = self.store.get_message(msg_id)
        if env is None:
            raise UnknownMessage(f"no message with id {msg_id}")
        if caller.name != env.sender and self.store.get_receipt(msg_id, caller.name) is None:
            # as `track` answers: another pair's message is none of the caller's business
            raise Forbidden(f"message {msg_id} is neither from nor to {caller.name!r}")
        for reply in self.store.replies_to(msg_id):
            if reply.id in exclude:
                continue
            receipt = self.store.get_receipt(reply.id, caller.name)
            if receipt is not None and receipt.state is not ReceiptState.HELD and not receipt.state.final:
                effects: list[Effect] = []
                self._advance(effects, reply.id, reply.sender, caller.name, ReceiptState.READ, now)
                effects.append(Respond(reply_to, {"reply": reply.to_wire()}))
                return effects
        self._awaiters[msg_id].append(Awaiter(reply_to, caller.name, now + timeout, caller.conn))
        return []

    def _wake_awaiters(self, effects: list[Effect], reply: Envelope, now: float) -> set[str]:
        """Answer the awaits this reply ends; returns the names that now have it (read)."""
        waiting = self._awaiters.get(reply.re or "")
        if not waiting:
            return set()
        keep = []
        woken: set[str] = set()
        for awaiter in waiting:
            if awaiter.name in reply.to.names:
                self._advance(effects, reply.id, reply.sender, awaiter.name, ReceiptState.READ, now)
                effects.append(Respond(awaiter.reply_to, {"reply": reply.to_wire()}))
                woken.add(awaiter.name)
            else:
                keep.append(awaiter)
        self._keep_awaiters(reply.re or "", keep)
        return woken

    def _end_awaits(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for msg_id, waiting in list(self._awaiters.items()):
            for awaiter in (a for a in waiting if a.deadline <= now):
                effects.append(
                    Respond(
                        awaiter.reply_to,
                        error=Timeout(
                            f"no reply to {msg_id} yet", hint=f"try again later: mesh await {msg_id}"
                        ),
                    )
                )
            self._keep_awaiters(msg_id, [a for a in waiting if a.deadline > now])
        return effects

    def _keep_awaiters(self, msg_id: str, awaiters: list[Awaiter]) -> None:
        if awaiters:
            self._awaiters[msg_id] = awaiters
        else:
            self._awaiters.pop(msg_id, None)

    def forget(self, reply_to: Hashable) -> None:
        """The caller behind ``reply_to`` is gone: drop its awaits and wake waits."""
        for msg_id, awaiting in list(self._awaiters.items()):
            self._keep_awaiters(msg_id, [a for a in awaiting if a.reply_to != reply_to])
        self._forget_wakers(reply_to)
        for name, waiting in list(self._idle_waiters.items()):
            kept = [w for w in waiting if w[0] != reply_to]
            if kept:
                self._idle_waiters[name] = kept
            else:
                del self._idle_waiters[name]
