"""Issue #15: the short form of the fuzzers (``benchmarks/fuzz_broker.py`` is the
long one). Every fuzzed frame and request gets a typed answer or a clean close, none
hangs, and afterwards the broker still serves a real round trip."""

from __future__ import annotations

import asyncio

from sessionmesh.client.discovery import health
from sessionmesh.client.sync import SyncClient

from ..conftest import BrokerProcess
from ..fuzz import fuzz_http, fuzz_ws

FRAMES = 3000
REQUESTS = 300


def _still_serving(broker: BrokerProcess) -> None:
    assert health(broker.url, timeout=5) is not None
    settings = broker.settings()
    with SyncClient(settings, "after-a") as a, SyncClient(settings, "after-b") as b:
        assert a.send("after-b", "still here?").status == "received"
        assert b.recv(timeout=5).body == "still here?"


def test_fuzzed_websocket_frames_get_typed_answers(broker_proc: BrokerProcess) -> None:
    token = (broker_proc.home / "token").read_text().strip()
    tally = asyncio.run(fuzz_ws(broker_proc.url, token, FRAMES, seed=15))
    assert tally.sent == FRAMES
    assert (tally.untyped, tally.hung) == (0, 0), tally
    assert tally.answered > FRAMES // 2 and tally.typed_errors > 0
    assert broker_proc.proc is not None and broker_proc.proc.poll() is None
    _still_serving(broker_proc)


def test_fuzzed_http_requests_get_typed_answers(broker_proc: BrokerProcess) -> None:
    token = (broker_proc.home / "token").read_text().strip()
    tally = fuzz_http(broker_proc.url, token, REQUESTS, seed=15)
    assert tally.sent == REQUESTS
    assert (tally.untyped, tally.hung) == (0, 0), tally
    assert tally.typed_errors > 0
    assert broker_proc.proc is not None and broker_proc.proc.poll() is None
    _still_serving(broker_proc)
