"""JSON for the short-lived callers (hooks, one-shot commands) without importing `json`.

`import json` imports `re` and `enum` and compiles its patterns: ~8 ms, close to a
bare interpreter's start, which a hook would pay on every tool call of an agent.
CPython's accelerator `_json`, which `json` itself runs on, parses and quotes without
them; this module drives it directly. What it reads and writes is the same JSON:
`loads` accepts exactly what ``json.loads`` does with its defaults but NaN and the
infinities, and `dumps` writes what ``json.loads`` reads back equal. On an interpreter
without `_json`, both are `json`'s.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"  # JSON's, and only it: str.strip() would take more

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Options:
    """What `_json`'s scanner reads off the decoder it serves: ``json.loads``'s
    defaults, but NaN and the infinities refused."""

    strict = True  # control characters inside strings are an error
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)


if _json is not None:
    _scan = _json.make_scanner(_Options())
    _quote = _json.encode_basestring
    _quote_ascii = _json.encode_basestring_ascii


def loads(data: str | bytes) -> Any:
    """The value of one JSON text (bytes as ``json.loads`` reads them). Raises
    `ValueError` for anything else, trailing data included."""
    if _json is not None:
        try:
            text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
            text = text.strip(_WHITESPACE)
            value, end = _scan(text, 0)
            if end == len(text):
                return value
        except (UnicodeDecodeError, StopIteration, SystemError):
            pass
    # Not plain UTF-8 JSON. The scanner raises its errors as json.decoder's
    # JSONDecodeError and, in 3.11, cannot when nothing imported json.decoder
    # (SystemError): the rare odd input pays for `json`, which reads the other
    # encodings and a BOM as it always does, and says what is wrong.
    import json

    return json.loads(data, parse_constant=_no_constant)


def dumps(value: Any, *, ascii_only: bool = False) -> str:
    """Compact JSON text of ``value`` (dicts, lists, tuples, strings, numbers, booleans,
    None; keys that are numbers, booleans or None become strings, as ``json.dumps``
    makes them). Raises `TypeError` for anything else, `ValueError` for NaN, an
    infinity, or a container inside itself."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=False)
    parts: list[str] = []
    _write(value, parts, _quote_ascii if ascii_only else _quote, set())
    return "".join(parts)


def _key(key: Any) -> str:
    """A key that is not a string, as ``json.dumps`` writes it."""
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _number(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _number(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not JSON")
    return float.__repr__(value)


def _write(value: Any, out: list[str], quote: Any, open_ids: set[int]) -> None:
    if isinstance(value, str):
        out.append(quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict | list | tuple):
        if id(value) in open_ids:
            raise ValueError("a container inside itself is not JSON")
        open_ids.add(id(value))
        if isinstance(value, dict):
            out.append("{")
            for i, (key, item) in enumerate(value.items()):
                out.append("," if i else "")
                out.append(quote(key if isinstance(key, str) else _key(key)))
                out.append(":")
                _write(item, out, quote, open_ids)
            out.append("}")
        else:
            out.append("[")
            for i, item in enumerate(value):
                out.append("," if i else "")
                _write(item, out, quote, open_ids)
            out.append("]")
        open_ids.discard(id(value))
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
