"""Issue #15: no agent can stall the broker for the others. Each attack runs against
a broker in its own process while a bystander pair keeps sending; the bystander's
round trips (send → ``received``) stay under 50 ms at p99."""

from __future__ import annotations

import resource
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sessionmesh.client.sync import SyncClient
from sessionmesh.gate import PENDING_LIMIT

from ..conftest import BrokerProcess, mesh_cmd

P99_BOUND = 0.050
FLOOD = 2_000_000  # pings a client that never reads sends; their answers are ~140 MB


class Bystander:
    """Two peers that keep sending to each other, each send timed to its answer."""

    def __init__(self, broker: BrokerProcess) -> None:
        settings = broker.settings()
        self.alice = SyncClient(settings, "bystander-a").__enter__()
        self.bob = SyncClient(settings, "bystander-b").__enter__()
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            answer = self.alice.send("bystander-b", "still there?")
            self.times.append(time.perf_counter() - started)
            assert answer.status == "received"
            self.bob.recv(timeout=10)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.alice.close()
        self.bob.close()

    def p99(self) -> float:
        assert len(self.times) >= 20, f"only {len(self.times)} round trips during the attack"
        return statistics.quantiles(self.times, n=100)[98]


@contextmanager
def more_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_strangers_that_never_send_a_byte_lock_nobody_out(broker_proc: BrokerProcess) -> None:
    """1,100 idle connections locked every client out under a limit of 1,024 files."""
    host, port = broker_proc.url.split("//", 1)[1].rsplit(":", 1)
    with more_files(), Bystander(broker_proc) as bystander:
        strangers = [socket.create_connection((host, int(port))) for _ in range(1100)]
        try:
            joined = mesh_cmd("join", "newcomer")  # a client arriving mid-attack
            assert joined.returncode == 0, joined.stderr
            deadline = time.monotonic() + 10
            while sum(_closed_by_peer(s) for s in strangers) < 1100 - PENDING_LIMIT:
                assert time.monotonic() < deadline, "the broker kept every stranger open"
            while len(bystander.times) < 50:
                assert time.monotonic() < deadline
        finally:
            for sock in strangers:
                sock.close()
    assert bystander.p99() < P99_BOUND, sorted(bystander.times)[-5:]


async def test_a_request_that_stops_halfway_is_closed_at_the_deadline(broker, monkeypatch) -> None:
    import asyncio

    from sessionmesh import transports

    broker.runner.gate.deadline = 1.0
    monkeypatch.setattr(transports, "BODY_DEADLINE", 1.0)
    host, port = broker.settings.url.split("//", 1)[1].rsplit(":", 1)
    # a stranger stops in its headers: closed at the gate's deadline, nothing answered
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), timeout=10) == b""
    assert 0.5 < time.monotonic() - started < 5
    assert broker.runner.gate.pending == 0
    writer.close()
    # a client with the token stops in its body: answered with a typed timeout
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        "POST /v1/peers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
        f"Authorization: Bearer {broker.runner.token}\r\nX-Mesh-Name: x\r\n\r\n{{"
    )
    writer.write(head.encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), timeout=10)
    assert answer.startswith(b"HTTP/1.1 504") and b'"code":"timeout"' in answer
    writer.close()


async def test_a_connection_that_shows_the_token_is_not_a_stranger_any_more(broker) -> None:
    from sessionmesh.client.aio import AsyncClient

    broker.runner.gate.deadline = 0.5
    async with AsyncClient(broker.settings, "steady") as steady:
        import asyncio

        await asyncio.sleep(1.5)  # sleep-ok: three deadlines pass; the session must outlive them
        assert [p["name"] for p in await steady.peers()] == ["steady"]
        assert broker.runner.gate.pending == 0


@pytest.mark.parametrize("count", [300])
async def test_past_the_cap_the_oldest_stranger_is_closed_first(broker, count: int) -> None:
    import asyncio

    broker.runner.gate.limit = 100
    host, port = broker.settings.url.split("//", 1)[1].rsplit(":", 1)
    opened = [await asyncio.open_connection(host, int(port)) for _ in range(count)]
    async with asyncio.timeout(10):
        while broker.runner.gate.pending > 100 or broker.runner.gate.closed_pending < count - 100:
            await asyncio.sleep(0.01)  # sleep-ok: polls a bounded condition
    # the first ones opened are the ones closed
    assert await asyncio.wait_for(opened[0][0].read(), timeout=5) == b""
    for _, writer in opened:
        writer.close()


def _heavy_body(seed: int) -> str:
    """~200 kB of prose with commands in it: the screen's parsers must read it."""
    import random

    rng = random.Random(seed)
    words = ["the", "build", "rm", "git", "push", "origin", "drop", "table", "find", "-name", "and", "then"]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(3000)]
    return "\n".join(lines)[:200_000]


def test_large_bodies_are_screened_off_the_event_loop(broker_proc: BrokerProcess) -> None:
    """Screening a 200 kB body cost about 60 ms of the event loop; at 16 such sends a
    second, other peers' round trips reached 0.5-1.2 s."""
    settings = broker_proc.settings()
    with (
        SyncClient(settings, "heavy") as heavy,
        SyncClient(settings, "sink"),
        Bystander(broker_proc) as bystander,
    ):
        started = time.monotonic()
        for i in range(32):  # two seconds of 16 a second
            answer = heavy.send("sink", _heavy_body(i))
            assert answer.status in ("received", "queued"), answer
            time.sleep(max(0.0, started + (i + 1) / 16 - time.monotonic()))  # sleep-ok: paces the attack
        deadline = time.monotonic() + 10
        while len(bystander.times) < 50:
            assert time.monotonic() < deadline
    assert bystander.p99() < P99_BOUND, sorted(bystander.times)[-5:]


def test_a_client_that_never_reads_stalls_only_itself(broker_proc: BrokerProcess) -> None:
    """A client pipelining requests and never reading grew the broker from 179 MB to
    2.5 GB in 50 s; now the broker stops reading it, and the others go on."""
    from .test_wire import _flood_without_reading

    token = (broker_proc.home / "token").read_text().strip()
    with Bystander(broker_proc) as bystander:
        # more answers than the socket buffers can take (the reader's may grow to 32 MiB)
        sent, sock = _flood_without_reading(broker_proc.url, token, FLOOD)
        try:
            deadline = time.monotonic() + 10
            while len(bystander.times) < 100:
                assert time.monotonic() < deadline
        finally:
            sock.close()
    assert sent < FLOOD  # the broker stopped reading it
    assert bystander.p99() < P99_BOUND, sorted(bystander.times)[-5:]
