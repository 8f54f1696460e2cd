"""The sessionmesh agent skill: one ``SKILL.md`` shipped in the package, placed in
each tool's skills folder as ``<skills>/sessionmesh/SKILL.md``.

All three tools read the same format, the open Agent Skills standard
(https://agentskills.io): a folder holding ``SKILL.md``, YAML front matter with
``name`` and ``description``, then markdown instructions.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .changes import FileChange, read_text

NAME = "sessionmesh"


def text() -> str:
    """The skill's source text, as shipped in ``sessionmesh/skills/sessionmesh/SKILL.md``."""
    return resources.files("sessionmesh").joinpath("skills", NAME, "SKILL.md").read_text(encoding="utf-8")


def edit(skills_dir: Path, label: str, *, install: bool) -> FileChange | None:
    """Plan placing (or removing) ``skills_dir/sessionmesh/SKILL.md``.

    A file that already holds exactly our text is not backed up before it is removed;
    anything else there (an older version, local edits) is.
    """
    path = skills_dir / NAME / "SKILL.md"
    ours = text()
    current = read_text(path)
    if install:
        if current == ours:
            return None
        return FileChange(path, f"{label}/{NAME}/SKILL.md", current, ours)
    if current is None:
        return None
    return FileChange(path, f"{label}/{NAME}/SKILL.md", current, None, backup=current != ours)
