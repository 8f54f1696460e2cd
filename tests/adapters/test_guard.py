"""`mesh guard`: real git commits through the installed pre-commit hook, against a
real broker holding real leases."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import BrokerProcess, mesh_cmd

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "app"
    (repo / "src").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "src" / "api.py").write_text("v1\n")
    (repo / "README.md").write_text("app\n")
    git(repo, "add", ".")
    assert git(repo, "commit", "-qm", "init", "--no-verify").returncode == 0
    return repo


@pytest.fixture
def guarded(repo: Path, broker_proc: BrokerProcess) -> Path:
    done = mesh_cmd("guard", "install", "--dir", str(repo), "--as", "agent")
    assert done.returncode == 0, done.stderr
    for name in ("agent", "bob"):
        mesh_cmd("join", name)
    return repo


def change(repo: Path, rel: str) -> None:
    path = repo / rel
    path.write_text(path.read_text() + "more\n")
    git(repo, "add", rel)


def test_a_commit_touching_a_file_another_peer_holds_is_refused_with_the_holder(guarded: Path) -> None:
    api = guarded / "src" / "api.py"
    assert mesh_cmd("lock", "--as", "bob", str(api), "--reason", "renaming endpoints").returncode == 0
    change(guarded, "src/api.py")
    done = git(guarded, "commit", "-qm", "touch api")
    assert done.returncode != 0
    assert f"bob holds {api} (renaming endpoints) until" in done.stderr
    assert "src/api.py" in done.stderr
    assert git(guarded, "rev-list", "--count", "HEAD").stdout.strip() == "1"


def test_a_glob_lease_covers_the_files_under_it_and_other_files_commit_fine(guarded: Path) -> None:
    mesh_cmd("lock", "--as", "bob", f"{guarded}/src/**")
    change(guarded, "README.md")
    assert git(guarded, "commit", "-qm", "docs").returncode == 0
    change(guarded, "src/api.py")
    assert git(guarded, "commit", "-qm", "api").returncode != 0


def test_your_own_and_shared_leases_do_not_block(guarded: Path) -> None:
    api = str(guarded / "src" / "api.py")
    mesh_cmd("lock", "--as", "agent", api)
    mesh_cmd("lock", "--as", "bob", str(guarded / "README.md"), "--shared")
    change(guarded, "src/api.py")
    change(guarded, "README.md")
    done = git(guarded, "commit", "-qm", "both")
    assert done.returncode == 0, done.stderr


def test_with_the_broker_down_the_guard_warns_and_allows(guarded: Path, broker_proc: BrokerProcess) -> None:
    mesh_cmd("lock", "--as", "bob", str(guarded / "src" / "api.py"))
    broker_proc.stop()
    change(guarded, "src/api.py")
    done = git(guarded, "commit", "-qm", "offline")
    assert done.returncode == 0
    assert "cannot check leases" in done.stderr


def test_an_existing_hook_keeps_running_first_and_uninstall_restores_it(
    repo: Path, broker_proc: BrokerProcess
) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho project-hook-ran >&2\n")
    hook.chmod(0o755)
    assert mesh_cmd("guard", "install", "--dir", str(repo)).returncode == 0
    assert mesh_cmd("guard", "install", "--dir", str(repo)).returncode == 0  # twice: still one chain
    change(repo, "README.md")
    done = git(repo, "commit", "-qm", "x")
    assert done.returncode == 0 and done.stderr.count("project-hook-ran") == 1
    assert mesh_cmd("guard", "uninstall", "--dir", str(repo)).returncode == 0
    assert hook.read_text() == "#!/bin/sh\necho project-hook-ran >&2\n"


def test_guard_outside_a_repository_is_a_clear_error(tmp_path: Path, broker_proc: BrokerProcess) -> None:
    done = mesh_cmd("guard", "install", "--dir", str(tmp_path))
    assert done.returncode == 1
    assert "bad_request" in done.stderr and "git repository" in done.stderr
