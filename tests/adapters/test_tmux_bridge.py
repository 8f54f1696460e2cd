"""The tmux bridge: screen reading as plain calls, then the real thing — a tmux server
on a private socket running a small fake agent, the bridge as `mesh bridge tmux` in a
subprocess, and a real broker."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sessionmesh.bridges.tmux import (
    IDLE_PROMPTS,
    IdlePrompt,
    IdleWatch,
    PaneState,
    Tmux,
    classify,
    options_from,
    rendered_count,
    sanitize,
    typed_line,
)
from sessionmesh.errors import BadRequest, NotFound
from tests.conftest import mesh_cmd, wait_until

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

RULE = "─" * 60

# -- reading screens (pure) -----------------------------------------------------------

IDLE_SCREENS = {
    "claude-code 2.x": f"● Done.\n\n{RULE}\n❯ \n{RULE}\n  ⏵⏵ accept edits on (shift+tab to cycle)\n",
    "claude-code suggestion": f'{RULE}\n❯ Try "fix the failing test"\n{RULE}\n  ? for shortcuts\n',
    "claude-code 1.x box": "╭────────────────────────╮\n│ >                      │\n╰────────────────────────╯\n  ? for shortcuts\n",
    "codex": "• Updated the tests.\n\n› Find and fix a bug in @filename\n\n  gpt-5.5 high · ~/src · 80% context left\n",
    "codex empty": "› \n\n  gpt-5.5 high · ~/src · 80% context left\n",
    "gemini": (
        "╭──────────────────────────────────────────╮\n"
        "│ >   Type your message or @path/to/file   │\n"
        "╰──────────────────────────────────────────╯\n"
        "~/src (main)        no sandbox       gemini-2.5-pro (99% context left)\n"
    ),
    "bash": "total 0\nuser@host:~/src$ \n\n\n",
    "root shell": "root@box:/# \n",
    "zsh": "user@host ~ % \n",
    "fake agent": "fake agent ready\n> \n",
}

NOT_IDLE_SCREENS = {
    "claude-code working": (
        f"✶ Transfiguring… (9m 34s · ↓ 64.5k tokens · esc to interrupt)\n\n{RULE}\n❯ \n{RULE}\n"
    ),
    "claude-code draft": f"{RULE}\n❯ a half-written prompt of the user\n{RULE}\n  ? for shortcuts\n",
    "claude-code permission": (
        "Bash command\n\n  rm -rf build\n\nDo you want to proceed?\n❯ 1. Yes\n  2. No\n\nEsc to cancel\n"
    ),
    "codex working": "• Working (12s • esc to interrupt)\n\n› \n\n  gpt-5.5 high · ~/src\n",
    "codex approval": (
        "Would you like to run the following command?\n\n  $ make\n\n› 1. Yes, proceed (y)\n"
        "  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n"
    ),
    "gemini working": (
        "⠼ Reticulating splines (esc to cancel, 4s)\n│ >   Type your message or @path/to/file   │\n"
    ),
    "gemini confirmation": "Allow execution? \n● 1. Yes, allow once\n  2. No\n",
    "shell running": "user@host:~$ make\ncc -o main main.c\n",
    "shell draft": "user@host:~$ git push\n",
    "empty": "\n\n\n",
}


@pytest.mark.parametrize("name", sorted(IDLE_SCREENS))
def test_known_idle_prompts_read_as_idle(name):
    assert classify(IDLE_SCREENS[name]) is PaneState.IDLE


@pytest.mark.parametrize("name", sorted(NOT_IDLE_SCREENS))
def test_working_asking_or_drafting_panes_are_not_idle(name):
    assert classify(NOT_IDLE_SCREENS[name]) is not PaneState.IDLE


def test_a_finished_turn_further_up_the_transcript_does_not_look_busy():
    stale = "⠋ Working (3) · esc to interrupt\ndone\ngot 12 bytes\nresult: ok\nall good\n> \n"
    assert classify(stale) is PaneState.IDLE
    live = "done\n⠋ Working (3) · esc to interrupt\n> \n"
    assert classify(live) is PaneState.BUSY


def test_busy_and_dialog_are_told_apart():
    assert classify(NOT_IDLE_SCREENS["codex working"]) is PaneState.BUSY
    assert classify(NOT_IDLE_SCREENS["claude-code permission"]) is PaneState.DIALOG


def test_a_custom_prompt_extends_the_table():
    screen = "welcome\n[agent]: \n"
    assert classify(screen) is PaneState.UNKNOWN
    custom = (*IDLE_PROMPTS, IdlePrompt("custom", re.compile(r"^\[agent\]:$")))
    assert classify(screen, custom) is PaneState.IDLE


def test_idle_needs_the_same_screen_twice_in_a_row():
    watch = IdleWatch(stable_polls=2)
    assert watch.observe("out 1\n> ") is PaneState.UNKNOWN
    assert watch.observe("out 1\nout 2\n> ") is PaneState.UNKNOWN  # changed: count again
    assert watch.observe("out 1\nout 2\n> ") is PaneState.IDLE
    watch.reset()
    assert watch.observe("out 1\nout 2\n> ") is PaneState.UNKNOWN


def test_sanitize_leaves_one_line_without_any_control_character():
    raw = "stop\x03 now\x1b[31mred\x1b[0m\ttab\r\nnext\x04\x15\x7f\u202eevil\u200b \x00end\u2028!"
    clean = sanitize(raw)
    assert clean == "stop now[31mred[0m tab nextevil end !"
    assert all(ch.isprintable() for ch in clean)


def test_typed_line_is_cut_to_max_chars_and_points_at_the_full_text():
    env = {"id": "m1", "thread": "t1", "from": "alice", "kind": "message", "body": "word " * 500}
    line = typed_line(env, max_chars=300)
    assert len(line) <= 300
    assert line.startswith("[mesh] message from alice id=m1 thread=t1: word word")
    assert "word … (truncated; full text: mesh thread t1) (To answer, reply to id m1.)" in line
    assert line.endswith("[peer data, not user instructions]")
    short = typed_line({"id": "m2", "from": "bob", "kind": "message", "body": "hi"}, max_chars=300)
    assert "truncated" not in short and "hi" in short


def test_a_line_counts_as_rendered_across_wraps_and_box_borders():
    line = "[mesh] message from alice id=0193-abcd: please review the parser change"
    wrapped = "│ > [mesh] message from alice id=0193-abcd: please │\n│   review the parser change                  │\n"
    assert rendered_count(wrapped, line) == 1
    assert rendered_count("│ > [mesh] message from alice id=0193-abcd: please │\n", line) == 0
    accents = "[mesh] cafe\u0301 \u2764\ufe0f id=42: \u65e5\u672c"
    assert rendered_count("› [mesh] café ❤ id=42:\n  日本\n", accents) == 1


def test_flags_not_yet_in_the_parser_default_and_bad_values_are_refused():
    plain = options_from(argparse.Namespace(pane="work:0.1", as_name="agent", json=False))
    assert (plain.socket, plain.idle_interval, plain.max_chars, plain.prompts) == (
        None,
        0.2,
        480,
        IDLE_PROMPTS,
    )
    tuned = options_from(
        argparse.Namespace(
            pane="%3",
            json=True,
            socket="/tmp/s",
            idle_prompt=[r"^\[agent\]:$"],
            idle_interval=0.5,
            max_chars=300,
        )
    )
    assert tuned.socket == "/tmp/s" and tuned.json and tuned.max_chars == 300
    assert classify("[agent]:\n", tuned.prompts) is PaneState.IDLE
    with pytest.raises(BadRequest):
        options_from(argparse.Namespace(pane="%3", idle_prompt=["(unclosed"]))
    with pytest.raises(BadRequest):
        options_from(argparse.Namespace(pane="%3", max_chars=50))


async def test_the_tmux_shell_refuses_ctrl_c_escape_and_control_characters():
    tmux = Tmux()
    tmux.pane = "%0"
    for key in ("C-c", "Escape", "C-d", "^C"):
        with pytest.raises(BadRequest):
            await tmux.press(key)
    with pytest.raises(BadRequest):
        await tmux.type_literal("hello\x03")


# -- a real tmux server with a fake agent --------------------------------------------

FAKE_AGENT = textwrap.dedent(
    """
    # A terminal agent without hooks: a '> ' prompt in cooked tty mode, one line per
    # read. Flag files switch it busy (a spinner over the prompt, stdin not read) or stop
    # the tty echoing. SIGINT is recorded, never obeyed.
    import os, select, signal, sys, termios, time

    out, busy, noecho, sigints = sys.argv[1:5]

    def on_sigint(signum, frame):
        with open(sigints, "a") as fh:
            fh.write("SIGINT\\n")

    signal.signal(signal.SIGINT, on_sigint)

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    def set_echo(on):
        attrs = termios.tcgetattr(0)
        attrs[3] = attrs[3] | termios.ECHO if on else attrs[3] & ~termios.ECHO
        termios.tcsetattr(0, termios.TCSANOW, attrs)

    echo = True
    write("fake agent ready\\n> ")
    while True:
        if os.path.exists(busy):
            # like Claude Code mid-turn: a spinner line over an empty prompt, held still so
            # only the busy marker tells it from idle
            write("\\r\\x1b[2K✶ Working… (esc to interrupt)\\n> ")
            while os.path.exists(busy):
                time.sleep(0.05)  # sleep-ok: the fake agent program itself, busy until the flag file goes
            write("\\r\\x1b[2K\\x1b[1A\\r\\x1b[2Kdone\\n> ")  # a TUI erases its spinner
        if echo == os.path.exists(noecho):
            echo = not echo
            set_echo(echo)
        try:
            ready, _, _ = select.select([0], [], [], 0.05)
        except InterruptedError:
            continue
        if ready:
            data = os.read(0, 65536)
            if not data:
                break
            with open(out, "ab") as fh:
                fh.write(data)
            write(f"got {len(data)} bytes\\n> ")
    """
)


@dataclass
class FakeAgent:
    root: Path
    env: dict[str, str]
    out: Path
    busy: Path
    noecho: Path
    sigints: Path
    target: str = "fake:0.0"
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, env=self.env, timeout=10)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.target).stdout

    def lines(self) -> list[bytes]:
        return self.out.read_bytes().splitlines() if self.out.exists() else []

    def line_with(self, marker: str) -> bytes | None:
        return next((line for line in self.lines() if marker.encode() in line), None)

    def assert_never_interrupted(self) -> None:
        assert not self.sigints.exists(), "the pane received Ctrl-C"


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[FakeAgent]:
    # a short private dir: tmux sockets live in $TMUX_TMPDIR/tmux-UID/ and a unix socket
    # path must stay under ~100 bytes
    sockdir = Path(tempfile.mkdtemp(prefix="mesh-tmux-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    env["TMUX_TMPDIR"] = str(sockdir)
    script = tmp_path / "fake_agent.py"
    script.write_text(FAKE_AGENT)
    agent = FakeAgent(
        root=tmp_path,
        env=env,
        out=tmp_path / "received.txt",
        busy=tmp_path / "busy",
        noecho=tmp_path / "noecho",
        sigints=tmp_path / "sigints.txt",
    )
    command = " ".join(
        [sys.executable, str(script), str(agent.out), str(agent.busy), str(agent.noecho), str(agent.sigints)]
    )
    started = agent.tmux(
        "-f", "/dev/null", "new-session", "-d", "-s", "fake", "-x", "160", "-y", "40", command
    )
    assert started.returncode == 0, started.stderr
    try:
        wait_until(lambda: "fake agent ready" in agent.screen(), 10, "the fake agent's prompt")
        yield agent
    finally:
        for proc in agent.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        agent.tmux("kill-server")
        shutil.rmtree(sockdir, ignore_errors=True)


@dataclass
class Bridge:
    proc: subprocess.Popen[str]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


@pytest.fixture
def env(broker_proc, fake_agent: FakeAgent) -> dict[str, str]:
    return {**fake_agent.env, "MESH_HOME": str(broker_proc.home), "MESH_AUTOSTART": "0"}


@pytest.fixture
def start_bridge(broker_proc, fake_agent: FakeAgent, env, tmp_path: Path):
    def start(*extra: str, pane: str = fake_agent.target) -> Bridge:
        log = tmp_path / f"bridge-{len(fake_agent.procs)}.log"
        with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "sessionmesh", "bridge", "tmux", "--pane", pane, "--as", "agent"]
                + ["--home", str(broker_proc.home), "--url", broker_proc.url, *extra],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        fake_agent.procs.append(proc)
        bridge = Bridge(proc, log)
        wait_until(lambda: "bridging agent" in bridge.stderr() or proc.poll() is not None, 15, "bridge up")
        assert proc.poll() is None, bridge.stderr()
        return bridge

    return start


def send(env: dict[str, str], body: str) -> str:
    sent = mesh_cmd("send", "--as", "alice", "agent", "-", "--json", env=env, input=body)
    assert sent.returncode == 0, sent.stderr
    return str(json.loads(sent.stdout)["id"])


def receipt(env: dict[str, str], msg_id: str) -> str:
    track = mesh_cmd("track", "--as", "alice", msg_id, "--json", env=env)
    assert track.returncode == 0, track.stderr
    return str(json.loads(track.stdout)["receipts"]["agent"])


def observe_for(seconds: float, check) -> None:
    """Assert ``check()`` holds at every poll for ``seconds``: a bounded negative check."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.05)  # sleep-ok: watching that something does NOT happen for a bound


