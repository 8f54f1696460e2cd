"""The dashboard page in a real headless Chromium, against a real broker and real clients."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from sessionmesh.errors import MeshError
from sessionmesh.person import write_credential

from ..conftest import BrokerProcess, read_line
from .conftest import PASSPHRASE, WAIT_MS, Dashboard, Http, Peers


@pytest.fixture
def page(dash: Dashboard, browser: Any) -> Iterator[Any]:
    page = dash.open(browser)
    yield page
    assert page.errors == []  # no script error on the page during the test
    page.close()


def peer_row(page: Any, name: str) -> Any:
    return page.locator(f"#peers .peer[data-name='{name}']")


def message_row(page: Any, msg_id: str) -> Any:
    return page.locator(f"#messages .msg[data-id='{msg_id}']")


def test_the_page_without_a_session_asks_to_run_mesh_dashboard(dash: Dashboard, browser: Any) -> None:
    page = browser.new_page()
    response = page.goto(dash.broker.url + "/")
    assert response.status == 401
    expect(page.locator("body")).to_contain_text("mesh dashboard")
    assert page.locator("#messages").count() == 0
    page.close()


def test_a_login_link_works_once(dash: Dashboard, browser: Any) -> None:
    link = dash.login_link()
    first = browser.new_context()
    page = first.new_page()
    page.goto(link)
    expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
    assert page.url == dash.broker.url + "/"  # the link is gone from the address bar
    cookie = next(c for c in first.cookies() if c["name"] == "mesh_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    second = browser.new_context()
    again = second.new_page()
    response = again.goto(link)
    assert response.status == 401
    expect(again.locator("body")).to_contain_text("spent")
    first.close()
    second.close()


def test_a_peer_that_joins_appears_with_its_role_and_leaves_as_away(page: Any, peers: Peers) -> None:
    alice = peers("alice", role="builder")
    row = peer_row(page, "alice")
    expect(row).to_have_attribute("data-presence", "online", timeout=WAIT_MS)
    expect(row).to_contain_text("builder")
    alice.set_status(status="fixing the retry loop")
    expect(row).to_contain_text("fixing the retry loop", timeout=WAIT_MS)
    peers.leave(alice)
    expect(row).to_have_attribute("data-presence", "away", timeout=WAIT_MS)


def test_a_message_shows_its_receipt_moving_to_read(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    bob = peers("bob", auto_read=False)
    sent = alice.send("bob", "please review src/app.py")
    row = message_row(page, sent.id)
    expect(row).to_contain_text("please review src/app.py", timeout=WAIT_MS)
    receipt = row.locator(".receipt[data-recipient='bob']")
    expect(receipt).to_have_attribute("data-state", "delivered", timeout=WAIT_MS)
    got = bob.recv(timeout=5)
    bob.mark_read([got.id])
    expect(receipt).to_have_attribute("data-state", "read", timeout=WAIT_MS)
    expect(receipt).to_have_text("bob: read")


def test_a_body_with_markup_renders_as_text(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    peers("bob")
    body = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'
    sent = alice.send("bob", body)
    row = message_row(page, sent.id)
    expect(row.locator(".body")).to_have_text(body, timeout=WAIT_MS)
    row.click()
    expect(page.locator("#detail .full-body")).to_have_text(body)
    assert page.locator("#messages img, #messages script, #messages b, #detail img, #detail b").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_the_person_sees_which_agents_hold_their_mail(page: Any, peers: Peers) -> None:
    """Issue #17 item 3: a peer's inbound policy is private, but the person sees it."""
    deployer = peers("deployer")
    deployer.request("policy", default="hold")
    expect(peer_row(page, "deployer")).to_contain_text("holds its mail", timeout=WAIT_MS)
    others = {p["name"]: p for p in peers("intern").peers()}
    assert "policy" not in others["deployer"]


