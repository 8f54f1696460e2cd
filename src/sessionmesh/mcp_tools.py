"""What each tool of `mesh mcp` does: one broker call through the agent's
`AsyncClient`, its answer as the plain text an agent reads, and a `MeshError` as a
tool error whose one line says what to do next (`mcp.py` describes the tools to
the SDK and serves them)."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.server.fastmcp.exceptions import ToolError

from . import injection, shown
from .client.aio import AsyncClient
from .envelope import end_states
from .errors import MeshError

T = TypeVar("T")


class MeshTools:
    """The tools, over one live peer. Each public coroutine is one MCP tool."""

    def __init__(self, peer: AsyncClient, *, ready: asyncio.Task[None]) -> None:
        self.peer = peer
        self.ready = ready  # the connection to the broker, made beside the server

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run a broker call once connected; a `MeshError` becomes a one-line tool error."""
        try:
            await asyncio.shield(self.ready)
            return await fn()
        except MeshError as exc:
            raise ToolError(f"{exc.code}: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")) from None

    async def _closest(self, name: str) -> str:
        """'did you mean …? call list_peers' for a name the broker did not know."""
        with contextlib.suppress(MeshError):
            names = [p["name"] for p in await self.peer.peers()]
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            if close:
                return "did you mean " + " or ".join(repr(c) for c in close) + "? call list_peers"
        return "call list_peers to see who is on the mesh"

    async def list_peers(self) -> str:
        peers = await self.call(self.peer.peers)
        lines = []
        for p in peers:
            meta = p.get("meta") or {}
            extras = [f"{k}={meta[k]}" for k in ("client", "role", "machine", "cwd") if meta.get(k)]
            status = f' status="{meta["status"]}"' if meta.get("status") else ""
            you = " (you)" if p["name"] == self.peer.name else ""
            busy = ""
            if p.get("activity"):
                busy = f", {p['activity']} for {_duration(time.time() - p['activity_since'])}"
            lines.append(f"- {p['name']}{you}: {p['presence']}{busy}{status} {' '.join(extras)}".rstrip())
        return "\n".join(lines) or "No peers yet."

    async def send(
        self,
        to: str,
        body: str,
        *,
        urgent: bool,
        kind: str = "message",
        paths: list[str] | None = None,
        ack_required: bool = False,
    ) -> str:
        targets: str | list[str] = [t.strip() for t in to.split(",")] if "," in to else to.strip()
        result = await self.call(
            lambda: self.peer.send(
                targets,
                body,
                kind=kind,
                priority="urgent" if urgent else "normal",
                paths=paths or None,
                ack_required=ack_required,
            )
        )
        return await self._send_outcome(result.to_wire())

    async def ask_all(self, to: list[str], body: str, timeout: float) -> str:
        """Ask several peers and wait for every reply (or the timeout): each end-state,
        and the worst one."""
        sent = await self.call(lambda: self.peer.send(to, body, kind="request"))
        answer = sent.to_wire()
        if answer["status"] in ("denied", "refused"):
            await self._send_outcome(answer)  # raises the reasons
        waiting = [n for n, st in (answer.get("statuses") or {}).items() if st != "denied"]
        replies: dict[str, dict[str, Any]] = {}
        deadline = asyncio.get_running_loop().time() + timeout
        while set(waiting) - set(replies):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                got = await self.peer.request(
                    "await",
                    answer_timeout=left + 5,
                    id=answer["id"],
                    timeout=left,
                    exclude=[r["id"] for r in replies.values()],
                )
            except MeshError:  # the wait timed out
                break
            replies[got["reply"]["from"]] = got["reply"]
        states, worst = end_states(waiting, replies, "no reply")
        lines = [
            f"- {n}: {states[n]}"
            + (f": {injection.body_text(replies[n].get('body'))}" if n in replies else "")
            for n in sorted(waiting)
        ]
        return f"{len(replies)} of {len(waiting)} answered; worst end-state {worst}.\n" + "\n".join(lines)

    async def _send_outcome(self, answer: dict[str, Any]) -> str:
        status = answer["status"]
        msg_id = answer.get("id")
        if status in ("denied", "refused"):
            # a refusal has one reason; a denial has one per name it could not reach
            reasons = (
                [("", answer["reason"])]
                if answer.get("reason")
                else list((answer.get("reasons") or {}).items())
            )
            parts = []
            for name, reason in reasons:
                if reason.get("code") == "unknown_peer":
                    parts.append(f"{reason['message']}; {await self._closest(name)}")
                else:
                    parts.append(
                        reason.get("message", "") + (f" ({reason['hint']})" if reason.get("hint") else "")
                    )
            raise ToolError(f"{status}: " + "; ".join(parts))
        meaning = {
            "received": "the recipient's live session has it.",
            "queued": "the recipient is offline; it gets the message when it reconnects.",
            "sent": f"fanned out to {answer.get('recipients', 0)} recipient(s).",
            "timeout": "the broker did not answer in time; call send again (same text is fine).",
        }[status]
        text = f"{status} (id {msg_id}): {meaning}"
        if answer.get("held"):
            text += f" It is HELD until a person approves it ({answer['held']['message']})."
        per_name = answer.get("statuses") or {}
        if len(per_name) > 1:
            text += " Per recipient: " + ", ".join(f"{n}={s}" for n, s in sorted(per_name.items())) + "."
        return text + " Follow it with track."

    async def confirm_shown(self) -> None:
        """Ack read what this agent's hooks and pushes showed: a tool call means the
        model went on past it."""
        with shown.ledger(self.peer.settings.home, self.peer.name) as ledger:
            seen = ledger.every_id()
            if seen:
                await self.call(lambda: self.peer.request("ack", ids=sorted(seen), state="read"))
                ledger.forget()

    async def unread(self, limit: int) -> list[dict[str, Any]]:
        """Messages the agent has not seen, by the broker's receipts: pushed copies
        waiting in this client are only a wake-up, since a hook may have shown them.
        What this agent's hooks and pushes showed and nothing confirmed yet is left
        out (a tool call confirms it first: `confirm_shown`)."""
        while not self.peer.inbox.empty():
            self.peer.inbox.get_nowait()
        with shown.ledger(self.peer.settings.home, self.peer.name) as ledger:
            seen = set(ledger.every_id())
        messages = (await self.call(lambda: self.peer.request("inbox", limit=limit)))["messages"]
        return [m for m in messages if m["id"] not in seen]

    async def get_messages(self, limit: int) -> str:
        messages = await self.unread(limit)
        if not messages:
            return "No new messages."
        text = injection.frame_all(messages)
        for wire in messages:
            self.peer.note_read(wire["id"])
        return text

    async def reply(
        self, message_id: str, body: str, status: str | None, evidence: list[dict[str, str]] | None = None
    ) -> str:
        result = await self.call(lambda: self.peer.reply(message_id, body, status=status, evidence=evidence))
        return await self._send_outcome(result.to_wire())

    async def track(self, message_id: str) -> str:
        t = await self.call(lambda: self.peer.track(message_id))
        receipts = ", ".join(f"{n}: {s}" for n, s in sorted(t["receipts"].items())) or "no recipients"
        replies = (
            f" Replies: {', '.join(t['replies'])} (read them with get_messages)." if t["replies"] else ""
        )
        return f"Message {message_id} ({t['status']}): {receipts}.{replies}"

    async def lock(self, resource: str, ttl_seconds: float, reason: str, shared: bool) -> str:
        res = await self.call(
            lambda: self.peer.lock(resource, ttl=ttl_seconds, exclusive=not shared, reason=reason)
        )
        lease = res["lease"]
        if res["outcome"] == "conflict":
            why = f" ({lease['reason']})" if lease.get("reason") else ""
            raise ToolError(
                f"conflict: {lease['holder']} holds {lease['resource']}{why} for {lease['expires_in']:.0f}s more; "
                f"do not edit it: send {lease['holder']} a message, or work on something else and retry"
            )
        return (
            f"{res['outcome']}: you hold {lease['resource']} for {lease['expires_in']:.0f}s. "
            "Call lock again to renew, unlock when done."
        )

    async def unlock(self, resource: str) -> str:
        await self.call(lambda: self.peer.unlock(resource))
        return f"released {resource}"

    async def locks(self) -> str:
        leases = await self.call(self.peer.locks)
        lines = [
            f"- {lease['resource']}: {lease['holder']} ({'exclusive' if lease['exclusive'] else 'shared'}, "
            f"{lease['expires_in']:.0f}s left){' — ' + lease['reason'] if lease.get('reason') else ''}"
            for lease in leases
        ]
        return "\n".join(lines) or "No locks are held."

    async def set_status(self, status: str, role: str | None) -> str:
        fields = {"status": status, **({"role": role} if role else {})}
        await self.call(lambda: self.peer.set_status(**fields))
        return "status updated; peers see it in list_peers"

    async def set_policy(self, policy: str, sender: str | None) -> str:
        args: dict[str, Any] = {"from": {sender: policy}} if sender else {"default": policy}
        result = await self.call(lambda: self.peer.request("policy", **args))
        mine = result["policy"]
        senders = "".join(f"; from {n}: {p}" for n, p in sorted(mine["from"].items()))
        person = "".join(f"; set by the person: {r}" for r in result["configured"])
        return f"your inbound policy: {mine['default']} by default{senders}{person} (the stricter rule wins)"

    async def pair(self, action: str, name: str | None, role: str, text: str | None) -> str:
        from .cli_pair import describe

        args: dict[str, Any] = {"action": action}
        if action == "invite":
            args.update(to=name, role=role)
        elif action in ("accept", "decline") and name:
            args["from"] = name
        elif action == "stop":
            args.update(action="intercept", urgent=True)
        if text:
            args["body"] = text
        result = await self.call(lambda: self.peer.request("pair", **args))
        return "\n".join(describe(result))

    async def await_idle(self, name: str, timeout: float) -> str:
        result = await self.call(
            lambda: self.peer.request("await_idle", answer_timeout=timeout + 5, name=name, timeout=timeout)
        )
        return f"{name} is {result.get('activity') or 'idle'}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
