"""A NATS-backed broker that compacts its state log every few batches, SIGKILLed
again and again while sends flow (so some kills land inside a compaction), its
cache deleted before some restarts: every send that was answered is there after,
handed over exactly once, and every receipt a sender was told of is kept."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path

import nats

from sessionmesh.backends.nats import Layout
from sessionmesh.backends.nats import snapshot as snapshots
from sessionmesh.client.aio import AsyncClient
from sessionmesh.envelope import SendStatus
from tests.conftest import BrokerProcess, nats_overrides
from tests.natsserver import NatsNode

KILLS = [(23, True), (41, False), (67, True), (88, False)]  # (after send n, delete the cache)
SENDS = 110


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        return json.load(resp)


def delete_cache(home: Path) -> None:
    for path in home.glob("nats-*.db*"):
        path.unlink()


async def test_a_broker_killed_during_compactions_loses_nothing_answered_and_hands_nothing_twice(
    nats_node: NatsNode, tmp_path: Path
) -> None:
    overrides = nats_overrides(nats_node.url, "m", nats_compact_batches=6, nats_compact_bytes=0)
    env = {f"MESH_{k.upper()}": str(v) for k, v in overrides.items()}
    home = tmp_path / "home"
    broker = BrokerProcess(home, {**os.environ, "MESH_HOME": str(home), **env})
    broker.start()
    try:
        queued: list[str] = []  # to bob, offline: answered `queued`
        received: list[str] = []  # to carol, online: answered `received` (her receipt stored)
        kills = dict(KILLS)
        async with AsyncClient(broker.settings(), "bob"):
            pass  # bob exists, and is offline from here on
        i = 0
        while i < SENDS:
            settings = broker.settings()
            async with AsyncClient(settings, "alice") as alice, AsyncClient(settings, "carol") as carol:
                while i < SENDS:
                    i += 1
                    to_bob = await alice.send("bob", {"n": i})
                    if to_bob.status is SendStatus.QUEUED:
                        queued.append(to_bob.id)
                    to_carol = await alice.send("carol", {"n": i})
                    if to_carol.status is SendStatus.RECEIVED:
                        received.append(to_carol.id)
                        await carol.recv(timeout=10)
                    if i in kills:
                        broker.kill()
                        if kills[i]:
                            delete_cache(home)
                        broker.start()
                        break
        assert len(queued) == SENDS and len(received) >= SENDS - len(KILLS)

        settings = broker.settings()
        async with AsyncClient(settings, "bob") as bob, AsyncClient(settings, "alice") as alice:
            for i in range(12):  # enough batches for a compaction of this run
                await alice.send("carol", {"after": i})
            async with asyncio.timeout(15):
                while (got := health(broker.url))["compactions"] < 1:
                    await asyncio.sleep(0.05)  # sleep-ok: polling another process, bounded above
            assert got["snapshot_bytes"] > 0 and got["state_log_bytes"] >= 0
            got = [(await bob.recv(timeout=10)).id for _ in queued]
            assert got == queued, "bob's messages, each once and in order"
            for msg_id in received[::5]:
                assert (await alice.track(msg_id))["receipts"]["carol"] in ("delivered", "read")

        nc = await nats.connect(nats_node.url)
        try:
            layout = Layout(overrides["nats_namespace"], "m")
            js = nc.jetstream()
            state = (await js.stream_info(layout.state_stream)).state
            assert state.first_seq > 1, "the state log was compacted"
            head = await snapshots.read_head(js, layout)
            assert head is not None and head.seq >= state.first_seq - 1
        finally:
            await nc.close()
    finally:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.stop()
        broker._close_pipe()