def test_pairs_and_a_guard_s_stop_show_live_on_the_peers(page: Any, peers: Peers) -> None:
    """Issue #17 item 1: roles and swaps are events the dashboard shows."""
    builder = peers("builder")
    reviewer = peers("reviewer")
    builder.request("pair", action="invite", to="reviewer")
    reviewer.request("pair", action="accept")
    expect(peer_row(page, "builder")).to_contain_text("grip with reviewer", timeout=WAIT_MS)
    expect(peer_row(page, "reviewer")).to_contain_text("guard with builder", timeout=WAIT_MS)
    reviewer.request("pair", action="intercept", urgent=True, body="wrong database")
    expect(peer_row(page, "builder")).to_contain_text("stopped by reviewer", timeout=WAIT_MS)
    builder.request("pair", action="ack")
    expect(peer_row(page, "builder")).not_to_contain_text("stopped by", timeout=WAIT_MS)
    builder.request("pair", action="swap")
    expect(peer_row(page, "builder")).to_contain_text("guard with reviewer", timeout=WAIT_MS)
    reviewer.request("pair", action="unpair")
    expect(peer_row(page, "reviewer")).not_to_contain_text("with builder", timeout=WAIT_MS)


def test_a_handoff_shows_its_paths_and_evidence(page: Any, peers: Peers) -> None:
    """Issue #17 item 4: the dashboard shows what a handoff carries."""
    alice = peers("alice")
    bob = peers("bob")
    asked = alice.send("bob", "fix the retry loop", kind="request", paths=["src/app.py"], ack_required=True)
    row = message_row(page, asked.id)
    row.click()
    expect(page.locator("#detail")).to_contain_text("src/app.py", timeout=WAIT_MS)
    expect(page.locator("#detail")).to_contain_text("required before the work starts")
    bob.recv(timeout=5)
    answered = bob.reply(asked.id, "done", status="PASS", evidence=[{"path": "tests/", "note": "12 passed"}])
    message_row(page, answered.id).click()
    expect(page.locator("#detail")).to_contain_text("tests/: 12 passed", timeout=WAIT_MS)


