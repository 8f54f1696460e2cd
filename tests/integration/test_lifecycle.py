"""Starting and stopping brokers: files and modes, one broker per home under races,
background start, idle exit, graceful down."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from sessionmesh.client import discovery
from sessionmesh.config import load
from tests.conftest import BrokerProcess, mesh_cmd, wait_until


def _alive(pid: int) -> bool:
    return discovery.pid_alive(pid)


def test_serve_writes_broker_json_token_0600_wal_and_binds_loopback(broker_proc):
    info = json.loads((broker_proc.home / "broker.json").read_text())
    assert info["url"] == broker_proc.url and info["pid"] == broker_proc.proc.pid
    assert info["url"].startswith("http://127.0.0.1:")
    assert stat.S_IMODE(os.stat(broker_proc.home / "token").st_mode) == 0o600
    from sessionmesh.storage.sqlite import SqliteStore

    assert SqliteStore(str(broker_proc.home / "mesh.db")).journal_mode == "wal"
    mesh_cmd("join", "alice", env={**os.environ, "MESH_HOME": str(broker_proc.home)})
    assert stat.S_IMODE(os.stat(broker_proc.home / "secrets" / "alice").st_mode) == 0o600


def test_a_second_broker_on_the_same_home_is_refused(broker_proc):
    second = mesh_cmd("serve", "--port", "0", "--home", str(broker_proc.home), timeout=20)
    assert second.returncode != 0
    assert "already runs" in second.stderr
    assert json.loads((broker_proc.home / "broker.json").read_text())["pid"] == broker_proc.proc.pid


def test_ten_racing_clients_start_exactly_one_broker(mesh_home):
    settings = load(env={}, overrides={"home": str(mesh_home), "port": 0})
    with ThreadPoolExecutor(10) as pool:
        urls = list(pool.map(lambda _: discovery.locate(settings).url, range(10)))
    status = discovery.running_broker(settings)
    try:
        assert status is not None and set(urls) == {status["url"]}
        assert status["autostarted"] is True
        serving = [p for p in os.listdir("/proc") if p.isdigit() and _cmd_serves(p, str(mesh_home))]
        assert serving == [str(status["pid"])]
    finally:
        down = mesh_cmd("down", "--home", str(mesh_home))
        assert down.returncode == 0, down.stderr
    assert not _alive(status["pid"])
    while discovery._spawned:  # reap the broker this test process started
        discovery._spawned.pop().wait(10)


def _cmd_serves(pid: str, home: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and home.encode() in argv and _alive(int(pid))


def test_autostarted_broker_exits_after_its_idle_timeout(mesh_home):
    env = {**os.environ, "MESH_HOME": str(mesh_home), "MESH_IDLE_TIMEOUT": "1.5"}
    assert mesh_cmd("join", "alice", env=env).returncode == 0  # starts one
    pid = json.loads((mesh_home / "broker.json").read_text())["pid"]
    wait_until(lambda: not _alive(pid), 15, "idle broker exit")
    assert not (mesh_home / "broker.json").exists()


def test_up_then_down_stops_the_broker_gracefully(mesh_home):
    env = {**os.environ, "MESH_HOME": str(mesh_home)}
    up = mesh_cmd("up", "--json", env=env)
    assert up.returncode == 0, up.stderr
    pid = json.loads(up.stdout)["pid"]
    assert mesh_cmd("status", env=env).returncode == 0
    assert mesh_cmd("down", env=env).returncode == 0
    assert not _alive(pid)
    assert mesh_cmd("status", env=env).returncode == 6


def test_sigterm_stops_serve_cleanly_and_keeps_the_data(broker_proc):
    env = {**os.environ, "MESH_HOME": str(broker_proc.home), "MESH_AUTOSTART": "0"}
    mesh_cmd("join", "bob", env=env)
    sent = json.loads(mesh_cmd("send", "--as", "alice", "bob", "kept", "--json", env=env).stdout)
    assert broker_proc.stop() == 0
    assert not (broker_proc.home / "broker.json").exists()
    broker_proc.start()
    inbox = json.loads(mesh_cmd("inbox", "--as", "bob", "--json", env=env).stdout)
    assert [m["id"] for m in inbox] == [sent["id"]]


def test_config_file_and_environment_layer_in_order(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text("idle_timeout = 30\nrate_limit = 5\n")
    settings = load(env={"MESH_HOME": str(home), "MESH_RATE_LIMIT": "7"}, overrides={"port": 0})
    assert (settings.idle_timeout, settings.rate_limit, settings.port) == (30.0, 7.0, 0)
    import pytest

    from sessionmesh.errors import BadRequest

    with pytest.raises(BadRequest):
        load(env={"MESH_HOME": str(home), "MESH_RATE_LIMIT": "fast"})


def test_broker_process_fixture_restarts_on_the_same_home(mesh_home):
    broker = BrokerProcess(mesh_home, {**os.environ, "MESH_HOME": str(mesh_home)})
    first = broker.start()
    broker.kill()
    second = broker.start()
    try:
        assert first.startswith("http://127.0.0.1:") and second.startswith("http://127.0.0.1:")
        assert (
            discovery.running_broker(load(env={}, overrides={"home": str(mesh_home)}))["pid"]
            == broker.proc.pid
        )
    finally:
        broker.stop()


def test_an_autostarted_broker_takes_a_free_port_when_the_default_is_taken(mesh_home):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "MESH_HOME": str(mesh_home), "MESH_PORT": str(port)}
        done = mesh_cmd("join", "alice", env=env)
        assert done.returncode == 0, done.stderr
        info = json.loads((mesh_home / "broker.json").read_text())
        assert not info["url"].endswith(f":{port}")
        # an explicit `mesh serve` on a taken port is an error, not a silent move
        explicit = mesh_cmd(
            "serve", "--port", str(port), "--home", str(mesh_home / "other"), env=env, timeout=20
        )
        assert explicit.returncode == 6 and "cannot listen" in explicit.stderr
        assert mesh_cmd("down", env=env).returncode == 0


def test_a_malformed_request_is_one_log_line_and_a_big_log_is_rotated_at_start(tmp_path) -> None:  # noqa: ANN001
    """Issue #15: each malformed request logged a full traceback into a log never rotated."""
    import socket

    from sessionmesh.client import discovery
    from sessionmesh.config import load

    home = tmp_path / "home"
    home.mkdir()
    (home / "broker.log").write_bytes(b"old\n" * (discovery.LOG_KEEP_BYTES // 4 + 1))
    settings = load(env={}, overrides={"home": str(home), "port": 0})
    status = discovery.start_background(settings)
    try:
        assert (home / "broker.log.1").stat().st_size > discovery.LOG_KEEP_BYTES
        host, port = status["url"].removeprefix("http://").rsplit(":", 1)
        for _ in range(20):
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
                assert sock.recv(1000).startswith(b"HTTP/1.0 400")
    finally:
        mesh_cmd("down", env={**os.environ, "MESH_HOME": str(home)})
        discovery._spawned[-1].wait(10)  # reap the broker this test started
    lines = (home / "broker.log").read_text().splitlines()
    errors = [line for line in lines if "Error handling request" in line]
    assert len(errors) == 20 and all("BadHttpMessage" in line for line in errors)
    assert not any(line.startswith((" ", "Traceback")) for line in lines)


def test_an_invalid_sqlite_synchronous_is_a_clear_error_before_the_broker_starts(tmp_path):
    """It passed `load` and then crashed `mesh serve` with a traceback."""
    env = {**os.environ, "MESH_HOME": str(tmp_path / "home"), "MESH_SQLITE_SYNCHRONOUS": "OFF"}
    out = mesh_cmd("serve", "--port", "0", env=env, timeout=20)
    assert out.returncode == 1 and "sqlite_synchronous='OFF' must be NORMAL or FULL" in out.stderr
    assert "Traceback" not in out.stderr
