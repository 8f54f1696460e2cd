"""`mesh install` / `mesh uninstall` run for real against fixture config trees that
already hold other servers, other hooks and TOML comments, for every tool and scope:
what the configs run, where the backups go, that an uninstall gives back every file
byte for byte, and that ``--as`` registers the name."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.installers import changes, execute, jsonconfig, plan
from sessionmesh.installers.skill import text as skill_text
from sessionmesh.installers.target import resolve

from ..conftest import BrokerProcess, mesh_cmd

THIS_MESH = [os.path.abspath(sys.executable), "-m", "sessionmesh"]  # what every config runs

CLAUDE_MCP = """{
    "mcpServers": {
        "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"]}
    }
}
"""
CLAUDE_USER_STATE = json.dumps(
    {
        "numStartups": 12,
        "projects": {"/home/me/app": {"allowedTools": [], "mcpServers": {}}},
        "mcpServers": {"notes": {"type": "stdio", "command": "notes-mcp", "args": [], "env": {}}},
    },
    indent=2,
)
CLAUDE_SETTINGS = json.dumps(
    {
        "permissions": {"allow": ["Bash(npm test)"]},
        "hooks": {
            "PostToolUse": [
                {"matcher": "Edit|Write", "hooks": [{"type": "command", "command": "npx prettier --write"}]}
            ],
            "Stop": [{"hooks": [{"type": "command", "command": "notify-send done", "timeout": 5}]}],
        },
    },
    indent=2,
)
CODEX_CONFIG = """# my Codex settings
model = "gpt-5-codex"  # the default model

[mcp_servers.docs]
# documentation lookups
command = "npx"
args = ["-y", "docs-mcp"]

