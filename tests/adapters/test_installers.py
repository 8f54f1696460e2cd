"""`mesh install` / `mesh uninstall` run for real against fixture config trees that
already hold other servers, other hooks and TOML comments, for every tool and scope."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.installers import jsonconfig
from sessionmesh.installers.skill import text as skill_text

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
    """A home folder and a project folder, and how to run `mesh` between them."""

    home: Path
    project: Path
    case: Case

    @property
    def root(self) -> Path:
        return self.home if self.case.scope == "user" else self.project

    def scope_args(self) -> list[str]:
        return ["--user"] if self.case.scope == "user" else ["--project", "--dir", str(self.project)]

    def mesh(
        self, *args: str, cwd: Path | None = None, path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env["HOME"] = str(self.home)
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


def backups(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*.mesh-backup-*")]


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
    before, kept = snapshot(tree.home, tree.project), backups(tree.home, tree.project)
    again = tree.install()
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout and "+++" not in again.stdout
    assert snapshot(tree.home, tree.project) == before
    assert backups(tree.home, tree.project) == kept


def test_each_changed_file_is_backed_up_with_its_original_content(tree: Tree) -> None:
    assert tree.install().returncode == 0
    for rel, original in tree.case.files.items():
        copies = list((tree.root / rel).parent.glob(Path(rel).name + ".mesh-backup-*"))
        assert [c.read_text() for c in copies] == [original], rel
    assert len(backups(tree.home, tree.project)) == len(tree.case.files)


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
        assert load(tree.root / rel) == load_text(rel, original), rel
        if rel.endswith(".toml"):
            assert (tree.root / rel).read_text() == original
    assert not (tree.root / tree.case.skill).parent.exists()
    left = {p for p in snapshot(tree.home, tree.project) if ".mesh-backup-" not in p}
    assert left == {str(tree.root / rel) for rel in tree.case.files}
    again = tree.uninstall()
    assert again.returncode == 0 and "not installed" in again.stdout


def test_install_then_uninstall_into_an_empty_folder_leaves_it_empty(tmp_path: Path) -> None:
    for case in CASES[::2]:  # project scope of each tool
        t = Tree(tmp_path / case.tool / "home", tmp_path / case.tool / "project", case)
        t.home.mkdir(parents=True)
        t.project.mkdir()
        assert t.install().returncode == 0
        assert backups(t.project) == []  # nothing existed, nothing to back up
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
    assert sorted(out["backups"]) == sorted(str(p) for p in backups(tree.home, tree.project))
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
    assert proc.returncode == 1 and "invalid" in proc.stderr
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


def test_without_mesh_on_path_the_entries_run_this_python(tmp_path: Path) -> None:
    case = CASES[4]  # gemini, project: server and hooks in one file
    t = Tree(tmp_path / "home", tmp_path / "project", case)
    t.home.mkdir()
    t.project.mkdir()
    empty = tmp_path / "empty-path"
    empty.mkdir()
    proc = t.mesh("install", "gemini", "--dir", str(t.project), path=str(empty))
    assert proc.returncode == 0, proc.stderr
    settings = load(t.project / ".gemini" / "settings.json")
    server = settings["mcpServers"]["sessionmesh"]
    assert [server["command"], *server["args"]] == [
        sys.executable,
        "-m",
        "sessionmesh",
        "mcp",
        "--client",
        "gemini",
    ]
    assert our_commands(settings, "AfterAgent")[0].endswith("-m sessionmesh hook gemini AfterAgent")
    assert t.mesh("uninstall", "gemini", "--dir", str(t.project), path=str(empty)).returncode == 0
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
    assert 'const MESH: string[] = ["mesh"];  // written by mesh install' in lines
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
        assert wake["command"] == "mesh hook claude-code Wake --as frontend"
        assert wake["asyncRewake"] is True and wake["timeout"] >= 3600
        assert wake["rewakeMessage"].startswith("sessionmesh woke you") and wake["rewakeSummary"]
    assert not any(" Wake" in h["command"] for g in hooks["PostToolUse"] for h in g["hooks"])
