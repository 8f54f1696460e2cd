"""``mesh install`` / ``mesh uninstall``: put sessionmesh into a coding agent's own config.

For Claude Code, Codex, Gemini CLI and Pi, at project or user scope, an install writes:

- the MCP server ``sessionmesh`` running ``mesh mcp [--as NAME]``;
- hooks running ``mesh hook <tool> <Event> [--as NAME]`` on the events that can put
  messages into the agent's turn, and on its stop event;
- the sessionmesh skill (``skills/sessionmesh/SKILL.md`` in this package) in the
  tool's skills folder.

``mesh`` there is this installation by absolute path (`target.program`), so an agent
started from any shell runs it. With ``--as NAME`` the name is also registered on
the broker, so mail sent to it before the agent first starts waits for it.

Each file is merged with what is there: everything that is not ours is kept, and
ours is recognised again (the server named ``sessionmesh``; hook commands running
``mesh hook``, by any path), so a second run changes nothing and ``uninstall``
removes only ours. Only what changes is rewritten, in the file's own layout, so an
install then an uninstall gives back each file byte for byte (and removes the files
and folders the install made). Every file is read and checked before any is
written; each changed file is shown as a unified diff and backed up first, under
``$MESH_HOME/backups/`` (`changes.Backups`), never beside the config.

Where each program keeps what, and the documentation it follows, is in the docstring
of its module in `sessionmesh.programs`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import programs
from ..config import Settings
from .changes import Backups, FileChange, apply
from .target import Target, resolve


@dataclass
class Outcome:
    """What a run did, as printed (and as the ``--json`` summary)."""

    target: Target
    install: bool
    dry_run: bool
    changes: list[FileChange]
    backups: dict[Path, Path] = field(default_factory=dict)  # changed file → its backup
    notes: list[str] = field(default_factory=list)
    registered: bool | None = None  # --as NAME is registered on the broker (None: not tried)
    registration: str = ""  # the line that says so

    def summary(self) -> dict[str, Any]:
        return {
            "tool": self.target.tool,
            "scope": self.target.scope.value,
            "root": str(self.target.root),
            "action": "install" if self.install else "uninstall",
            "dry_run": self.dry_run,
            "changed": [str(c.path) for c in self.changes],
            "backups": [str(b) for b in self.backups.values()],
            "notes": self.notes,
            "registered": self.registered,
            "registration": self.registration,
            "diff": "".join(c.diff() for c in self.changes),
        }


def plan(target: Target, *, install: bool) -> list[FileChange]:
    """Every file change that installs (or removes) sessionmesh at ``target``.

    Reads every file first; raises `BadRequest` on the first one that cannot be
    parsed, before anything is written.
    """
    return [c for c in programs.get(target.tool).plan(target, install=install) if c is not None]


def execute(target: Target, *, install: bool, backups: Path, dry_run: bool = False) -> Outcome:
    """Plan, then (unless ``dry_run``) back up (into a new folder under ``backups``) and
    write every changed file."""
    changes = plan(target, install=install)
    outcome = Outcome(target, install, dry_run, changes)
    if install and changes:
        outcome.notes = programs.get(target.tool).notes(target)
    if not dry_run:
        keep = Backups(backups, f"{'install' if install else 'uninstall'}-{target.tool}")
        for change in changes:
            backup = apply(change, stop=target.root, backups=keep)
            if backup is not None:
                outcome.backups[change.path] = backup
    return outcome


def register(settings: Settings, name: str) -> tuple[bool, str]:
    """Join ``name`` on the broker (its secret saved under ``$MESH_HOME/secrets``), so
    mail to it is queued before its agent first starts. Returns whether it is
    registered and the line that says so; never raises: the agent's first
    connection registers it just as well."""
    from ..client.http import OneShot
    from ..errors import MeshError, Timeout, Unavailable

    try:
        new = OneShot(settings, name).join()
    except (Unavailable, Timeout):
        return False, f"no broker is reachable now: {name} will be registered on the agent's first connection"
    except MeshError as exc:
        return False, f"{name} is not registered: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
    if new:
        return True, f"registered {name} on the mesh: mail to it waits until the agent starts"
    return True, f"{name} is registered on the mesh"


def run_install(args: argparse.Namespace, settings: Settings) -> int:
    """``mesh install TOOL``: returns the exit code. Raises `MeshError`."""
    return _run(args, settings, install=True)


def run_uninstall(args: argparse.Namespace, settings: Settings) -> int:
    """``mesh uninstall TOOL``: returns the exit code. Raises `MeshError`."""
    return _run(args, settings, install=False)


def _run(args: argparse.Namespace, settings: Settings, *, install: bool) -> int:
    as_name = getattr(args, "as_name", None)
    target = resolve(
        args.tool,
        user=bool(args.user),
        folder=args.dir,
        as_name=as_name,
        home=getattr(args, "home", None),
        url=getattr(args, "url", None),
    )
    backups = Path(settings.home) / "backups"
    outcome = execute(target, install=install, backups=backups, dry_run=bool(args.dry_run))
    if install and as_name:
        if outcome.dry_run:
            outcome.registration = f"dry run: would register {as_name} on the mesh"
        else:
            outcome.registered, outcome.registration = register(settings, as_name)
    if args.json:
        print(json.dumps(outcome.summary(), ensure_ascii=False), flush=True)
    else:
        _print(outcome)
    return 0


def _print(outcome: Outcome) -> None:
    target = outcome.target
    title = programs.get(target.tool).TITLE
    where = f"{target.scope.value} scope, {target.root}"
    verb = "install" if outcome.install else "uninstall"
    if not outcome.changes:
        state = "already installed" if outcome.install else "not installed"
        print(f"sessionmesh is {state} for {title} ({where}); nothing to change")
    else:
        for change in outcome.changes:
            sys.stdout.write(change.diff())
        if outcome.dry_run:
            print(f"dry run: would {verb} sessionmesh for {title} ({where}); nothing was written")
        else:
            print(f"{verb}ed sessionmesh for {title} ({where})")
            for change in outcome.changes:
                action = (
                    "removed" if change.after is None else "created" if change.before is None else "updated"
                )
                kept = outcome.backups.get(change.path)
                print(f"  {action} {change.path}" + (f"  (backup: {kept})" if kept else ""))
            for note in outcome.notes:
                print(f"note: {note}")
    if outcome.registration:
        print(outcome.registration)
