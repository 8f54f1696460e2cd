"""How to run each real agent program against the scripted model server, isolated.

Every run gets its own HOME (with the XDG directories inside it), so no real user
config is read or written; the environment is built from scratch (PATH, HOME, XDG_*,
LANG, TERM) rather than inherited, so no real API key leaks in. Each program's config
is merged into files in that HOME, so a test may install other things there first
(``mesh install --user``) and keep them. The programs get the model server as their
HTTP(S) proxy too (``NO_PROXY`` for 127.0.0.1), so a request meant for the internet
shows up in `ModelServer.outbound` instead of failing somewhere unseen.

What each program needs, found in its own files (docs, ``--help``, bundled JS,
strings in the binary) and confirmed by running it:

Claude Code 2.1.332 (native binary, Anthropic Messages API)
    Env ``ANTHROPIC_BASE_URL`` (the server root; it posts ``/v1/messages?beta=true``),
    ``ANTHROPIC_API_KEY``, ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (without it
    it connects to api.anthropic.com at start), ``DISABLE_AUTOUPDATER=1``,
    ``DISABLE_TELEMETRY=1``, ``DISABLE_ERROR_REPORTING=1``,
    ``CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL=1`` (the interactive UI
    otherwise fetches the plugin marketplace from downloads.claude.ai and github.com),
    ``ENABLE_TOOL_SEARCH=false`` (by default MCP tools are deferred behind a
    ``ToolSearch`` tool and not offered by name). Headless: ``claude -p PROMPT --dangerously-skip-permissions``, which
    refuses to run as root unless ``IS_SANDBOX=1`` (CI runs as root).
    First interactive run: with no ``~/.claude.json`` it shows onboarding, which
    fails ("Unable to connect to Anthropic services"); then a folder trust dialog;
    then "Detected a custom API key ... use it?" (default No). Pre-seeded in
    ``~/.claude.json``: ``hasCompletedOnboarding``, ``projects[cwd].hasTrustDialogAccepted``,
    ``customApiKeyResponses.approved`` = the key's last 20 characters. Then it goes
    straight to the ``❯`` prompt between two rules, in "auto mode". One request per
    turn: no title, quota or count_tokens calls with this environment.

Codex 0.171.0 (native binary behind a Node launcher, OpenAI Responses API)
    ``$CODEX_HOME/config.toml``: ``model_provider`` naming a ``[model_providers.X]``
    with ``base_url`` (ending ``/v1``), ``wire_api = "responses"``, ``env_key``,
    retries 0; ``check_for_update_on_startup = false``; ``[analytics] enabled =
    false``; ``[features] plugins = false`` (otherwise it connects to github.com,
    api.github.com and chatgpt.com on every run) and ``daemon_auto_start = false``
    (otherwise the terminal UI starts a detached ``codex app-server`` daemon from
    ``$CODEX_HOME/packages`` that outlives it); ``[projects."<cwd>"] trust_level =
    "trusted"``. ``codex exec --strict-config`` fails on any key this version does
    not know, so a silently ignored key cannot slip in. Headless: ``codex exec
    --strict-config --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox
    PROMPT`` (``-s workspace-write`` also ran here, with Codex's bundled bubblewrap;
    the bypass does not depend on the container allowing namespaces). It warns that
    it cannot create helper binaries under /tmp and that the model's metadata is
    unknown; both are harmless. MCP tools are offered inside a ``namespace`` tool
    ``mcp__<server>``; the server lists them as ``mcp__<server>__<tool>``. Hooks need
    trust too (``codex exec --help``: ``--dangerously-bypass-hook-trust`` runs them
    without persisted trust; not exercised here).
    Interactive (``codex --dangerously-bypass-approvals-and-sandbox``): with the
    project trusted and a provider that needs no OpenAI login it goes straight to the
    ``›`` composer, the model name in the status line. Each turn adds a side request
    for a title (JSON schema demanded, no tools). It fetches an announcement tip
    from raw.githubusercontent.com, which no setting found here stops; the
    ``CONNECT`` fails harmlessly.

Gemini CLI 0.61.0 (Node, Gemini API)
    Env ``GEMINI_API_KEY`` and ``GOOGLE_GEMINI_BASE_URL`` (the server root), and
    ``~/.gemini/settings.json`` ``security.auth.selectedType = "gemini-api-key"``:
    with the base URL alone it picks the "gateway" auth type, which its own
    validation then rejects ("Invalid auth method selected.", exit 41).
    ``security.folderTrust.enabled = false`` (else headless exits 55 in an untrusted
    folder), ``privacy.usageStatisticsEnabled = false`` (else it posts to
    play.googleapis.com), ``general.enableAutoUpdate(Notification) = false``,
    ``telemetry.enabled = false``; env ``GEMINI_SANDBOX=false`` (``--yolo`` may turn a
    Docker sandbox on). Headless: ``gemini -p PROMPT --yolo``; without ``--yolo`` the
    shell, write and MCP tools are not even offered. Every prompt first goes through
    a routing classifier (``generateContent`` on a flash-lite model, JSON schema
    demanded, no tools), then the turn (``streamGenerateContent?alt=sse``). MCP
    tools are named ``mcp_<server>_<tool>``. Its shell tool refuses commands with
    ``$(...)``, backticks or process substitution.
    Interactive (``gemini --yolo``): with the auth type set and folder trust off, no
    auth, theme or trust dialog; it opens at the "Type your message" box.

Pi 0.73.1 (Node; here on the Anthropic Messages API)
    ``~/.pi/agent/models.json`` provider with ``baseUrl`` (the server root),
    ``api = "anthropic-messages"``, ``apiKey`` naming an env var, one model;
    ``~/.pi/agent/settings.json`` ``defaultProvider``/``defaultModel``,
    ``enableInstallTelemetry = false``; env ``PI_OFFLINE=1`` (no update check or
    telemetry, and no download of fd and ripgrep, which it otherwise fetches when they
    are missing). Headless: ``pi -p PROMPT``; Pi has no permission prompts and no MCP.
    (Pi is Node, whose fetch ignores proxy variables, so `outbound` cannot see it.)
    Interactive (``pi``): no first-run screen; the editor opens with the model name
    in the footer. It warns when tmux's ``extended-keys`` is off, so `Terminal`
    turns it on.

Interactive runs use tmux on a private socket (`Terminal`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import tomlkit

from tests.agents.modelserver import Api, ToolCall

REPO = Path(__file__).resolve().parents[2]
BIN_ENV = "MESH_AGENT_BIN"
KEY_ENV = "MODEL_SERVER_KEY"
# A key that is clearly not real; Claude Code remembers approved keys by the last 20 characters.
DUMMY_KEY = "sk-test-mesh-model-server-000000000000"
MODEL = "mesh-test-model"
PROVIDER = "meshtest"
HEADLESS_TIMEOUT = 120.0
SCREEN_TIMEOUT = 30.0
SCREEN_POLL_INTERVAL = 0.1


def agent_bin_dir() -> Path:
    """Where the agent programs are: ``$MESH_AGENT_BIN``, else the repository's
    ``.ci/agents/node_modules/.bin``."""
    configured = os.environ.get(BIN_ENV)
    return Path(configured) if configured else REPO / ".ci" / "agents" / "node_modules" / ".bin"


@dataclass(frozen=True)
class Sandbox:
    """One test's isolated world: a HOME and a workspace to run the program in."""

    home: Path
    workspace: Path

    @classmethod
    def create(cls, root: Path) -> Sandbox:
        """``root/home`` and ``root/work``, created."""
        sandbox = cls(root / "home", root / "work")
        sandbox.home.mkdir(parents=True, exist_ok=True)
        sandbox.workspace.mkdir(parents=True, exist_ok=True)
        return sandbox

    def env(self, model_url: str) -> dict[str, str]:
        """The environment every program starts from: nothing from the caller's but
        PATH (with this Python's directory first, so ``mesh`` and ``python`` are
        found), and the model server as the proxy for anything not on 127.0.0.1."""
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
        home = self.home
        env = {
            "PATH": path,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
            env[name] = model_url
        return env


@dataclass(frozen=True)
class McpServer:
    """A stdio MCP server to configure in a program."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


def _merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``patch``, nested objects merged rather than replaced."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _merge_json(path: Path, patch: Mapping[str, Any]) -> None:
    """Merge ``patch`` into the JSON object in ``path`` (created if missing)."""
    doc = json.loads(path.read_text()) if path.exists() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_merge(doc, patch), indent=2) + "\n")


def _merge_toml(path: Path, patch: Mapping[str, Any]) -> None:
    """Merge ``patch`` into the TOML document in ``path`` (created if missing),
    keeping what else is there."""
    doc = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()

    def put(table: Any, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, Mapping):
                if key not in table:
                    table[key] = tomlkit.table()
                put(table[key], value)
            else:
                table[key] = value

    put(doc, patch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomlkit.dumps(doc))


@dataclass(frozen=True)
class Program(ABC):
    """One agent program: where it is and how to set it up and start it."""

    bin: Path
    name: ClassVar[str]
    executable: ClassVar[str]
    api: ClassVar[Api]
    shell_tool: ClassVar[str]
    """The built-in tool that runs a shell command, as offered to the model."""
    supports_mcp: ClassVar[bool] = True

    @classmethod
    def find(cls, bin_dir: Path | None = None) -> Program:
        """This program in ``bin_dir`` (default `agent_bin_dir`), present or not."""
        return cls((bin_dir or agent_bin_dir()) / cls.executable)

    @property
    def available(self) -> bool:
        return self.bin.exists()

    @abstractmethod
    def configure(self, sandbox: Sandbox, model_url: str) -> dict[str, str]:
        """Write what points the program at ``model_url`` and keeps it off the
        network and out of first-run screens into ``sandbox``'s HOME (merged with
        what is there). Returns the environment variables it also needs."""

    @abstractmethod
    def headless_argv(self, prompt: str) -> list[str]:
        """The command that runs one prompt to completion and prints the answer."""

    @abstractmethod
    def interactive_argv(self) -> list[str]:
        """The command that starts the terminal UI."""

    @abstractmethod
    def shell_call(self, command: str) -> ToolCall:
        """A call of `shell_tool` that runs ``command``."""

    @abstractmethod
    def prompt_ready(self, screen: str) -> bool:
        """True when ``screen`` shows the interactive UI idle at its prompt."""

    def add_mcp_server(self, sandbox: Sandbox, name: str, server: McpServer) -> None:
        """Configure a stdio MCP server for this program in ``sandbox``'s HOME.

        Raises `NotImplementedError` for a program without MCP (`supports_mcp`).
        """
        raise NotImplementedError(f"{self.name} has no MCP support")


def _rule(line: str) -> bool:
    return line.strip().startswith("─" * 20)


class ClaudeCode(Program):
    name = "claude"
    executable = "claude"
    api = Api.ANTHROPIC
    shell_tool = "Bash"

    def configure(self, sandbox: Sandbox, model_url: str) -> dict[str, str]:
        _merge_json(
            sandbox.home / ".claude.json",
            {
                "hasCompletedOnboarding": True,
                "customApiKeyResponses": {"approved": [DUMMY_KEY[-20:]], "rejected": []},
                "projects": {str(sandbox.workspace): {"hasTrustDialogAccepted": True}},
            },
        )
        return {
            "ANTHROPIC_BASE_URL": model_url,
            "ANTHROPIC_API_KEY": DUMMY_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "ENABLE_TOOL_SEARCH": "false",
            "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
            "IS_SANDBOX": "1",
        }

    def headless_argv(self, prompt: str) -> list[str]:
        return [str(self.bin), "-p", prompt, "--dangerously-skip-permissions"]

    def interactive_argv(self) -> list[str]:
        return [str(self.bin)]

    def shell_call(self, command: str) -> ToolCall:
        return ToolCall(self.shell_tool, {"command": command, "description": "run a test command"})

    def prompt_ready(self, screen: str) -> bool:
        """The input line, ``❯`` and whatever is typed, sits between two rules."""
        lines = screen.splitlines()
        return any(
            lines[i].startswith("❯") and _rule(lines[i - 1]) and _rule(lines[i + 1])
            for i in range(1, len(lines) - 1)
        )

    def add_mcp_server(self, sandbox: Sandbox, name: str, server: McpServer) -> None:
        entry: dict[str, Any] = {"type": "stdio", "command": server.command, "args": list(server.args)}
        if server.env:
            entry["env"] = dict(server.env)
        if server.cwd:
            entry["cwd"] = server.cwd
        _merge_json(sandbox.home / ".claude.json", {"mcpServers": {name: entry}})


class Codex(Program):
    name = "codex"
    executable = "codex"
    api = Api.OPENAI
    shell_tool = "exec_command"

    def configure(self, sandbox: Sandbox, model_url: str) -> dict[str, str]:
        codex_home = sandbox.home / ".codex"
        _merge_toml(
            codex_home / "config.toml",
            {
                "model": MODEL,
                "model_provider": PROVIDER,
                "check_for_update_on_startup": False,
                "analytics": {"enabled": False},
                "features": {"plugins": False, "daemon_auto_start": False},
                "model_providers": {
                    PROVIDER: {
                        "name": "sessionmesh test model server",
                        "base_url": f"{model_url}/v1",
                        "env_key": KEY_ENV,
                        "wire_api": "responses",
                        "request_max_retries": 0,
                        "stream_max_retries": 0,
                    }
                },
                "projects": {str(sandbox.workspace): {"trust_level": "trusted"}},
            },
        )
        return {"CODEX_HOME": str(codex_home), KEY_ENV: DUMMY_KEY}

    def headless_argv(self, prompt: str) -> list[str]:
        return [
            str(self.bin),
            "exec",
            "--strict-config",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "--color",
            "never",
            prompt,
        ]

    def interactive_argv(self) -> list[str]:
        return [str(self.bin), "--dangerously-bypass-approvals-and-sandbox"]

    def shell_call(self, command: str) -> ToolCall:
        return ToolCall(self.shell_tool, {"cmd": command})

    def prompt_ready(self, screen: str) -> bool:
        """The composer line starts with ``›``; the status line below names the model."""
        return any(line.startswith("›") for line in screen.splitlines()) and MODEL in screen

    def add_mcp_server(self, sandbox: Sandbox, name: str, server: McpServer) -> None:
        entry: dict[str, Any] = {"command": server.command, "args": list(server.args)}
        if server.env:
            entry["env"] = dict(server.env)
        if server.cwd:
            entry["cwd"] = server.cwd
        _merge_toml(sandbox.home / ".codex" / "config.toml", {"mcp_servers": {name: entry}})


class GeminiCli(Program):
    name = "gemini"
    executable = "gemini"
    api = Api.GEMINI
    shell_tool = "run_shell_command"

    def configure(self, sandbox: Sandbox, model_url: str) -> dict[str, str]:
        _merge_json(
            sandbox.home / ".gemini" / "settings.json",
            {
                "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
                "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
                "privacy": {"usageStatisticsEnabled": False},
                "telemetry": {"enabled": False},
            },
        )
        return {"GEMINI_API_KEY": DUMMY_KEY, "GOOGLE_GEMINI_BASE_URL": model_url, "GEMINI_SANDBOX": "false"}

    def headless_argv(self, prompt: str) -> list[str]:
        return [str(self.bin), "-p", prompt, "--yolo"]

    def interactive_argv(self) -> list[str]:
        return [str(self.bin), "--yolo"]

    def shell_call(self, command: str) -> ToolCall:
        return ToolCall(self.shell_tool, {"command": command})

    def prompt_ready(self, screen: str) -> bool:
        """The input box's placeholder."""
        return "Type your message" in screen

    def add_mcp_server(self, sandbox: Sandbox, name: str, server: McpServer) -> None:
        entry: dict[str, Any] = {"command": server.command, "args": list(server.args), "trust": True}
        if server.env:
            entry["env"] = dict(server.env)
        if server.cwd:
            entry["cwd"] = server.cwd
        _merge_json(sandbox.home / ".gemini" / "settings.json", {"mcpServers": {name: entry}})


