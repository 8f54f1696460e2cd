"""The documents agree with the code: docs/deployment.md's settings table is the one
``docs/settings_table.py`` generates from `sessionmesh.config.Settings`."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from sessionmesh.config import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", DOCS / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_table_in_deployment_md_is_the_generated_one() -> None:
    document = (DOCS / "deployment.md").read_text()
    assert generator().rewrite(document) == document, (
        "docs/deployment.md's settings table differs from Settings: run python docs/settings_table.py"
    )


def test_the_table_has_one_row_per_setting_in_declared_order() -> None:
    rows = re.findall(r"^\| `(MESH_[A-Z_]+)` \|", generator().table(), flags=re.MULTILINE)
    assert rows == ["MESH_" + field.upper() for field in Settings._fields]


def test_a_table_with_a_row_missing_is_caught() -> None:
    docs = generator()
    fresh = docs.rewrite((DOCS / "deployment.md").read_text())
    stale = fresh.replace(docs.table().splitlines(keepends=True)[-1], "")
    assert stale != fresh
    assert docs.rewrite(stale) == fresh


def test_every_mesh_variable_deployment_md_names_is_a_setting() -> None:
    named = set(re.findall(r"\bMESH_[A-Z_]+", (DOCS / "deployment.md").read_text()))
    assert named - {"MESH_" + field.upper() for field in Settings._fields} == set()
