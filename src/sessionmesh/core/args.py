"""Reading op arguments: a missing or null argument takes its default; anything
else of the wrong type or range is a `BadFrame` naming the argument."""

from __future__ import annotations

from typing import Any

from ..envelope import Target
from ..errors import BadFrame


def int_arg(args: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = args.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadFrame(f"'{key}' must be an integer from {lo} to {hi}")
    return value


def float_arg(args: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = args.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadFrame(f"'{key}' must be a number from {lo} to {hi}")
    return float(value)


def bool_arg(args: dict[str, Any], key: str, default: bool) -> bool:
    value = args.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadFrame(f"'{key}' must be true or false")
    return value


def topic_arg(args: dict[str, Any]) -> str:
    value = args.get("topic")
    if not isinstance(value, str) or not value.startswith("#"):
        raise BadFrame("'topic' must look like '#name'")
    topic = Target.parse(value).topic
    assert topic is not None
    return topic
