"""Safety (SPEC §6): destructive requests are held for a person, secrets never travel."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sessionmesh.core.safety import TOO_MANY, BadPattern, find_secrets, hold_reason, redact, screen_text
from sessionmesh.errors import BadFrame, NotApprover, UnknownMessage

from .conftest import Mesh

PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
)
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
UUID = "550e8400-e29b-41d4-a716-446655440000"
SHA = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"
RANDOM_SECRET = "Zx8qL2vN7pR4sT9wK3mB6yH1jF5cD0gA"  # 32 characters, 32 distinct: 5 bits each


# Each body must be held; the reason names what was found. The first block passed unheld
# under the regular expressions of issue #15.
HELD = [
    ("rm -r -f", "rm -r -f"),
    ("git -C repo push --force", "git -C repo push --force"),
    ("git branch --delete --force old", "git branch --delete --force old"),
    ("DROP/**/TABLE users", "DROP TABLE users"),
    ("DELETE FROM public.users", "DELETE FROM public.users without WHERE"),
    ("TRUNCATE users", "TRUNCATE TABLE users"),
    ('["rm","-rf","/"]', "rm -rf /"),
    (["rm", "-rf", "/"], "rm -rf /"),
    ({"argv": ["rm", "-rf", "/"]}, "rm -rf /"),
    ('run ["sudo", "rm", "-rf", "/"] now', "rm -rf /"),
    # rm, in any spelling and after any prefix
    ("please run rm -rf build/ before the next step", "rm -rf build/ before the next step"),
    ("then `rm -fr /tmp/x` and rebuild", "rm -fr /tmp/x"),
    ("rm --recursive --force x", "rm --recursive --force x"),
    ("rm --rec --for x", "rm --rec --for x"),
    ("rm -R -f x", "rm -R -f x"),
    ('rm "-rf" /', "rm -rf /"),
    ("rm $'-rf' /", "rm -rf /"),
    ("rm \\\n  -rf /", "rm -rf /"),
    ('"rm" -rf /', "rm -rf /"),
    ("\\rm -rf /", "rm -rf /"),
    ("/bin/rm -rf /", "/bin/rm -rf /"),
    ('"/bin/rm" -rf /', "/bin/rm -rf /"),
    ("sudo env X=1 nohup time rm -r -f /", "rm -r -f /"),
    ("make; rm -rf x", "rm -rf x"),
    ("make && rm -rf x", "rm -rf x"),
    ("make || rm -rf x", "rm -rf x"),
    ("ls | xargs rm -r -f", "rm -r -f"),
    ("echo $(rm -rf /)", "rm -rf /"),
    ("x `rm -rf /` y", "rm -rf /"),
    ('bash -c "rm -rf /"', "rm -rf /"),
    ("it's fine: rm -rf / don't worry", "rm -rf / don"),
    ("```sh\ncd /\nrm -rf *\n```", "rm -rf *"),
    ({"cmd": "rm -rf node_modules"}, "rm -rf node_modules"),
    # git, after its global options
    ("git push --force origin main", "git push --force origin main"),
    ("git push -f", "git push -f"),
    ("git push -uf origin main", "git push -uf origin main"),
    ("git push origin +main", "git push origin +main"),
    ("git -c a=b --git-dir=/x push --force-with-lease", "git -c a=b --git-dir=/x push --force-with-lease"),
    ("git --no-pager reset --hard HEAD~3", "git --no-pager reset --hard HEAD~3"),
    ("git clean -fdx", "git clean -fdx"),
    ("git checkout -- .", "git checkout -- ."),
    ("git checkout .", "git checkout ."),
    ("git branch -D feature", "git branch -D feature"),
    ({"steps": [{"run": "git reset --hard origin/main"}]}, "git reset --hard origin/main"),
    # other commands
    ("find . -name '*.pyc' -delete", "find . -name *.pyc -delete"),
    ("find . -exec rm {} \\;", "find . -exec rm {} ;"),
    ("dd if=/dev/zero of=/dev/sda", "dd if=/dev/zero of=/dev/sda"),
    ("mkfs.ext4 /dev/sdb1", "mkfs.ext4 /dev/sdb1"),
    ("chmod -R 777 /srv", "chmod -R 777 /srv"),
    ("chown -R bob /", "chown -R bob /"),
    (":(){ :|:& };:", "fork bomb"),
    ("bomb(){ bomb|bomb& };bomb", "fork bomb"),
    # SQL
    ("DROP TABLE users;", "DROP TABLE users"),
    ("drop database prod", "DROP DATABASE prod"),
    ("Drop Schema IF EXISTS s CASCADE", "DROP SCHEMA s"),
    ("DROP -- gone\nTABLE users", "DROP TABLE users"),
    ("DROP TABLE `users`", "DROP TABLE users"),
    ("truncate table users", "TRUNCATE TABLE users"),
    ("psql -c 'TRUNCATE TABLE users'", "TRUNCATE TABLE users"),
    ("delete from users", "DELETE FROM users without WHERE"),
    ("DELETE FROM users -- WHERE id = 1", "DELETE FROM users without WHERE"),
    ("DELETE FROM users WHERE 1=1", "DELETE FROM users WHERE 1 = 1"),
    ("ALTER TABLE users DROP COLUMN email", "ALTER TABLE users DROP COLUMN email"),
]


@pytest.mark.parametrize(("body", "reason"), HELD, ids=[repr(b)[:60] for b, _ in HELD])
def test_destructive_requests_are_held_with_what_was_found(body: object, reason: str) -> None:
    assert hold_reason(body) == reason


ORDINARY = [
    "I removed the rf-scanner module",
    "git push origin main",
    "the table was dropped from the design",
    "git reset HEAD file.py",
    "rm build.log",
    "DELETE FROM sessions WHERE expires < now()",
    "DELETE FROM sessions\nWHERE expires < now()",
    "rm -r build",
    "rm -f build.log",
    "the rm command is dangerous",
    "git status && git diff",
    "git checkout main",
    "git clean -n -f",
    "git branch -d merged-feature",
    "git push --delete origin feature",
    "git rm --cached file",
    "git-rm -rf x",
    ["find", "-exec"] * 3,
    "use git to track the files; run git log to see",
    "find the bug in the table",
    "find . -name '*.py'",
    "ls | xargs grep TODO",
    "dd if=/dev/zero of=/dev/null bs=1M count=10",
    "chmod 644 file",
    "chmod -R 755 /srv",
    "chown bob /",
    "fib() { fib a; fib b; }",
    "function() { return 1; }",
    "see https://github.com/org/repo/blob/main/rm/README.md",
    "delete from the cache any entries older than a day",
    "I will delete the branch",
    "we truncate bodies at 256 kB",
    "Please truncate the log output",
    "please drop the old approach and use a table",
    "drop me a line",
    "alter the table description",
    "DROP INDEX idx",
    "ALTER TABLE users DROP CONSTRAINT fk",
    ["ls", "-la"],
    {"argv": ["git", "status"]},
    {"status": "PASS", "id": UUID},
]


@pytest.mark.parametrize("body", ORDINARY, ids=[repr(b)[:60] for b in ORDINARY])
def test_ordinary_messages_are_not_held(body: object) -> None:
    assert hold_reason(body) is None


def test_extra_patterns_are_held_on_top_of_the_built_in_checks() -> None:
    extra = (r"\bdeploy to prod\b",)
    assert hold_reason("please deploy to prod", extra) == "deploy to prod"
    assert hold_reason("rm -rf build", extra) == "rm -rf build"
    assert hold_reason("deploy to staging", extra) is None
    with pytest.raises(BadPattern):
        hold_reason("x", (r"(?<=sudo )rm",))


def test_a_body_with_more_commands_than_can_be_screened_is_held() -> None:
    assert hold_reason("git push origin main\n" * 10) is None
    assert hold_reason("git push origin main\n" * 5000) == TOO_MANY
    assert hold_reason(["find", "-exec"] * 50000) == TOO_MANY
    assert hold_reason(["rm", *(["x"] * 5000), "-rf"]) == TOO_MANY


def test_a_command_longer_than_its_window_is_held_only_if_its_rest_could_matter() -> None:
    files = " ".join(f"build/file{i}.o" for i in range(300))
    assert hold_reason(f"rm {files}") is None
    assert hold_reason(f"rm {files} -rf").startswith("command too long to screen: rm build/file0.o")


def _random_words(size: int) -> str:
    rng = random.Random(15)
    lines, total = [], 0
    while total < size:
        line = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(12))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


# (body, what screening answers): bodies built to make a regex backtrack or a parser
# recover from errors, and a large ordinary one
LARGE = {
    "dd": ("dd " * 87000, TOO_MANY),
    "rm": ("rm " * 87000, TOO_MANY),
    "random words": (_random_words(200_000), None),
    "parser error recovery": (("rm " + "$| ~)" * 200 + "\n") * 250, TOO_MANY),
    "function definitions": ("(){ " * 65000, TOO_MANY),
    "SQL": (("DELETE FROM t WHERE " + "IN { ( " * 140 + "\n") * 250, TOO_MANY),
}


@pytest.mark.parametrize("name", LARGE)
def test_screening_a_large_or_hostile_body_takes_linear_time(name: str) -> None:
    """Issue #15: one 261 kB body of "dd " kept the broker busy for 204 s under Python's
    backtracking regexes. The bound is loose, a guard against quadratic blow-up, not a
    benchmark; a regression hangs here."""
    body, expected = LARGE[name]
    results: list[object] = []

    def screen() -> None:
        started = time.perf_counter()
        results.extend([hold_reason(body), find_secrets(body), time.perf_counter() - started])

    worker = threading.Thread(target=screen, daemon=True)
    worker.start()
    worker.join(30)
    assert len(results) == 3, "screening did not finish"
    reason, secrets, elapsed = results
    assert (reason, secrets) == (expected, [])
    assert elapsed < 2.0


def test_screening_from_many_threads_at_once_gives_the_same_answers() -> None:
    bodies = [b for b, _ in HELD] + ORDINARY
    alone = [hold_reason(b) for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(hold_reason, bodies)) == alone


def test_secrets_are_found_and_redacted_in_strings_and_json() -> None:
    assert [f.kind for f in find_secrets(f"key:\n{PRIVATE_KEY}")] == ["private key"]
    assert [f.kind for f in find_secrets({"t": GITHUB_TOKEN})] == ["GitHub token"]
    assert find_secrets("the token lives in ~/.config/gh/hosts.yml") == []
    assert redact({"t": f"use {GITHUB_TOKEN} now", "n": 3}) == {
        "t": "use [redacted GitHub token] now",
        "n": 3,
    }


SECRETS = [
    ("-----begin rsa private key-----\nMIIEowIBAAKCAQEA\n-----end rsa private key-----", "private key"),
    (f"key_{AWS_KEY}", "AWS key"),
    (f"{AWS_KEY[:11]}\n{AWS_KEY[11:]}", "AWS key"),
    ({"note": f"{AWS_KEY[:11]}\n   {AWS_KEY[11:]}"}, "AWS key"),
    (f'secret = "{RANDOM_SECRET}"', "high-entropy string"),
    ({"k": RANDOM_SECRET}, "high-entropy string"),
    ("postgres://admin:hunter2xyz@db.example.com/prod", "password in a URL"),
    ("sk-ant-api03-" + "abcdefghij" * 3, "Anthropic API key"),
    ("sk-proj-" + "A1b2" * 10, "OpenAI API key"),
    ("glpat-" + "x1" * 10, "GitLab token"),
    ("npm_" + "a1" * 18, "npm token"),
    ("AIza" + "b2" * 17 + "c", "Google API key"),
    ("xoxb-1234567890-abcdefghij", "Slack token"),
]


@pytest.mark.parametrize(("body", "kind"), SECRETS, ids=[repr(b)[:50] for b, _ in SECRETS])
def test_case_underscores_and_line_breaks_do_not_hide_a_secret(body: object, kind: str) -> None:
    assert [f.kind for f in find_secrets(body)] == [kind]
    assert f"[redacted {kind}]" in json.dumps(redact(body))


def test_a_redacted_secret_leaves_nothing_of_itself_behind() -> None:
    split = redact(f"use {AWS_KEY[:11]}\n{AWS_KEY[11:]} today")
    assert split == "use [redacted AWS key] today"
    block = redact(f"key:\n{PRIVATE_KEY}\nthanks")
    assert block == "key:\n[redacted private key]\nthanks"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert redact(f"token {jwt}") == "token [redacted JSON web token]"


def test_a_secret_used_as_a_json_key_is_redacted_too() -> None:
    body = {GITHUB_TOKEN: "mine", AWS_KEY: 1, "AKIA" + "IOSFODNN7EXAMPLF": 2, "plain": RANDOM_SECRET}
    assert redact(body) == {
        "[redacted GitHub token]": "mine",
        "[redacted AWS key]": 1,
        "[redacted AWS key] (2)": 2,
        "plain": "[redacted high-entropy string]",
    }


ENGINEERING = [
    UUID,
    f'"{UUID}"',
    SHA,
    f'"{SHA}"',
    '"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"',
    "/home/user/projects/sessionmesh/src/sessionmesh/core/safety.py",
    '"src/sessionmesh/core/safety"',
    "https://github.com/org/repo/pull/123",
    "https://user@example.com/path?q=1",
    '"test_a_body_with_a_secret_is_refused_and_nothing_is_stored"',
    '"SessionMeshIntegrationTestsRunner"',
    "AKIA is the prefix of an AWS key",
    {"id": UUID, "sha": SHA, "path": "/usr/local/lib/python3.11/site-packages", "re": UUID},
    {"ts": "2024-05-01T12:00:00Z", "msg": "deployed version 1.2.3 to staging"},
    "\n".join([SHA] * 20),
]


@pytest.mark.parametrize("body", ENGINEERING, ids=[repr(b)[:50] for b in ENGINEERING])
def test_ids_hashes_paths_and_plain_urls_are_not_secrets(body: object) -> None:
    assert find_secrets(body) == []


def test_every_detect_secrets_rule_used_runs_on_re2() -> None:
    """An upgrade of detect-secrets whose pattern RE2 cannot run must not drop it silently."""
    from sessionmesh.core.safety.secrets import secret_rules as _secret_rules

    assert _secret_rules().skipped == ()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("holding the lock for the refactor", None),
        ("src/sessionmesh/core/safety.py", None),
        ("reviewer", None),
        ("then git push --force", "git push --force"),
        ("DROP TABLE users", "DROP TABLE users"),
        (f"token {GITHUB_TOKEN}", "a secret (GitHub token)"),
        ({"meta": ["rm", "-rf", "/"]}, "rm -rf /"),
        ({"owner": "alice", "key": AWS_KEY}, "a secret (AWS key)"),
    ],
)
def test_screen_text_names_a_command_or_secret_in_a_short_value(value: object, reason: str | None) -> None:
    assert screen_text(value) == reason


def test_a_lone_surrogate_does_not_stop_screening() -> None:
    assert hold_reason("\ud800 rm -rf /") == "rm -rf /"
    assert redact(f"\ud800 {GITHUB_TOKEN}") == "\ud800 [redacted GitHub token]"


def test_the_hook_path_imports_no_screening_library() -> None:
    heavy = ("re2", "tree_sitter", "tree_sitter_bash", "sqlglot", "detect_secrets")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, sessionmesh.hooks; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [m for m in loaded if m.split(".")[0] in heavy] == []


def test_a_destructive_message_is_held_not_delivered_until_approved(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.join("bob")
    mesh.register_person()
    sent = mesh.call("alice", "send", to="bob", body="please rm -rf build/ and rebuild")
    answer = sent.result
    assert answer["status"] == "queued"
    assert answer["held"]["match"].startswith("rm -rf")
    assert mesh.delivered(sent.effects, "bob") == []
    assert mesh.track("alice", answer["id"]) == {"bob": "held"}
    # held copies are nobody's unread mail, and an ack cannot move them
    assert mesh.ok("bob", "inbox")["messages"] == []
    assert mesh.ok("bob", "ack", ids=[answer["id"]], state="read") == {"acked": 0}

    [listed] = mesh.ok("human", "held")["messages"]
    assert (listed["id"], listed["held_for"], listed["body"]) == (
        answer["id"],
        ["bob"],
        "please rm -rf build/ and rebuild",
    )

    approved = mesh.call("human", "approve", ids=[answer["id"]])
    assert approved.result == {"approved": [answer["id"]]}
    assert [m["id"] for m in mesh.delivered(approved.effects, "bob")] == [answer["id"]]
    assert mesh.receipt_states(approved.effects, "alice", answer["id"]) == ["queued"]
    assert mesh.ok("human", "held")["messages"] == []
    assert [e["event"] for e in mesh.audit() if e["event"] in ("held", "approved")] == ["held", "approved"]


def test_a_rejected_message_never_arrives_and_its_sender_is_told(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.register_person()
    msg_id = mesh.send("alice", "bob", "git push --force origin main")["id"]
    rejected = mesh.call("human", "reject", ids=[msg_id])
    assert rejected.result == {"rejected": [msg_id]}
    assert mesh.receipt_states(rejected.effects, "alice", msg_id) == ["rejected"]
    mesh.join("bob")
    assert mesh.delivered(mesh.last_connect_effects, "bob") == []
    assert mesh.track("alice", msg_id) == {"bob": "rejected"}
    assert isinstance(mesh.fails("human", "approve", ids=[msg_id]), UnknownMessage)


def test_only_an_approver_decides_and_a_bad_decision_changes_nothing(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.register_person()
    msg_id = mesh.send("alice", "bob", "DROP TABLE users")["id"]
    before = mesh.snapshot()
    assert isinstance(mesh.fails("bob", "approve", ids=[msg_id]), NotApprover)
    assert isinstance(mesh.fails("alice", "reject", ids=[msg_id]), NotApprover)
    assert isinstance(mesh.fails("human", "approve", ids=[]), BadFrame)
    ordinary = mesh.send("alice", "bob", "hello")["id"]
    after_ordinary = mesh.snapshot()
    assert isinstance(mesh.fails("human", "approve", ids=[msg_id, ordinary]), UnknownMessage)
    assert mesh.snapshot() == after_ordinary
    assert before["_receipts"][(msg_id, "bob")] == after_ordinary["_receipts"][(msg_id, "bob")]


def test_a_held_reply_waits_too_and_answers_the_request_only_when_approved(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    mesh.register_person()
    request = mesh.send("alice", "bob", "how do I clean up?", kind="request")["id"]
    mesh.join("bob")
    mesh.ack("bob", [request], "read")
    reply = mesh.call("bob", "send", re=request, body="run git reset --hard origin/main", status="PASS")
    assert mesh.delivered(reply.effects, "alice") == []
    assert mesh.track("alice", request) == {"bob": "read"}
    approved = mesh.call("human", "approve", ids=[reply.result["id"]])
    assert [m["id"] for m in mesh.delivered(approved.effects, "alice")] == [reply.result["id"]]
    assert mesh.track("alice", request) == {"bob": "answered"}


def test_hold_patterns_are_configurable_on_top_of_the_built_in_checks(make_mesh) -> None:
    mesh = make_mesh(hold_patterns=(r"\bdeploy to prod\b",))
    mesh.join("alice")
    mesh.register("bob")
    assert mesh.send("alice", "bob", "please deploy to prod")["held"]["match"] == "deploy to prod"
    assert mesh.send("alice", "bob", "rm -rf build")["held"]["match"] == "rm -rf build"
    assert "held" not in mesh.send("alice", "bob", "deploy to staging")


def test_a_body_with_a_secret_is_refused_and_nothing_is_stored(mesh: Mesh) -> None:
    mesh.join("alice")
    mesh.register("bob")
    before = mesh.snapshot()
    answer = mesh.send("alice", "bob", f"here is the key\n{PRIVATE_KEY}")
    assert answer["status"] == "refused"
    assert answer["reason"]["code"] == "secret_in_body"
    assert "private key" in answer["reason"]["message"]
    assert mesh.snapshot()["_messages"] == before["_messages"]
    assert PRIVATE_KEY not in repr(mesh.audit())


def test_secrets_can_be_redacted_instead_by_configuration(make_mesh) -> None:
    mesh = make_mesh(secret_action="redact")
    mesh.join("alice")
    mesh.register("bob")
    answer = mesh.send("alice", "bob", f"token {GITHUB_TOKEN} works")
    assert answer["status"] == "queued"
    mesh.join("bob")
    [got] = mesh.delivered(mesh.last_connect_effects, "bob")
    assert got["body"] == "token [redacted GitHub token] works"


def test_held_shows_a_peer_only_what_it_sent_and_an_approver_everything(mesh: Mesh) -> None:
    """Issue #15: `held` showed any peer the bodies of messages held for others."""
    mesh.register_person()
    for name in ("alice", "bob", "carol"):
        mesh.register(name)
    mine = mesh.send("alice", "bob", "rm -rf build/ now")["id"]
    theirs = mesh.send("carol", "bob", "git push --force origin main")["id"]
    assert [m["id"] for m in mesh.ok("alice", "held")["messages"]] == [mine]
    assert [m["id"] for m in mesh.ok("carol", "held")["messages"]] == [theirs]
    assert mesh.ok("bob", "held")["messages"] == []  # held *for* bob, but not yet his mail
    assert {m["id"] for m in mesh.ok("human", "held")["messages"]} == {mine, theirs}


def test_a_configured_pattern_re2_cannot_run_is_refused_with_a_clear_error() -> None:
    from sessionmesh.config import load
    from sessionmesh.errors import BadRequest

    with pytest.raises(BadRequest) as err:
        load(env={}, overrides={"home": "/nonexistent", "hold_patterns": (r"(?<=sudo )rm",)})
    assert "RE2 syntax" in (err.value.hint or "")


def test_the_settings_know_every_secret_action() -> None:
    """config checks secret_action without importing screening (a hook loads the settings)."""
    from sessionmesh import config
    from sessionmesh.core.safety import SecretAction

    assert set(config.SECRET_ACTIONS) == {action.value for action in SecretAction}
