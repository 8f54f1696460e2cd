"""A crash inside the window between a batch's early effects and its commit
(docs/design.md, "Effects before the commit"), on a real broker process that dies
there (`tests.crash_at_commit`), in both SQLite sync modes.

- A live delivery goes out before the commit that stores the message. A crash then
  leaves the recipient holding a message the store lacks, and the sender without an
  answer. The sender's client resends it with the same id to the restarted broker,
  which stores it once; the recipient's client hands it to the application once.
- A recipient's ``read`` ack is answered (and its sender told ``received``) before
  the commit that moves the receipt. A crash then undoes only that move: the
  message, stored by an earlier commit, is redelivered, not lost, the application
  still sees it once, and the receipt ends ``read`` again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from sessionmesh.client.aio import AsyncClient
from sessionmesh.envelope import Envelope, SendStatus
from sessionmesh.errors import StorageError, Unavailable
from tests.conftest import BrokerProcess

both_sync_modes = pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])

ANSWERED = (SendStatus.RECEIVED, SendStatus.QUEUED)


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def _died(broker: BrokerProcess) -> int:
    proc = broker.proc
    assert proc is not None
    async with asyncio.timeout(30):
        while proc.poll() is None:
            await asyncio.sleep(0.02)  # sleep-ok: bounded poll of another process's exit
    broker._close_pipe()
    return proc.returncode


async def _crashed_and_restarted(broker: BrokerProcess, marker: Path, what: str) -> None:
    """The crashing broker died where it was told to; a plain one takes its home."""
    assert await _died(broker) == 137
    assert marker.read_text() == what
    broker.command = [sys.executable, "-m", "sessionmesh"]
    broker.start()


async def _until(peer: AsyncClient, msg_id: str) -> list[Envelope]:
    """What ``peer``'s application is handed, up to and including ``msg_id``."""
    seen = []
    async with asyncio.timeout(30):
        while not seen or seen[-1].id != msg_id:
            seen.append(await peer.recv())
    return seen


def _stored(home: Path, msg_id: str) -> int:
    with sqlite3.connect(home / "mesh.db") as db:
        return int(db.execute("SELECT count(*) FROM messages WHERE id = ?", (msg_id,)).fetchone()[0])


def _crashing(broker_proc: BrokerProcess, what: str, text: str, synchronous: str) -> Path:
    """Restart ``broker_proc`` as a broker that dies at the commit of ``what``."""
    marker = broker_proc.home / "crashed"
    broker_proc.stop()
    broker_proc.env["MESH_SQLITE_SYNCHRONOUS"] = synchronous
    broker_proc.command = [sys.executable, "-m", "tests.crash_at_commit", what, text, str(marker)]
    broker_proc.start()
    return marker


@both_sync_modes
async def test_a_crash_after_the_delivery_and_before_its_commit_stores_it_once(broker_proc, synchronous):
    marker = _crashing(broker_proc, "stored", "(w1)", synchronous)
    settings = broker_proc.settings(url=None)
    async with AsyncClient(settings, "bob") as bob, AsyncClient(settings, "alice") as alice:
        sending = asyncio.create_task(alice.send("bob", "crash after the delivery (w1)"))
        await _crashed_and_restarted(broker_proc, marker, "stored")
        result = await asyncio.wait_for(sending, 30)
        assert result.status in ANSWERED
        after = await alice.send("bob", "the next one")
        seen = await _until(bob, after.id)  # per-pair order: a second copy would come first
        assert [env.id for env in seen] == [result.id, after.id]
        assert bob.reconnects >= 1
    broker_proc.stop()
    assert _stored(broker_proc.home, result.id) == 1


@both_sync_modes
async def test_a_crash_after_the_read_answer_and_before_its_commit_loses_nothing(broker_proc, synchronous):
    marker = _crashing(broker_proc, "read", "(w2)", synchronous)
    settings = broker_proc.settings(url=None)
    async with AsyncClient(settings, "bob") as bob, AsyncClient(settings, "alice") as alice:
        sending = asyncio.create_task(alice.send("bob", "crash after the read answer (w2)"))
        first = await asyncio.wait_for(bob.recv(), 30)  # taking it acks it 'read'
        await _crashed_and_restarted(broker_proc, marker, "read")
        result = await asyncio.wait_for(sending, 30)
        assert result.id == first.id and result.status in ANSWERED
        after = await alice.send("bob", "the next one")
        seen = await _until(bob, after.id)
        assert [env.id for env in seen] == [after.id]  # the redelivered copy is not handed on again
        async with asyncio.timeout(10):  # bob's client acks the dropped copy 'read' again
            while (await alice.request("track", id=result.id))["receipts"] != {"bob": "read"}:
                await asyncio.sleep(0.02)  # sleep-ok: a bounded poll of the broker's receipt
    broker_proc.stop()
    assert _stored(broker_proc.home, result.id) == 1


async def test_a_commit_that_fails_stops_the_broker_before_it_answers(broker, monkeypatch):
    """Early frames of the batch may be out: nothing may answer as if it were stored."""
    async with (
        AsyncClient(broker.settings, "bob", reconnect=False),
        AsyncClient(broker.settings, "alice", reconnect=False) as alice,
    ):

        def fail() -> None:
            raise StorageError("the disk is full (a test)")

        monkeypatch.setattr(broker.runner.store, "commit", fail)
        sending = asyncio.create_task(alice.send("bob", "never stored"))
        await asyncio.wait_for(asyncio.shield(broker.task), 10)  # the broker stopped
        assert not broker.runner.conns  # every connection was cut
        result = await asyncio.wait_for(sending, 5)  # the cut ends the wait: no reconnect
        assert result.status is SendStatus.TIMEOUT  # never answered: its outcome is unknown
        with pytest.raises(Unavailable):
            await alice.request("ping")
