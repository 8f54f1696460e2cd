"""`mesh serve --backend nats` from flags and from config.toml: it starts, says so on
/health, and a restart over the same streams and buckets (created or updated) works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

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
