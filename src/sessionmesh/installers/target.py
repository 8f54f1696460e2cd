"""Where an install goes and what it runs: the scope, its root folder, and the command
lines of the MCP server and the hooks.

The command is plain ``mesh`` when a ``mesh`` is on ``PATH`` at install time: a
project's config files are shared through git, and an absolute path from one machine
(a virtualenv, a pyenv shim) is wrong on the next. Without one, it is this Python's
absolute path with ``-m sessionmesh``, which works from any tool's environment.
"""

from __future__ import annotations

import enum
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadRequest


class Scope(enum.Enum):
    PROJECT = "project"
    USER = "user"


@dataclass(frozen=True)
class Target:
    """One install: ``tool`` at ``scope``, rooted at ``root`` (project folder or home)."""

    tool: str
    scope: Scope
    root: Path
    program: tuple[str, ...]
    extra: tuple[str, ...] = ()  # --as/--home/--url passed on to `mesh mcp` / `mesh hook`

    def label(self, path: Path) -> str:
        """``path`` as shown in diffs: relative to the project, or ``~/…`` in a home."""
        if not path.is_relative_to(self.root):
            return str(path)  # a tool home moved elsewhere ($CODEX_HOME)
        rel = path.relative_to(self.root).as_posix()
        return f"~/{rel}" if self.scope is Scope.USER else rel

    def mcp_argv(self) -> list[str]:
        """The full command line of the MCP server (peers see the tool as its client)."""
        return [*self.program, "mcp", "--client", self.tool, *self.extra]

    def hook_command(self, event: str) -> str:
        """The shell command of one hook (hooks are run by a shell, so it is quoted)."""
        return shlex.join([*self.program, "hook", self.tool, event, *self.extra])


def program() -> tuple[str, ...]:
    """``("mesh",)`` when it is on PATH, else ``(sys.executable, "-m", "sessionmesh")``."""
    return ("mesh",) if shutil.which("mesh") else (sys.executable, "-m", "sessionmesh")


def resolve(
    tool: str,
    *,
    user: bool,
    folder: str | None,
    as_name: str | None,
    home: str | None = None,
    url: str | None = None,
) -> Target:
    """The target of ``mesh install TOOL [--user] [--dir DIR] [--as NAME]``.

    Project scope roots at ``folder``, else the git top-level of the current folder,
    else the current folder; user scope at ``Path.home()``. Raises `BadRequest` for
    ``--dir`` with ``--user`` or a folder that does not exist, and `InvalidName` for
    a bad ``--as``.
    """
    from ..client.discovery import git_root
    from ..envelope import check_name

    extra: list[str] = []
    if as_name:
        extra += ["--as", check_name(as_name)]
    if home:
        extra += ["--home", str(Path(home).expanduser().resolve())]
    if url:
        extra += ["--url", url]
    if user:
        if folder:
            raise BadRequest("--dir names a project folder; it does not go with --user")
        return Target(tool, Scope.USER, Path.home(), program(), tuple(extra))
    if folder:
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            raise BadRequest(f"--dir {folder}: no such folder")
    else:
        cwd = Path.cwd()
        root = Path(git_root(str(cwd)) or cwd)
    return Target(tool, Scope.PROJECT, root, program(), tuple(extra))
