"""Property tests of `overlaps()`: computed overlap agrees with fnmatch, segment by segment.

A lease covers the paths its resource matches and everything below them, except below
a file (a last segment with an extension and no wildcard). These tests restate that
rule with `fnmatch.fnmatchcase` per segment and let hypothesis look for disagreements.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import warnings

import pytest

hypothesis = pytest.importorskip("hypothesis")

# On a failure hypothesis's pytest plugin imports its patch writer, which (through
# libcst / mypy_extensions, when installed) warns at import time; with warnings as
# errors that turns a clear failure report into an INTERNALERROR. Import it quietly now.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sessionmesh.core.locks import overlaps  # noqa: E402

GLOB_CHARS = set("*?[")

literal_segment = st.text(alphabet="ab.", min_size=1, max_size=4)
# "**" alone is the any-depth wildcard, which fnmatch does not know: leave it out here.
glob_segment = (
    st.lists(st.sampled_from(["a", "b", ".", "*", "?", "[ab]", "[!a]", "[a-b]"]), min_size=1, max_size=3)
    .map("".join)
    .filter(lambda s: s != "**")
)
path = st.lists(literal_segment, min_size=1, max_size=4)
glob = st.lists(glob_segment, min_size=1, max_size=4)
glob_with_globstar = st.lists(st.one_of(glob_segment, st.just("**")), min_size=1, max_size=3)

property_settings = settings(max_examples=300, deadline=None, database=None)


def is_file(segments: list[str]) -> bool:
    last = segments[-1]
    return "." in last[1:] and not GLOB_CHARS & set(last)


def expected_overlap(p: list[str], g: list[str]) -> bool:
    """Whether a concrete path and a glob without '**' cover a common path."""
    common = min(len(p), len(g))
    if not all(fnmatch.fnmatchcase(p[i], g[i]) for i in range(common)):
        return False
    if len(p) == len(g):
        return True
    if len(p) > len(g):  # the path lies below a match of the glob
        return not is_file(g)
    return not is_file(p)  # the glob's matches lie below the path (each segment can match)


@property_settings
@given(p=path, g=glob)
def test_a_path_and_a_glob_overlap_exactly_when_fnmatch_says_they_share_a_path(
    p: list[str], g: list[str]
) -> None:
    assert overlaps("/".join(p), "/".join(g)) is expected_overlap(p, g)
    assert overlaps("/".join(g), "/".join(p)) is expected_overlap(p, g)


@property_settings
@given(p=path, g=glob)
def test_absolute_resources_overlap_like_their_relative_forms(p: list[str], g: list[str]) -> None:
    assert overlaps("/" + "/".join(p), "/" + "/".join(g)) is expected_overlap(p, g)


@property_settings
@given(a=glob_with_globstar, b=glob_with_globstar)
def test_overlap_is_symmetric(a: list[str], b: list[str]) -> None:
    assert overlaps("/".join(a), "/".join(b)) is overlaps("/".join(b), "/".join(a))


@property_settings
@given(a=glob_with_globstar)
def test_every_resource_overlaps_itself(a: list[str]) -> None:
    assert overlaps("/".join(a), "/".join(a))


# -- with '**': a bounded search for a path both resources cover -------------------------

NAMES = ["a", "b", ".", "aa", "ab", "a.b", ".a"]
UNIVERSE = [list(t) for depth in (1, 2, 3) for t in itertools.product(NAMES, repeat=depth)]


def matches(path_segs: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not path_segs
    if pattern[0] == "**":
        return any(matches(path_segs[i:], pattern[1:]) for i in range(len(path_segs) + 1))
    return (
        bool(path_segs)
        and fnmatch.fnmatchcase(path_segs[0], pattern[0])
        and matches(path_segs[1:], pattern[1:])
    )


def covers(resource: list[str], target: list[str]) -> bool:
    """``resource`` matches ``target`` or one of its ancestors (and is no file, then)."""
    if matches(tuple(target), tuple(resource)):
        return True
    return not is_file(resource) and any(
        matches(tuple(target[:i]), tuple(resource)) for i in range(1, len(target))
    )


@settings(max_examples=120, deadline=None, database=None)
@given(a=glob_with_globstar, b=glob_with_globstar)
def test_globs_that_both_cover_some_path_overlap(a: list[str], b: list[str]) -> None:
    witness = next((t for t in UNIVERSE if covers(a, t) and covers(b, t)), None)
    if witness is not None:
        assert overlaps("/".join(a), "/".join(b)), f"both cover {'/'.join(witness)}"
