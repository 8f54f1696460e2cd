"""Delivery through a real broker process: restarts, SIGKILL, ordering, fan-out.

Every test runs on both backends: SQLite, and NATS (a real nats-server)."""

from __future__ import annotations

import asyncio

import pytest

from sessionmesh.client.aio import AsyncClient
from sessionmesh.envelope import SendStatus
from tests.conftest import visit


@pytest.fixture(params=["sqlite", "nats"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _collect(peer: AsyncClient, into: list[str], want: set[str], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not want <= set(into):
            env = await peer.recv()
            into.append(env.id)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_sigkill_mid_stream_loses_nothing_acknowledged_and_duplicates_nothing(
    broker_proc, backend, synchronous
):
    if backend == "nats" and synchronous == "FULL":
        pytest.skip("sqlite_synchronous is the SQLite store's: the NATS store is as durable as JetStream")
    if synchronous != "NORMAL":
        broker_proc.stop()
        broker_proc.env["MESH_SQLITE_SYNCHRONOUS"] = synchronous
        broker_proc.start()
    settings = broker_proc.settings(url=None)
    async with AsyncClient(settings, "bob") as bob, AsyncClient(settings, "alice") as alice:
        answered: dict[str, SendStatus] = {}
        killed = asyncio.Event()

        async def stream() -> None:
            for i in range(400):
                result = await alice.send("bob", {"n": i})
                answered[result.id] = result.status
                if i == 150:
                    broker_proc.kill()
                    killed.set()
                    broker_proc.start()

        received: list[str] = []
        await asyncio.wait_for(stream(), 60)
        assert killed.is_set()
        acked = {i for i, s in answered.items() if s in (SendStatus.RECEIVED, SendStatus.QUEUED)}
        assert len(acked) == 400  # every send was answered once the broker was back
        await _collect(bob, received, acked, timeout=30)
        assert acked <= set(received)
        assert len(received) == len(set(received)), "the application saw a message twice"
        assert alice.reconnects >= 1 and bob.reconnects >= 1


async def test_reply_reaches_sender_after_broker_restart(broker_proc):
    settings = broker_proc.settings(url=None)
    async with AsyncClient(settings, "bob"):
        pass  # bob is known, now offline
    async with AsyncClient(settings, "alice") as alice:
        ask = await alice.ask("bob", "status of the build?")
        assert ask.status is SendStatus.QUEUED
        broker_proc.stop()
        broker_proc.start()
        async with AsyncClient(settings, "bob") as bob:
            request = await bob.recv(timeout=10)
            assert request.id == ask.id
            reply = await bob.reply(request, "green", status="PASS")
            assert reply.ok
        got = await alice.recv(timeout=15)
        assert (got.re, got.body, got.status.value) == (ask.id, "green", "PASS")
        track = await alice.track(ask.id)
        assert track["receipts"] == {"bob": "answered"}


async def test_client_reclaims_its_name_and_presence_after_restart(broker_proc):
    settings = broker_proc.settings(url=None)
    async with AsyncClient(settings, "alice") as alice, AsyncClient(settings, "watcher") as watcher:
        broker_proc.stop()
        broker_proc.start()
        peers = await asyncio.wait_for(watcher.peers(), 15)
        assert alice.name == "alice"
        online = {p["name"] for p in peers if p["presence"] == "online"}
        assert "watcher" in online
        async with asyncio.timeout(15):
            while "alice" not in online:
                online = {p["name"] for p in await watcher.peers() if p["presence"] == "online"}
        assert alice.reconnects == 1


async def test_per_pair_order_is_fifo_over_the_wire_and_backlog(broker):
    await visit(broker.settings, "bob")
    async with AsyncClient(broker.settings, "alice") as alice:
        for i in range(100):  # queued while bob is offline
            await alice.send("bob", i)
        async with AsyncClient(broker.settings, "bob") as bob:
            sends = [asyncio.create_task(alice.send("bob", 100 + i)) for i in range(100)]
            await asyncio.gather(*sends)
            bodies = [(await bob.recv(timeout=5)).body for _ in range(200)]
    assert bodies == list(range(200))


async def test_urgent_messages_come_ahead_of_normal_ones_in_the_backlog(broker):
    await visit(broker.settings, "bob")
    async with AsyncClient(broker.settings, "alice") as alice:
        await alice.send("bob", "first normal")
        await alice.send("bob", "stop now", priority="urgent")
        async with AsyncClient(broker.settings, "bob") as bob:
            assert (await bob.recv(timeout=5)).body == "stop now"
            assert (await bob.recv(timeout=5)).body == "first normal"


async def test_broadcast_reaches_every_other_peer_and_never_the_sender(broker):
    await visit(broker.settings, "offline-one")
    async with (
        AsyncClient(broker.settings, "alice") as alice,
        AsyncClient(broker.settings, "bob") as bob,
        AsyncClient(broker.settings, "carol") as carol,
    ):
        result = await alice.send("broadcast", "standup in 5")
        assert result.status is SendStatus.SENT and result.recipients == 3
        assert (await bob.recv(timeout=5)).body == "standup in 5"
        assert (await carol.recv(timeout=5)).body == "standup in 5"
        assert alice.inbox.empty()
        track = await alice.track(result.id)
        assert track["receipts"]["offline-one"] == "queued"


async def test_topic_subscribers_get_new_messages_and_catch_up_from_the_start(broker):
    async with AsyncClient(broker.settings, "alice") as alice, AsyncClient(broker.settings, "bob") as bob:
        await bob.subscribe("#ci")
        first = await alice.send("#ci", "build 1 green")
        assert first.status is SendStatus.SENT and first.recipients == 1
        assert (await bob.recv(timeout=5)).body == "build 1 green"
        async with AsyncClient(broker.settings, "carol") as carol:
            caught = await carol.subscribe("#ci", from_start=True)
            assert caught["catch_up"] == 1
            assert (await carol.recv(timeout=5)).body == "build 1 green"


async def test_resend_with_the_same_id_is_stored_and_delivered_once(broker):
    async with AsyncClient(broker.settings, "alice") as alice, AsyncClient(broker.settings, "bob") as bob:
        first = await alice.send("bob", "once", id="01a20000-0000-7000-8000-000000000001")
        again = await alice.send("bob", "once", id="01a20000-0000-7000-8000-000000000001")
        assert first.status is SendStatus.RECEIVED
        assert again.status is SendStatus.RECEIVED and again.duplicate
        assert (await bob.recv(timeout=5)).body == "once"
        follow = await alice.send("bob", "next")
        assert (await bob.recv(timeout=5)).id == follow.id


async def test_message_expires_when_its_ttl_passes_undelivered(broker):
    await visit(broker.settings, "bob")
    async with AsyncClient(broker.settings, "alice") as alice:
        result = await alice.send("bob", "only briefly relevant", ttl=0.3)
        receipt = await alice.next_receipt(timeout=5)
        assert receipt["id"] == result.id and receipt["state"] == "expired"
    async with AsyncClient(broker.settings, "bob") as bob:
        assert await bob.peers()  # connected and served, but nothing waits
        assert bob.inbox.empty()
        assert broker.runner.store.queue_depths() == {}


async def test_a_message_read_just_before_close_is_not_delivered_again(broker):
    await visit(broker.settings, "bob")
    async with AsyncClient(broker.settings, "alice") as alice:
        sent = await alice.send("bob", "read me once")
        async with AsyncClient(broker.settings, "bob") as bob:
            assert (await bob.recv(timeout=5)).id == sent.id
        # closed straight after recv(): the read ack went out before 'bye'
        assert (await alice.track(sent.id))["receipts"] == {"bob": "read"}
        async with AsyncClient(broker.settings, "bob") as bob:
            assert await bob.peers()
            assert bob.inbox.empty()


async def test_a_backlog_larger_than_the_window_drains_in_order_with_live_sends_behind_it(broker):
    from sessionmesh.core.broker import BACKLOG_WINDOW

    total = BACKLOG_WINDOW * 2 + 100
    await visit(broker.settings, "bob")
    async with AsyncClient(broker.settings, "alice") as alice:
        await asyncio.gather(*(alice.send("bob", i) for i in range(total)))
        async with AsyncClient(broker.settings, "bob") as bob:
            late = await alice.send("bob", "late")
            assert late.ok
            bodies = [(await bob.recv(timeout=10)).body for _ in range(total + 1)]
    assert bodies == list(range(total)) + ["late"]
