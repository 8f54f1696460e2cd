"""Advisory leases through the core, and resource overlap in core/locks (SPEC §4)."""

from __future__ import annotations

from typing import Any

import pytest

from sessionmesh.core.locks import overlaps, segment_overlaps
from sessionmesh.errors import NotHolder

from .conftest import Mesh


def lock(mesh: Mesh, name: str, resource: str, **args: Any) -> dict[str, Any]:
    return mesh.ok(name, "lock", resource=resource, **args)


def held(mesh: Mesh) -> list[tuple[str, str]]:
    return [(l["resource"], l["holder"]) for l in mesh.ok("watcher", "locks")["locks"]]


@pytest.fixture
def team(mesh: Mesh) -> Mesh:
    for name in ("watcher", "alice", "bob"):
        mesh.join(name)
    return mesh


def test_a_free_resource_is_granted_with_a_lease(team: Mesh) -> None:
    result = lock(team, "alice", "/repo/src", ttl=60, reason="refactor")
    assert result["outcome"] == "granted"
    assert result["lease"] == {
        "resource": "/repo/src",
        "holder": "alice",
        "exclusive": True,
        "reason": "refactor",
        "acquired_at": team.now,
        "expires_at": team.now + 60,
        "expires_in": 60.0,
    }
    assert held(team) == [("/repo/src", "alice")]


def test_the_default_lease_ttl_comes_from_the_settings(make_mesh: Any) -> None:
    mesh = make_mesh(lock_ttl=123.0)
    mesh.register("alice")
    assert lock(mesh, "alice", "src")["lease"]["expires_at"] == mesh.now + 123.0


def test_locking_again_renews_the_lease_and_keeps_its_start(team: Mesh) -> None:
    start = team.now
    lock(team, "alice", "src", ttl=60, reason="refactor")
    team.now += 30
    result = lock(team, "alice", "src", ttl=60)
    assert result["outcome"] == "renewed"
    assert result["lease"]["acquired_at"] == start
    assert result["lease"]["expires_at"] == team.now + 60
    assert result["lease"]["reason"] == "refactor"
    assert held(team) == [("src", "alice")]


def test_an_overlapping_exclusive_claim_conflicts_with_holder_reason_and_expiry(team: Mesh) -> None:
    lock(team, "alice", "/repo/src", ttl=60, reason="refactor")
    team.now += 10
    result = lock(team, "bob", "/repo/src/app.py")
    assert result["outcome"] == "conflict"
    assert result["holder"] == "alice"
    assert result["lease"]["reason"] == "refactor"
    assert result["lease"]["expires_at"] == team.now + 50
    assert result["lease"]["expires_in"] == 50.0
    assert held(team) == [("/repo/src", "alice")]
    assert [e["holder"] for e in team.audit("lock_conflict")] == ["alice"]


def test_a_glob_claim_conflicts_with_a_path_it_matches(team: Mesh) -> None:
    lock(team, "alice", "src/*.py")
    assert lock(team, "bob", "src/app.py")["outcome"] == "conflict"
    assert lock(team, "bob", "src/app.rs")["outcome"] == "granted"


def test_shared_claims_coexist_but_an_exclusive_claim_conflicts_with_them(team: Mesh) -> None:
    assert lock(team, "alice", "docs", exclusive=False)["outcome"] == "granted"
    assert lock(team, "bob", "docs", exclusive=False)["outcome"] == "granted"
    team.join("carol")
    assert lock(team, "carol", "docs/index.md")["outcome"] == "conflict"
    assert held(team) == [("docs", "alice"), ("docs", "bob")]


def test_a_shared_claim_conflicts_with_an_exclusive_lease(team: Mesh) -> None:
    lock(team, "alice", "docs")
    result = lock(team, "bob", "docs", exclusive=False)
    assert (result["outcome"], result["holder"]) == ("conflict", "alice")


def test_renewing_a_shared_lease_as_exclusive_conflicts_with_other_sharers(team: Mesh) -> None:
    lock(team, "alice", "docs", exclusive=False)
    lock(team, "bob", "docs", exclusive=False)
    result = lock(team, "alice", "docs", exclusive=True)
    assert (result["outcome"], result["holder"]) == ("conflict", "bob")
    assert [l["exclusive"] for l in team.ok("watcher", "locks")["locks"]] == [False, False]


def test_one_holder_may_hold_overlapping_resources(team: Mesh) -> None:
    lock(team, "alice", "src")
    assert lock(team, "alice", "src/app.py")["outcome"] == "granted"
    assert held(team) == [("src", "alice"), ("src/app.py", "alice")]


def test_disjoint_resources_do_not_conflict(team: Mesh) -> None:
    lock(team, "alice", "/repo/src")
    assert lock(team, "bob", "/repo/tests")["outcome"] == "granted"
    assert lock(team, "bob", "deploy-prod")["outcome"] == "granted"


def test_unlock_releases_the_lease_for_others(team: Mesh) -> None:
    lock(team, "alice", "src")
    assert team.ok("alice", "unlock", resource="src") == {"released": "src"}
    assert held(team) == []
    assert lock(team, "bob", "src")["outcome"] == "granted"


