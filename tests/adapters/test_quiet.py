"""#18 item 1: a hook with nothing to do decides so from files alone (`sessionmesh.quiet`),
and no message waits unseen for it: mail stored after the full hook's last fetch (even
while that hook runs) makes the next hook fetch. Against a real broker and the real
``mesh hook``; whether a call was quiet is read from `quiet.is_quiet` on the same files."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionmesh import programs, quiet

from ..conftest import BrokerProcess, mesh_cmd
from .test_hooks import hook, send

NAME = "agent"


@pytest.fixture
def mesh(broker_proc: BrokerProcess) -> BrokerProcess:
    for name in (NAME, "bob"):
        assert mesh_cmd("join", name).returncode == 0
    return broker_proc


def quiet_now(event: str = "PostToolUse", tool: str = "claude-code", *extra: str) -> bool:
    return quiet.is_quiet([tool, event, "--as", NAME, *extra], '{"session_id":"s1"}', os.environ)


def shown(out: str) -> str:
    return json.loads(out)["hookSpecificOutput"]["additionalContext"] if out else ""


def test_after_a_fetch_that_found_nothing_the_next_tool_hooks_are_quiet(mesh: BrokerProcess) -> None:
    assert not quiet_now()  # never fetched: the full hook runs
    assert hook("claude-code", "PostToolUse", {"session_id": "s1"}) == (0, "")
    assert quiet_now()
    assert hook("claude-code", "PostToolUse", {"session_id": "s1"}) == (0, "")


def test_mail_stored_after_the_last_fetch_ends_the_quiet_and_is_shown(mesh: BrokerProcess) -> None:
    hook("claude-code", "PostToolUse", {"session_id": "s1"})
    msg = send(NAME, "the schema changed")
    assert not quiet_now()
    code, out = hook("claude-code", "PostToolUse", {"session_id": "s1"})
    assert f"id={msg}" in shown(out)
    assert not quiet_now()  # shown, not yet confirmed: the next tool event acks it
    hook("claude-code", "PostToolUse", {"session_id": "s1"})
    assert quiet_now()


def test_no_message_is_left_unseen_whenever_it_arrives(mesh: BrokerProcess) -> None:
    """Messages sent at random points between (and, by their timing, during) the tool
    hooks of one session are each shown by some hook; quiet hooks skip only when none
    is waiting."""
    rng = random.Random(7)
    sent: list[str] = []
    seen = ""
    for _ in range(24):
        if rng.random() < 0.4:
            sent.append(send(NAME, f"note {len(sent)}"))
        code, out = hook("claude-code", "PostToolUse", {"session_id": "s1"})
        seen += shown(out)
    _, out = hook("claude-code", "PostToolUse", {"session_id": "s1"})
    seen += shown(out)
    assert sent and all(f"id={msg}" in seen for msg in sent)
    assert quiet_now()


def test_a_stop_that_shows_nothing_leaves_the_next_turn_to_fetch(mesh: BrokerProcess) -> None:
    hook("claude-code", "PostToolUse", {"session_id": "s1"})
    msg = send(NAME, "normal news, for the next turn")
    assert hook("claude-code", "Stop", {"session_id": "s1", "stop_hook_active": False}) == (0, "")
    assert not quiet_now()
    _, out = hook("claude-code", "UserPromptSubmit", {"session_id": "s1"})
    assert f"id={msg}" in json.loads(out)["hookSpecificOutput"]["additionalContext"]


@pytest.mark.parametrize(
    ("argv", "env", "config"),
    [
        (["claude-code", "UserPromptSubmit", "--as", NAME], {}, None),  # reports activity
        (["claude-code", "PostToolUse", "--as", NAME, "--url", "http://x"], {}, None),
        (["claude-code", "PostToolUse", "--as", NAME], {"MESH_URL": "http://x"}, None),
        (["claude-code", "PostToolUse", "--as", NAME], {}, 'url = "http://elsewhere:9474"\n'),
        (["claude-code", "PostToolUse", "--as", NAME, "--verbose"], {}, None),
        (["nosuch", "PostToolUse", "--as", NAME], {}, None),
    ],
)
def test_what_it_cannot_be_sure_of_goes_to_the_full_hook(
    mesh: BrokerProcess, argv: list[str], env: dict[str, str], config: str | None
) -> None:
    hook("claude-code", "PostToolUse", {"session_id": "s1"})
    assert quiet_now()
    if config is not None:
        (mesh.home / "config.toml").write_text(config)
    assert not quiet.is_quiet(argv, "{}", {**os.environ, **env})


def test_before_a_tool_call_only_a_stop_ends_the_quiet(mesh: BrokerProcess) -> None:
    assert quiet_now("PreToolUse")
    mesh_cmd("pair", "bob", "--as", NAME)
    mesh_cmd("pair", "accept", "--as", "bob")
    assert mesh_cmd("intercept!", "hold on", "--as", "bob").returncode == 0
    assert not quiet_now("PreToolUse")
    assert not quiet_now("BeforeTool", "gemini")


def test_a_default_name_is_used_only_when_the_input_names_this_folder(
    mesh: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / NAME
    folder.mkdir()
    monkeypatch.chdir(folder)
    hook("claude-code", "PostToolUse", {"session_id": "s1"})
    argv = ["claude-code", "PostToolUse"]
    assert quiet.is_quiet(argv, json.dumps({"cwd": str(folder)}, separators=(",", ":")), os.environ)
    assert quiet.is_quiet(argv, json.dumps({"cwd": str(folder)}), os.environ)
    assert not quiet.is_quiet(argv, json.dumps({"cwd": "/somewhere/else"}), os.environ)


def test_the_events_table_is_each_program_s_own() -> None:
    for tool, (pre_tool, tool_events) in quiet.EVENTS.items():
        fmt = programs.get(tool).HOOKS
        assert pre_tool == fmt.pre_tool
        assert set(tool_events) == fmt.after_model - {fmt.stop_event}
        assert set(tool_events) <= fmt.context_events and not set(tool_events) & fmt.turn_start
    assert set(quiet.EVENTS) == set(programs.NAMES)


@given(st.text(max_size=80))
def test_a_folder_name_becomes_what_the_name_pattern_would_make_of_it(base: str) -> None:
    expected = (re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._") or "peer")[:64]
    assert quiet.as_name(base) == expected


def test_mail_whose_mark_a_crash_never_touched_is_marked_when_the_broker_starts(mesh: BrokerProcess) -> None:
    """The mark is touched after the commit; a broker killed in between marks, at its
    next start, every name with unread mail."""
    hook("claude-code", "PostToolUse", {"session_id": "s1"})
    send(NAME, "stored, then the broker died")
    mark = os.path.join(mesh.home, "mail", NAME)
    os.utime(mark, ns=(0, 0))  # as if the touch never happened
    assert quiet_now()  # the gap this closes: the mail would wait for the next turn
    mesh.kill()
    mesh.start()
    assert not quiet_now()


def test_a_session_that_died_unconfirmed_does_not_keep_the_next_one_from_being_quiet(
    mesh: BrokerProcess,
) -> None:
    msg = send(NAME, "shown to a session that then died")
    _, out = hook("claude-code", "PostToolUse", {"session_id": "dead"})
    assert f"id={msg}" in shown(out)  # shown, never confirmed: that session is gone
    _, out = hook("claude-code", "SessionStart", {"session_id": "s2"})
    assert f"id={msg}" in json.loads(out)["hookSpecificOutput"]["additionalContext"]
    hook("claude-code", "PostToolUse", {"session_id": "s2"})  # after s2's model had it: read
    assert quiet_now()
