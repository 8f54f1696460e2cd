"""docs/protocol.md's captured examples are what a real broker answers today:
``docs/protocol_examples.py`` replays every marked example against real brokers, and
the document must hold exactly the text it writes.

One run of the generator (about ten seconds: a dozen brokers start side by side)
serves every test here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FIX = "run: python docs/protocol_examples.py (then read the diff: the prose around an example may need a word too)"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protocol_examples", DOCS / "protocol_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs() -> ModuleType:
    return generator()


@pytest.fixture(scope="module")
def generated(docs: ModuleType) -> dict[str, str]:
    return docs.generate()


def test_every_example_in_protocol_md_is_what_a_real_broker_answers(
    docs: ModuleType, generated: dict[str, str]
) -> None:
    _, drifted = docs.rewrite(docs.DOC.read_text(), generated)
    assert drifted == [], (
        f"docs/protocol.md: these examples differ from a real broker: {', '.join(drifted)}; {FIX}"
    )


def test_an_example_edited_by_hand_is_reported_by_name(docs: ModuleType, generated: dict[str, str]) -> None:
    fresh, _ = docs.rewrite(docs.DOC.read_text(), generated)
    first, _, _ = docs.blocks(fresh)["health"]
    lines = fresh.split("\n")
    lines[first + 1] = lines[first + 1].replace('"online":0', '"online":1')
    edited = "\n".join(lines)
    assert edited != fresh
    fixed, drifted = docs.rewrite(edited, generated)
    assert drifted == ["health"]
    assert fixed == fresh


def test_a_marker_without_a_scene_is_an_error(docs: ModuleType, generated: dict[str, str]) -> None:
    document = docs.DOC.read_text().replace("<!-- example: health -->", "<!-- example: health-of-nobody -->")
    with pytest.raises(ValueError, match="health-of-nobody"):
        docs.rewrite(document, generated)


def test_every_scene_writes_an_example_the_document_marks(
    docs: ModuleType, generated: dict[str, str]
) -> None:
    assert sorted(generated) == sorted(docs.blocks(docs.DOC.read_text()))
