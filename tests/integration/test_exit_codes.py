"""Issue #16: every row of README's exit-code table, through the real ``mesh``
command. The table is read from README.md, so a row without a case here fails."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.client.sync import SyncClient

from ..conftest import BrokerProcess, mesh_cmd

README = Path(__file__).resolve().parents[2] / "README.md"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def readme_codes() -> set[int]:
    text = README.read_text()
    table = text[text.index("### Exit codes") :].split("\n\n", 2)[1]
    codes: set[int] = set()
    for row in table.splitlines()[2:]:
        codes.update(int(c) for c in re.findall(r"\b(\d+)\b", row.split("|")[1]))
    return codes


def _replying(broker: BrokerProcess, status: str) -> Callable[[], None]:
    """bob answers the next request with ``status``; returns a join for the thread."""
    bob = SyncClient(broker.settings(), "bob")
    bob.__enter__()

    def answer() -> None:
        request = bob.recv(timeout=20)
        while request.kind.value != "request":  # bob's first, plain message comes before
            request = bob.recv(timeout=20)
        bob.reply(request.id, f"it is {status}", status=status)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()

    def done() -> None:
        thread.join(timeout=20)
        bob.close()

    return done


# (code, what, argv, setup): setup may return a clean-up; "{id}" is an id of alice's
CASES: list[tuple[int, str, list[str], Any]] = [
    (0, "a send that is received or queued", ["send", "--as", "alice", "bob", "hi"], None),
    (0, "ask answered PASS", ["ask", "--as", "alice", "bob", "ok?", "--timeout", "20"], "PASS"),
    (
        1,
        "an error: no such message",
        ["track", "--as", "alice", "01a24dde-0000-7000-8000-000000000000"],
        None,
    ),
    (2, "usage: a missing argument", ["send", "--as", "alice"], None),
    (2, "usage: an id prefix too short", ["track", "--as", "alice", "01a2"], None),
    (3, "denied: no such peer", ["send", "--as", "alice", "nobody", "hi"], None),
    (4, "refused: self-send", ["send", "--as", "alice", "alice", "hi"], None),
    (4, "refused: a body over the limit", ["send", "--as", "alice", "bob", "-"], "300kB"),
    (4, "refused: a body over the frame limit", ["send", "--as", "alice", "bob", "-"], "5MB"),
    (4, "refused: an invalid own name", ["send", "--as", "Not A Name", "bob", "hi"], None),
    (4, "refused: an invalid recipient", ["send", "--as", "alice", "Bob!", "hi"], None),
    (4, "refused: a secret in the body", ["send", "--as", "alice", "bob", f"token {GITHUB_TOKEN}"], None),
    (4, "refused: an empty body", ["send", "--as", "alice", "bob", "   "], None),
    (5, "timeout", ["await", "--as", "alice", "{id}", "--timeout", "0.5"], None),
    (6, "no broker reachable", ["peers"], "nobroker"),
    (7, "lock conflict", ["lock", "--as", "alice", "src/held.py"], "locked"),
    (10, "ask answered PARTIAL", ["ask", "--as", "alice", "bob", "ok?", "--timeout", "20"], "PARTIAL"),
    (11, "ask answered BLOCKED", ["ask", "--as", "alice", "bob", "ok?", "--timeout", "20"], "BLOCKED"),
    (12, "ask answered DECLINED", ["ask", "--as", "alice", "bob", "ok?", "--timeout", "20"], "DECLINED"),
]


def test_every_row_of_the_readme_table_has_a_case() -> None:
    assert readme_codes() == {code for code, *_ in CASES}


@pytest.mark.parametrize(("code", "what", "argv", "setup"), CASES, ids=[c[1] for c in CASES])
def test_each_exit_code_is_what_readme_says(
    broker_proc: BrokerProcess, tmp_path: Path, code: int, what: str, argv: list[str], setup: Any
) -> None:
    env = dict(broker_proc.env)
    for name in ("alice", "bob"):
        assert mesh_cmd("join", name, env=env).returncode == 0
    sent = json.loads(mesh_cmd("send", "--as", "alice", "--json", "bob", "first", env=env).stdout)
    argv = [a.replace("{id}", sent["id"]) for a in argv]
    done: Callable[[], None] | None = None
    stdin = None
    if setup in ("PASS", "PARTIAL", "BLOCKED", "DECLINED"):
        done = _replying(broker_proc, setup)
    elif setup in ("300kB", "5MB"):
        stdin = "x" * (300_000 if setup == "300kB" else 5_000_000)
    elif setup == "nobroker":
        env = {**env, "MESH_HOME": str(tmp_path / "empty"), "MESH_AUTOSTART": "0"}
    elif setup == "locked":
        assert mesh_cmd("lock", "--as", "bob", "src/held.py", env=env).returncode == 0
    out = mesh_cmd(*argv, env=env, input=stdin, timeout=60)
    if done is not None:
        done()
    assert out.returncode == code, (what, out.stdout[-300:], out.stderr[-300:])
    # and under --json, the answer is JSON on stdout
    if argv[0] not in ("ask",) and code != 2:
        again = mesh_cmd(*argv, "--json", env=env, input=stdin, timeout=60)
        assert again.returncode == code, (what, again.stderr[-300:])
        json.loads(again.stdout.splitlines()[-1])
