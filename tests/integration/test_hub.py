"""Two laptops in two commands (#10 item 5): `mesh hub` on machine a, the `mesh
join-hub` command it prints on machine b, then a message from a:alice reaches b:bob.
Everything runs here: the hub (a real nats-server it starts), two real brokers with
homes of their own, and a raw NATS client with b's credentials that tries to pass a
record off as another machine's (#10 item 4: the receiving broker refuses it)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from sessionmesh import cluster
from sessionmesh.backends.nats import Layout
from sessionmesh.client.aio import AsyncClient
from sessionmesh.envelope import SendStatus
from tests.conftest import BrokerProcess, read_line
from tests.natsserver import NatsNode

HUB_START = 60.0


@dataclass
class Laptops:
    hub: subprocess.Popen[str]
    lines: list[str]
    a: BrokerProcess
    b: BrokerProcess


def mesh(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "sessionmesh", *args], capture_output=True, text=True, env=env, timeout=60
    )


def start_hub(home: Path, *flags: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`mesh hub` as machine a, and what it printed up to its last line of setup."""
    env = {**os.environ, "MESH_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sessionmesh",
            "hub",
            "--machine",
            "a",
            "--machines",
            "b",
            "--port",
            "0",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    while not lines or "Ctrl-C stops the hub" not in lines[-1]:
        line = read_line(proc, HUB_START)
        assert line, f"mesh hub ended: {lines}"
        lines.append(line.rstrip("\n"))
    return proc, lines


def stop_hub(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=20)
    if proc.stdout is not None:
        proc.stdout.close()
    return code


def laptops(tmp_path: Path, *flags: str) -> Iterator[Laptops]:
    hub, lines = start_hub(tmp_path / "a", *flags)
    brokers: list[BrokerProcess] = []
    try:
        command = next(line.split() for line in lines if line.strip().startswith("mesh join-hub"))
        joined = mesh(tmp_path / "b", *command[1:])
        assert joined.returncode == 0, joined.stderr
        for machine in ("a", "b"):
            home = tmp_path / machine
            broker = BrokerProcess(home, {**os.environ, "MESH_HOME": str(home)})
            broker.start()
            brokers.append(broker)
        yield Laptops(hub, lines, *brokers)
    finally:
        for broker in brokers:
            broker.stop()
        assert stop_hub(hub) == 0


@pytest.fixture(params=["tls", "plain"])
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Laptops]:
    flags = ("--advertise", "127.0.0.1") if request.param == "tls" else ("--plain", "--listen", "127.0.0.1")
    yield from laptops(tmp_path, *flags)


