"""JSON for the broker's hot paths (frames, stored bodies, audit rows): orjson.

Compact, UTF-8, and strict: integers beyond 64 bits and other values JSON-in-Python
would accept but other languages would not are rejected as bad frames by `loads`.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import BadFrame


def dumps(value: Any) -> str:
    """Compact JSON text. Raises `BadFrame` for values JSON cannot carry."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise BadFrame(f"cannot encode as JSON: {exc}") from None


def loads(data: str | bytes) -> Any:
    """Parse JSON text. Raises `BadFrame` with the parser's reason."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadFrame(f"not valid JSON: {exc}") from None
