"""`mesh doctor`, run as a person runs it, against a real broker and the configs that
`mesh install` wrote (the programs themselves are not needed: the doctor starts the
MCP server each program would start, as it would start it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import BrokerProcess, mesh_cmd


@pytest.fixture
def project(tmp_path: Path, broker_proc: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A git project, with HOME (and so each program's user config) in the test's folder."""
    folder = tmp_path / "shop"
    folder.mkdir()
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    home = tmp_path / "user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CODEX_HOME", raising=False)
    monkeypatch.delenv("GEMINI_CLI_HOME", raising=False)
    monkeypatch.delenv("GEMINI_CLI_TRUST_WORKSPACE", raising=False)
    yield folder
    # a server started without MESH_HOME (the failure one test shows) autostarts a
    # broker in the default home under HOME: stop it
    stray = home / ".local" / "state" / "sessionmesh"
    if stray.exists():
        mesh_cmd("down", env={**os.environ, "MESH_HOME": str(stray)})


def doctor(project: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = mesh_cmd("doctor", "--json", "--dir", str(project), *args, timeout=90)
    return done.returncode, json.loads(done.stdout)


def lines(report: dict[str, Any], program: str) -> list[tuple[str, str]]:
    return [(f["level"], f["what"]) for f in report["findings"] if f["program"] == program]


def install(project: Path, tool: str, *args: str) -> None:
    done = mesh_cmd("install", tool, "--dir", str(project), *args)
    assert done.returncode == 0, done.stderr


def test_a_good_claude_code_install_passes_and_names_the_agent(project: Path) -> None:
    install(project, "claude-code", "--as", "frontend")
    code, report = doctor(project, "claude-code")
    assert code == 0 and report["ok"], report
    found = lines(report, "claude-code")
    assert ("ok", "Claude Code's MCP server answers and joins this broker as 'frontend'") in found
    assert all(level == "ok" for level, _ in found)


def test_a_program_without_sessionmesh_is_a_failure_with_the_command_to_run(project: Path) -> None:
    code, report = doctor(project, "gemini")
    assert code == 1
    fail = next(f for f in report["findings"] if f["level"] == "fail")
    assert fail["what"] == "sessionmesh is not installed for Gemini CLI"
    assert fail["fix"] == "run: mesh install gemini"


def test_a_server_that_cannot_see_mesh_home_is_found_joining_another_broker(project: Path) -> None:
    """The Codex failure of issue #9: Codex gives servers a filtered environment, so a
    server table without env_vars never sees MESH_HOME."""
    install(project, "codex", "--as", "backend")
    config = project / ".codex" / "config.toml"
    text = config.read_text()
    assert "env_vars" in text
    config.write_text("\n".join(line for line in text.splitlines() if not line.startswith("env_vars")) + "\n")
    code, report = doctor(project, "codex")
    assert code == 1
    assert any(
        level == "fail" and "joins as 'backend' on another broker" in what
        for level, what in lines(report, "codex")
    ), report
    install(project, "codex", "--as", "backend")  # puts env_vars back
    assert "env_vars" in config.read_text()
    _, report = doctor(project, "codex")
    assert ("ok", "Codex's MCP server answers and joins this broker as 'backend'") in lines(report, "codex")


def test_codex_trust_of_the_project_and_of_each_hook_is_read_from_codex_home(project: Path) -> None:
    install(project, "codex")
    _, report = doctor(project, "codex")
    found = dict((what, level) for level, what in lines(report, "codex"))
    assert found[f"Codex does not trust {project}, so it ignores its .codex/ folder"] == "fail"
    assert found["Codex has trusted 0 of the 5 sessionmesh hooks; it skips the rest"] == "fail"
    codex_home = Path(os.environ["HOME"]) / ".codex"
    codex_home.mkdir()
    hooks = project / ".codex" / "hooks.json"
    state = "\n".join(
        f'[hooks.state."{hooks}:{event.lower()}:0:0"]\ntrusted_hash = "sha256:x"\n'
        for event in ("session_start", "user_prompt_submit", "pre_tool_use", "post_tool_use", "stop")
    )
    (codex_home / "config.toml").write_text(f'[projects."{project}"]\ntrust_level = "trusted"\n\n{state}')
    tomllib.loads((codex_home / "config.toml").read_text())
    _, report = doctor(project, "codex")
    found = dict((what, level) for level, what in lines(report, "codex"))
    assert found[f"Codex trusts the project {project}"] == "ok"
    assert found["the sessionmesh hooks are trusted in Codex (5 of 5)"] == "ok"


def test_gemini_folder_trust_is_explained_until_the_folder_is_trusted(project: Path) -> None:
    done = mesh_cmd("install", "gemini", "--dir", str(project))
    assert f"Gemini CLI does not trust {project}" in done.stdout
    _, report = doctor(project, "gemini")
    assert any(
        level == "fail" and "has not been told to trust it" in what for level, what in lines(report, "gemini")
    )
    gemini = Path(os.environ["HOME"]) / ".gemini"
    gemini.mkdir()
    (gemini / "trustedFolders.json").write_text(json.dumps({str(project): "TRUST_FOLDER"}))
    _, report = doctor(project, "gemini")
    assert ("ok", f"Gemini CLI trusts {project}") in lines(report, "gemini")


def test_doctor_with_no_program_installed_says_so(project: Path) -> None:
    code, report = doctor(project)
    assert code == 1
    assert report["findings"][-1]["what"] == "no agent program has sessionmesh installed here"


def test_the_plain_output_has_one_line_per_finding_and_a_fix_under_each_failure(project: Path) -> None:
    install(project, "claude-code", "--as", "frontend")
    settings = project / ".claude" / "settings.json"
    doc = json.loads(settings.read_text())
    doc["permissions"]["allow"] = []
    settings.write_text(json.dumps(doc))
    done = mesh_cmd("doctor", "claude-code", "--dir", str(project), timeout=90)
    assert done.returncode == 1
    out = done.stdout.splitlines()
    fail = next(i for i, line in enumerate(out) if line.startswith("FAIL"))
    assert "does not allow the mesh tools" in out[fail]
    assert out[fail + 1].strip() == "fix: run: mesh install claude-code --as frontend"  # keeps the name


def test_pi_extension_starts_a_server_that_joins_this_broker(project: Path) -> None:
    install(project, "pi", "--as", "helper")
    code, report = doctor(project, "pi")
    assert code == 0, report
    assert ("ok", "Pi's MCP server answers and joins this broker as 'helper'") in lines(report, "pi")
    assert ("ok", ".pi/extensions/sessionmesh.ts is this version's extension") in lines(report, "pi")


# -- the program each installed command starts -----------------------------------------
THIS_PYTHON = os.path.abspath(sys.executable)


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def bare_path(tmp_path: Path, *, with_mesh: bool) -> str:
    """A PATH without this installation's folder (with a ``mesh`` of its own, or none)."""
    folder = tmp_path / ("with-mesh" if with_mesh else "no-mesh")
    folder.mkdir()
    if with_mesh:
        (folder / "mesh").write_text(f'#!/bin/sh\nexec "{THIS_PYTHON}" -m sessionmesh "$@"\n')
        (folder / "mesh").chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


def test_the_installed_server_starts_and_joins_from_a_shell_without_mesh_on_path(
    project: Path, tmp_path: Path
) -> None:
    install(project, "claude-code", "--as", "frontend")
    path = bare_path(tmp_path, with_mesh=False)
    done = mesh_cmd(
        "doctor", "--json", "--dir", str(project), "claude-code", env={**os.environ, "PATH": path}
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0, report
    found = lines(report, "claude-code")
    assert ("ok", "Claude Code's MCP server answers and joins this broker as 'frontend'") in found
    assert ("ok", f".mcp.json (MCP server) runs {THIS_PYTHON}, which exists and is executable") in found
    assert (
        "ok",
        f".claude/settings.json (hooks) runs {THIS_PYTHON}, which exists and is executable",
    ) in found


def test_a_config_naming_a_program_that_is_gone_fails_with_the_install_to_run_again(project: Path) -> None:
    install(project, "claude-code", "--as", "frontend")
    gone = "/nonexistent/venv/bin/python"
    rewrite(project / ".mcp.json", json.dumps(THIS_PYTHON), json.dumps(gone))
    code, report = doctor(project, "claude-code")
    assert code == 1
    [fail] = [f for f in report["findings"] if f["level"] == "fail"]
    assert fail["what"] == f".mcp.json (MCP server) runs {gone}, which does not exist"
    assert fail["fix"] == "run: mesh install claude-code --as frontend"
    assert not any("MCP server" in f["what"] and "answers" in f["what"] for f in report["findings"])
    rewrite(project / ".claude" / "settings.json", THIS_PYTHON, gone)
    _, report = doctor(project, "claude-code")
    assert ("fail", f".claude/settings.json (hooks) runs {gone}, which does not exist") in lines(
        report, "claude-code"
    )
    install(project, "claude-code", "--as", "frontend")  # the fix it names
    code, report = doctor(project, "claude-code")
    assert code == 0, report


def test_a_program_that_is_not_executable_fails(project: Path, tmp_path: Path) -> None:
    install(project, "codex", "--as", "backend")
    plain = tmp_path / "python"
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    rewrite(project / ".codex" / "config.toml", json.dumps(THIS_PYTHON), json.dumps(str(plain)))
    code, report = doctor(project, "codex")
    assert code == 1
    fail = next(f for f in report["findings"] if "not executable" in f["what"])
    assert fail["what"] == f".codex/config.toml (MCP server) runs {plain}, which is not executable"
    assert fail["fix"] == "run: mesh install codex --as backend"


def test_a_bare_mesh_of_an_older_install_fails_off_path_and_is_a_warning_on_it(
    project: Path, tmp_path: Path
) -> None:
    install(project, "gemini", "--as", "reviewer")
    settings = project / ".gemini" / "settings.json"
    rewrite(
        settings,
        f'"command": {json.dumps(THIS_PYTHON)},\n      "args": [\n        "-m",\n        "sessionmesh",\n',
        '"command": "mesh",\n      "args": [\n',
    )
    rewrite(settings, f"{THIS_PYTHON} -m sessionmesh hook", "mesh hook")
    off = mesh_cmd(
        "doctor",
        "--json",
        "--dir",
        str(project),
        "gemini",
        env={**os.environ, "PATH": bare_path(tmp_path, with_mesh=False)},
    )
    assert off.returncode == 1
    found = lines(json.loads(off.stdout), "gemini")
    assert (
        "fail",
        ".gemini/settings.json (MCP server) runs 'mesh', which is not on PATH: it does not start",
    ) in found
    assert (
        "fail",
        ".gemini/settings.json (hooks) runs 'mesh', which is not on PATH: it does not start",
    ) in found
    on = mesh_cmd(
        "doctor",
        "--json",
        "--dir",
        str(project),
        "gemini",
        env={**os.environ, "PATH": bare_path(tmp_path, with_mesh=True)},
    )
    warned = [f for f in json.loads(on.stdout)["findings"] if f["level"] == "warn"]
    assert sorted(f["what"].split(" (here ")[0] for f in warned) == [
        ".gemini/settings.json (MCP server) runs 'mesh' by name",
        ".gemini/settings.json (hooks) runs 'mesh' by name",
    ]
    assert all(f["fix"] == "run: mesh install gemini --as reviewer" for f in warned)
    assert ("ok", "Gemini CLI's MCP server answers and joins this broker as 'reviewer'") in lines(
        json.loads(on.stdout), "gemini"
    )