class Pi(Program):
    name = "pi"
    executable = "pi"
    api = Api.ANTHROPIC
    shell_tool = "bash"
    supports_mcp = False

    def configure(self, sandbox: Sandbox, model_url: str) -> dict[str, str]:
        agent_dir = sandbox.home / ".pi" / "agent"
        provider = {
            "baseUrl": model_url,
            "api": "anthropic-messages",
            "apiKey": KEY_ENV,
            "models": [{"id": MODEL, "name": "sessionmesh test model"}],
        }
        _merge_json(agent_dir / "models.json", {"providers": {PROVIDER: provider}})
        _merge_json(
            agent_dir / "settings.json",
            {"defaultProvider": PROVIDER, "defaultModel": MODEL, "enableInstallTelemetry": False},
        )
        return {KEY_ENV: DUMMY_KEY, "PI_OFFLINE": "1"}

    def headless_argv(self, prompt: str) -> list[str]:
        return [str(self.bin), "-p", prompt]

    def interactive_argv(self) -> list[str]:
        return [str(self.bin)]

    def shell_call(self, command: str) -> ToolCall:
        return ToolCall(self.shell_tool, {"command": command})

    def prompt_ready(self, screen: str) -> bool:
        """The footer names the model once the editor is up."""
        return MODEL in screen


