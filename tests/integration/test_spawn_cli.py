"""``mesh spawn`` / ``mesh despawn`` through the real command, on a real broker, with
stand-in programs (``--program``): refusals happen before anything starts, an
interactive spawn returns once its name is online and despawn ends it, and a headless
spawn answers the oldest request with an end-state. The real programs:
tests/agents/test_spawn.py."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionmesh.client.sync import SyncClient

from ..conftest import BrokerProcess, mesh_cmd

NAME = "reviewer"

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="mesh spawn needs tmux")


def program(folder: Path, body: str) -> Path:
    """An executable shell script standing in for an agent program."""
    path = folder / "agent"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# an agent that joins the mesh under MESH_NAME and stays, as a program's MCP server does
ONLINE = f"exec {sys.executable} -m sessionmesh watch >/dev/null 2>&1"


@pytest.fixture
def socket() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="mesh-spawn-")  # short: a socket path has a length limit
    path = f"{folder}/tmux.sock"
    yield path
    subprocess.run(["tmux", "-S", path, "kill-server"], capture_output=True, timeout=10, check=False)
    shutil.rmtree(folder, ignore_errors=True)


def spawn(
    work: Path, socket: str, *extra: str, agent: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return mesh_cmd(
        "spawn", "claude-code", "--cwd", str(work), "--socket", socket, "--json",
        *(["--program", str(agent)] if agent else []), *extra,
        timeout=60,
    )  # fmt: skip


def presence(broker: BrokerProcess, name: str) -> str | None:
    peers = json.loads(mesh_cmd("peers", "--json").stdout)
    return next((p["presence"] for p in peers if p["name"] == name), None)


def test_spawn_without_a_name_is_a_usage_error(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    done = spawn(tmp_path, socket, agent=program(tmp_path, ONLINE))
    assert done.returncode == 2
    assert "--as NAME" in done.stderr


def test_spawn_refuses_an_invalid_name_before_installing_anything(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = spawn(work, socket, "--as", "Not A Name", agent=program(tmp_path, ONLINE))
    assert done.returncode == 4, done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "invalid_name"
    assert list(work.iterdir()) == []


def test_spawn_refuses_a_name_that_is_online_with_exit_7(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with SyncClient(broker_proc.settings(), NAME):
        done = spawn(work, socket, "--as", NAME, agent=program(tmp_path, ONLINE))
    assert done.returncode == 7, done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "name_taken"
    assert list(work.iterdir()) == []


def test_spawn_refuses_a_folder_installed_for_the_program_under_another_name(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert mesh_cmd("install", "claude-code", "--as", "builder", "--dir", str(work)).returncode == 0
    before = (work / ".mcp.json").read_text()
    done = spawn(work, socket, "--as", NAME, agent=program(tmp_path, ONLINE))
    assert done.returncode == 1, done.stderr
    assert "'builder'" in json.loads(done.stdout)["error"]["message"]
    assert (work / ".mcp.json").read_text() == before


def test_spawn_names_the_missing_program(tmp_path: Path, broker_proc: BrokerProcess, socket: str) -> None:
    done = spawn(tmp_path, socket, "--as", NAME, "--program", str(tmp_path / "no-such-claude"))
    assert done.returncode == 1
    assert "--program" in json.loads(done.stdout)["error"]["hint"]


def test_despawn_of_a_name_never_spawned_is_not_found(broker_proc: BrokerProcess) -> None:
    done = mesh_cmd("despawn", NAME, "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "not_found"


def test_spawn_returns_online_and_despawn_ends_the_window_and_the_peer(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = spawn(work, socket, "--as", NAME, agent=program(tmp_path, ONLINE))
    assert done.returncode == 0, done.stderr
    spawned = json.loads(done.stdout)
    assert presence(broker_proc, NAME) == "online"
    assert "--as" in (work / ".mcp.json").read_text()  # installed under the name
    record = broker_proc.home / "spawned" / f"{NAME}.json"
    assert json.loads(record.read_text())["window"] == spawned["window"]

    again = spawn(work, socket, "--as", NAME, agent=program(tmp_path, ONLINE))
    assert again.returncode == 7

    ended = mesh_cmd("despawn", NAME, "--json")
    assert ended.returncode == 0, ended.stderr
    assert presence(broker_proc, NAME) != "online"
    assert not record.exists()
    windows = subprocess.run(
        ["tmux", "-S", socket, "list-windows", "-a", "-F", "#{window_id}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert spawned["window"] not in windows.stdout


def test_a_program_that_exits_before_joining_fails_fast_with_its_screen(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    agent = program(tmp_path, "echo 'please log in first (x91)'; exit 3")
    done = spawn(tmp_path, socket, "--as", NAME, "--timeout", "30", agent=agent)
    assert done.returncode == 5, done.stderr
    error = json.loads(done.stdout)["error"]
    assert "its program exited" in error["message"]
    assert "please log in first (x91)" in error["message"]
    assert not (broker_proc.home / "spawned" / f"{NAME}.json").exists()


def test_headless_spawn_replies_to_the_oldest_request_with_the_answer_and_pass(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    agent = program(tmp_path, 'printf "seen: %s\\n" "$2"')  # argv: -p PROMPT
    assert mesh_cmd("join", NAME).returncode == 0
    with SyncClient(broker_proc.settings(), "lead") as lead:
        first = lead.send(NAME, "first question (q1)", kind="request")
        lead.send(NAME, "second question (q2)", kind="request")
        done = spawn(tmp_path, socket, "--as", NAME, "--headless", agent=agent)
        assert done.returncode == 0, done.stderr
        reply = lead.await_reply(first.id, timeout=10).to_wire()
    assert reply["status"] == "PASS"
    assert "first question (q1)" in reply["body"]
    assert "second question" not in reply["body"]
    assert json.loads(done.stdout)["request"]["id"] == first.id


def test_headless_spawn_whose_program_fails_replies_blocked_and_exits_11(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    agent = program(tmp_path, "echo 'quota exceeded (z7)' >&2; exit 3")
    assert mesh_cmd("join", NAME).returncode == 0
    with SyncClient(broker_proc.settings(), "lead") as lead:
        request = lead.send(NAME, "do the thing", kind="request")
        done = spawn(tmp_path, socket, "--as", NAME, "--headless", agent=agent)
        assert done.returncode == 11, done.stderr
        reply = lead.await_reply(request.id, timeout=10).to_wire()
    assert reply["status"] == "BLOCKED"
    assert "quota exceeded (z7)" in reply["body"]


def test_headless_spawn_with_a_prompt_and_no_request_only_prints(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    agent = program(tmp_path, 'printf "said: %s\\n" "$2"')
    done = spawn(tmp_path, socket, "--as", NAME, "--headless", "--prompt", "hello there", agent=agent)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["request"] is None and answer["reply"] is None
    assert answer["output"] == "said: hello there"


def test_headless_spawn_with_no_request_and_no_prompt_times_out(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    agent = program(tmp_path, "echo never")
    done = spawn(tmp_path, socket, "--as", NAME, "--headless", "--timeout", "1", agent=agent)
    assert done.returncode == 5, done.stderr
    assert "no request" in json.loads(done.stdout)["error"]["message"]


def test_no_process_of_a_spawn_outlives_despawn(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    done = spawn(tmp_path, socket, "--as", NAME, agent=program(tmp_path, ONLINE))
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout)["pane_pid"]
    assert mesh_cmd("despawn", NAME).returncode == 0
    assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_every_program_mesh_installs_has_a_way_to_be_spawned() -> None:
    from sessionmesh import programs

    for name in programs.NAMES:
        launch = programs.get(name).LAUNCH
        assert isinstance(launch, programs.Launch), name
        assert launch.executable and launch.headless, name


def test_spawn_into_a_running_tmux_session_passes_its_own_environment(
    tmp_path: Path, broker_proc: BrokerProcess, socket: str
) -> None:
    bare = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # a server started elsewhere: no MESH_HOME
    subprocess.run(
        ["tmux", "-S", socket, "new-session", "-d", "-s", "mesh"], env=bare, check=True, timeout=10
    )
    done = spawn(tmp_path, socket, "--as", NAME, agent=program(tmp_path, ONLINE))
    assert done.returncode == 0, done.stderr
    spawned = json.loads(done.stdout)
    windows = subprocess.run(
        ["tmux", "-S", socket, "list-windows", "-t", "=mesh", "-F", "#{window_id}"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.split()
    assert len(windows) == 2 and spawned["window"] in windows  # a window beside the one there
    assert presence(broker_proc, NAME) == "online"
    assert mesh_cmd("despawn", NAME).returncode == 0
