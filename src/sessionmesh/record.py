"""`record`: a class of annotated fields made a named tuple, as ``typing.NamedTuple``
makes it, without importing `typing`.

A hook imports `Settings` and the programs' `HookFormat` on every tool call of an
agent, and `typing` (with the `re`, `enum` and `functools` it imports) costs it ~5 ms
of a ~10 ms interpreter start. `collections`, which this needs, is loaded by then.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

_NOT_COPIED = frozenset({"__dict__", "__weakref__", "__module__"})


def record(cls: type[T]) -> type[T]:
    """A named tuple of ``cls``'s annotated fields, in order, with their defaults, its
    docstring, methods and properties. Raises `TypeError` when a field without a
    default follows one with a default."""
    fields = list(cls.__dict__.get("__annotations__", {}))
    defaults = [cls.__dict__[f] for f in fields if f in cls.__dict__]
    if any(f in cls.__dict__ for f in fields[: len(fields) - len(defaults)]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    made = namedtuple(cls.__name__, fields, defaults=defaults, module=cls.__module__)  # type: ignore[misc]
    for key, value in cls.__dict__.items():
        if key not in _NOT_COPIED and key not in fields:
            setattr(made, key, value)
    return made  # type: ignore[return-value]
