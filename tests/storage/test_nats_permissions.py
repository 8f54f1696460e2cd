"""Machines cannot speak for each other (#10 item 4): `mesh cluster init` writes an
authorization block a real nats-server accepts, and a NATS client holding machine
b's credentials can neither publish as machine a nor read a's streams, while it can
do all of that as b."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import api

from sessionmesh import cluster
from sessionmesh.backends.nats import Layout, open_store
from sessionmesh.config import Settings, load
from sessionmesh.errors import BadRequest, StorageError
from tests.natsserver import NatsNode, nats_server_binary

CALL_TIMEOUT = 1.0  # a refused JetStream call never answers: it times out (calls allowed get 10 s)


@pytest.fixture
def files(tmp_path: Path) -> cluster.ClusterFiles:
    return cluster.init(tmp_path / "cluster", ["a", "b", "c"], namespace="t" + secrets.token_hex(4))


@pytest.fixture
def node(tmp_path: Path, files: cluster.ClusterFiles) -> Iterator[NatsNode]:
    node = NatsNode("auth", tmp_path, extra=files.auth_conf.read_text()).start()
    yield node
    node.stop()


def settings_for(
    node: NatsNode, files: cluster.ClusterFiles, label: str, tmp_path: Path, **more: Any
) -> Settings:
    overrides = {
        "home": str(tmp_path / f"home-{label}"),
        "nats_url": node.url,
        "nats_namespace": files.namespace,
        "nats_credentials": str(files.credentials_path(label)),
        "nats_timeout": 3.0,
        **more,
    }
    return load(env={}, overrides=overrides)


@pytest.fixture
def ready(node: NatsNode, files: cluster.ClusterFiles, tmp_path: Path) -> NatsNode:
    """The admin created every stream and bucket of a and b (not c's)."""
    cluster.setup(settings_for(node, files, "admin", tmp_path), ["a", "b"])
    return node


class Client:
    """A raw nats-py client with one identity's credentials; what the server refused."""

    def __init__(self, nc: Any, refused: list[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=10.0)
        self.denied = nc.jetstream(timeout=CALL_TIMEOUT)  # for calls the server refuses
        self.refused = refused

    async def refusal(self, subject: str) -> None:
        """Wait until the server said it refused ``subject``."""
        async with asyncio.timeout(5):
            while not any(f'"{subject.lower()}"' in r for r in self.refused):
                await self.nc.flush()


async def connect(node: NatsNode, creds: cluster.Credentials, *, inbox: str | None = None) -> Client:
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            refused.append(str(exc).lower())

    options: dict[str, Any] = {"nkeys_seed_str": creds.seed, "error_cb": on_error}
    if inbox is not None:
        options["inbox_prefix"] = inbox
    return Client(await nats.connect(node.url, **options), refused)


@pytest.fixture
async def as_b(ready: NatsNode, files: cluster.ClusterFiles) -> AsyncIterator[Client]:
    client = await connect(ready, files.credentials("b"), inbox=Layout(files.namespace, "b").inbox_prefix)
    yield client
    await client.nc.close()


@pytest.fixture
async def as_admin(ready: NatsNode, files: cluster.ClusterFiles) -> AsyncIterator[Client]:
    client = await connect(ready, files.credentials("admin"))
    yield client
    await client.nc.close()


def test_the_generated_authorization_block_is_a_valid_nats_server_config(
    files: cluster.ClusterFiles, tmp_path: Path
) -> None:
    conf = files.directory / "server.conf"
    conf.write_text(f'port: 4222\njetstream {{ store_dir: "{tmp_path}/js" }}\ninclude auth.conf\n')
    checked = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    for label in ("a", "b", "admin"):
        assert os.stat(files.credentials_path(label)).st_mode & 0o777 == 0o600


def test_init_again_keeps_every_key_and_adds_the_new_machine(files: cluster.ClusterFiles) -> None:
    before = {label: files.credentials(label).seed for label in ("a", "b", "c", "admin")}
    again = cluster.init(files.directory, ["a", "d"], namespace=files.namespace)
    assert again.machines == ("a", "b", "c", "d")
    assert {label: again.credentials(label).seed for label in before} == before
    assert again.credentials("d").public_key in again.auth_conf.read_text()


def test_bad_machine_labels_are_refused_and_write_nothing(tmp_path: Path) -> None:
    for machines in (["a", "B!"], ["admin"], []):
        with pytest.raises(BadRequest):
            cluster.init(tmp_path / "nothing", machines, namespace="mesh")
    assert not (tmp_path / "nothing").exists()


def test_a_credentials_file_others_can_read_is_refused(files: cluster.ClusterFiles) -> None:
    path = files.credentials_path("a")
    path.chmod(0o644)
    with pytest.raises(BadRequest, match="chmod 600"):
        cluster.read_credentials(path)


async def test_machine_b_cannot_publish_as_machine_a(
    as_b: Client, as_admin: Client, files: cluster.ClusterFiles
) -> None:
    a, b = Layout(files.namespace, "a"), Layout(files.namespace, "b")
    forged = {
        a.route_subject("b"): "a routed record from a to b",
        a.route_subject("a"): "a record from a to itself",
        a.state_prefix + "M.forged": "a message in a's own state",
        a.audit_subject: "an entry in a's audit log",
        f"$KV.{a.peers_bucket}.a.alice": "a's directory entry for alice",
        f"$KV.{a.presence_bucket}.a.alice": "alice's presence",
        f"$KV.{a.presence_bucket}.a": "a's heartbeat",
    }
    for subject in forged:
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await as_b.denied.publish(subject, b'{"from": "a", "op": "deliver"}')
        await as_b.refusal(subject)
    # nothing of it was stored
    for stream in (a.state_stream, a.audit_stream, a.route_stream, b.route_stream):
        assert (await as_admin.js.stream_info(stream)).state.messages == 0, stream
    with pytest.raises(nats.js.errors.NotFoundError):
        await as_admin.js.get_msg(f"KV_{a.peers_bucket}", subject=f"$KV.{a.peers_bucket}.a.alice")
    # the control: as itself, b publishes its route records and directory entries
    ack = await as_b.js.publish(b.route_subject("a"), b'{"from": "b"}')
    assert ack.stream == a.route_stream
    await as_b.js.publish(f"$KV.{b.peers_bucket}.b.bob", b"{}")
    await as_b.js.publish(b.state_prefix + "M.mine", b"{}")


async def test_machine_b_cannot_read_machine_a_streams_nor_its_traffic(
    as_b: Client, files: cluster.ClusterFiles
) -> None:
    a, b = Layout(files.namespace, "a"), Layout(files.namespace, "b")
    for stream in a.own_streams:
        with pytest.raises(TimeoutError):
            await as_b.denied.add_consumer(
                stream, api.ConsumerConfig(name="peek", ack_policy=api.AckPolicy.NONE)
            )
        await as_b.refusal(f"$JS.API.CONSUMER.CREATE.{stream}.peek")
        with pytest.raises(TimeoutError):
            await as_b.denied.get_msg(stream, seq=1)
        await as_b.refusal(f"$JS.API.STREAM.MSG.GET.{stream}")
        with pytest.raises(TimeoutError):
            await as_b.denied.get_msg(stream, seq=1, direct=True)
        await as_b.refusal(f"$JS.API.DIRECT.GET.{stream}")
        with pytest.raises(TimeoutError):
            await as_b.denied.stream_info(stream)
    # no core subscription outside its own inbox: not a's routes, state, or replies
    for subject in (a.route_filter, a.state_prefix + ">", a.inbox_prefix + ".>", "_INBOX.>", ">"):
        await as_b.nc.subscribe(subject)
        await as_b.refusal(subject)
    # and no stream of its own can be widened to catch them
    with pytest.raises(TimeoutError):
        await as_b.denied.update_stream(
            api.StreamConfig(name=b.state_stream, subjects=[a.inbox_prefix + ".>"])
        )
    # the control: b reads its own state stream
    await as_b.js.publish(b.state_prefix + "M.mine", b"{}")
    assert (await as_b.js.get_msg(b.state_stream, seq=1)).data == b"{}"


def test_a_broker_store_opens_with_its_machine_credentials_only(
    ready: NatsNode, files: cluster.ClusterFiles, tmp_path: Path
) -> None:
    store = open_store(settings_for(ready, files, "b", tmp_path))
    try:
        assert store.layout.machine == "b"  # the label comes from the credentials file
        store.append_audit(1.0, "checked", {})
        assert [e["event"] for e in store.read_audit(after=0, limit=10)] == ["checked"]
    finally:
        store.close()
    with pytest.raises(BadRequest, match="machine 'b'"):
        open_store(settings_for(ready, files, "b", tmp_path, machine="a"))


def test_a_machine_compacts_its_state_log_and_restores_its_snapshot_with_its_own_credentials(
    ready: NatsNode, files: cluster.ClusterFiles, tmp_path: Path
) -> None:
    settings = settings_for(ready, files, "b", tmp_path, nats_compact_batches=0, nats_compact_bytes=0)
    store = open_store(settings)
    try:
        for n in range(5):
            store.append_audit(float(n), "checked", {"n": n})
            store.commit()
        head = store.compactor.compact()  # snapshot written, chunks swept, log purged
        assert head is not None and head.batch == 5
    finally:
        store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(store.path + suffix).unlink(missing_ok=True)
    again = open_store(settings)
    try:
        assert again.restored == head
        assert [e["n"] for e in again.read_audit(after=0, limit=10)] == [0, 1, 2, 3, 4]
    finally:
        again.close()


def test_a_machine_may_not_make_its_own_streams(
    ready: NatsNode, files: cluster.ClusterFiles, tmp_path: Path
) -> None:
    """Whoever makes a stream picks its subjects: the admin makes them all."""
    with pytest.raises(StorageError, match="mesh cluster setup"):
        open_store(settings_for(ready, files, "c", tmp_path, nats_timeout=1.0))
