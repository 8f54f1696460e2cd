"""Many machines (SPEC §8): two brokers ("machines" a and b) on a three-node NATS
cluster with R3 streams and buckets, their peers talking across it.

Each broker is a real ``mesh serve --backend nats`` process with its own home; the
NATS nodes are real nats-server processes on free loopback ports.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.client.aio import AsyncClient
from sessionmesh.envelope import SendStatus
from tests.conftest import PASSPHRASE, BrokerProcess, mesh_cmd, nats_overrides, person_cmd, wait_until
from tests.natsserver import NatsNode, cluster, start_all


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsNode]]:
    nodes = start_all(cluster(tmp_path_factory.mktemp("cluster")))
    yield nodes
    for node in nodes:
        node.stop()


@dataclass
class Machines:
    a: BrokerProcess
    b: BrokerProcess

    def settings(self, machine: str) -> Any:
        return getattr(self, machine).settings(url=None)

    def stop(self) -> None:
        for broker in (self.a, self.b):
            if broker.proc is not None and broker.proc.poll() is None:
                broker.stop()


def start_machines(nodes: list[NatsNode], root: Path, **more: Any) -> Machines:
    """Brokers for machines a and b, each given every node's URL."""
    urls = ",".join(node.url for node in nodes)
    shared = nats_overrides(urls, "a", nats_replicas=len(nodes), **more)

    def broker(machine: str) -> BrokerProcess:
        home = root / machine
        env = {f"MESH_{k.upper()}": str(v) for k, v in {**shared, "machine": machine}.items()}
        return BrokerProcess(home, {**os.environ, "MESH_HOME": str(home), **env})

    machines = Machines(broker("a"), broker("b"))
    try:
        machines.a.start()
        machines.b.start()
    except BaseException:
        machines.stop()
        raise
    return machines


@pytest.fixture
def machines(nats_cluster: list[NatsNode], tmp_path: Path) -> Iterator[Machines]:
    m = start_machines(nats_cluster, tmp_path)
    yield m
    m.stop()


