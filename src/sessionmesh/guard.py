"""`mesh guard`: a git pre-commit hook that respects other peers' exclusive leases.

``mesh guard install`` writes the repository's pre-commit hook (keeping a hook
already there: it runs first); ``mesh guard check`` is what the hook runs. A commit
whose staged files (added, changed, renamed or deleted) overlap a lease another
peer holds exclusively is refused, naming the holder, its reason and the lease's
expiry. With no broker reachable it warns and allows: the guard is advisory and
must not stop work when the mesh is down.
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time

from .config import Settings
from .core.locks import Lease, overlaps
from .errors import BadRequest, MeshError, Unavailable

MARK = "# sessionmesh guard"
KEPT = "pre-commit.mesh-orig"  # a hook that was there before ours


def _git(repo: str, *args: str) -> str:
    done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BadRequest(
            f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}", hint="run it inside a git repository"
        )
    return done.stdout


def _hooks_dir(repo: str) -> str:
    path = _git(repo, "rev-parse", "--git-path", "hooks").strip()
    return path if os.path.isabs(path) else os.path.join(repo, path)


def _hook_text(name: str | None) -> str:
    who = f" --as {name}" if name else ""
    return (
        "#!/bin/sh\n"
        f"{MARK}: refuses a commit touching files another peer holds exclusively\n"
        f'here="$(dirname "$0")"\n'
        f'if [ -x "$here/{KEPT}" ]; then "$here/{KEPT}" "$@" || exit $?; fi\n'
        f'exec "{sys.executable}" -m sessionmesh guard check{who}\n'
    )


def install(repo: str, name: str | None) -> str:
    """Write the pre-commit hook; returns what was done, for the person."""
    hooks = _hooks_dir(repo)
    os.makedirs(hooks, exist_ok=True)
    hook = os.path.join(hooks, "pre-commit")
    if os.path.exists(hook):
        with open(hook) as fh:
            ours = MARK in fh.read()
        if not ours:
            os.replace(hook, os.path.join(hooks, KEPT))
    with open(hook, "w") as fh:
        fh.write(_hook_text(name))
    os.chmod(hook, os.stat(hook).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return f"installed {hook}" + (
        f" (your previous hook runs first: {KEPT})" if os.path.exists(os.path.join(hooks, KEPT)) else ""
    )


def uninstall(repo: str) -> str:
    hooks = _hooks_dir(repo)
    hook = os.path.join(hooks, "pre-commit")
    if not os.path.exists(hook) or MARK not in open(hook).read():  # noqa: SIM115
        return "no sessionmesh guard is installed here"
    kept = os.path.join(hooks, KEPT)
    if os.path.exists(kept):
        os.replace(kept, hook)
        return f"removed the guard; restored your previous {hook}"
    os.remove(hook)
    return f"removed {hook}"


def staged_files(repo: str) -> list[str]:
    """Absolute paths of the staged files, including both sides of a rename."""
    root = _git(repo, "rev-parse", "--show-toplevel").strip()
    out = _git(repo, "diff", "--cached", "--name-only", "-z", "--no-renames", "--diff-filter=ACDMRT")
    return [os.path.join(root, p) for p in out.split("\0") if p]


def blocking(leases: list[Lease], files: list[str], me: str) -> list[tuple[Lease, list[str]]]:
    """The exclusive leases of other peers that cover staged files, with those files."""
    found = []
    for lease in leases:
        if lease.holder == me or not lease.exclusive:
            continue
        hit = [f for f in files if overlaps(lease.resource, f)]
        if hit:
            found.append((lease, hit))
    return found


def check(settings: Settings, repo: str, name: str | None) -> int:
    """Exit status for the pre-commit hook: 0 to allow the commit, 1 to refuse it."""
    from .client.http import OneShot

    files = staged_files(repo)
    if not files:
        return 0
    try:
        shot = OneShot(settings.with_(autostart=False), name)
        leases = [
            Lease(**{k: v for k, v in w.items() if k != "expires_in"}) for w in shot.call("locks")["locks"]
        ]
    except (Unavailable, MeshError) as exc:
        print(f"mesh guard: cannot check leases ({exc}); allowing the commit", file=sys.stderr)
        return 0
    found = blocking(leases, files, shot.name)
    if not found:
        return 0
    print("mesh guard: this commit touches files another peer holds exclusively:", file=sys.stderr)
    now = time.time()
    for lease, hit in found:
        why = f" ({lease.reason})" if lease.reason else ""
        until = time.strftime("%H:%M:%S", time.localtime(lease.expires_at))
        print(
            f"  {lease.holder} holds {lease.resource}{why} until {until} ({max(0, lease.expires_at - now):.0f}s)",
            file=sys.stderr,
        )
        for path in hit:
            print(f"    {os.path.relpath(path, repo)}", file=sys.stderr)
    print(
        f"ask the holder (mesh send {found[0][0].holder} ...), wait for the lease to end, or unstage those files",
        file=sys.stderr,
    )
    return 1


def run_guard(settings: Settings, args: argparse.Namespace) -> int:
    repo = os.path.abspath(args.dir or os.getcwd())
    if args.action == "check":
        return check(settings, repo, args.as_name)
    print(install(repo, args.as_name) if args.action == "install" else uninstall(repo))
    return 0
