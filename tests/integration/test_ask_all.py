"""Issue #17 item 6: `mesh ask a,b,c "…" --all` waits for every reply and exits by the
worst end-state: two independent reviews, then consensus, in one command."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from sessionmesh.client.sync import SyncClient

from ..conftest import BrokerProcess, mesh_cmd


def _reviewer(broker: BrokerProcess, name: str, status: str | None, ready: threading.Barrier) -> Any:
    """A peer that answers the next request with ``status`` (None: never answers)."""
    client = SyncClient(broker.settings(), name)
    client.__enter__()

    def run() -> None:
        ready.wait(timeout=20)
        request = client.recv(timeout=20)
        if status is not None:
            client.reply(request.id, f"{name} says {status}", status=status)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return client, thread


@pytest.mark.parametrize(
    ("answers", "code", "worst"),
    [
        ({"rev-a": "PASS", "rev-b": "PASS"}, 0, "PASS"),
        ({"rev-a": "PASS", "rev-b": "BLOCKED"}, 11, "BLOCKED"),
        ({"rev-a": "PARTIAL", "rev-b": "DECLINED"}, 12, "DECLINED"),
        ({"rev-a": "PASS", "rev-b": None}, 5, "timeout"),
    ],
)
def test_ask_all_waits_for_every_reply_and_exits_by_the_worst(
    broker_proc: BrokerProcess, answers: dict[str, str | None], code: int, worst: str
) -> None:
    assert mesh_cmd("join", "lead").returncode == 0
    ready = threading.Barrier(len(answers) + 1)
    reviewers = [_reviewer(broker_proc, name, status, ready) for name, status in answers.items()]
    ready.wait(timeout=20)
    timeout = "3" if None in answers.values() else "30"
    out = mesh_cmd(
        "ask", "rev-a,rev-b", "is it safe to merge?", "--all", "--as", "lead", "--json", "--timeout", timeout
    )
    for client, thread in reviewers:
        thread.join(timeout=20)
        client.close()
    assert out.returncode == code, out.stderr
    result = json.loads(out.stdout)
    assert result["worst"] == worst
    assert result["states"] == {n: (s or "timeout") for n, s in answers.items()}
    assert {r["from"] for r in result["replies"].values()} == {n for n, s in answers.items() if s}
    plain = mesh_cmd("ask", "rev-a", "anything else?", "--all", "--as", "lead", "--timeout", "0.5")
    assert plain.returncode == 5 and "0 of 1 answered" in plain.stdout