async def until_joined(client: AsyncClient, name: str, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            got = await client.next_event()
            if got.get("event") == "peer_joined" and got.get("name") == name:
                return


async def test_a_message_from_a_alice_reaches_b_bob_through_the_hub(two: Laptops, tmp_path: Path) -> None:
    config = (tmp_path / "b" / "config.toml").read_text()
    assert 'machine = "b"' in config and 'backend = "nats"' in config
    assert os.stat(tmp_path / "b" / "nats" / "credentials.json").st_mode & 0o777 == 0o600
    async with AsyncClient(two.a.settings(), "watch", events=True) as watch:
        async with AsyncClient(two.b.settings(), "bob") as bob:
            await until_joined(watch, "b:bob")
            async with AsyncClient(two.a.settings(), "alice") as alice:
                sent = await alice.send("b:bob", "hello from laptop a")
                assert sent.status is SendStatus.RECEIVED
                got = await bob.recv(timeout=10)
                assert (got.id, got.sender, got.body) == (sent.id, "a:alice", "hello from laptop a")


def test_a_bad_ticket_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    done = mesh(tmp_path / "b", "join-hub", "mesh1-not-a-ticket")
    assert done.returncode != 0 and "join ticket" in done.stderr
    assert not (tmp_path / "b" / "config.toml").exists()


def test_the_hub_wants_to_know_who_joins(tmp_path: Path) -> None:
    done = mesh(tmp_path / "a", "hub", "--machine", "a", "--port", "0")
    assert done.returncode != 0 and "--machines" in done.stderr
    assert not (tmp_path / "a" / "config.toml").exists()


async def test_a_route_record_that_claims_another_machine_is_refused_and_audited(tmp_path: Path) -> None:
    gen = laptops(tmp_path, "--plain", "--listen", "127.0.0.1")
    two = next(gen)
    try:
        creds = cluster.read_credentials(tmp_path / "a" / "hub" / "cluster" / "credentials" / "b.json")
        url = next(
            line for line in (tmp_path / "b" / "config.toml").read_text().splitlines() if "nats_url" in line
        )
        b = Layout(creds.namespace, "b")
        nc = await nats.connect(
            json.loads(url.split("=", 1)[1]), nkeys_seed_str=creds.seed, inbox_prefix=b.inbox_prefix
        )
        async with (
            AsyncClient(two.b.settings(), "watch", events=True) as watch,
            AsyncClient(two.a.settings(), "alice") as alice,
        ):
            await until_joined(watch, "a:alice")
            forged = {
                "from": "c",  # b's user may publish on mesh.to.a.b only: the subject says b
                "op": "deliver",
                "to": ["alice"],
                "msg": {
                    "id": str(uuid.uuid4()),
                    "from": "mallory",
                    "kind": "message",
                    "body": "from c, honest",
                },
            }
            ack = await nc.jetstream().publish(b.route_subject("a"), json.dumps(forged).encode())
            assert ack.stream == Layout(creds.namespace, "a").route_stream  # stored: b may write there
            async with asyncio.timeout(15):
                refused: list[dict[str, object]] = []
                while not refused:
                    refused = [e for e in await alice.log() if e["event"] == "route_refused"]
                    await asyncio.sleep(0.1)  # sleep-ok: bounded poll of the broker's audit log
            assert refused[0]["claimed"] == "c" and refused[0]["sender"] == "b"
            # alice never got it: the next message she receives is one sent after it
            async with AsyncClient(two.b.settings(), "bob") as bob:
                later = await bob.send("a:alice", "the real one")
                assert later.status is SendStatus.RECEIVED
                got = await alice.recv(timeout=10)
                assert (got.sender, got.body) == ("b:bob", "the real one")
        await nc.close()
    finally:
        gen.close()


async def test_cluster_init_and_setup_then_brokers_with_their_own_files_talk(tmp_path: Path) -> None:
    """The path deployment.md gives for a cluster of your own: init, include
    auth.conf, setup as the admin, one credentials file per broker."""
    files = tmp_path / "mesh-cluster"
    made = mesh(tmp_path / "admin", "cluster", "init", "--machines", "a,b", "--dir", str(files))
    assert made.returncode == 0, made.stderr
    (
        tmp_path / "node"
    ).mkdir()  # auth.conf next to the node's config: nats-server includes relative paths only
    (tmp_path / "node" / "auth.conf").write_text((files / "auth.conf").read_text())
    node = NatsNode("node", tmp_path, extra="include auth.conf").start()
    brokers: list[BrokerProcess] = []
    try:
        done = mesh(tmp_path / "admin", "cluster", "setup", "--dir", str(files), "--nats-url", node.url)
        assert done.returncode == 0, done.stderr
        for machine in ("a", "b"):
            env = {
                **os.environ,
                "MESH_HOME": str(tmp_path / machine),
                "MESH_BACKEND": "nats",
                "MESH_NATS_URL": node.url,
                "MESH_NATS_CREDENTIALS": str(files / "credentials" / f"{machine}.json"),
            }
            brokers.append(BrokerProcess(tmp_path / machine, env))
            brokers[-1].start()
        a, b = brokers
        async with AsyncClient(a.settings(), "watch", events=True) as watch:
            async with AsyncClient(b.settings(), "bob") as bob:
                await until_joined(watch, "b:bob")
                async with AsyncClient(a.settings(), "alice") as alice:
                    sent = await alice.send("b:bob", "over my own cluster")
                    assert sent.status is SendStatus.RECEIVED
                    assert (await bob.recv(timeout=10)).sender == "a:alice"
    finally:
        for broker in brokers:
            broker.stop()
        node.stop()
