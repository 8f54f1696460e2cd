"""Receipts: each copy queued → delivered → read → answered (or expired), the
inboxes they make, and catching a connection up on its backlog."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..envelope import RECEIPT_ORDER, Envelope, Priority, ReceiptState, SendStatus, check_id
from ..errors import BadFrame, Forbidden, UnknownMessage
from ..storage import ReceiptUpdate
from .args import int_arg
from .effects import Effect, Push, Respond
from .state import BACKLOG_CHUNK, BACKLOG_WINDOW, RECEIPT_CACHE, Caller, CoreState


class ReceiptsMixin(CoreState):
    """Receipt moves, inboxes, tracking and backlog windows."""

    def ack(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """The caller holds (``delivered``) or has shown its agent (``read``) these ids."""
        ids = args.get("ids")
        if not isinstance(ids, list):
            raise BadFrame("'ids' must be a list of message ids")
        ids = [check_id(i, what="ack id") for i in ids]
        try:
            state = ReceiptState("delivered" if args.get("state") is None else args["state"])
        except ValueError:
            raise BadFrame("'state' must be 'delivered' or 'read'") from None
        # another machine's broker also says how its peer's copy ended (held there
        # and rejected by its person, or expired there)
        ends = (ReceiptState.REJECTED, ReceiptState.EXPIRED) if caller.name in self._remote else ()
        if state not in (ReceiptState.DELIVERED, ReceiptState.READ, *ends):
            raise BadFrame("'state' must be 'delivered' or 'read'")
        effects: list[Effect] = []
        changed = 0
        for msg_id in ids:
            if self._advance(effects, msg_id, None, caller.name, state, now, early=True) is not None:
                changed += 1
        conn = self._conns.get(caller.conn) if caller.conn is not None else None
        if conn is not None and conn.in_flight:
            conn.in_flight.difference_update(ids)
            if conn.catching_up and len(conn.in_flight) <= BACKLOG_WINDOW // 2:
                assert caller.conn is not None
                effects.extend(self._next_page(caller.conn, early=True))
        if reply_to is not None:
            effects.append(Respond(reply_to, {"acked": changed}, early=True))
        return effects

    def _advance(
        self,
        effects: list[Effect],
        msg_id: str,
        sender: str | None,
        recipient: str,
        state: ReceiptState,
        now: float,
        *,
        early: bool = False,
    ) -> str | None:
        """Move one receipt forward (never back); tell the sender. Returns the sender.
        ``early``: a recipient's ack, whose answers need not wait for the commit (`Respond`)."""
        current = self._states.get((msg_id, recipient))
        if current is None:
            receipt = self.store.get_receipt(msg_id, recipient)
            if receipt is None:
                return None
            current = receipt.state
        if RECEIPT_ORDER[current] >= RECEIPT_ORDER[state] or current.final:
            return None
        if current is ReceiptState.HELD and state not in (ReceiptState.QUEUED, ReceiptState.REJECTED):
            return None  # nobody holds a held copy: only a person's decision moves it
        if sender is None:
            sender = self._senders.get(msg_id)
        if sender is None:
            env = self.store.get_message(msg_id)
            if env is None:
                return None
            sender = env.sender
        self.store.update_receipts([ReceiptUpdate(msg_id, recipient, state, now)])
        self._remember(msg_id, recipient, state)
        pending = self._pending.get(msg_id)
        if pending is not None and recipient in pending.waiting:
            pending.waiting.discard(recipient)
            pending.answer["statuses"][recipient] = SendStatus.RECEIVED.value
            effects.extend(self._maybe_finish(pending, early=early))
        self.counters[f"receipts_{state.value}"] += 1
        self._audit(now, "receipt", {"id": msg_id, "recipient": recipient, "state": state.value})
        frame = {"op": "receipt", "id": msg_id, "recipient": recipient, "state": state.value, "ts": now}
        for conn in self._conns_of(sender):
            effects.append(Push(conn, frame, early=early))
        attached = self._attachments.get(recipient, [])
        if len(attached) > 1 and state in (ReceiptState.READ, ReceiptState.ANSWERED):
            # the agent has it: its other attachments must not present it again
            effects.extend(Push(conn, {"op": "taken", "ids": [msg_id]}, early=early) for conn in attached)
        self._event(effects, now, "receipt", id=msg_id, sender=sender, recipient=recipient, state=state.value)
        return sender

    def _remember(self, msg_id: str, recipient: str, state: ReceiptState) -> None:
        key = (msg_id, recipient)
        self._states[key] = state
        self._states.move_to_end(key)
        if len(self._states) > RECEIPT_CACHE:
            self._states.popitem(last=False)

    def inbox(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        """Unread messages for the caller; they become ``delivered`` (ack ``read`` after)."""
        limit = int_arg(args, "limit", 1000, 1, 10000)
        envs = self.store.unread(caller.name, limit)
        effects: list[Effect] = []
        for env in envs:
            self._advance(effects, env.id, env.sender, caller.name, ReceiptState.DELIVERED, now)
        effects.append(Respond(reply_to, {"messages": [e.to_wire() for e in envs]}))
        return effects

    def track(self, caller: Caller, args: dict[str, Any], reply_to: Hashable, now: float) -> list[Effect]:
        msg_id = check_id(args.get("id"))
        env = self.store.get_message(msg_id)
        if env is None:
            raise UnknownMessage(f"no message with id {msg_id}")
        receipts = self.store.receipts(msg_id)
        if caller.name != env.sender and caller.name not in {r.recipient for r in receipts}:
            raise Forbidden(f"message {msg_id} is neither from nor to {caller.name!r}")
        return [
            Respond(
                reply_to,
                {
                    "id": msg_id,
                    "from": env.sender,
                    "to": env.to.to_wire(),
                    "status": self._answer_of(env)["status"],
                    "receipts": {r.recipient: r.state.value for r in receipts},
                    "updated": {r.recipient: r.updated_at for r in receipts},
                    "replies": [r.id for r in self.store.replies_to(msg_id)],
                },
            )
        ]

    def _next_page(self, conn: int, *, early: bool = False) -> list[Effect]:
        """The next window of a connection's backlog, oldest first (urgent ahead);
        ``early`` when an ack opens it, so it still comes before the ack's answer."""
        state = self._conns[conn]
        envs = self.store.unread(state.name, BACKLOG_WINDOW, after=state.cursor)
        if envs:
            last = envs[-1]
            state.cursor = (1 if last.priority is Priority.URGENT else 0, last.seq)
            state.in_flight.update(e.id for e in envs)
        if len(envs) < BACKLOG_WINDOW:
            state.catching_up = False
        return [
            Push(
                conn,
                {"op": "deliver", "messages": [e.to_wire() for e in envs[i : i + BACKLOG_CHUNK]]},
                early=early,
            )
            for i in range(0, len(envs), BACKLOG_CHUNK)
        ]

    def _live(self, conn: int, env: Envelope) -> bool:
        """Whether a new message goes to this connection now, or waits for its page."""
        state = self._conns[conn]
        if not state.catching_up:
            return True
        # an urgent message cannot wait behind normal ones the pages have reached
        return env.priority is Priority.URGENT and state.cursor is not None and state.cursor[0] == 0

    def _expire_copies(self, now: float) -> list[Effect]:
        """Copies still queued past their TTL expire; their senders are told."""
        effects: list[Effect] = []
        for msg_id, recipient, sender in self.store.expire_due(now):
            self._remember(msg_id, recipient, ReceiptState.EXPIRED)
            self.counters["receipts_expired"] += 1
            self._audit(now, "receipt", {"id": msg_id, "recipient": recipient, "state": "expired"})
            for conn in self._conns_of(sender):
                effects.append(
                    Push(
                        conn,
                        {
                            "op": "receipt",
                            "id": msg_id,
                            "recipient": recipient,
                            "state": "expired",
                            "ts": now,
                        },
                    )
                )
            self._event(
                effects, now, "receipt", id=msg_id, sender=sender, recipient=recipient, state="expired"
            )
        return effects