[projects."/home/me/app"]
trust_level = "trusted"
"""
CODEX_HOOKS = json.dumps(
    {
        "hooks": {
            "Stop": [{"hooks": [{"type": "command", "command": "python3 ~/.codex/stop.py", "timeout": 30}]}]
        }
    },
    indent=2,
)
GEMINI_SETTINGS = json.dumps(
    {
        "theme": "GitHub",
        "mcpServers": {"db": {"command": "db-mcp", "args": ["--readonly"], "trust": False}},
        "hooks": {
            "BeforeTool": [
                {
                    "matcher": "run_shell_command",
                    "hooks": [{"name": "guard", "type": "command", "command": "./guard.sh", "timeout": 5000}],
                }
            ],
            "disabled": ["old-hook"],
        },
    },
    indent=2,
)


@dataclass(frozen=True)
class Case:
    tool: str
    scope: str
    files: dict[str, str]  # existing config, relative to the scope's root
    server: tuple[str, ...]  # file, then the keys down to the server entry
    hooks_file: str
    events: tuple[str, ...]
    skill: str

    def __str__(self) -> str:
        return f"{self.tool}-{self.scope}"


CASES = [
    Case(
        "claude-code",
        "project",
        {".mcp.json": CLAUDE_MCP, ".claude/settings.json": CLAUDE_SETTINGS},
        (".mcp.json", "mcpServers", "sessionmesh"),
        ".claude/settings.json",
        ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"),
        ".claude/skills/sessionmesh/SKILL.md",
    ),
    Case(
        "claude-code",
        "user",
        {".claude.json": CLAUDE_USER_STATE, ".claude/settings.json": CLAUDE_SETTINGS},
        (".claude.json", "mcpServers", "sessionmesh"),
        ".claude/settings.json",
        ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"),
        ".claude/skills/sessionmesh/SKILL.md",
    ),
    Case(
        "codex",
        "project",
        {".codex/config.toml": CODEX_CONFIG, ".codex/hooks.json": CODEX_HOOKS},
        (".codex/config.toml", "mcp_servers", "sessionmesh"),
        ".codex/hooks.json",
        ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"),
        ".agents/skills/sessionmesh/SKILL.md",
    ),
    Case(
        "codex",
        "user",
        {".codex/config.toml": CODEX_CONFIG, ".codex/hooks.json": CODEX_HOOKS},
        (".codex/config.toml", "mcp_servers", "sessionmesh"),
        ".codex/hooks.json",
        ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"),
        ".agents/skills/sessionmesh/SKILL.md",
    ),
    Case(
        "gemini",
        "project",
        {".gemini/settings.json": GEMINI_SETTINGS},
        (".gemini/settings.json", "mcpServers", "sessionmesh"),
        ".gemini/settings.json",
        ("SessionStart", "BeforeAgent", "AfterTool", "AfterAgent"),
        ".gemini/skills/sessionmesh/SKILL.md",
    ),
    Case(
        "gemini",
        "user",
        {".gemini/settings.json": GEMINI_SETTINGS},
        (".gemini/settings.json", "mcpServers", "sessionmesh"),
        ".gemini/settings.json",
        ("SessionStart", "BeforeAgent", "AfterTool", "AfterAgent"),
        ".gemini/skills/sessionmesh/SKILL.md",
    ),
]


@dataclass
class Tree:
    """A home folder and a project folder, and how to run `mesh` between them (with a
    MESH_HOME of its own beside them, and no broker: autostart is off)."""

    home: Path
    project: Path
    case: Case

    @property
    def root(self) -> Path:
        return self.home if self.case.scope == "user" else self.project

    @property
    def mesh_home(self) -> Path:
        return self.home.parent / "mesh-home"

    def scope_args(self) -> list[str]:
        return ["--user"] if self.case.scope == "user" else ["--project", "--dir", str(self.project)]

    def mesh(
        self, *args: str, cwd: Path | None = None, path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env.update(HOME=str(self.home), MESH_HOME=str(self.mesh_home), MESH_AUTOSTART="0")
        if path is not None:
            env["PATH"] = path
        return subprocess.run(
            [sys.executable, "-m", "sessionmesh", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd or self.project,
            timeout=60,
        )

    def install(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.mesh("install", self.case.tool, *self.scope_args(), *extra)

    def uninstall(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.mesh("uninstall", self.case.tool, *self.scope_args(), *extra)


def load(path: Path) -> Any:
    text = path.read_text()
    return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` and its content."""
    return {
        str(p): p.read_text(errors="replace")
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def backups(mesh_home: Path) -> list[Path]:
    """Every backup under ``$MESH_HOME/backups``."""
    return sorted(p for p in (mesh_home / "backups").rglob("*") if p.is_file())


def backup_of(mesh_home: Path, path: Path, action: str, tool: str) -> list[Path]:
    """The backups of ``path`` by runs of ``action`` (install/uninstall) for ``tool``:
    ``backups/<YYYYmmdd-HHMMSS>-<action>-<tool>/<path's absolute path>``."""
    folder = mesh_home / "backups"
    runs = [r for r in folder.iterdir() if re.fullmatch(rf"\d{{8}}-\d{{6}}-{action}-{tool}(-\d+)?", r.name)]
    return [c for c in (r.joinpath(*path.absolute().parts[1:]) for r in runs) if c.is_file()]


def contains(new: Any, old: Any) -> bool:
    """Whether everything in ``old`` is still in ``new`` (objects by key, lists by item)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and contains(new[k], v) for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and all(any(contains(n, o) for n in new) for o in old)
    return new == old


def our_commands(hooks_doc: dict[str, Any], event: str) -> list[str]:
    return [
        h["command"]
        for group in hooks_doc.get("hooks", {}).get(event, [])
        for h in group.get("hooks", [])
        if jsonconfig.is_our_command(h.get("command"))
    ]


@pytest.fixture(params=CASES, ids=str)
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Tree:
    case: Case = request.param
    t = Tree(tmp_path / "home", tmp_path / "project", case)
    t.home.mkdir()
    t.project.mkdir()
    for rel, content in case.files.items():
        path = t.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return t


def test_install_adds_server_hooks_and_skill_and_keeps_everything_already_there(tree: Tree) -> None:
    case = tree.case
    proc = tree.install()
    assert proc.returncode == 0, proc.stderr

    server = load(tree.root / case.server[0])
    for key in case.server[1:]:
        server = server[key]
    assert server["args"][-3:] == ["mcp", "--client", case.tool] and server["command"]

    hooks = load(tree.root / case.hooks_file)
    for event in case.events:
        commands = [c for c in our_commands(hooks, event) if " Wake" not in c]
        assert len(commands) == 1 and f"hook {case.tool} {event}" in commands[0], (event, commands)

    for rel, original in case.files.items():
        new_text = (tree.root / rel).read_text()
        assert contains(load(tree.root / rel), load_text(rel, original)), rel
        if rel.endswith(".toml"):  # comments and layout survive
            for line in original.splitlines():
                assert line in new_text.splitlines(), line
    assert (tree.root / case.skill).read_text() == skill_text()
    assert f"+++ {label(tree, case.hooks_file)}" in proc.stdout and "sessionmesh" in proc.stdout
    other = tree.project if case.scope == "user" else tree.home
    assert snapshot(other) == {}, "an install wrote outside its scope"


def load_text(rel: str, text: str) -> Any:
    return tomllib.loads(text) if rel.endswith(".toml") else json.loads(text)


def label(tree: Tree, rel: str) -> str:
    return f"~/{rel}" if tree.case.scope == "user" else rel


def test_second_install_changes_nothing_and_makes_no_new_backup(tree: Tree) -> None:
    assert tree.install().returncode == 0
    before, kept = snapshot(tree.home, tree.project), backups(tree.mesh_home)
    again = tree.install()
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout and "+++" not in again.stdout
    assert snapshot(tree.home, tree.project) == before
    assert backups(tree.mesh_home) == kept


def test_each_changed_file_is_backed_up_under_mesh_home_and_nothing_is_left_in_the_project(
    tree: Tree,
) -> None:
    proc = tree.install()
    assert proc.returncode == 0, proc.stderr
    for rel, original in tree.case.files.items():
        [copy] = backup_of(tree.mesh_home, tree.root / rel, "install", tree.case.tool)
        assert copy.read_text() == original, rel
        assert f"(backup: {copy})" in proc.stdout
    assert len(backups(tree.mesh_home)) == len(tree.case.files)
    created = {str(tree.root / rel) for rel in (tree.case.skill, tree.case.server[0], tree.case.hooks_file)}
    assert set(snapshot(tree.home, tree.project)) == created | {str(tree.root / r) for r in tree.case.files}
    assert tree.uninstall().returncode == 0
    for rel in tree.case.files:  # the uninstall keeps what it changed too
        assert len(backup_of(tree.mesh_home, tree.root / rel, "uninstall", tree.case.tool)) == 1, rel
    assert not [p for p in snapshot(tree.home, tree.project) if "backup" in p]


def test_runs_in_the_same_second_keep_a_backup_folder_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changes.time, "strftime", lambda fmt: "20260101-120000")
    (tmp_path / ".gemini").mkdir()
    settings = tmp_path / ".gemini" / "settings.json"
    settings.write_text(GEMINI_SETTINGS)
    home = tmp_path / "mesh-home"
    for name in ("alice", "bob", "carol"):
        target = resolve("gemini", user=False, folder=str(tmp_path), as_name=name)
        execute(target, install=True, backups=home / "backups")
    copies = backup_of(home, settings, "install", "gemini")
    assert sorted(c.relative_to(home / "backups").parts[0] for c in copies) == [
        "20260101-120000-install-gemini",
        "20260101-120000-install-gemini-2",
        "20260101-120000-install-gemini-3",
    ]
    assert len({c.read_text() for c in copies}) == 3  # each run's own "before"


def test_dry_run_prints_the_diff_and_writes_nothing(tree: Tree) -> None:
    before = snapshot(tree.home, tree.project)
    proc = tree.install("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout and f"--- {label(tree, tree.case.hooks_file)}" in proc.stdout
    assert "+" in proc.stdout and "hook " + tree.case.tool in proc.stdout
    assert snapshot(tree.home, tree.project) == before


def test_uninstall_gives_back_what_was_there_and_removes_the_skill(tree: Tree) -> None:
    assert tree.install().returncode == 0
    proc = tree.uninstall()
    assert proc.returncode == 0, proc.stderr
    for rel, original in tree.case.files.items():
        assert (tree.root / rel).read_bytes() == original.encode(), rel
    assert not (tree.root / tree.case.skill).parent.exists()
    assert set(snapshot(tree.home, tree.project)) == {str(tree.root / rel) for rel in tree.case.files}
    again = tree.uninstall()
    assert again.returncode == 0 and "not installed" in again.stdout


def test_install_then_uninstall_into_an_empty_folder_leaves_it_empty(tmp_path: Path) -> None:
    for case in CASES[::2]:  # project scope of each tool
        t = Tree(tmp_path / case.tool / "home", tmp_path / case.tool / "project", case)
        t.home.mkdir(parents=True)
        t.project.mkdir()
        assert t.install().returncode == 0
        assert backups(t.mesh_home) == []  # nothing existed, nothing to back up
        assert t.uninstall().returncode == 0
        assert snapshot(t.home, t.project) == {}, case.tool
        assert list(t.project.iterdir()) == [], case.tool


def test_invalid_existing_config_is_refused_and_nothing_is_changed(tree: Tree) -> None:
    rel = next(iter(tree.case.files))
    broken = "[mcp_servers.docs\ncommand = \n" if rel.endswith(".toml") else '{"mcpServers": {,}\n'
    (tree.root / rel).write_text(broken)
    before = snapshot(tree.home, tree.project)
    proc = tree.install("--json")
    assert proc.returncode == 1
    assert "not valid" in proc.stderr and label(tree, rel) in proc.stderr
    assert json.loads(proc.stdout)["error"]["code"] == "bad_request"
    assert snapshot(tree.home, tree.project) == before


def test_json_summary_names_the_changed_files_and_their_backups(tree: Tree) -> None:
    proc = tree.install("--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["tool"] == tree.case.tool and out["scope"] == tree.case.scope and out["dry_run"] is False
    assert str(tree.root / tree.case.skill) in out["changed"]
    assert sorted(out["backups"]) == sorted(str(p) for p in backups(tree.mesh_home))
    assert len(out["backups"]) == len(tree.case.files)
    assert all(Path(p).exists() for p in out["changed"])
    again = json.loads(tree.install("--json").stdout)
    assert again["changed"] == [] and again["backups"] == []


def test_as_name_reaches_every_command_and_a_new_name_replaces_the_old(tree: Tree) -> None:
    assert tree.install("--as", "alice").returncode == 0
    assert tree.install("--as", "bob").returncode == 0
    hooks = load(tree.root / tree.case.hooks_file)
    for event in tree.case.events:
        commands = our_commands(hooks, event)
        assert commands and all(c.endswith("--as bob") for c in commands), commands
    server = load(tree.root / tree.case.server[0])
    for key in tree.case.server[1:]:
        server = server[key]
    assert server["args"][-5:] == ["mcp", "--client", tree.case.tool, "--as", "bob"]


def test_a_bad_as_name_is_refused_before_anything_is_written(tree: Tree) -> None:
    before = snapshot(tree.home, tree.project)
    proc = tree.install("--as", "Not A Name")
    assert proc.returncode != 0 and "invalid" in proc.stderr
    assert snapshot(tree.home, tree.project) == before


def test_project_scope_defaults_to_the_git_top_level(tmp_path: Path) -> None:
    case = CASES[0]
    t = Tree(tmp_path / "home", tmp_path / "repo", case)
    t.home.mkdir()
    (t.project / ".git").mkdir(parents=True)
    (t.project / "src" / "deep").mkdir(parents=True)
    proc = t.mesh("install", "claude-code", cwd=t.project / "src" / "deep")
    assert proc.returncode == 0, proc.stderr
    assert load(t.project / ".mcp.json")["mcpServers"]["sessionmesh"]
    assert not (t.project / "src" / "deep" / ".mcp.json").exists()


@pytest.mark.parametrize("on_path", ["nothing", "another mesh"])
def test_every_entry_runs_this_python_by_absolute_path_whatever_path_holds(
    tmp_path: Path, on_path: str
) -> None:
    case = CASES[4]  # gemini, project: server and hooks in one file
    t = Tree(tmp_path / "home", tmp_path / "project", case)
    t.home.mkdir()
    t.project.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if on_path == "another mesh":  # a decoy the install must not pick up (a shim, another version)
        (bin_dir / "mesh").write_text("#!/bin/sh\nexit 99\n")
        (bin_dir / "mesh").chmod(0o755)
    proc = t.mesh("install", "gemini", "--dir", str(t.project), path=str(bin_dir))
    assert proc.returncode == 0, proc.stderr
    settings = load(t.project / ".gemini" / "settings.json")
    server = settings["mcpServers"]["sessionmesh"]
    assert [server["command"], *server["args"]] == [*THIS_MESH, "mcp", "--client", "gemini"]
    for event in case.events:
        assert our_commands(settings, event) == [shlex.join([*THIS_MESH, "hook", "gemini", event])]
    assert t.mesh("uninstall", "gemini", "--dir", str(t.project), path=str(bin_dir)).returncode == 0
    assert not (t.project / ".gemini").exists()


def test_a_symlinked_config_file_is_updated_through_its_link(tmp_path: Path) -> None:
    case = CASES[1]  # claude-code, user
    t = Tree(tmp_path / "home", tmp_path / "project", case)
    t.home.mkdir()
    t.project.mkdir()
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "claude.json").write_text(CLAUDE_USER_STATE)
    (t.home / ".claude.json").symlink_to(dotfiles / "claude.json")
    assert t.install().returncode == 0
    assert (t.home / ".claude.json").is_symlink()
    assert "sessionmesh" in load(dotfiles / "claude.json")["mcpServers"]


def test_dir_does_not_go_with_user_scope(tmp_path: Path) -> None:
    t = Tree(tmp_path, tmp_path, CASES[0])
    proc = t.mesh("install", "codex", "--user", "--dir", str(tmp_path))
    assert proc.returncode == 1 and "--dir" in proc.stderr


# -- the merge rules, as plain calls ------------------------------------------------
def test_uninstall_keeps_a_users_handler_that_shares_a_group_with_ours() -> None:
    ours = {"type": "command", "command": "mesh hook claude-code Stop --as me"}
    theirs = {"type": "command", "command": "say done"}
    doc = {"hooks": {"Stop": [{"hooks": [theirs, ours]}]}}
    jsonconfig.drop_hooks(doc)
    assert doc == {"hooks": {"Stop": [{"hooks": [theirs]}]}}


def test_install_moves_no_hook_that_is_already_in_place() -> None:
    group = {"hooks": [{"type": "command", "command": "mesh hook codex Stop"}]}
    theirs = {"hooks": [{"type": "command", "command": "later-tool"}]}
    doc = {"hooks": {"Stop": [group, theirs]}}
    jsonconfig.put_hooks(doc, {"Stop": group}, "hooks.json")
    assert doc["hooks"]["Stop"] == [group, theirs]


def test_hooks_of_events_no_longer_installed_are_removed_on_reinstall() -> None:
    old = {
        "hooks": [{"type": "command", "command": "/venv/bin/python -m sessionmesh hook gemini AfterModel"}]
    }
    new = {"hooks": [{"type": "command", "command": "mesh hook gemini AfterAgent"}]}
    doc = {"hooks": {"AfterModel": [old], "disabled": ["x"]}}
    jsonconfig.put_hooks(doc, {"AfterAgent": new}, "settings.json")
    assert doc == {"hooks": {"disabled": ["x"], "AfterAgent": [new]}}


@pytest.mark.parametrize(
    "command, ours",
    [
        ("mesh hook claude-code Stop", True),
        ("/home/me/.local/bin/mesh hook codex Stop --as a", True),
        ("'/opt/py 3/bin/python' -m sessionmesh hook gemini AfterTool", True),
        ("freshmesh hook x", False),
        ("echo mesh", False),
        ("mesh mcp", False),
        (None, False),
    ],
)
def test_only_commands_that_run_mesh_hook_count_as_ours(command: Any, ours: bool) -> None:
    assert jsonconfig.is_our_command(command) is ours


def test_reinstall_keeps_keys_the_user_added_to_our_server_entry(tmp_path: Path) -> None:
    for case in (CASES[0], CASES[2]):  # JSON (.mcp.json) and TOML (config.toml)
        t = Tree(tmp_path / case.tool / "home", tmp_path / case.tool / "project", case)
        t.home.mkdir(parents=True)
        t.project.mkdir()
        assert t.install().returncode == 0
        path = t.project / case.server[0]
        if path.suffix == ".toml":
            extra = "\\1\n# slow disk\nstartup_timeout_sec = 30"
            path.write_text(re.sub(r"^(args = .*)$", extra, path.read_text(), count=1, flags=re.M))
        else:
            doc = load(path)
            doc["mcpServers"]["sessionmesh"]["env"] = {"MESH_HOME": "/srv/mesh"}
            path.write_text(json.dumps(doc))
        assert t.install("--as", "alice").returncode == 0
        entry = load(path)[case.server[1]]["sessionmesh"]
        assert entry["args"][-2:] == ["--as", "alice"], case.tool
        if path.suffix == ".toml":
            assert entry["startup_timeout_sec"] == 30 and "# slow disk" in path.read_text()
        else:
            assert entry["env"] == {"MESH_HOME": "/srv/mesh"}


def test_claude_code_install_allows_the_mesh_tools_and_uninstall_takes_the_rule_out(tmp_path: Path) -> None:
    case = CASES[0]
    t = Tree(tmp_path / "home", tmp_path / "project", case)
    t.home.mkdir()
    (t.project / ".claude").mkdir(parents=True)
    (t.project / ".claude" / "settings.json").write_text(CLAUDE_SETTINGS)
    proc = t.install()
    assert proc.returncode == 0, proc.stderr
    assert '+      "mcp__sessionmesh"' in proc.stdout  # shown in the diff
    allow = load(t.project / ".claude" / "settings.json")["permissions"]["allow"]
    assert allow == ["Bash(npm test)", "mcp__sessionmesh"]
    assert t.uninstall().returncode == 0
    assert load(t.project / ".claude" / "settings.json")["permissions"]["allow"] == ["Bash(npm test)"]


def test_codex_server_gets_the_mesh_environment_and_its_tools_run_without_a_prompt(tmp_path: Path) -> None:
    t = Tree(tmp_path / "home", tmp_path / "project", CASES[2])
    t.home.mkdir()
    t.project.mkdir()
    proc = t.install("--as", "backend")
    assert proc.returncode == 0, proc.stderr
    entry = load(t.project / ".codex" / "config.toml")["mcp_servers"]["sessionmesh"]
    assert entry["env_vars"] == ["MESH_HOME", "MESH_URL", "MESH_TOKEN", "MESH_NAME", "XDG_STATE_HOME"]
    assert entry["default_tools_approval_mode"] == "approve"
    assert "trust the sessionmesh hooks once in Codex's /hooks screen" in proc.stdout


def test_pi_install_writes_the_extension_with_this_mesh_and_name_and_uninstall_removes_it(
    tmp_path: Path,
) -> None:
    case = Case("pi", "project", {}, (), "", (), ".pi/skills/sessionmesh/SKILL.md")
    t = Tree(tmp_path / "home", tmp_path / "project", case)
    t.home.mkdir()
    t.project.mkdir()
    proc = t.install("--as", "helper")
    assert proc.returncode == 0, proc.stderr
    extension = t.project / ".pi" / "extensions" / "sessionmesh.ts"
    lines = extension.read_text().splitlines()
    assert f"const MESH: string[] = {json.dumps(THIS_MESH)};  // written by mesh install" in lines
    assert 'const INSTALLED_ARGS: string[] = ["--as", "helper"];  // written by mesh install' in lines
    assert (t.project / case.skill).exists()
    assert t.install("--as", "helper").stdout.startswith("sessionmesh is already installed for Pi")
    assert t.uninstall().returncode == 0
    assert snapshot(t.home, t.project) == {}


def test_claude_code_install_arms_the_wake_as_async_rewake_hooks(tmp_path: Path) -> None:
    t = Tree(tmp_path / "home", tmp_path / "project", CASES[0])
    t.home.mkdir()
    t.project.mkdir()
    assert t.install("--as", "frontend").returncode == 0
    hooks = load(t.project / ".claude" / "settings.json")["hooks"]
    for event in ("SessionStart", "Stop"):
        [wake] = [h for g in hooks[event] for h in g["hooks"] if " Wake " in h["command"] + " "]
        assert wake["command"] == shlex.join([*THIS_MESH, "hook", "claude-code", "Wake", "--as", "frontend"])
        assert wake["asyncRewake"] is True and wake["timeout"] >= 3600
        assert wake["rewakeMessage"].startswith("sessionmesh woke you") and wake["rewakeSummary"]
    assert not any(" Wake" in h["command"] for g in hooks["PostToolUse"] for h in g["hooks"])


# -- install then uninstall gives back every file byte for byte ----------------------
STYLES = ("2-space", "4-space, no final newline", "tabs", "one line", "CRLF")
OTHER_EXTENSION = "// someone else's Pi extension\nexport default function other() {}\n"
OTHER_SKILL = "---\nname: other\ndescription: not ours\n---\n\nKeep me.\n"
PI_CASES = [
    Case(
        "pi",
        "project",
        {".pi/extensions/other.ts": OTHER_EXTENSION, ".pi/skills/other/SKILL.md": OTHER_SKILL},
        (),
        "",
        (),
        ".pi/skills/sessionmesh/SKILL.md",
    ),
    Case(
        "pi",
        "user",
        {".pi/agent/extensions/other.ts": OTHER_EXTENSION, ".pi/agent/skills/other/SKILL.md": OTHER_SKILL},
        (),
        "",
        (),
        ".pi/agent/skills/sessionmesh/SKILL.md",
    ),
]


def restyle(rel: str, text: str, style: str) -> str:
    """A fixture config written in ``style``: the same content, laid out another way."""
    if rel.endswith(".toml"):
        if style == "tabs":
            return re.sub(r"^(command|args|trust_level) =", r"\t\1 =", text, flags=re.M)
        if style == "one line":
            return 'model = "gpt-5-codex"'
    elif rel.endswith(".json"):
        doc = json.loads(text)
        text = {
            "2-space": json.dumps(doc, indent=2) + "\n",
            "4-space, no final newline": json.dumps(doc, indent=4),
            "tabs": json.dumps(doc, indent="\t") + "\n",
            "one line": json.dumps(doc, separators=(",", ":")),
            "CRLF": json.dumps(doc, indent=2) + "\n",
        }[style]
    else:
        return text
    if style == "4-space, no final newline":
        return text.rstrip("\n")
    return text.replace("\n", "\r\n") if style == "CRLF" else text


def state(*folders: Path) -> dict[str, Any]:
    """Every file (its bytes and mode) and folder under ``folders``."""
    return {
        str(p): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) if p.is_file() else "folder"
        for folder in folders
        for p in sorted(folder.rglob("*"))
    }


ROUND_TRIPS = [
    *(pytest.param(case, style, id=f"{case}-{style}") for case in CASES for style in (*STYLES, "no config")),
    *(
        pytest.param(case, style, id=f"{case}-{style}")
        for case in PI_CASES
        for style in ("others", "no config")
    ),
]


@pytest.mark.parametrize(("case", "style"), ROUND_TRIPS)
def test_install_then_uninstall_gives_back_every_file_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case, style: str
) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("CODEX_HOME", "PI_CODING_AGENT_DIR", "GEMINI_CLI_HOME"):
        monkeypatch.delenv(var, raising=False)
    user = case.scope == "user"
    root = home if user else project
    if style != "no config":
        for rel, text in case.files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(restyle(rel, text, style).encode())
            (root / rel).chmod(0o640)  # a mode of its own, kept too
    before = state(home, project)

    def run(*, install: bool) -> Any:
        target = resolve(case.tool, user=user, folder=None if user else str(project), as_name="builder")
        return execute(target, install=install, backups=tmp_path / "mesh-home" / "backups")

    assert run(install=True).changes
    assert state(home, project) != before
    assert run(install=False).changes
    assert state(home, project) == before


def test_an_install_adds_lines_to_a_json_file_and_changes_none_of_the_users_but_a_comma(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".mcp.json").write_text(CLAUDE_MCP)  # the github server on one line, 4 spaces
    (tmp_path / ".claude" / "settings.json").write_text(CLAUDE_SETTINGS)
    changes = plan(resolve("claude-code", user=False, folder=str(tmp_path), as_name=None), install=True)
    for change in changes:
        hunks = change.diff().splitlines()[2:]
        added = [line[1:] for line in hunks if line.startswith("+")]
        # a line of the user's changes only to take the comma before a new member
        assert all(line[1:] + "," in added for line in hunks if line.startswith("-")), change.diff()
        assert added, change.label


# -- entries written by older installs (a bare `mesh`) ---------------------------------
def test_entries_of_an_older_install_that_ran_a_bare_mesh_are_replaced_and_removed(tmp_path: Path) -> None:
    case = CASES[0]  # claude-code, project
    t = Tree(tmp_path / "home", tmp_path / "project", case)
    t.home.mkdir()
    (t.project / ".claude").mkdir(parents=True)
    old_mcp = {
        "mcpServers": {"sessionmesh": {"type": "stdio", "command": "mesh", "args": ["mcp", "--as", "a"]}}
    }
    theirs = {"type": "command", "command": "notify-send done"}
    old_settings = {
        "hooks": {
            event: [{"hooks": [{"type": "command", "command": f"mesh hook claude-code {event} --as a"}]}]
            for event in case.events
        }
    }
    old_settings["hooks"]["Stop"][0]["hooks"].append(theirs)

    def write_old() -> None:
        (t.project / ".mcp.json").write_text(json.dumps(old_mcp, indent=2))
        (t.project / ".claude" / "settings.json").write_text(json.dumps(old_settings, indent=2))

    write_old()
    assert t.uninstall().returncode == 0
    assert not (t.project / ".mcp.json").exists()  # all it held was ours
    assert load(t.project / ".claude" / "settings.json") == {"hooks": {"Stop": [{"hooks": [theirs]}]}}

    write_old()
    assert t.install("--as", "a").returncode == 0
    server = load(t.project / ".mcp.json")["mcpServers"]["sessionmesh"]
    assert [server["command"], *server["args"]] == [*THIS_MESH, "mcp", "--client", "claude-code", "--as", "a"]
    settings = load(t.project / ".claude" / "settings.json")
    for event in case.events:
        commands = [c for c in our_commands(settings, event) if " Wake " not in c + " "]
        assert commands == [shlex.join([*THIS_MESH, "hook", "claude-code", event, "--as", "a"])], event


def test_a_pi_extension_of_an_older_install_gets_this_mesh(tmp_path: Path) -> None:
    case = PI_CASES[0]
    t = Tree(tmp_path / "home", tmp_path / "project", case)
    t.home.mkdir()
    extension = t.project / ".pi" / "extensions" / "sessionmesh.ts"
    extension.parent.mkdir(parents=True)
    assert t.install().returncode == 0
    extension.write_text(extension.read_text().replace(json.dumps(THIS_MESH), '["mesh"]'))
    assert t.install().returncode == 0
    assert f"const MESH: string[] = {json.dumps(THIS_MESH)};" in extension.read_text()
    assert t.uninstall().returncode == 0 and not extension.exists()


# -- the installed commands, from a shell without mesh on PATH ------------------------
def test_an_installed_hook_delivers_from_a_shell_without_mesh_on_path(
    broker_proc: BrokerProcess, tmp_path: Path
) -> None:
    project = tmp_path / "app"
    project.mkdir()
    assert mesh_cmd("install", "claude-code", "--dir", str(project), "--as", "builder").returncode == 0
    sent = mesh_cmd("send", "--as", "alice", "builder", "the API moved to /v2")
    assert sent.returncode == 0, sent.stderr
    settings = load(project / ".claude" / "settings.json")
    [command] = [c for c in our_commands(settings, "SessionStart") if " Wake " not in c + " "]
    bare = tmp_path / "bare-path"
    bare.mkdir()
    (bare / "sh").symlink_to("/bin/sh")
    env = {"PATH": str(bare), "HOME": str(tmp_path), "MESH_HOME": str(broker_proc.home)}
    shell = subprocess.run(["/bin/sh", "-c", "mesh --version"], env=env, capture_output=True, timeout=30)
    assert shell.returncode == 127  # a bare `mesh` finds nothing in this shell
    done = subprocess.run(
        ["/bin/sh", "-c", command],
        input=json.dumps({"session_id": "s1", "hook_event_name": "SessionStart"}),
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    context = json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "the API moved to /v2" in context


# -- --as registers the name ---------------------------------------------------------
def test_install_as_registers_the_name_so_mail_sent_before_the_agent_starts_is_queued(
    broker_proc: BrokerProcess, tmp_path: Path
) -> None:
    project = tmp_path / "app"
    project.mkdir()
    assert mesh_cmd("send", "--as", "alice", "builder", "hi").stdout.startswith("denied")
    done = mesh_cmd("install", "claude-code", "--dir", str(project), "--as", "builder")
    assert done.returncode == 0, done.stderr
    assert "registered builder on the mesh: mail to it waits until the agent starts" in done.stdout
    sent = mesh_cmd("send", "--as", "alice", "builder", "hi")
    assert sent.returncode == 0 and sent.stdout.startswith("queued"), sent.stdout + sent.stderr
    again = mesh_cmd("install", "claude-code", "--dir", str(project), "--as", "builder", "--json")
    assert json.loads(again.stdout)["registered"] is True


def test_a_dry_run_registers_nothing(broker_proc: BrokerProcess, tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    done = mesh_cmd("install", "claude-code", "--dir", str(project), "--as", "builder", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run: would register builder on the mesh" in done.stdout
    assert not (broker_proc.home / "secrets" / "builder").exists()
    assert mesh_cmd("send", "--as", "alice", "builder", "hi").stdout.startswith("denied")


def test_without_a_broker_the_install_succeeds_and_says_the_name_waits_for_the_first_connection(
    mesh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_AUTOSTART", "0")
    project = tmp_path / "app"
    project.mkdir()
    done = mesh_cmd("install", "codex", "--dir", str(project), "--as", "builder")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if "registered" in line]
    assert said == ["no broker is reachable now: builder will be registered on the agent's first connection"]
    assert (project / ".codex" / "config.toml").exists()
