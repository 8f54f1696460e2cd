"""JSON for the broker's hot paths (frames, stored bodies, audit rows): orjson.

Compact and UTF-8. `loads` rejects what is not JSON (NaN, Infinity, lone surrogates)
as a bad frame; integers beyond 64 bits are read as floats.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import BadFrame


def dumps(value: Any) -> str:
    """Compact JSON text. Raises `BadFrame` for values JSON cannot carry."""
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes (what goes on a socket). Raises `BadFrame` for
    values JSON cannot carry."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise BadFrame(f"cannot encode as JSON: {exc}") from None


def loads(data: str | bytes) -> Any:
    """Parse JSON text. Raises `BadFrame` with the parser's reason."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadFrame(f"not valid JSON: {exc}") from None
