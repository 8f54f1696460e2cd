"""``mesh demo``: three scripted agents on an embedded broker in a temporary home.

A builder asks a reviewer for a review and gets a PASS, writes to a docs agent that
is offline (queued, delivered when it joins), and the two contend for a lock. Every
status and receipt is printed as it happens; nothing is left running afterwards.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from typing import Any

from .client.aio import AsyncClient
from .client.session import SendResult
from .config import load
from .render import paint
from .server import Runner

STEP_TIMEOUT = 10.0


class Narrator:
    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output

    def say(self, text: str, **data: Any) -> None:
        if self.json_output:
            print(json.dumps({"say": text, **data}, ensure_ascii=False), flush=True)
        else:
            print(text, flush=True)

    def step(self, title: str) -> None:
        if not self.json_output:
            print(f"\n== {title}", flush=True)

    def sent(self, who: str, to: str, what: str, result: SendResult) -> None:
        self.say(
            f"  {who} → {to}: {what!r}  ⇒ {paint(result.status.value)}",
            event="send",
            sender=who,
            to=to,
            status=result.status.value,
            id=result.id,
        )

    async def receipts(self, peer: AsyncClient, msg_id: str, until: str) -> None:
        """Print the receipts of ``msg_id`` until it reaches state ``until``."""
        while True:
            receipt = await peer.next_receipt(timeout=STEP_TIMEOUT)
            if receipt["id"] != msg_id:
                continue
            self.say(
                f"    receipt: {receipt['recipient']} {paint(receipt['state'])}",
                event="receipt",
                id=msg_id,
                recipient=receipt["recipient"],
                state=receipt["state"],
            )
            if receipt["state"] == until:
                return


async def _demo(n: Narrator, home: str) -> None:
    settings = load(env={}, overrides={"home": home, "port": 0, "autostart": False})
    runner = Runner(settings)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(runner.serve(ready=ready))
    url = await asyncio.wait_for(ready, STEP_TIMEOUT)
    settings = settings.with_(url=url)
    n.say(f"broker listening on {url} (temporary home {home})", event="broker", url=url)
    try:
        await _script(n, settings)
    finally:
        runner.request_stop()
        await serving
        n.say("broker stopped; temporary home removed", event="done")


async def _script(n: Narrator, settings: Any) -> None:
    # 'docs' joined once earlier and is offline now: known, so messages queue for it.
    async with AsyncClient(settings, "docs", role="writer"):
        pass

    async with (
        AsyncClient(settings, "builder", role="grip") as builder,
        AsyncClient(settings, "reviewer", role="guard") as reviewer,
    ):
        n.step("who is here")
        for p in await builder.peers():
            n.say(
                f"  {p['name']:<9} {paint(p['presence'])}  role {p['meta'].get('role', '-')}",
                event="peer",
                name=p["name"],
                presence=p["presence"],
            )

        n.step("a request and its reply")
        ask = await builder.ask("reviewer", "Please review src/app.py: is the retry loop safe?")
        n.sent("builder", "reviewer", "Please review src/app.py…", ask)
        request = await reviewer.recv(timeout=STEP_TIMEOUT)
        await n.receipts(builder, ask.id, until="read")
        reply = await reviewer.reply(
            request, "Looks right: backoff is capped, ids are reused.", status="PASS"
        )
        n.sent("reviewer", "builder", "PASS: looks right", reply)
        await n.receipts(builder, ask.id, until="answered")
        answer = await builder.recv(timeout=STEP_TIMEOUT)
        n.say(
            f"  builder got the reply [{paint(answer.status.value if answer.status else '-')}]: {answer.body}",
            event="reply",
            status=answer.status.value if answer.status else None,
        )
        thread = await builder.thread(ask.id)
        n.say(
            f"  thread {thread['id'][:13]}… is {paint(thread['state'])} after {thread['turns']} turns",
            event="thread",
            state=thread["state"],
            turns=thread["turns"],
        )

        n.step("a message to a peer that is offline")
        note = await builder.send("docs", "The retry loop changed; please update docs/retries.md.")
        n.sent("builder", "docs", "please update docs/retries.md", note)
        async with AsyncClient(settings, "docs", role="writer") as docs:
            n.say("  docs connects…", event="join", name="docs")
            got = await docs.recv(timeout=STEP_TIMEOUT)
            n.say(f"  docs got: {got.body!r}", event="recv", id=got.id)
            await n.receipts(builder, note.id, until="read")
        unknown = await builder.send("reveiwer", "typo in the name")
        n.sent("builder", "reveiwer", "typo in the name", unknown)
        hint = next(iter(unknown.reasons.values()), {}).get("hint", "")
        n.say(f"    ({hint})", event="hint")

        n.step("two agents contend for a lock")
        await _lock(n, builder, "src/app.py", "fixing the retry loop")
        await _lock(n, reviewer, "src/*.py", "reformatting")
        await builder.unlock("src/app.py")
        n.say("  builder released src/app.py", event="unlock")
        await _lock(n, reviewer, "src/*.py", "reformatting")


async def _lock(n: Narrator, peer: AsyncClient, resource: str, reason: str) -> None:
    result = await peer.lock(resource, reason=reason, ttl=60)
    if result["outcome"] == "conflict":
        lease = result["lease"]
        n.say(
            f"  {peer.name} lock {resource}: {paint('conflict')}, held by {lease['holder']} "
            f"({lease['reason']}) for {lease['expires_in']:.0f}s more",
            event="lock",
            name=peer.name,
            resource=resource,
            outcome="conflict",
            holder=lease["holder"],
        )
    else:
        n.say(
            f"  {peer.name} lock {resource}: {paint(result['outcome'])}",
            event="lock",
            name=peer.name,
            resource=resource,
            outcome=result["outcome"],
        )


def run_demo(*, json_output: bool = False) -> int:
    home = tempfile.mkdtemp(prefix="mesh-demo-")
    try:
        asyncio.run(_demo(Narrator(json_output), home))
    except Exception as exc:  # the demo reports any failure plainly and exits non-zero
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0
