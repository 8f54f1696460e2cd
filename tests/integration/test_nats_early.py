"""Effects before JetStream has the batch, on a NATS-backed broker (docs/design.md,
"Effects before the commit"), against a nats-server of its own that the tests freeze
(SIGSTOP) so that JetStream's acknowledgements stop while the broker runs on.

- A live delivery goes out before JetStream has the message; an answer that says
  it was taken waits until JetStream has it.
- Frames on one connection keep their order: nothing early overtakes a frame an
  earlier batch still holds.
- Once JetStream lags behind by more than `EARLY_PATIENCE`, deliveries wait too.
- An answer waits for a batch that has not begun yet (one whose early frame went
  down a link begins `LINK_TURNS` turns later).
- A broker killed while JetStream had not stored what it delivered early loses
  nothing: the cache writes it to the state log at the next start, and a cache
  rebuilt from the log holds it once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sessionmesh import outbox
from sessionmesh.backends.nats.store import open_store
from sessionmesh.client.aio import AsyncClient
from sessionmesh.config import load
from sessionmesh.core.effects import Push, Respond
from sessionmesh.envelope import SendStatus
from tests.conftest import nats_overrides, visit
from tests.natsserver import NatsNode


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[NatsNode]:
    """A nats-server for this test alone: freezing it stops no other test."""
    node = NatsNode("own", tmp_path / "nats").start()
    yield node
    node.thaw()
    node.stop()


@pytest.fixture
def backend_overrides(own_node: NatsNode) -> dict[str, Any]:
    return nats_overrides(own_node.url, "desk")


@pytest.fixture
def own_store(own_node: NatsNode, tmp_path: Path) -> Iterator[Any]:
    """A NATS store of its own on `own_node`, for a test that drives an `Outbox`
    directly; the node is thawed before the store closes."""
    settings = load(
        env={}, overrides={"home": str(tmp_path / "home"), "autostart": False, **nats_overrides(own_node.url)}
    )
    store = open_store(settings)
    yield store
    own_node.thaw()
    store.close()


async def _turns(n: int) -> None:
    """Let ``n`` turns of the loop go by."""
    for _ in range(n):
        await asyncio.sleep(0)  # sleep-ok: turns of the loop, not time


async def _nothing_within(coro: Any, seconds: float) -> None:
    """``coro`` does not finish within ``seconds`` (it is cancelled then)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(coro, seconds)


async def test_a_live_delivery_goes_out_before_jetstream_has_it_and_its_answer_waits(broker, own_node):
    async with AsyncClient(broker.settings, "bob") as bob, AsyncClient(broker.settings, "alice") as alice:
        assert (await alice.send("bob", "warm")).status is SendStatus.RECEIVED
        assert (await bob.recv()).body == "warm"
        own_node.freeze()
        sending = asyncio.create_task(alice.send("bob", "while JetStream sleeps"))
        got = await asyncio.wait_for(bob.recv(), 10)  # early: JetStream has not stored it
        assert got.body == "while JetStream sleeps"
        await _nothing_within(asyncio.shield(sending), 1.0)  # `received` is not said yet
        own_node.thaw()
        result = await asyncio.wait_for(sending, 30)
        assert (result.id, result.status) == (got.id, SendStatus.RECEIVED)


async def test_nothing_early_overtakes_a_frame_an_earlier_batch_holds_for_the_same_connection(
    broker, own_node
):
    await visit(broker.settings, "carol")  # known and offline: a send to her is answered `queued`
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            broker.settings.url + "/v1/ws", headers={"Authorization": f"Bearer {broker.runner.token}"}
        )
        await ws.send_str(json.dumps({"op": "hello", "args": {"name": "alice"}}))
        assert json.loads((await ws.receive(timeout=10)).data)["op"] == "welcome"
        async with AsyncClient(broker.settings, "bob") as bob:
            own_node.freeze()
            # alice's `queued` answer waits for JetStream; bob's live delivery to her
            # could go out early, but not before that answer
            await ws.send_str(json.dumps({"op": "send", "rid": 1, "args": {"to": "carol", "body": "later"}}))
            sending = asyncio.create_task(bob.send("alice", "after your answer"))
            await _nothing_within(ws.receive(), 1.0)
            own_node.thaw()
            frames = []
            while len(frames) < 2:
                frame = json.loads((await ws.receive(timeout=30)).data)
                if frame["op"] in ("result", "deliver"):
                    frames.append(frame)
            assert [f["op"] for f in frames] == ["result", "deliver"]
            assert frames[0]["rid"] == 1 and frames[0]["result"]["status"] == "queued"
            assert frames[1]["messages"][0]["body"] == "after your answer"
            msg_id = frames[1]["messages"][0]["id"]
            await ws.send_str(json.dumps({"op": "ack", "args": {"ids": [msg_id], "state": "read"}}))
            assert (await asyncio.wait_for(sending, 30)).status is SendStatus.RECEIVED
        await ws.close()
    finally:
        await session.close()


async def test_deliveries_wait_too_once_jetstream_lags_past_the_patience(broker, own_node, monkeypatch):
    monkeypatch.setattr(outbox, "EARLY_PATIENCE", 0.3)
    async with (
        AsyncClient(broker.settings, "bob") as bob,
        AsyncClient(broker.settings, "carol") as carol,
        AsyncClient(broker.settings, "alice") as alice,
    ):
        own_node.freeze()
        first = asyncio.create_task(alice.send("bob", "one"))
        assert (await asyncio.wait_for(bob.recv(), 10)).body == "one"  # JetStream is only just behind
        await asyncio.sleep(0.5)  # sleep-ok: the patience under test must run out
        # carol's connection holds nothing back, so only the patience keeps this in
        second = asyncio.create_task(alice.send("carol", "two"))
        await _nothing_within(carol.recv(), 1.0)
        own_node.thaw()
        assert (await asyncio.wait_for(carol.recv(), 30)).body == "two"
        assert [(await asyncio.wait_for(t, 30)).status for t in (first, second)] == [SendStatus.RECEIVED] * 2