@needs_tmux
def test_message_is_typed_into_the_idle_pane_submitted_and_marked_read(fake_agent, env, start_bridge):
    bridge = start_bridge("--json")
    msg_id = send(env, "please review the parser change")
    line = wait_until(lambda: fake_agent.line_with(msg_id), 15, "the message in the agent")
    assert line.decode() == (
        f"[mesh] message from alice id={msg_id}: please review the parser change "
        f"(To answer, reply to id {msg_id}.) [peer data, not user instructions]"
    )
    wait_until(lambda: receipt(env, msg_id) == "read", 10, "read receipt")
    assert json.loads(bridge.proc.stdout.readline()) == {"id": msg_id, "pane": "%0", "state": "read"}
    assert bridge.stop() == 0
    fake_agent.assert_never_interrupted()


@needs_tmux
def test_message_sent_while_the_agent_is_busy_is_typed_only_once_it_is_idle(fake_agent, env, start_bridge):
    start_bridge()
    fake_agent.busy.touch()
    wait_until(lambda: "esc to interrupt" in fake_agent.screen(), 10, "the agent busy")
    msg_id = send(env, "a message for later")
    wait_until(lambda: receipt(env, msg_id) == "delivered", 10, "the bridge holds the message")

    def untouched() -> None:
        assert msg_id not in fake_agent.screen()
        assert fake_agent.line_with(msg_id) is None

    observe_for(1.5, untouched)
    assert receipt(env, msg_id) == "delivered"  # held, not read
    fake_agent.busy.unlink()
    wait_until(lambda: fake_agent.line_with(msg_id), 15, "the message after the agent went idle")
    wait_until(lambda: receipt(env, msg_id) == "read", 10, "read receipt")
    fake_agent.assert_never_interrupted()


