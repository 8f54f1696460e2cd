"""Shared fixtures: a real broker process on port 0 with a temporary MESH_HOME, an
in-process broker on the test's event loop, and the settings to reach either."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.config import Settings, load
from sessionmesh.server import Runner
from tests.natsserver import NatsNode

START_TIMEOUT = 15.0
# A NATS-backed broker first makes its streams and buckets, which on a fresh cluster
# elect leaders; the broker allows that 30 s (`open_store`), and so does its test.
NATS_START_TIMEOUT = 45.0


class LineReader:
    """Lines of a child's stdout, read by a thread, handed out with a bounded wait."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import queue
        import threading

        self._lines: queue.Queue[str] = queue.Queue()
        self.pid = proc.pid
        stream = proc.stdout
        assert stream is not None

        def pump() -> None:
            for line in stream:
                self._lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def line(self, timeout: float) -> str:
        import queue

        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no output from pid {self.pid} within {timeout}s") from None


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of the process's stdout, waiting at most ``timeout`` seconds."""
    reader = getattr(proc, "_line_reader", None)
    if reader is None:
        reader = proc._line_reader = LineReader(proc)  # type: ignore[attr-defined]
    return reader.line(timeout)


@dataclass
class BrokerProcess:
    """`mesh serve` in a subprocess; restartable on the same home."""

    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    log: list[str] = field(default_factory=list)
    # what runs `mesh`'s arguments (tests.crash_at_commit puts a crash before a commit)
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "sessionmesh"])

    @property
    def stderr_path(self) -> Path:
        """Where the broker's log goes (beside its home: tests look inside the home)."""
        return self.home.parent / f"{self.home.name}.stderr"

    def start(self) -> str:
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "a") as log:
            self.proc = subprocess.Popen(
                [*self.command, "serve", "--port", "0", "--home", str(self.home)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self.env,
            )
        try:
            nats = self.env.get("MESH_BACKEND") == "nats"
            line = read_line(self.proc, NATS_START_TIMEOUT if nats else START_TIMEOUT)
            if "listening on" not in line:
                raise RuntimeError(f"broker did not start: {line!r}")
        except BaseException as exc:  # leave no process or pipe behind for a later test to trip on
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self._close_pipe()
            tail = self.stderr_path.read_text(errors="replace")[-3000:]
            if isinstance(exc, Exception):
                raise RuntimeError(f"the broker did not start ({exc}); its log ends:\n{tail}") from exc
            raise
        self.url = line.split("listening on ", 1)[1].split()[0]
        return self.url

    def kill(self) -> None:
        """SIGKILL: no clean-up runs in the broker."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        self._close_pipe()
        return code

    def settings(self, **overrides: Any) -> Settings:
        return load(
            env={}, overrides={"home": str(self.home), "url": self.url, "autostart": False, **overrides}
        )


@pytest.fixture(scope="session")
def nats_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsNode]:
    """One nats-server with JetStream for the whole session; tests keep apart by
    each using a namespace of its own (`nats_settings`)."""
    node = NatsNode("solo", tmp_path_factory.mktemp("nats")).start()
    yield node
    node.stop()


def nats_overrides(url: str, machine: str = "m1", **more: Any) -> dict[str, Any]:
    """Settings for a NATS-backed broker or store in a namespace no other test uses."""
    import secrets

    return {
        "backend": "nats",
        "nats_url": url,
        "machine": machine,
        "nats_namespace": "t" + secrets.token_hex(5),
        "nats_timeout": 5.0,
        **more,
    }


@pytest.fixture
def mesh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mesh-home"
    monkeypatch.setenv("MESH_HOME", str(home))
    monkeypatch.setenv("MESH_PORT", "0")
    monkeypatch.delenv("MESH_URL", raising=False)
    monkeypatch.delenv("MESH_NAME", raising=False)
    monkeypatch.delenv("MESH_TOKEN", raising=False)
    return home


@pytest.fixture
def backend() -> str:
    """The backend brokers in a test use; a module overrides it to run on both."""
    return "sqlite"


@pytest.fixture
def backend_overrides(request: pytest.FixtureRequest, backend: str) -> dict[str, Any]:
    if backend == "sqlite":
        return {}
    return nats_overrides(request.getfixturevalue("nats_node").url)


@pytest.fixture
def broker_proc(mesh_home: Path, backend_overrides: dict[str, Any]) -> Iterator[BrokerProcess]:
    env = {f"MESH_{key.upper()}": str(value) for key, value in backend_overrides.items()}
    broker = BrokerProcess(mesh_home, {**os.environ, "MESH_HOME": str(mesh_home), **env})
    broker.start()
    yield broker
    if broker.proc is not None and broker.proc.poll() is None:
        broker.stop()
    broker._close_pipe()  # also when the test already stopped or killed it


@dataclass
class InProcessBroker:
    runner: Runner
    settings: Settings
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.runner.request_stop()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def broker(mesh_home: Path, backend_overrides: dict[str, Any]) -> AsyncIterator[InProcessBroker]:
    """A broker on the test's own event loop (port 0, temporary home)."""
    settings = load(
        env={}, overrides={"home": str(mesh_home), "port": 0, "autostart": False, **backend_overrides}
    )
    runner = Runner(settings)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(runner.serve(ready=ready))
    url = await asyncio.wait_for(ready, START_TIMEOUT)
    b = InProcessBroker(runner, settings.with_(url=url), task)
    yield b
    if not task.done():
        await b.stop()


async def visit(settings: Settings, name: str, **kwargs: Any) -> str:
    """Join the mesh as ``name`` and leave again: afterwards the name is known and
    the peer offline. Returns the name granted. Raises what connecting raises."""
    from sessionmesh.client.aio import AsyncClient

    async with AsyncClient(settings, name, **kwargs) as peer:
        return peer.name


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll an external process's state (a file, a pid) until true, at most ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)  # sleep-ok: bounded poll of state another process owns
    raise TimeoutError(f"{what} not reached within {timeout}s")


def mesh_cmd(
    *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run the real ``mesh`` CLI (as ``python -m sessionmesh``)."""
    return subprocess.run(
        [sys.executable, "-m", "sessionmesh", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        input=input,
        timeout=timeout,
        start_new_session=True,  # no controlling terminal, like an agent's tool shell
    )


PASSPHRASE = "correct horse battery staple"  # the person's, where a test sets one


@dataclass
class TerminalRun:
    status: int
    output: str  # what the terminal showed: prompts, stdout and stderr together


def person_cmd(*args: str, answers: list[str], env: dict[str, str], timeout: float = 30.0) -> TerminalRun:
    """Run the real ``mesh`` CLI on a terminal of its own (a pty), as the person would,
    typing each of ``answers`` at each passphrase prompt."""
    import io

    import pexpect

    child = pexpect.spawn(
        sys.executable, ["-m", "sessionmesh", *args], env=env, encoding="utf-8", timeout=timeout
    )
    child.logfile_read = transcript = io.StringIO()
    for answer in answers:  # a passphrase prompt, its repetition, or a yes/no question
        child.expect([r"passphrase[^\n]*: ", r"again: ", r"\[y/N\] "])
        child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    return TerminalRun(child.exitstatus if child.exitstatus is not None else -1, transcript.getvalue())