async def until_event(client: AsyncClient, event: str, name: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            got = await client.next_event()
            if got.get("event") == event and got.get("name") == name:
                return got


async def collect(peer: AsyncClient, want: set[str], timeout: float) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(timeout):
        while not want <= set(got):
            got.append((await peer.recv()).id)
    return got


async def test_a_peer_on_another_machine_is_listed_as_label_name_and_answers_across(
    machines: Machines,
) -> None:
    async with AsyncClient(machines.settings("a"), "watch", events=True) as watch:
        async with AsyncClient(machines.settings("b"), "bob") as bob:
            await until_event(watch, "peer_joined", "b:bob")
            async with AsyncClient(machines.settings("a"), "alice") as alice:
                peers = {p["name"]: p for p in await alice.peers()}
                assert peers["b:bob"]["presence"] == "online"
                assert peers["b:bob"]["meta"]["machine"] == "b"

                ask = await alice.ask("b:bob", "is the build green?")
                assert ask.status is SendStatus.RECEIVED
                got = await bob.recv(timeout=10)
                assert (got.id, got.sender, got.body) == (ask.id, "a:alice", "is the build green?")
                reply = await bob.reply(got, "green", status="PASS")
                assert reply.status is SendStatus.RECEIVED
                answer = await alice.recv(timeout=10)
                assert (answer.sender, answer.re, answer.status.value) == ("b:bob", ask.id, "PASS")
                track = await alice.track(ask.id)
                assert track["receipts"] == {"b:bob": "answered"}
        await until_event(watch, "peer_left", "b:bob")


async def test_a_message_to_an_offline_peer_on_another_machine_is_queued_until_it_reconnects(
    machines: Machines,
) -> None:
    async with AsyncClient(machines.settings("a"), "watch", events=True) as watch:
        async with AsyncClient(machines.settings("b"), "bob"):
            await until_event(watch, "peer_joined", "b:bob")
        await until_event(watch, "peer_left", "b:bob")
        async with AsyncClient(machines.settings("a"), "alice") as alice:
            sent = await alice.send("b:bob", "read this when you are back")
            assert sent.status is SendStatus.QUEUED
            assert (await alice.send("b:nobody", "hello?")).status is SendStatus.DENIED
            async with AsyncClient(machines.settings("b"), "bob") as bob:
                got = await bob.recv(timeout=10)
                assert (got.id, got.sender) == (sent.id, "a:alice")
                async with asyncio.timeout(10):
                    while (await alice.next_receipt())["state"] != "read":
                        continue  # each receipt frame is awaited; stop at 'read'
                assert (await alice.track(sent.id))["receipts"] == {"b:bob": "read"}


async def test_exactly_one_of_two_machines_gets_an_overlapping_lock(machines: Machines) -> None:
    async with (
        AsyncClient(machines.settings("a"), "alice") as alice,
        AsyncClient(machines.settings("b"), "bob") as bob,
    ):
        for round_ in range(5):
            results = await asyncio.gather(
                alice.lock(f"/repo/r{round_}/src/app.py", reason="alice"),
                bob.lock(f"/repo/r{round_}/src/*.py", reason="bob"),
            )
            outcomes = sorted(r["outcome"] for r in results)
            assert outcomes == ["conflict", "granted"], results
        # a grant is decided on the one table (compare-and-set); a listing on the other
        # machine shows it once that broker's watch of the table has it (moments later)
        held = await until_locks(bob, lambda held: len(held) == 5)
        assert all(holder in ("a:alice", "bob") for _, holder in held)
        mine = [r for r, h in held if h == "bob"]
        for resource in mine:
            await bob.unlock(resource)
        await until_locks(alice, lambda held: {h for _, h in held} <= {"alice"})


async def until_locks(
    peer: AsyncClient, done: Callable[[set[tuple[str, str]]], bool]
) -> set[tuple[str, str]]:
    """The (resource, holder) pairs ``peer``'s broker lists, once ``done`` holds (5 s at most)."""
    async with asyncio.timeout(5):
        while True:
            held = {(lock["resource"], lock["holder"]) for lock in await peer.locks()}
            if done(held):
                return held
            await asyncio.sleep(0.02)  # sleep-ok: polls another broker's view, bounded above


async def test_a_broadcast_reaches_the_peers_of_both_machines(machines: Machines) -> None:
    async with AsyncClient(machines.settings("a"), "watch", events=True) as watch:
        async with (
            AsyncClient(machines.settings("b"), "bob") as bob,
            AsyncClient(machines.settings("b"), "carol") as carol,
        ):
            await until_event(watch, "peer_joined", "b:bob")
            await until_event(watch, "peer_joined", "b:carol")
            async with AsyncClient(machines.settings("a"), "alice") as alice:
                sent = await alice.send("broadcast", "standup in 5")
                assert sent.status is SendStatus.SENT
                for peer in (bob, carol):
                    got = await peer.recv(timeout=10)
                    assert (got.id, got.sender, got.body) == (sent.id, "a:alice", "standup in 5")
                    assert got.to.to_wire() == "broadcast"


async def test_a_list_of_names_keeps_its_to_on_another_machine_in_that_machine_s_names(
    machines: Machines,
) -> None:
    async with AsyncClient(machines.settings("a"), "watch", events=True) as watch:
        async with (
            AsyncClient(machines.settings("b"), "bob") as bob,
            AsyncClient(machines.settings("b"), "carol") as carol,
            AsyncClient(machines.settings("a"), "dave") as dave,
        ):
            await until_event(watch, "peer_joined", "b:bob")
            await until_event(watch, "peer_joined", "b:carol")
            async with AsyncClient(machines.settings("a"), "alice") as alice:
                sent = await alice.send(["b:bob", "dave", "b:carol"], "review #12")
                assert (sent.status, sent.recipients) == (SendStatus.SENT, 3)
                for peer in (bob, carol):
                    got = await peer.recv(timeout=10)
                    assert (got.id, got.sender) == (sent.id, "a:alice")
                    assert got.to.to_wire() == ["bob", "a:dave", "carol"]
                mine = await dave.recv(timeout=10)
                assert (mine.id, mine.to.to_wire()) == (sent.id, ["b:bob", "dave", "b:carol"])


async def until_counted(sender: AsyncClient, topic: str, want: int, timeout: float = 15.0) -> None:
    """Probe ``topic`` until a send counts ``want`` recipients (the other machine's
    subscriptions arrive through the directory, a moment after they are made)."""
    async with asyncio.timeout(timeout):
        while (await sender.send(topic, "probe")).recipients != want:
            await asyncio.sleep(0.1)  # sleep-ok: a bounded retry of the probe send, not a wait for it


async def until_id(peer: AsyncClient, msg_id: str, timeout: float = 15.0) -> list[Any]:
    """Every message ``peer`` gets up to and including ``msg_id``."""
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        while not got or got[-1].id != msg_id:
            got.append(await peer.recv())
    return got


async def test_a_topic_message_reaches_live_and_offline_subscribers_on_another_machine_once(
    machines: Machines,
) -> None:
    async with AsyncClient(machines.settings("a"), "watch", events=True) as watch:
        async with AsyncClient(machines.settings("b"), "carol") as carol:
            await carol.subscribe("#builds")
            await until_event(watch, "peer_joined", "b:carol")
        await until_event(watch, "peer_left", "b:carol")  # carol is offline from here on
        async with (
            AsyncClient(machines.settings("b"), "bob") as bob,
            AsyncClient(machines.settings("a"), "dave") as dave,
            AsyncClient(machines.settings("a"), "alice") as alice,
        ):
            await bob.subscribe("#builds")
            await dave.subscribe("#builds")
            await alice.subscribe("#builds")  # alice must not get her own messages back
            await until_event(watch, "peer_joined", "b:bob")
            await until_counted(alice, "#builds", 3)  # dave here, bob and carol on b; not alice

            sent = await alice.send("#builds", "build 41 is green")
            assert (sent.status, sent.recipients) == (SendStatus.SENT, 3)
            assert set(sent.statuses) == {"dave", "b:bob", "b:carol"}
            got = (await until_id(bob, sent.id))[-1]
            assert (got.sender, got.body, got.to.to_wire()) == ("a:alice", "build 41 is green", "#builds")
            assert (await until_id(dave, sent.id))[-1].sender == "alice"

            # the other way: bob's message reaches alice and dave on a, and not bob
            back = await bob.send("#builds", "build 42 is red")
            assert (back.status, back.recipients) == (SendStatus.SENT, 3)  # carol, a:alice, a:dave
            seen = await until_id(alice, back.id)
            assert [m.sender for m in seen] == ["b:bob"], "alice got a message of her own back"
            assert seen[-1].to.to_wire() == "#builds"
            assert (await until_id(dave, back.id))[-1].sender == "b:bob"

            end = await alice.send("#builds", "end")
            bob_saw = await until_id(bob, end.id)
            assert [m.id for m in bob_saw] == [end.id], "bob saw a message twice, or his own"

            async with AsyncClient(machines.settings("b"), "carol") as carol:
                carol_saw = await until_id(carol, end.id)
                ids = [m.id for m in carol_saw]
                assert ids.count(sent.id) == 1 and ids.count(back.id) == 1
                assert len(ids) == len(set(ids)), "carol saw a message twice"
                assert next(m for m in carol_saw if m.id == sent.id).to.to_wire() == "#builds"
                async with asyncio.timeout(15):  # receipts come back to the sender's machine
                    while (await alice.track(sent.id))["receipts"] != {
                        "dave": "read",
                        "b:bob": "read",
                        "b:carol": "read",
                    }:
                        await alice.next_receipt()


async def stream_with_fault(
    machines: Machines, count: int, fault: Callable[[int], Awaitable[Any] | None]
) -> tuple[int, int]:
    """alice on ``a`` sends ``count`` messages to ``b:bob`` one by one, calling
    ``fault(i)`` after each (what it returns is awaited before the check); bob must
    get every message that was answered, each once. Returns (answered, bob's
    reconnects)."""
    async with AsyncClient(machines.settings("a"), "watch", events=True) as watch:
        async with (
            AsyncClient(machines.settings("b"), "bob") as bob,
            AsyncClient(machines.settings("a"), "alice") as alice,
        ):
            await until_event(watch, "peer_joined", "b:bob")
            answered: dict[str, SendStatus] = {}
            pending = []
            for i in range(count):
                result = await alice.send("b:bob", {"n": i})
                answered[result.id] = result.status
                if (later := fault(i)) is not None:
                    pending.append(later)
            for later in pending:
                await asyncio.wait_for(later, 60)
            acked = {i for i, s in answered.items() if s in (SendStatus.RECEIVED, SendStatus.QUEUED)}
            got = await collect(bob, acked, timeout=60)
            assert len(got) == len(set(got)), "bob's application saw a message twice"
            return len(acked), bob.reconnects


async def test_a_killed_broker_s_peers_reconnect_after_restart_and_nothing_is_lost(
    machines: Machines,
) -> None:
    def fault(i: int) -> None:
        if i == 40:
            machines.b.kill()
        if i == 60:
            machines.b.start()

    answered, reconnects = await stream_with_fault(machines, 120, fault)
    assert answered == 120
    assert reconnects >= 1


async def test_losing_a_nats_node_mid_stream_loses_nothing_answered(tmp_path: Path) -> None:
    nodes = start_all(cluster(tmp_path / "nats", name="k"))
    machines: Machines | None = None
    try:
        machines = start_machines(nodes, tmp_path)
        answered, _ = await stream_with_fault(machines, 200, lambda i: nodes[0].kill() if i == 60 else None)
        assert answered >= 150, f"only {answered} of 200 sends were answered"
    finally:
        if machines is not None:
            machines.stop()
        for node in nodes:
            node.stop()


def restart_hard(node: NatsNode) -> None:
    """SIGKILL a node and start it again on the same ports and store."""
    node.kill()
    node.start()


async def test_a_hub_restarted_mid_stream_loses_nothing_answered_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    hub = NatsNode("hub", tmp_path / "nats").start()
    machines: Machines | None = None
    try:
        machines = start_machines([hub], tmp_path)

        def fault(i: int) -> Awaitable[None] | None:  # the hub dies and comes back while the sends go on
            return asyncio.create_task(asyncio.to_thread(restart_hard, hub)) if i == 50 else None

        answered, _ = await stream_with_fault(machines, 150, fault)
        assert answered >= 100, f"only {answered} of 150 sends were answered"
    finally:
        if machines is not None:
            machines.stop()
        hub.kill()


async def test_an_unsubscribe_on_one_machine_stops_the_other_machine_s_copies(machines: Machines) -> None:
    async with (
        AsyncClient(machines.settings("b"), "bob") as bob,
        AsyncClient(machines.settings("a"), "alice") as alice,
    ):
        await bob.subscribe("#deploys")
        await until_counted(alice, "#deploys", 1)
        await bob.unsubscribe("#deploys")
        await until_counted(alice, "#deploys", 0)
        after = await alice.send("#deploys", "not for bob")
        assert (after.status, after.recipients, after.statuses) == (SendStatus.SENT, 0, {})
        marker = await alice.send("b:bob", "marker")
        seen = await until_id(bob, marker.id)
        assert after.id not in [m.id for m in seen]


async def test_a_catch_up_subscriber_gets_every_stored_topic_message_wherever_it_was_sent(
    machines: Machines,
) -> None:
    async with (
        AsyncClient(machines.settings("a"), "alice") as alice,
        AsyncClient(machines.settings("b"), "bob") as bob,
    ):
        # stored on a before any machine had a subscriber, and on b by bob
        early = [await alice.send("#news", f"a says {i}") for i in range(3)]
        mine = await bob.send("#news", "b says 0")
        want = {e.id for e in early} | {mine.id}
        async with AsyncClient(machines.settings("b"), "carol") as carol:
            await carol.subscribe("#news", from_start=True)
            got = await collect(carol, want, timeout=20)
            assert len(got) == len(set(got)), "carol saw a message twice"
        async with AsyncClient(machines.settings("a"), "dave") as dave:
            await dave.subscribe("#news", from_start=True)
            got = await collect(dave, want, timeout=20)
            assert len(got) == len(set(got)), "dave saw a message twice"
            later = await bob.send("#news", "b says 1")  # and live from here on
            assert (await until_id(dave, later.id))[-1].body == "b says 1"


async def test_an_inbound_policy_holds_and_refuses_on_the_recipient_s_machine_for_its_person(
    machines: Machines,
) -> None:
    """#17 item 3 across NATS: b:bob holds everything and refuses a:carol. Alice's
    messages wait on b for b's person (a's person cannot approve them), and her
    answer says they are held (`held`, naming b:bob); one approved
    there ends read, one rejected there ends rejected on a too. Carol is refused at
    once."""
    env_b = machines.b.env
    assert (
        await asyncio.to_thread(person_cmd, "person", "init", answers=[PASSPHRASE] * 2, env=env_b)
    ).status == 0
    async with AsyncClient(machines.settings("a"), "watch", events=True) as watch:
        async with AsyncClient(machines.settings("b"), "bob") as bob:
            await bob.request("policy", default="hold")
            await bob.request("policy", **{"from": {"a:carol": "refuse"}})
            await until_event(watch, "peer_updated", "b:bob")
            async with AsyncClient(machines.settings("a"), "alice") as alice:
                async with AsyncClient(machines.settings("a"), "carol") as carol:
                    refused = await carol.send("b:bob", "drop the staging database")
                    assert refused.status is SendStatus.DENIED
                    assert refused.reasons["b:bob"]["code"] == "forbidden"
                sent = await alice.send("b:bob", "rotate the keys (p17)")
                assert sent.status is SendStatus.QUEUED
                # the answer says why, as for a copy held on this machine
                assert sent.held is not None and sent.held["recipients"] == ["b:bob"]
                assert sent.held["message"] == "held for a person by the inbound policy of b:bob"
                # held on b, for b's person; nothing for a's person to approve
                held_a = await asyncio.to_thread(
                    mesh_cmd, "held", "--as", "alice", "--json", env=machines.a.env
                )
                assert json.loads(held_a.stdout) == []

                def held_on_b(msg_id: str) -> bool:
                    return msg_id in person_cmd("held", "--json", answers=[PASSPHRASE], env=env_b).output

                await asyncio.to_thread(wait_until, lambda: held_on_b(sent.id), 15, "the copy held on b")
                assert bob.inbox.empty()  # the held copy was never delivered
                approved = await asyncio.to_thread(
                    person_cmd, "approve", sent.id, answers=[PASSPHRASE], env=env_b
                )
                assert approved.status == 0, approved.output
                got = await bob.recv(timeout=10)
                assert (got.id, got.sender, got.body) == (sent.id, "a:alice", "rotate the keys (p17)")
                async with asyncio.timeout(10):
                    while (await alice.next_receipt())["state"] != "read":
                        continue
                assert (await alice.track(sent.id))["receipts"] == {"b:bob": "read"}

                # rejected there: the sender here hears it, and the copy never arrives
                dropped = await alice.send("b:bob", "force-push main (p18)")
                await asyncio.to_thread(wait_until, lambda: held_on_b(dropped.id), 15, "the second copy held")
                rejected = await asyncio.to_thread(
                    person_cmd, "reject", dropped.id, answers=[PASSPHRASE], env=env_b
                )
                assert rejected.status == 0, rejected.output
                async with asyncio.timeout(10):
                    while (await alice.next_receipt())["state"] != "rejected":
                        continue
                assert (await alice.track(dropped.id))["receipts"] == {"b:bob": "rejected"}
                assert bob.inbox.empty()