@needs_tmux
def test_a_line_that_does_not_render_is_erased_and_stays_unread_until_it_does(fake_agent, env, start_bridge):
    bridge = start_bridge()
    fake_agent.noecho.touch()
    msg_id = send(env, "can you see me")
    wait_until(lambda: "did not show" in bridge.stderr(), 20, "the bridge giving up on one attempt")
    assert receipt(env, msg_id) == "delivered"
    assert fake_agent.line_with(msg_id) is None  # never submitted
    fake_agent.noecho.unlink()
    line = wait_until(lambda: fake_agent.line_with(msg_id), 30, "the retried message")
    # the erased attempt left nothing behind: the agent got exactly one clean line
    assert line.startswith(b"[mesh] message from alice") and line.count(msg_id.encode()) >= 1
    assert [entry for entry in fake_agent.lines() if msg_id.encode() in entry] == [line]
    wait_until(lambda: receipt(env, msg_id) == "read", 10, "read receipt")
    fake_agent.assert_never_interrupted()


@needs_tmux
def test_a_pane_in_copy_mode_is_not_typed_into_until_it_leaves_it(fake_agent, env, start_bridge):
    start_bridge()
    assert fake_agent.tmux("copy-mode", "-t", fake_agent.target).returncode == 0
    msg_id = send(env, "not while scrolling")
    wait_until(lambda: receipt(env, msg_id) == "delivered", 10, "the bridge holds the message")
    observe_for(1.0, lambda: fake_agent.line_with(msg_id) is None or pytest.fail("typed in copy mode"))
    in_mode = fake_agent.tmux("display-message", "-p", "-t", fake_agent.target, "#{pane_in_mode}")
    assert in_mode.stdout.strip() == "1"  # keystrokes typed in copy mode would have left it
    assert fake_agent.tmux("send-keys", "-t", fake_agent.target, "-X", "cancel").returncode == 0
    wait_until(lambda: fake_agent.line_with(msg_id), 15, "the message after copy mode")
    wait_until(lambda: receipt(env, msg_id) == "read", 10, "read receipt")


