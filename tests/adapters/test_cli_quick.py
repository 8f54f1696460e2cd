"""`cli_fast.quick_args` reads the usual lines of ``mesh send``, ``inbox`` and ``peers``
without argparse (#18 item 2): for every line it takes, argparse gives the same
arguments, and every other line goes to argparse."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sessionmesh
from sessionmesh import cli, cli_fast

WORDS = [
    "--json", "--urgent", "--peek", "--as", "--home", "--url", "--limit", "--ttl", "--jso", "--as=bob",
    "-", "--", "-h", "-5", "bob", "reviewer,alice", "#topic", "hello there", "", "3", "/tmp/h",
]  # fmt: skip


def argparse_args(argv: list[str]) -> dict[str, object] | None:
    """argparse's arguments for ``argv``, or None where it refuses the line."""
    try:
        return vars(cli.parse(cli.build_parser(), argv))
    except SystemExit:
        return None


@settings(deadline=None)  # argparse's parser is built for each line
@given(st.sampled_from(["send", "inbox", "peers"]), st.lists(st.sampled_from(WORDS), max_size=7))
def test_a_line_read_by_hand_gets_what_argparse_gives_it(command: str, words: list[str]) -> None:
    argv = [command, *words]
    quick = cli_fast.quick_args(argv)
    if quick is not None:
        assert vars(quick) == argparse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "bob", "hello", "there"],
        ["send", "--urgent", "--as", "alice", "bob", "hi", "--json"],
        ["inbox", "--as", "alice", "--peek"],
        ["peers", "--json", "--home", "/tmp/h"],
    ],
)
def test_the_usual_lines_are_read_by_hand(argv: list[str]) -> None:
    assert cli_fast.quick_args(argv) is not None
    assert vars(cli_fast.quick_args(argv)) == argparse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["send"],  # no recipient: argparse says what is missing
        ["send", "bob", "-"],  # the body from stdin
        ["send", "bob", "hi", "--ttl", "5"],
        ["send", "--as"],
        ["send", "--as", "--json", "bob", "hi"],
        ["inbox", "--limit", "3"],
        ["inbox", "extra"],
        ["peers", "--help"],
        ["lock", "x"],
        [],
    ],
)
def test_every_other_line_goes_to_argparse(argv: list[str]) -> None:
    assert cli_fast.quick_args(argv) is None


def test_a_usual_send_imports_neither_argparse_nor_json_nor_typing(broker_proc: object) -> None:
    """What the quick path is for: a one-shot command without argparse's import and parser,
    and without json and typing. (-S: what site-packages/*.pth files import would hide it.)"""
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(sessionmesh.__file__))}
    for name in ("alice", "bob"):
        assert subprocess.run([sys.executable, "-m", "sessionmesh", "join", name], env=env).returncode == 0
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-m", "sessionmesh", "send", "--as", "alice", "bob", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("queued")
    imported = {
        line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    }
    assert "sessionmesh.client.http" in imported
    assert not imported & {"argparse", "json", "typing", "datetime", "shutil"}


def test_a_number_json_cannot_carry_is_a_clear_error_not_a_traceback(broker_proc: object) -> None:
    for name in ("alice", "bob"):
        assert subprocess.run([sys.executable, "-m", "sessionmesh", "join", name]).returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "sessionmesh", "send", "--as", "alice", "bob", "hi", "--ttl", "nan"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("mesh: bad_frame: cannot send this as JSON"), done.stderr
