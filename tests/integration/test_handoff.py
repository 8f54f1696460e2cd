"""Issue #17 item 4: handoffs that carry their evidence. A request names the paths the
work is about and may require an acknowledgement; a reply carries evidence beside its
end-state. Both are validated, framed for the agent, shown by `mesh thread`, and kept
in the audit log without bodies."""

from __future__ import annotations

import json

from ..conftest import BrokerProcess, mesh_cmd


def _json(argv: list[str]) -> dict:
    out = mesh_cmd(*argv, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_request_with_paths_and_a_reply_with_evidence(broker_proc: BrokerProcess, tmp_path) -> None:
    for name in ("lead", "builder"):
        assert mesh_cmd("join", name).returncode == 0
    asked = _json(
        ["send", "--as", "lead", "builder", "fix the retry loop", "--path", "src/app.py", "--ack-required"]
    )
    # the builder's hook frames what the handoff carries
    payload = json.dumps({"hook_event_name": "UserPromptSubmit", "session_id": "s"})
    hook = mesh_cmd("hook", "claude-code", "UserPromptSubmit", "--as", "builder", input=payload)
    context = json.loads(hook.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "| fix the retry loop" in context
    assert "| paths: " in context and "src/app.py" in context
    assert "| ack required: reply to acknowledge before you start" in context
    replied = _json(
        [
            "reply", "--as", "builder", asked["id"][:13], "done", "--status", "PASS",
            "--evidence", "tests/test_app.py=12 passed", "--note", "ran the suite twice",
        ]
    )  # fmt: skip
    thread = _json(["thread", "--as", "lead", asked["id"]])
    [request, reply] = thread["messages"]
    assert request["paths"][0].endswith("src/app.py") and request["ack_required"] is True
    assert reply["id"] == replied["id"] and reply["status"] == "PASS"
    assert reply["evidence"][0]["note"] == "12 passed" and reply["evidence"][0]["path"].endswith(
        "test_app.py"
    )
    assert reply["evidence"][1] == {"note": "ran the suite twice"}
    plain = mesh_cmd("thread", "--as", "lead", asked["id"]).stdout
    assert "[evidence: " in plain and "12 passed" in plain
    # the audit log keeps them, and never the bodies
    log = [json.loads(line) for line in mesh_cmd("log", "--json").stdout.splitlines()]
    [entry] = [e for e in log if e["event"] == "message" and e["id"] == replied["id"]]
    assert entry["evidence"] == reply["evidence"] and "body" not in entry


def test_bad_handoff_fields_are_refused_and_change_nothing(broker_proc: BrokerProcess) -> None:
    for name in ("lead", "builder"):
        assert mesh_cmd("join", name).returncode == 0
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    bad = mesh_cmd("send", "--as", "lead", "builder", "look", "--path", f"src/{token}.py")
    assert bad.returncode == 4 and "'paths' carries 'a secret" in bad.stderr
    stray = mesh_cmd("send", "--as", "lead", "builder", "x", "--json-body")  # not JSON: refused locally
    assert stray.returncode != 0
    assert json.loads(mesh_cmd("inbox", "--as", "builder", "--json", "--peek").stdout) == []
