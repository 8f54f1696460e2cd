"""`mesh doctor [TOOL]`: check each installed agent program end to end, and say what to fix.

For every program with sessionmesh installed (in this project, or for the user):

1. the broker of this ``MESH_HOME`` is up (or will be started on first use);
2. the program's config holds the sessionmesh entries (its module's ``server`` and
   ``checks``: hooks, permission rules, the person's trust where it can be seen);
3. the program each installed command starts (the server's, the hooks') exists and
   is executable, named by its absolute path (a bare ``mesh`` works only from a
   shell that has it on ``PATH``);
4. the MCP server the program would start (its command line, with the environment
   the program would give it) answers, joins *this* broker, and under which name.

A fix that says to install again names the ``--as``/``--home``/``--url`` the config
already holds, so following it keeps the agent's name.

Each finding is one line; ``--json`` prints them as one document; the exit code is 1
when anything failed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import programs
from .client import discovery
from .config import Settings
from .errors import MeshError
from .programs import Finding


def broker_findings(settings: Settings) -> list[Finding]:
    """Whether this home's broker is up."""
    if settings.url:
        up = discovery.health(settings.url)
        if up is None:
            return [
                Finding(
                    "fail", f"no broker answers at MESH_URL={settings.url}", "start it, or unset MESH_URL"
                )
            ]
        return [Finding("ok", f"the broker answers at {settings.url}")]
    status = discovery.running_broker(settings)
    if status is not None:
        return [Finding("ok", f"the broker is up at {status['url']} (home {settings.home})")]
    if settings.autostart:
        return [
            Finding(
                "warn",
                f"no broker is running for {settings.home}; the first agent to connect starts one",
                "or start it now: mesh up",
            )
        ]
    return [Finding("fail", f"no broker is running for {settings.home} and autostart is off", "run: mesh up")]


def server_findings(settings: Settings, server: programs.Server, cwd: Path, title: str) -> list[Finding]:
    """Start the server as the program would and see where, and as whom, it joins."""
    from .mcp import probe

    assert server.argv is not None
    shown = " ".join(server.argv)
    result = probe(server.argv, server.env, cwd, check=lambda name: online_here(settings, name))
    where = f"{title}'s MCP server"
    if result.error is not None:
        if "name_taken" in result.error and result.name and online_here(settings, result.name):
            return [
                Finding(
                    "ok", f"{where} would be '{result.name}', which a running session holds on this broker"
                )
            ]
        return [
            Finding(
                "fail",
                f"the MCP server {title} starts ({shown}) fails: {result.error}",
                "run the command in a shell from the project folder to see why",
            )
        ]
    if not result.checked:
        return [
            Finding(
                "fail",
                f"{where} joins as '{result.name}' on another broker than this one ({settings.home})",
                f"{title} does not pass MESH_HOME/MESH_URL on to it: run mesh install again, "
                "or install with --home",
            )
        ]
    return [Finding("ok", f"{where} answers and joins this broker as '{result.name}'")]


def online_here(settings: Settings, name: str) -> bool:
    """Whether ``name`` is online on this home's broker."""
    from .hooks import BrokerCall

    secret = discovery.load_secret(settings, name)
    if secret is None:
        return False  # it never joined through this home
    try:
        address = discovery.locate(settings, autostart=False)
        peers = BrokerCall(address.url, address.token, name, secret, settings.request_timeout).call("peers")
    except MeshError:
        return False
    return any(p["name"] == name and p["presence"] == "online" for p in peers["peers"])


def diagnose(settings: Settings, tools: list[str], *, folder: str | None) -> list[dict[str, Any]]:
    """Every finding, as ``{"program", "level", "what", "fix"}`` rows."""
    from .installers.target import installed_extra, resolve

    rows: list[dict[str, Any]] = [{"program": "broker", **f._asdict()} for f in broker_findings(settings)]
    installed = 0
    for tool in tools:
        module = programs.get(tool)
        found_any = False
        for user in (False, True):
            target = resolve(tool, user=user, folder=None if user else folder, as_name=None)
            server = module.server(target)
            if server.argv is None:
                continue
            found_any = True
            target = replace(target, extra=installed_extra(server.argv))
            scope = "user" if user else "project"
            findings = [
                Finding("ok", f"sessionmesh is installed for {module.TITLE} ({scope}: {server.source})")
            ]
            try:
                findings += module.checks(target)
                runs = programs.command_findings(
                    f"{server.source} (MCP server)", [server.argv], server.env.get("PATH"), target.reinstall()
                )
                findings += runs
                if all(f.level != "fail" for f in runs):  # else starting it only says the same again
                    findings += server_findings(
                        settings, server, target.root if not user else Path.cwd(), module.TITLE
                    )
            except MeshError as exc:
                findings.append(Finding("fail", f"{exc.code}: {exc.message}", exc.hint or ""))
            rows += [{"program": tool, **f._asdict()} for f in findings]
        if found_any:
            installed += 1
        elif len(tools) == 1:
            rows.append(
                {
                    "program": tool,
                    "level": "fail",
                    "what": f"sessionmesh is not installed for {module.TITLE}",
                    "fix": f"run: mesh install {tool}",
                }
            )
    if installed == 0 and len(tools) > 1:
        rows.append(
            {
                "program": "-",
                "level": "fail",
                "what": "no agent program has sessionmesh installed here",
                "fix": "run: mesh install claude-code|codex|gemini|pi",
            }
        )
    return rows


def run(settings: Settings, tool: str | None, *, folder: str | None, as_json: bool) -> int:
    """Print the findings; 1 when any failed."""
    rows = diagnose(settings, [tool] if tool else list(programs.NAMES), folder=folder)
    if as_json:
        print(
            json.dumps({"ok": all(r["level"] != "fail" for r in rows), "findings": rows}, ensure_ascii=False)
        )
    else:
        width = max(len(r["program"]) for r in rows)
        for r in rows:
            print(
                f"{r['level'].upper() if r['level'] != 'ok' else 'ok':4}  {r['program']:{width}}  {r['what']}"
            )
            if r["fix"] and r["level"] != "ok":
                print(f"{'':4}  {'':{width}}  fix: {r['fix']}")
    sys.stdout.flush()
    return 1 if any(r["level"] == "fail" for r in rows) else 0