def test_unlock_by_someone_not_holding_the_lease_is_not_holder(team: Mesh) -> None:
    lock(team, "alice", "src")
    before = team.snapshot()
    err = team.fails("bob", "unlock", resource="src")
    assert isinstance(err, NotHolder)
    assert team.snapshot() == before
    assert isinstance(team.fails("alice", "unlock", resource="src/app.py"), NotHolder)


def test_a_graceful_leave_releases_the_leavers_leases(team: Mesh) -> None:
    lock(team, "alice", "src")
    lock(team, "alice", "docs")
    lock(team, "bob", "tests")
    team.leave("alice", graceful=True)
    assert held(team) == [("tests", "bob")]
    assert {e["resource"] for e in team.audit("lock_released")} == {"src", "docs"}
    assert lock(team, "bob", "src")["outcome"] == "granted"


def test_an_abrupt_disconnect_keeps_the_leases(team: Mesh) -> None:
    lock(team, "alice", "src")
    team.leave("alice", graceful=False)
    assert held(team) == [("src", "alice")]
    assert lock(team, "bob", "src")["outcome"] == "conflict"


def test_a_lease_expires_through_tick(team: Mesh) -> None:
    team.core.disconnect(team.conns.pop("watcher"), team.now, graceful=True)
    team.join("watcher", events=True)
    lock(team, "alice", "src", ttl=60)
    assert team.frames(team.advance(59.9), "watcher", "event") == []
    events = team.frames(team.advance(0.1), "watcher", "event")
    assert [(e["event"], e["resource"], e["holder"]) for e in events] == [("lock_expired", "src", "alice")]
    assert held(team) == []
    assert [e["resource"] for e in team.audit("lock_expired")] == ["src"]


def test_an_expired_lease_does_not_block_a_claim_even_before_tick(team: Mesh) -> None:
    lock(team, "alice", "src", ttl=60)
    team.now += 60
    result = lock(team, "bob", "src")
    assert result["outcome"] == "granted"
    assert held(team) == [("src", "bob")]


def test_watchers_see_lock_events(team: Mesh) -> None:
    team.join("carol", events=True)
    call = team.call("alice", "lock", resource="src")
    events = team.frames(call.effects, "carol", "event")
    assert [(e["event"], e["resource"], e["holder"]) for e in events] == [("lock_granted", "src", "alice")]


# -- overlap -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src", "src"),
        ("/repo/src", "/repo/src/app.py"),
        ("/repo/src/", "/repo/src/app.py"),
        ("/repo", "/repo/src/deep/down/x.py"),
        ("src/*.py", "src/app.py"),
        ("src/*", "src/lib/x.rs"),
        ("src/**", "src/a/b/c.py"),
        ("**/*.py", "src/a/b/c.py"),
        ("src/**/test_*.py", "src/a/b/test_x.py"),
        ("src/**/*.py", "src/x.py"),
        ("src/a?.py", "src/ab.py"),
        ("src/[abc].py", "src/b.py"),
        ("src/[!abc].py", "src/d.py"),
        ("src/[a-f]*.py", "src/cat.py"),
        ("src/*.py", "src/test_*"),
        ("src/*/x.py", "src/lib/*"),
        ("src", "src/**/*.py"),
        ("*", "anything"),
    ],
)
def test_resources_that_share_a_path_overlap(a: str, b: str) -> None:
    assert overlaps(a, b)
    assert overlaps(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src", "tests"),
        ("/repo/src", "/repo/srcs"),
        ("/repo/src", "repo/src"),
        ("src/app.py", "src/app.pyc"),
        ("src/app.py", "src/app.py/inner"),
        ("src/*.py", "src/app.rs"),
        ("src/*.py", "tests/app.py"),
        ("src/a?.py", "src/abc.py"),
        ("src/[abc].py", "src/d.py"),
        ("src/[!abc].py", "src/a.py"),
        ("src/*.py", "src/*.rs"),
        ("src/**/*.py", "tests/x.py"),
        ("src/x.py", "src/*/x.py"),
        ("deploy-prod", "deploy-staging"),
    ],
)
def test_resources_with_no_common_path_do_not_overlap(a: str, b: str) -> None:
    assert not overlaps(a, b)
    assert not overlaps(b, a)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("a*", "*b", True),
        ("a*c", "ab*", True),
        ("a?c", "?b?", True),
        ("*.py", "*.rs", False),
        ("[ab]x", "[bc]x", True),
        ("[ab]x", "[cd]x", False),
        ("[!a]", "[!b]", True),
        ("[!a]", "a", False),
        ("x*y*z", "x?", False),
        ("x*y*z", "x?z", True),
        ("x*y*z", "xyz", True),
    ],
)
def test_two_glob_segments_overlap_when_one_name_matches_both(a: str, b: str, expected: bool) -> None:
    assert segment_overlaps(a, b) is expected
    assert segment_overlaps(b, a) is expected


def test_a_bracket_right_after_a_negation_is_a_literal_member_of_the_set() -> None:
    # As in fnmatch and git: '[!]]' is one char that is not ']'; so it matches 'a'.
    assert segment_overlaps("a", "[!]]")
    assert not segment_overlaps("]", "[!]]")
    assert overlaps("src/[!]]", "src/a")
