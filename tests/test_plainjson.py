"""`sessionmesh.plainjson` reads and writes the same JSON as `json`, without its import."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionmesh import plainjson

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(values, st.booleans())
def test_what_dumps_writes_json_reads_back_equal(value: object, ascii_only: bool) -> None:
    text = plainjson.dumps(value, ascii_only=ascii_only)
    assert json.loads(text) == value
    assert text.isascii() or not ascii_only


@given(values)
def test_loads_reads_what_json_writes(value: object) -> None:
    assert plainjson.loads(json.dumps(value)) == value
    assert plainjson.loads(json.dumps(value, indent=2, ensure_ascii=False).encode()) == value


@given(st.text(alphabet=st.sampled_from(list('{}[]",:0123456789.eE+- \t\n\rtruefalsnul\\x')), max_size=20))
def test_loads_accepts_exactly_what_json_accepts(text: str) -> None:
    try:
        expected = json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except ValueError:
        with pytest.raises(ValueError):
            plainjson.loads(text)
    else:
        assert plainjson.loads(text) == expected


@pytest.mark.parametrize(
    "text", ["", " ", "{", "[1,]", "1 2", '{"a" 1}', "tru", '"\x01"', "NaN", "-Infinity"]
)
def test_what_is_not_json_raises_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        plainjson.loads(text)


def test_bytes_that_are_not_utf8_raise_a_value_error() -> None:
    with pytest.raises(ValueError):
        plainjson.loads(b'"\xff"')


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (math.nan, ValueError),
        (math.inf, ValueError),
        ({math.nan: "a"}, ValueError),
        ({(1,): "a"}, TypeError),
        (b"x", TypeError),
        ({"a"}, TypeError),
    ],
)
def test_what_json_cannot_carry_raises(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        plainjson.dumps(value)


def test_a_container_inside_itself_raises_instead_of_recursing() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="inside itself"):
        plainjson.dumps(loop)
    shared = [1]
    assert plainjson.dumps([shared, shared]) == "[[1],[1]]"  # the same list twice is no loop


def test_bad_input_is_reported_without_json_loaded_beforehand() -> None:
    """3.11's scanner raises its errors through json.decoder, which a hook never imported."""
    code = (
        "import sys; from sessionmesh import plainjson\n"
        "assert 'json' not in sys.modules\n"
        "assert plainjson.loads('[1, {\"a\": null}]') == [1, {'a': None}]\n"
        "assert 'json' not in sys.modules\n"
        "try:\n    plainjson.loads('{\"a\": }')\nexcept ValueError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("JSONDecodeError Expecting value")


def test_keys_that_are_not_strings_are_written_as_json_writes_them() -> None:
    value = {7: "a", 2.5: "b", True: "c", False: "f", None: "d", "e": 0}
    assert json.loads(plainjson.dumps(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    "data",
    [
        b'\xef\xbb\xbf{"a": 1}',  # a UTF-8 BOM
        '{"a": "\u00e9"}'.encode("utf-16"),
        '["x"]'.encode("utf-32-le"),
        b'"\xed\xa0\x80"',  # a lone surrogate, encoded as UTF-8 bytes
    ],
)
def test_bytes_are_read_in_every_encoding_json_reads(data: bytes) -> None:
    assert plainjson.loads(data) == json.loads(data)
