"""Where an install goes and what it runs: the scope, its root folder, and the command
lines of the MCP server and the hooks.

Every command starts this Python by its absolute path with ``-m sessionmesh``: the
installation that ran ``mesh install``, whatever the ``PATH`` of the shell an agent
is later started from (a bare ``mesh`` there finds nothing, or another version, and
the agent silently gets no server and no hooks). Not ``shutil.which("mesh")``: that
may be a pyenv shim, which picks a Python by the folder it runs in, or another
installation's ``mesh``. Not the ``mesh`` script beside ``sys.executable``: a
``pip install --user`` puts it elsewhere, and ``python -m sessionmesh`` has none.
``sys.executable`` is kept as it is, not resolved: a virtualenv's ``python`` is a
symlink whose own path is what makes it the virtualenv's. The price: a project's
config names a path on this machine, so someone else who clones the project runs
``mesh install`` once too (``mesh doctor`` says so when the path is missing).
"""

from __future__ import annotations

import enum
import os
import shlex
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

    def reinstall(self) -> str:
        """The command that installs this target again, with its ``--as``/``--home``/``--url``."""
        scope = ["--user"] if self.scope is Scope.USER else []
        return "run: " + shlex.join(["mesh", "install", self.tool, *scope, *self.extra])


def program() -> tuple[str, ...]:
    """This Python, by absolute path, running this sessionmesh (see the module docstring)."""
    if not sys.executable:
        raise BadRequest("cannot tell which Python runs sessionmesh (sys.executable is empty)")
    return (os.path.abspath(sys.executable), "-m", "sessionmesh")


def installed_extra(argv: list[str]) -> tuple[str, ...]:
    """The ``--as``/``--home``/``--url`` arguments of an installed ``… mcp --client TOOL …``
    command line (what to install again with)."""
    for i in range(len(argv) - 2):
        if argv[i] == "mcp" and argv[i + 1] == "--client":
            return tuple(argv[i + 3 :])
    return ()


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
    from ..envelope import check_name
    from ..quiet import git_root

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