def test_a_lock_counts_down_and_disappears_when_it_expires(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    alice.lock("src/retry.py", ttl=5, reason="fixing retries")
    row = page.locator("#locks .lock[data-holder='alice']")
    expect(row).to_contain_text("fixing retries", timeout=WAIT_MS)
    expect(row.locator(".countdown")).to_have_text(re.compile(r"^[1-5]s$"))
    expect(row).to_have_count(0, timeout=WAIT_MS)


def test_the_human_sends_a_message_the_recipient_gets_from_human(page: Any, peers: Peers) -> None:
    bob = peers("bob")
    expect(peer_row(page, "bob")).to_be_visible(timeout=WAIT_MS)
    page.fill("#to", "bob")
    page.fill("#body", "hello from the person watching")
    page.click("#send")
    expect(page.locator("#send-result")).to_have_attribute(
        "data-status", re.compile("received|queued"), timeout=WAIT_MS
    )
    got = bob.recv(timeout=5)
    assert (got.sender, got.body) == ("human", "hello from the person watching")
    human = peer_row(page, "human")
    expect(human).to_contain_text("human", timeout=WAIT_MS)
    expect(page.locator("#messages .msg", has_text="hello from the person watching")).to_contain_text("human")


def test_the_human_broadcasts_to_every_peer(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    bob = peers("bob")
    expect(peer_row(page, "bob")).to_be_visible(timeout=WAIT_MS)
    page.fill("#body", "standup in five minutes")
    page.click("#broadcast")
    expect(page.locator("#send-result")).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    assert alice.recv(timeout=5).body == "standup in five minutes"
    got = bob.recv(timeout=5)
    assert (got.sender, got.to.broadcast) == ("human", True)


def test_search_finds_a_stored_body(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    peers("bob")
    wanted = alice.send("bob", "the migration of the users table is done")
    other = alice.send("bob", "lunch?")
    expect(message_row(page, other.id)).to_be_visible(timeout=WAIT_MS)
    page.fill("#search", "MIGRAT users")
    page.press("#search", "Enter")
    expect(page.locator("#search-banner")).to_contain_text("1 result", timeout=WAIT_MS)
    expect(message_row(page, wanted.id)).to_be_visible()
    expect(message_row(page, other.id)).to_have_count(0)
    page.click("#search-clear")
    expect(message_row(page, other.id)).to_be_visible()


def test_the_graph_draws_who_talks_to_whom(page: Any, peers: Peers, dash: Dashboard) -> None:
    alice = peers("alice")
    peers("bob")
    for _ in range(3):
        alice.send("bob", "ping")
    expect(page.locator("#messages .msg")).to_have_count(3, timeout=WAIT_MS)
    status, graph = dash.http.call("GET", "/dashboard/v1/graph?window=300")
    assert status == 200 and graph["edges"] == [{"from": "alice", "to": "bob", "count": 3}]
    # the canvas has drawn something: not every pixel is blank
    page.select_option("#window", "300")
    page.wait_for_function(
        "() => { const c = document.getElementById('graph');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " for (let i = 3; i < d.length; i += 4) if (d[i]) return true; return false; }",
        timeout=WAIT_MS,
    )


def test_approving_a_held_message_delivers_it(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    bob = peers("bob")
    sent = alice.send("bob", "please run rm -rf build/ and rebuild")
    held = page.locator(f"#held .held[data-id='{sent.id}']")
    expect(held).to_contain_text("please run rm -rf build/", timeout=WAIT_MS)
    expect(held).to_contain_text("for bob")
    receipt = message_row(page, sent.id).locator(".receipt[data-recipient='bob']")
    expect(receipt).to_have_attribute("data-state", "held")
    with pytest.raises(MeshError):  # held: bob has nothing yet
        bob.recv(timeout=0.3)
    held.locator("button.approve").click()
    got = bob.recv(timeout=5)
    assert (got.id, got.sender) == (sent.id, "alice")
    expect(held).to_have_count(0, timeout=WAIT_MS)
    expect(receipt).to_have_attribute("data-state", re.compile("delivered|read"), timeout=WAIT_MS)


def test_rejecting_a_held_message_ends_it_rejected_and_undelivered(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    bob = peers("bob")
    sent = alice.send("bob", "git push --force origin main")
    held = page.locator(f"#held .held[data-id='{sent.id}']")
    held.locator("button.reject").click(timeout=WAIT_MS)
    receipt = message_row(page, sent.id).locator(".receipt[data-recipient='bob']")
    expect(receipt).to_have_attribute("data-state", "rejected", timeout=WAIT_MS)
    expect(held).to_have_count(0)
    assert alice.track(sent.id)["receipts"] == {"bob": "rejected"}
    with pytest.raises(MeshError):
        bob.recv(timeout=0.3)


def test_a_thread_shows_its_turns_and_state_as_they_change(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    bob = peers("bob")
    asked = alice.ask("bob", "is the retry loop safe?")
    row = page.locator(f"#threads .thread[data-id='{asked.id}']")
    expect(row).to_contain_text("1 turn", timeout=WAIT_MS)
    expect(row.locator(".state")).to_have_text("open")
    bob.reply(bob.recv(timeout=5).id, "yes", status="PASS")
    expect(row).to_contain_text("2 turns", timeout=WAIT_MS)
    expect(row.locator(".state")).to_have_text("answered")


def test_a_message_to_the_human_is_read_once_it_is_on_the_page(
    page: Any, peers: Peers, dash: Dashboard
) -> None:
    alice = peers("alice")
    dash.http.call("POST", "/dashboard/v1/send", body={"to": "alice", "body": "status?"})
    alice.recv(timeout=5)
    answer = alice.send("human", "all green")
    expect(message_row(page, answer.id)).to_be_visible(timeout=WAIT_MS)
    receipt = message_row(page, answer.id).locator(".receipt[data-recipient='human']")
    expect(receipt).to_have_attribute("data-state", "read", timeout=WAIT_MS)
    assert alice.track(answer.id)["receipts"] == {"human": "read"}


def test_a_restarted_broker_ends_the_session_and_the_page_says_so(tmp_path: Path, browser: Any) -> None:
    with socket.socket() as probe:  # a restarted broker comes back on its port, as 9474 would
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "mesh-home"
    broker = BrokerProcess(home, {**os.environ, "MESH_HOME": str(home)})

    def serve() -> None:
        broker.proc = subprocess.Popen(
            [sys.executable, "-m", "sessionmesh", "serve", "--port", str(port), "--home", str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=broker.env,
        )
        assert "listening on" in read_line(broker.proc, 15)
        broker.url = f"http://127.0.0.1:{port}"

    serve()
    write_credential(broker.settings(), PASSPHRASE)
    try:
        dash = Dashboard(broker, Http(broker.url, (home / "token").read_text().strip()))
        page = dash.open(browser)
        broker.stop()
        serve()
        expect(page.locator("#conn")).to_contain_text("mesh dashboard", timeout=WAIT_MS)
        page.close()
    finally:
        broker.stop()


def test_the_person_logs_in_on_the_page_with_their_passphrase(dash: Dashboard, browser: Any) -> None:
    """Issue #15: the login page takes the passphrase; a wrong one is said, not let in."""
    page = browser.new_page()
    page.goto(dash.broker.url + "/")
    page.fill("#passphrase", "a wrong guess at it")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("wrong passphrase", timeout=WAIT_MS)
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:  # the broker takes no guess for a second after a wrong one: the page says so
        page.fill("#passphrase", PASSPHRASE)
        page.click("button[type=submit]")
        try:
            page.wait_for_selector("body[data-ready='1']", timeout=500)
            break
        except PlaywrightTimeout:
            assert time.monotonic() < deadline
            expect(page.locator("#login-error")).to_contain_text("one guess", timeout=WAIT_MS)
    page.wait_for_selector("#conn.live", timeout=WAIT_MS)
    page.close()


def test_a_page_that_dropped_old_messages_pages_them_back_in(page: Any, peers: Peers) -> None:
    alice = peers("alice")
    peers("bob")
    ids = [alice.send("bob", f"note {i}").id for i in range(5)]
    expect(page.locator("#msg-count")).to_have_text("(5)", timeout=WAIT_MS)
    # what a long-open page does at 20,000 messages: keep the newest only
    kept = page.evaluate("trimMessages(2), [...S.msgs.byId.keys()]")
    assert sorted(kept) == sorted(ids[-2:])
    # the list, scrolled to its end, pages the dropped ones back in from the broker
    page.evaluate("mark('messages')")
    page.wait_for_function("id => S.msgs.byId.has(id)", arg=ids[0], timeout=WAIT_MS)
    expect(page.locator("#msg-count")).to_have_text("(5)", timeout=WAIT_MS)
    expect(message_row(page, ids[0])).to_be_visible()


def test_a_peer_shows_whether_it_works_and_how_often_it_was_woken(page: Any, peers: Peers) -> None:
    import threading

    agent = peers("agent")
    alice = peers("alice")
    row = peer_row(page, "agent")
    agent.request("activity", state="working")
    expect(row).to_contain_text("working", timeout=WAIT_MS)
    agent.request("activity", state="idle")
    expect(row).to_contain_text("idle", timeout=WAIT_MS)
    woke: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: woke.append(agent.request("wake", timeout=30)))
    waiter.start()
    alice.send("agent", "wake up", priority="urgent")
    waiter.join(30)
    assert woke and woke[0]["messages"][0]["body"] == "wake up"
    expect(row).to_contain_text("woken 1×", timeout=WAIT_MS)