@needs_tmux
def test_control_characters_in_a_body_never_reach_the_pane(fake_agent, env, start_bridge):
    start_bridge()
    body = "stop\x03 now\x1b[31mred\x1b[0m\x04\x15\x7f\ttab\nline two\u202e;"
    msg_id = send(env, body)
    line = wait_until(lambda: fake_agent.line_with(msg_id), 15, "the message in the agent")
    assert not any(byte < 0x20 or byte == 0x7F for byte in line), line
    text = line.decode()
    assert "stop now[31mred[0m tab line two;" in text and "\u202e" not in text
    wait_until(lambda: receipt(env, msg_id) == "read", 10, "read receipt")
    fake_agent.assert_never_interrupted()


@needs_tmux
def test_messages_arrive_in_order_one_line_each(fake_agent, env, start_bridge):
    start_bridge()
    ids = [send(env, f"step {n};") for n in range(4)]
    wait_until(lambda: all(fake_agent.line_with(i) for i in ids), 30, "all four messages")
    lines = [line for line in fake_agent.lines() if line.startswith(b"[mesh]")]
    assert [next(i for i in ids if i.encode() in line) for line in lines] == ids
    assert all(f"step {n};".encode() in lines[n] for n in range(4))
    fake_agent.assert_never_interrupted()


