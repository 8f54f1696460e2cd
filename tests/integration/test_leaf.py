"""A laptop joins a team's hub through a NATS leaf node (docs/deployment.md).

The hub runs JetStream in domain ``hub`` and accepts leaf nodes; the laptop runs its
own nats-server as a leaf, with JetStream in domain ``laptop``. The laptop's broker
talks to its local leaf only, with ``nats_domain=hub``: the mesh's streams and
buckets are the hub's, reached through the leaf connection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionmesh.client.aio import AsyncClient
from sessionmesh.envelope import SendStatus
from tests.conftest import BrokerProcess, nats_overrides
from tests.integration.test_machines import until_event
from tests.natsserver import NatsNode, free_port


@pytest.fixture
def hub_and_leaf(tmp_path: Path) -> Iterator[tuple[NatsNode, NatsNode]]:
    hub = NatsNode("hub", tmp_path, domain="hub", leafnode_port=free_port()).start()
    assert hub.leafnode_port is not None
    leaf = NatsNode("laptop", tmp_path, domain="laptop", leaf_remotes=[hub.leafnode_port]).start()
    yield hub, leaf
    leaf.stop()
    hub.stop()


def broker_on(node: NatsNode, machine: str, home: Path, shared: dict[str, object]) -> BrokerProcess:
    settings = {**shared, "nats_url": node.url, "machine": machine, "nats_domain": "hub"}
    env = {f"MESH_{k.upper()}": str(v) for k, v in settings.items()}
    broker = BrokerProcess(home, {**os.environ, "MESH_HOME": str(home), **env})
    broker.start()
    return broker


async def test_a_laptop_on_a_leaf_node_talks_to_the_team_on_the_hub(
    hub_and_leaf: tuple[NatsNode, NatsNode], tmp_path: Path
) -> None:
    hub, leaf = hub_and_leaf
    shared = nats_overrides(hub.url)
    server = broker_on(hub, "server", tmp_path / "server", shared)
    laptop = broker_on(leaf, "laptop", tmp_path / "laptop", shared)
    try:
        async with AsyncClient(server.settings(url=None), "watch", events=True) as watch:
            async with (
                AsyncClient(laptop.settings(url=None), "dev") as dev,
                AsyncClient(server.settings(url=None), "ci") as ci,
            ):
                await until_event(watch, "peer_joined", "laptop:dev")
                ask = await ci.ask("laptop:dev", "tests pass on your branch?")
                assert ask.status is SendStatus.RECEIVED
                got = await dev.recv(timeout=10)
                assert (got.id, got.sender) == (ask.id, "server:ci")
                reply = await dev.reply(got, "yes", status="PASS")
                assert reply.status is SendStatus.RECEIVED
                answer = await ci.recv(timeout=10)
                assert (answer.sender, answer.re) == ("laptop:dev", ask.id)
                granted = await dev.lock("/repo/src/app.py", reason="laptop work")
                assert granted["outcome"] == "granted"
                conflict = await ci.lock("/repo/src/*.py")
                assert (conflict["outcome"], conflict["holder"]) == ("conflict", "laptop:dev")
    finally:
        laptop.stop()
        server.stop()