async def test_a_broker_killed_before_jetstream_stored_an_early_delivery_loses_nothing(broker_proc, own_node):
    settings = broker_proc.settings(url=None)
    async with AsyncClient(settings, "bob") as bob, AsyncClient(settings, "alice") as alice:
        own_node.freeze()
        sending = asyncio.create_task(alice.send("bob", "in the cache only"))
        got = await asyncio.wait_for(bob.recv(), 10)
        broker_proc.kill()  # JetStream never acknowledged the batch that stored it
        own_node.thaw()
        broker_proc.start()
        result = await asyncio.wait_for(sending, 30)  # the client sends it again, same id
        assert result.id == got.id and result.status in (SendStatus.RECEIVED, SendStatus.QUEUED)
        after = await alice.send("bob", "the next one")
        async with asyncio.timeout(30):  # the first is not handed on a second time
            assert (await bob.recv()).id == after.id
    broker_proc.stop()
    (cache,) = broker_proc.home.glob("nats-*.db")
    for path in broker_proc.home.glob("nats-*.db*"):  # what is left is what JetStream holds
        path.unlink()
    broker_proc.start()
    async with AsyncClient(broker_proc.settings(url=None), "alice") as alice:
        tracked = await alice.request("track", id=got.id)
        assert tracked["receipts"]["bob"] in ("delivered", "read")
    broker_proc.stop()
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM messages WHERE id = ?", (got.id,)).fetchone() == (1,)


async def test_an_answer_waits_for_a_batch_that_has_not_begun(own_node, own_store):
    """The outbox of a real NATS store: a batch whose early frame went down a link
    begins `LINK_TURNS` turns later, and an answer given in between (an ack of the
    message that batch stores) must wait for it, not go out as if JetStream had it."""
    carried: list[Any] = []
    link, alice = -7, 5
    box = outbox.Outbox(own_store, carried.extend, lambda conn: conn == link, lambda exc: None)
    own_node.freeze()
    own_store.append_audit(time.time(), "sent", {"id": "m1"})  # what the batch stores
    box.add([Push(link, {"op": "deliver", "messages": []}, early=True)])
    await _turns(1)  # the flush
    assert carried == [Push(link, {"op": "deliver", "messages": []}, early=True)]
    answer = Respond((alice, 1), {"status": "received"}, early=True)
    box.add([answer])
    await _turns(outbox.LINK_TURNS + 2)  # past the batch's begin
    assert answer not in carried  # JetStream has not got the batch the answer speaks of
    own_node.thaw()
    async with asyncio.timeout(30):
        while answer not in carried:
            await asyncio.sleep(0.02)  # sleep-ok: bounded wait for JetStream's acknowledgement


async def test_a_batch_jetstream_never_stored_stops_every_later_answer(own_node, own_store):
    """A batch whose write ends without JetStream's acknowledgement (here: cancelled)
    breaks the outbox: an answer given after it does not go out as if JetStream had
    every batch before it, and the broker is told to stop."""
    carried: list[Any] = []
    failures: list[Exception] = []
    alice, bob = 5, 6
    box = outbox.Outbox(own_store, carried.extend, lambda conn: False, failures.append)
    own_node.freeze()
    own_store.append_audit(time.time(), "sent", {"id": "m1"})
    box.add([Push(bob, {"op": "deliver", "messages": []}, early=True)])
    await _turns(3)  # the flush and the batch's begin
    assert len(box._committing) == 1
    box._committing[0][1].cancel()  # the write ends, never acknowledged
    async with asyncio.timeout(10):
        while not failures:
            await asyncio.sleep(0.01)  # sleep-ok: bounded wait for the release, a thread away
    answer = Respond((alice, 1), {"status": "received"}, early=True)
    box.add([answer])
    await _turns(3)  # the flush
    assert answer not in carried
    assert box.broken and "did not store" in str(failures[0])


async def test_an_ack_that_wants_no_answer_holds_nothing_back(own_node, own_store):
    """A recipient's ack frame has no ``rid``: its answer writes nothing, so while
    JetStream sleeps it must not hold the recipient's connection, and the next live
    delivery to it still goes out at once."""
    carried: list[Any] = []
    bob = 6
    box = outbox.Outbox(own_store, carried.extend, lambda conn: False, lambda exc: None)
    own_node.freeze()
    own_store.append_audit(time.time(), "sent", {"id": "m1"})
    box.add([Push(bob, {"op": "deliver", "messages": [{"id": "m1"}]}, early=True)])
    await _turns(3)  # the flush and the batch's begin
    assert len(box._committing) == 1  # JetStream does not have it
    own_store.append_audit(time.time(), "read", {"id": "m1"})  # bob's ack, answered to no rid
    box.add([Respond((bob, None), {"acked": 1}, early=True)])
    await _turns(1)  # the flush
    delivery = Push(bob, {"op": "deliver", "messages": [{"id": "m2"}]}, early=True)
    box.add([delivery])
    await _turns(1)  # the flush
    assert delivery in carried