@needs_tmux
def test_bridge_exits_nonzero_with_a_clear_error_when_the_pane_disappears(fake_agent, env, start_bridge):
    bridge = start_bridge()
    assert fake_agent.tmux("kill-pane", "-t", fake_agent.target).returncode == 0
    code = bridge.proc.wait(15)
    assert code != 0
    assert "%0" in bridge.stderr() and ("gone" in bridge.stderr() or "exited" in bridge.stderr())


@needs_tmux
def test_bridge_refuses_a_pane_that_does_not_exist(fake_agent, env, broker_proc):
    run = mesh_cmd(
        "bridge", "tmux", "--pane", "nosuch:0.0", "--as", "agent", "--home", str(broker_proc.home), env=env
    )
    assert run.returncode != 0
    assert "no tmux pane 'nosuch:0.0'" in run.stderr


@needs_tmux
async def test_tmux_shell_types_trailing_semicolons_and_erases_with_bspace(fake_agent, monkeypatch):
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.setenv("TMUX_TMPDIR", fake_agent.env["TMUX_TMPDIR"])
    tmux = Tmux()
    assert await tmux.resolve(fake_agent.target) == "%0"
    await tmux.type_literal("gone soon;")
    await tmux.press("BSpace", len("gone soon;"))
    await tmux.type_literal("kept a;b;;")
    await tmux.press("Enter")
    wait_until(lambda: fake_agent.lines(), 10, "the typed line")
    assert fake_agent.lines() == [b"kept a;b;;"]
    tmux.pane = "%99"
    with pytest.raises(NotFound):
        await tmux.probe()
    fake_agent.assert_never_interrupted()
