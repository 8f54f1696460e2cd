"""Fixtures for tests that drive the real agent programs: the scripted model server,
an isolated sandbox, and the programs themselves (missing ones skip locally and fail
under CI=true, where a missing program means a broken install step)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.agents.mesh import MeshProject
from tests.agents.modelserver import ModelServer
from tests.agents.programs import BIN_ENV, Program, Sandbox, program
from tests.conftest import BrokerProcess


def require(name: str) -> Program:
    """The agent program ``name``; skips the test when it is not installed, or fails
    it when ``CI=true`` (CI installs them, so absence there is a bug)."""
    found = program(name)
    if not found.available:
        message = f"{name} not found at {found.bin} (install .ci/agents with npm ci, or set {BIN_ENV})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """A started model server answering "ok" until the test sets ``script``."""
    with ModelServer() as server:
        yield server


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    """A fresh HOME and workspace for one program run."""
    return Sandbox.create(tmp_path)


@contextmanager
def installed(
    request: pytest.FixtureRequest,
    tools: dict[str, str],
    sandbox: Sandbox,
    broker_proc: BrokerProcess,
    model_server: ModelServer,
) -> Iterator[MeshProject]:
    """The program of ``request.param`` installed in a project (``tools`` maps the
    harness's program name to the name ``mesh install`` knows), closed afterwards."""
    p = MeshProject(require(request.param), tools[request.param], sandbox, broker_proc, model_server)
    try:
        yield p
    finally:
        p.close()
