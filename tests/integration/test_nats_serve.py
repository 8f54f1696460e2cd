"""`mesh serve --backend nats` from flags and from config.toml: it starts, says so on
/health, and a restart over the same streams and buckets (created or updated) works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import nats_overrides, read_line
from tests.natsserver import NatsNode


def serve(home: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionmesh", "serve", "--port", "0", "--home", str(home), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    line = read_line(proc, 20)
    assert "listening on" in line, line
    return proc, line.split("listening on ", 1)[1].split()[0]


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        return json.load(resp)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    assert proc.wait(timeout=20) == 0
    assert proc.stdout is not None
    proc.stdout.close()


def test_serve_takes_the_nats_backend_from_flags_and_restarts_on_the_same_streams(
    nats_node: NatsNode, tmp_path: Path
) -> None:
    ns = nats_overrides(nats_node.url)["nats_namespace"]
    flags = ("--backend", "nats", "--nats-url", nats_node.url, "--machine", "desk", "--nats-namespace", ns)
    for _ in range(2):  # the second start finds every stream and bucket there already
        proc, url = serve(tmp_path / "home", *flags)
        try:
            got = health(url)
            assert (got["backend"], got["machine"], got["nats_connected"]) == ("nats", "desk", True)
        finally:
            stop(proc)


def test_serve_takes_the_nats_backend_from_config_toml(nats_node: NatsNode, tmp_path: Path) -> None:
    ns = nats_overrides(nats_node.url)["nats_namespace"]
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'backend = "nats"\nnats_url = "{nats_node.url}"\nmachine = "lab"\nnats_namespace = "{ns}"\n'
    )
    proc, url = serve(home)
    try:
        assert (health(url)["backend"], health(url)["machine"]) == ("nats", "lab")
    finally:
        stop(proc)


@pytest.mark.parametrize("fate", ["killed", "frozen"])
async def test_sigterm_stops_a_broker_within_5s_whatever_became_of_its_nats_server(
    tmp_path: Path, fate: str
) -> None:
    """Killed: the connection drops. Frozen (SIGSTOP): the socket stays open and
    nothing answers, as with a NATS that is slow or cut off by the network."""
    from sessionmesh.client.aio import AsyncClient
    from sessionmesh.envelope import SendStatus
    from tests.conftest import BrokerProcess

    node = NatsNode("doomed", tmp_path / "nats").start()
    home = tmp_path / "home"
    env = {f"MESH_{k.upper()}": str(v) for k, v in nats_overrides(node.url, "desk").items()}
    broker = BrokerProcess(home, {**os.environ, "MESH_HOME": str(home), **env})
    try:
        broker.start()
        settings = broker.settings(request_timeout=3.0)
        async with AsyncClient(settings, "alice") as alice, AsyncClient(settings, "bob"):
            assert (await alice.send("bob", "before")).status is SendStatus.RECEIVED
            assert node.proc is not None
            if fate == "killed":
                node.kill()
            else:
                node.freeze()
            started = time.monotonic()
            result = await alice.send("bob", "while NATS is gone")
            assert result.status is SendStatus.TIMEOUT
            assert time.monotonic() - started < 6.0
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            try:
                broker.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                raise AssertionError("the broker did not stop within 5s of SIGTERM") from None
        assert time.monotonic() - started < 5.0
        with pytest.raises(ProcessLookupError):
            os.kill(broker.proc.pid, 0)
    finally:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.kill()
        broker._close_pipe()
        node.kill()