PROGRAMS: tuple[type[Program], ...] = (ClaudeCode, Codex, GeminiCli, Pi)


def program(name: str, bin_dir: Path | None = None) -> Program:
    """The program called ``name`` ("claude", "codex", "gemini", "pi").

    Raises `KeyError` for any other name.
    """
    for kind in PROGRAMS:
        if kind.name == name:
            return kind.find(bin_dir)
    raise KeyError(f"no agent program {name!r}; known: {[kind.name for kind in PROGRAMS]}")


# -- headless ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompletedRun:
    """A finished headless run."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    def describe(self) -> str:
        """Everything about the run, for a failure message."""
        return (
            f"{self.argv[0]} exited {self.returncode} after {self.duration:.1f}s\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


class ProgramTimeout(TimeoutError):
    """A headless run did not finish in time; it was killed. Carries its output."""

    def __init__(self, run: CompletedRun, timeout: float) -> None:
        super().__init__(f"still running after {timeout}s, killed\n{run.describe()}")
        self.run = run


def program_env(
    program: Program, sandbox: Sandbox, model_url: str, env_extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Configure ``program`` in ``sandbox`` and return the full environment to start it with."""
    return {**sandbox.env(model_url), **program.configure(sandbox, model_url), **(env_extra or {})}


def run_headless(
    program: Program,
    prompt: str,
    *,
    cwd: Path,
    home: Path,
    model_url: str,
    env_extra: Mapping[str, str] | None = None,
    timeout: float = HEADLESS_TIMEOUT,
    argv: list[str] | None = None,
) -> CompletedRun:
    """Run ``program`` on one ``prompt`` in ``cwd`` with ``home`` as HOME, against the
    model server at ``model_url``, and return when it exits. ``argv`` replaces the
    program's usual headless command line (`Program.headless_argv`).

    Raises `ProgramTimeout` (after killing its whole process group) when it runs
    longer than ``timeout`` seconds.
    """
    sandbox = Sandbox(home, cwd)
    argv = argv or program.headless_argv(prompt)
    env = program_env(program, sandbox, model_url, env_extra)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        stdout, stderr = proc.communicate()
        run = CompletedRun(argv, proc.returncode, stdout, stderr, time.monotonic() - started)
        raise ProgramTimeout(run, timeout) from None
    _kill_group(proc.pid)  # MCP servers and other helpers it left behind
    return CompletedRun(argv, proc.returncode, stdout, stderr, time.monotonic() - started)


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group a run started (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# -- interactive, in tmux --------------------------------------------------------------------


@dataclass
class Terminal:
    """A program in a tmux session on a private socket, as a person would see it."""

    socket: str
    session: str = "agent"
    pane_pid: int = 0
    """The pane's first process, leader of the process group the program runs in."""

    @classmethod
    def start(
        cls, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], width: int = 120, height: int = 40
    ) -> Terminal:
        """Start ``argv`` in a new detached tmux server with exactly ``env``.

        The pane stays after the program exits, so its last screen can still be read.
        Raises `subprocess.CalledProcessError` when tmux fails to start.
        """
        terminal = cls(f"mesh-agents-{os.getpid()}-{secrets.token_hex(4)}")
        terminal._tmux(
            "new-session", "-d", "-s", terminal.session, "-x", str(width), "-y", str(height),
            "-c", str(cwd), "--", *argv,
            ";", "set-option", "-t", terminal.session, "remain-on-exit", "on",
            ";", "set-option", "-s", "extended-keys", "on",
            env=env,
        )  # fmt: skip
        terminal.pane_pid = int(
            terminal._tmux("display-message", "-p", "-t", terminal.session, "#{pane_pid}")
        )
        return terminal

    def _tmux(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", os.devnull, *args],
            capture_output=True,
            text=True,
            check=True,
            env=dict(env) if env is not None else None,
            timeout=10,
        )
        return done.stdout

    def type(self, text: str) -> None:
        """Type ``text`` literally (no key names)."""
        self._tmux("send-keys", "-t", self.session, "-l", text)

    def send_keys(self, *keys: str) -> None:
        """Press tmux-named keys: ``"Enter"``, ``"Escape"``, ``"C-c"``."""
        self._tmux("send-keys", "-t", self.session, *keys)

    def capture(self) -> str:
        """The visible screen as text."""
        return self._tmux("capture-pane", "-p", "-t", self.session)

    def wait_for_screen(self, condition: Callable[[str], bool] | str, timeout: float = SCREEN_TIMEOUT) -> str:
        """The screen, once ``condition`` (a predicate, or text to find) holds.

        Raises `TimeoutError` with the last screen after ``timeout`` seconds.
        """
        test = condition if callable(condition) else (lambda screen: condition in screen)
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture()
            if test(screen):
                return screen
            if time.monotonic() >= deadline:
                what = (
                    condition if isinstance(condition, str) else getattr(condition, "__name__", "condition")
                )
                raise TimeoutError(f"screen did not show {what!r} within {timeout}s; last screen:\n{screen}")
            time.sleep(SCREEN_POLL_INTERVAL)  # sleep-ok: bounded poll of a screen another process draws

    @property
    def socket_path(self) -> str:
        """The tmux server's socket, for another tmux client (``tmux -S``)."""
        return self._tmux("display-message", "-p", "-t", self.session, "#{socket_path}").strip()

    def kill(self) -> None:
        """End the program and the tmux server. The program's process group is
        killed first: Gemini CLI outlives the SIGHUP that closing tmux sends."""
        if self.pane_pid:
            _kill_group(self.pane_pid)
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False
        )

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def start_interactive(
    program: Program,
    *,
    cwd: Path,
    home: Path,
    model_url: str,
    env_extra: Mapping[str, str] | None = None,
    width: int = 120,
    height: int = 40,
    argv: list[str] | None = None,
) -> Terminal:
    """Configure ``program`` (as `run_headless` does, first-run screens pre-answered)
    and start its terminal UI in tmux (``argv``, default the harness's). The caller
    kills the returned `Terminal`."""
    env = program_env(program, Sandbox(home, cwd), model_url, env_extra)
    return Terminal.start(argv or program.interactive_argv(), cwd=cwd, env=env, width=width, height=height)
