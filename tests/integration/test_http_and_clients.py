"""The HTTP JSON API as curl would use it, and the sync client over the async one."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from sessionmesh.client.aio import AsyncClient
from sessionmesh.client.sync import SyncClient
from sessionmesh.errors import Timeout


async def _post(session, broker, path, body, name=None, secret=None):
    headers = {"Authorization": f"Bearer {broker.runner.token}"}
    if name:
        headers["X-Mesh-Name"] = name
    if secret:
        headers["X-Mesh-Secret"] = secret
    async with session.post(broker.settings.url + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_http_join_send_inbox_ack_and_track_without_a_websocket(broker):
    async with aiohttp.ClientSession() as s:
        status, alice = await _post(s, broker, "/v1/join", {"name": "alice"})
        assert status == 200 and alice["name"] == "alice" and len(alice["secret"]) > 20
        _, bob = await _post(s, broker, "/v1/join", {"name": "bob", "meta": {"role": "reviewer"}})
        status, sent = await _post(
            s, broker, "/v1/send", {"to": "bob", "body": {"file": "a.py"}}, "alice", alice["secret"]
        )
        assert status == 200 and sent["status"] == "queued"
        _, inbox = await _post(s, broker, "/v1/inbox", {}, "bob", bob["secret"])
        assert [(m["from"], m["body"]) for m in inbox["messages"]] == [("alice", {"file": "a.py"})]
        _, track = await _post(s, broker, "/v1/track", {"id": sent["id"]}, "alice", alice["secret"])
        assert track["receipts"] == {"bob": "delivered"}
        _, acked = await _post(
            s, broker, "/v1/ack", {"ids": [sent["id"]], "state": "read"}, "bob", bob["secret"]
        )
        assert acked == {"acked": 1}
        _, track = await _post(s, broker, "/v1/track", {"id": sent["id"]}, "alice", alice["secret"])
        assert track["receipts"] == {"bob": "read"}
        status, err = await _post(s, broker, "/v1/send", {"to": "bob", "body": "x"}, "alice", "wrong")
        assert status == 403 and err["error"]["code"] == "bad_secret"
        status, err = await _post(s, broker, "/v1/nope", {}, "alice", alice["secret"])
        assert status == 400 and err["error"]["code"] == "unknown_op"
        async with s.post(
            broker.settings.url + "/v1/peers",
            data=b"[1,2",
            headers={
                "Authorization": f"Bearer {broker.runner.token}",
                "X-Mesh-Name": "alice",
                "X-Mesh-Secret": alice["secret"],
            },
        ) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_frame"


async def test_await_reply_returns_the_reply_or_times_out(broker):
    async with AsyncClient(broker.settings, "alice") as alice, AsyncClient(broker.settings, "bob") as bob:
        ask = await alice.ask("bob", "ready?")
        with pytest.raises(Timeout):
            await alice.await_reply(ask.id, timeout=0.2)
        waiting = asyncio.create_task(alice.await_reply(ask.id, timeout=10))
        request = await bob.recv(timeout=5)
        await bob.reply(request, "yes", status="PASS")
        reply = await asyncio.wait_for(waiting, 10)
        assert (reply.body, reply.status.value, reply.re) == ("yes", "PASS", ask.id)


def test_sync_client_speaks_the_same_api_as_the_async_one(broker_proc):
    settings = broker_proc.settings()
    with SyncClient(settings, "alice") as alice, SyncClient(settings, "bob") as bob:
        result = alice.send("bob", "from a thread")
        assert result.status.value == "received"
        env = bob.recv(timeout=5)
        assert (env.sender, env.body) == ("alice", "from a thread")
        assert {p["name"] for p in alice.peers()} == {"alice", "bob"}
        granted = alice.lock("db-migrations", reason="schema change")
        assert granted["outcome"] == "granted"
        assert bob.lock("db-migrations")["outcome"] == "conflict"
    with SyncClient(settings, "carol") as carol:
        # alice left gracefully: her lease went with her
        assert carol.lock("db-migrations")["outcome"] == "granted"


async def test_an_http_await_whose_client_hung_up_does_not_swallow_the_reply(broker):
    async with aiohttp.ClientSession() as s:
        _, alice = await _post(s, broker, "/v1/join", {"name": "alice"})
        _, bob = await _post(s, broker, "/v1/join", {"name": "bob"})
        _, ask = await _post(
            s, broker, "/v1/send", {"to": "bob", "body": "?", "kind": "request"}, "alice", alice["secret"]
        )
    async with aiohttp.ClientSession() as s:  # a client that gives up on its await
        waiting = asyncio.create_task(
            _post(s, broker, "/v1/await", {"id": ask["id"], "timeout": 30}, "alice", alice["secret"])
        )
        async with asyncio.timeout(5):
            while not broker.runner.core._awaiters:
                await asyncio.sleep(0.01)  # sleep-ok: bounded poll for the await to register
        waiting.cancel()
    async with asyncio.timeout(5):
        while broker.runner.core._awaiters:
            await asyncio.sleep(0.01)  # sleep-ok: bounded poll for the broker to notice
    async with aiohttp.ClientSession() as s:
        _, reply = await _post(s, broker, "/v1/send", {"re": ask["id"], "body": "!"}, "bob", bob["secret"])
        assert reply["status"] == "queued"
        _, inbox = await _post(s, broker, "/v1/inbox", {}, "alice", alice["secret"])
        assert [m["id"] for m in inbox["messages"]] == [reply["id"]]
