"""`sessionmesh.record`: typing.NamedTuple's class syntax without importing typing."""

from __future__ import annotations

import pickle

import pytest

from sessionmesh.config import Settings
from sessionmesh.record import record


@record
class Point:
    """A point."""

    x: int
    y: int = 0
    label: str = ""

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    def moved(self, dx: int) -> Point:
        return self._replace(x=self.x + dx)


def test_a_record_is_a_tuple_of_its_fields_with_their_defaults() -> None:
    p = Point(3)
    assert p == (3, 0, "")
    assert Point._fields == ("x", "y", "label")
    assert Point(1, y=-2, label="a") == (1, -2, "a")
    with pytest.raises(TypeError):
        Point()  # x has no default


def test_a_record_keeps_its_methods_docstring_and_annotations() -> None:
    p = Point(1, -2)
    assert p.norm1 == 3
    assert p.moved(4) == Point(5, -2)
    assert Point.__doc__ == "A point."
    assert Point.__annotations__ == {"x": "int", "y": "int", "label": "str"}
    assert Point.__module__ == __name__
    assert pickle.loads(pickle.dumps(p)) == p


def test_a_record_is_immutable() -> None:
    with pytest.raises(AttributeError):
        Point(1).x = 2  # type: ignore[misc]


def test_a_field_without_a_default_after_one_with_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="follows one with a default"):

        @record
        class Bad:
            a: int = 1
            b: int


def test_settings_are_a_record() -> None:
    s = Settings(home="/tmp/h")
    assert s.port == 9474 and s.with_(port=1).port == 1 and s.port == 9474
    assert "home" in Settings._fields and Settings.__annotations__["port"] == "int"
