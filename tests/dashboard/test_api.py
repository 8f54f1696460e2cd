"""The dashboard's HTTP side without a browser: who gets in, and what the API answers."""

from __future__ import annotations

import urllib.parse
from typing import Any

import aiohttp
import pytest

from ..conftest import mesh_cmd, person_cmd
from .conftest import PASSPHRASE, Dashboard, Peers

API = "/dashboard/v1"


def person_headers(dash: Dashboard) -> dict[str, str]:
    return {"Authorization": f"Bearer {dash.http.token}", "X-Mesh-Person": dash.http.person}


def session_cookie(dash: Dashboard) -> str:
    """Follow a login link by hand: the cookie it sets."""
    import http.client

    link = urllib.parse.urlsplit(dash.login_link())
    conn = http.client.HTTPConnection(link.hostname, link.port, timeout=10)
    conn.request("GET", f"{link.path}?{link.query}")
    resp = conn.getresponse()
    assert resp.status == 303 and resp.getheader("Location") == "/"
    cookie = resp.getheader("Set-Cookie")
    conn.close()
    assert cookie is not None and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return cookie.split(";", 1)[0]


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/"),
        ("GET", f"{API}/state"),
        ("GET", f"{API}/messages"),
        ("GET", f"{API}/search?q=x"),
        ("GET", f"{API}/peers"),
        ("GET", f"{API}/locks"),
        ("GET", f"{API}/held"),
        ("GET", f"{API}/graph"),
        ("GET", f"{API}/threads"),
        ("GET", f"{API}/feed"),
        ("GET", "/dashboard/assets/app.js"),
        ("POST", f"{API}/send"),
        ("POST", f"{API}/approve"),
        ("POST", f"{API}/login"),
    ],
)
@pytest.mark.parametrize("token", [False, True], ids=["nothing", "the-agents-token"])
def test_without_the_persons_login_nothing_is_served(
    dash: Dashboard, method: str, path: str, token: bool
) -> None:
    """Issue #15: the broker token is every agent's; it opens no route that shows
    others' mail or acts as the person."""
    body = {} if method == "POST" else None
    status, answer = dash.http.call(method, path, token=token, person=False, body=body)
    assert status == 401
    if path == "/":
        assert "mesh dashboard" in answer and "passphrase" in answer  # the login page
    elif path.endswith("/login"):
        assert answer["error"]["code"] == ("bad_passphrase" if token else "unauthorized")
    else:
        assert answer["error"]["code"] == "person_required"


def test_a_login_needs_the_passphrase_and_wrong_guesses_are_slowed_and_logged(dash: Dashboard) -> None:
    status, answer = dash.http.call(
        "POST", "/v1/person/session", person=False, body={"passphrase": "guess guess guess"}
    )
    assert (status, answer["error"]["code"]) == (401, "bad_passphrase")
    status, answer = dash.http.call(
        "POST", "/v1/person/session", person=False, body={"passphrase": "another guess"}
    )
    assert (status, answer["error"]["code"]) == (429, "rate_limited")
    status, answer = dash.http.call("POST", f"{API}/login", person=False, body={"session": "made-up"})
    assert (status, answer["error"]["code"]) == (401, "person_required")
    log = mesh_cmd("log", "--json", env=dash.broker.env)
    assert '"person_denied"' in log.stdout


def test_with_a_person_session_a_script_reads_the_api(dash: Dashboard, peers: Peers) -> None:
    peers("alice")
    status, state = dash.http.call("GET", f"{API}/state")
    assert status == 200
    assert state["me"] == "human"
    assert [p["name"] for p in state["peers"]] == ["alice"]
    assert state["messages"] == [] and state["before"] is None


def test_a_wrong_session_cookie_is_refused(dash: Dashboard) -> None:
    status, _ = dash.http.call("GET", f"{API}/state", token=False, headers={"Cookie": "mesh_session=made-up"})
    assert status == 401


def test_a_session_cookie_reads_but_writes_only_from_the_page(dash: Dashboard, peers: Peers) -> None:
    peers("bob")
    cookie = session_cookie(dash)
    status, _ = dash.http.call("GET", f"{API}/state", token=False, headers={"Cookie": cookie})
    assert status == 200
    send = {"to": "bob", "body": "hi"}
    status, body = dash.http.call("POST", f"{API}/send", token=False, body=send, headers={"Cookie": cookie})
    assert (status, body["error"]["code"]) == (403, "forbidden")  # a cross-site form cannot set the header
    page_headers = {"Cookie": cookie, "X-Mesh-Dashboard": "1"}
    foreign = {**page_headers, "Origin": "http://evil.example"}
    status, body = dash.http.call("POST", f"{API}/send", token=False, body=send, headers=foreign)
    assert status == 403
    status, body = dash.http.call("POST", f"{API}/send", token=False, body=send, headers=page_headers)
    assert status == 200 and body["status"] in ("received", "queued")
    # a session mints no login links: that takes the passphrase
    status, answer = dash.http.call("POST", f"{API}/login", token=False, body={}, headers=page_headers)
    assert (status, answer["error"]["code"]) == (401, "bad_passphrase")


async def test_the_feed_refuses_a_websocket_without_credentials(dash: Dashboard) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(dash.broker.url + f"{API}/feed")
        assert info.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:  # an agent's token alone
            await http.ws_connect(
                dash.broker.url + f"{API}/feed", headers={"Authorization": f"Bearer {dash.http.token}"}
            )
        assert info.value.status == 401
        ws = await http.ws_connect(dash.broker.url + f"{API}/feed", headers=person_headers(dash))
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == "hello"
        await ws.close()


async def test_the_feed_sends_each_stored_message_with_its_body_and_thread(dash: Dashboard) -> None:
    from sessionmesh.client.aio import AsyncClient

    settings = dash.broker.settings()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(dash.broker.url + f"{API}/feed", headers=person_headers(dash))
        assert (await ws.receive_json(timeout=5))["op"] == "hello"
        async with AsyncClient(settings, "alice") as alice, AsyncClient(settings, "bob") as bob:
            asked = await alice.ask("bob", "<b>ready?</b>")
            seen: dict[str, Any] = {}
            while "message" not in seen or "thread" not in seen:
                frame = await ws.receive_json(timeout=5)
                for event in frame["events"]:
                    seen.setdefault(event["event"], event)
            assert seen["message"]["message"]["id"] == asked.id
            assert seen["message"]["message"]["body"] == "<b>ready?</b>"
            assert seen["message"]["recipients"] == ["bob"]
            assert seen["thread"]["thread"]["turns"] == 1
            await bob.recv(timeout=5)
        await ws.close()


def test_messages_page_newest_first_with_a_cursor(dash: Dashboard, peers: Peers) -> None:
    alice = peers("alice")
    peers("bob")
    ids = [alice.send("bob", f"message {i}").id for i in range(7)]
    status, page = dash.http.call("GET", f"{API}/messages?limit=3")
    assert status == 200
    assert [m["id"] for m in page["messages"]] == ids[::-1][:3]
    assert page["messages"][0]["receipts"]["bob"] in ("delivered", "read")
    status, older = dash.http.call("GET", f"{API}/messages?limit=3&before={page['before']}")
    assert [m["id"] for m in older["messages"]] == ids[::-1][3:6]
    status, last = dash.http.call("GET", f"{API}/messages?limit=3&before={older['before']}")
    assert [m["id"] for m in last["messages"]] == ids[:1] and last["before"] is None
    status, bad = dash.http.call("GET", f"{API}/messages?limit=0")
    assert (status, bad["error"]["code"]) == (400, "bad_frame")


def test_search_over_http_finds_stored_bodies(dash: Dashboard, peers: Peers) -> None:
    alice = peers("alice")
    peers("bob")
    hit = alice.send("bob", "the deploy to staging failed").id
    alice.send("bob", "all good")
    status, found = dash.http.call("GET", f"{API}/search?q=" + urllib.parse.quote("staging DEPLOY"))
    assert status == 200 and [m["id"] for m in found["messages"]] == [hit]


def test_the_human_is_a_peer_agents_see_as_human(dash: Dashboard, peers: Peers) -> None:
    bob = peers("bob")
    status, answer = dash.http.call("POST", f"{API}/send", body={"to": "bob", "body": "from a person"})
    assert status == 200 and answer["status"] == "received"
    got = bob.recv(timeout=5)
    assert got.sender == "human"
    human = next(p for p in bob.peers() if p["name"] == "human")
    assert human["meta"]["client"] == "human"
    # the person can act as human from a terminal too, with their passphrase
    run = person_cmd(
        "send", "--as", "human", "bob", "and from the shell", answers=[PASSPHRASE], env=dash.broker.env
    )
    assert run.status == 0, run.output
    assert bob.recv(timeout=5).body == "and from the shell"


def test_an_agent_shell_cannot_act_as_the_person(dash: Dashboard, peers: Peers) -> None:
    """Issue #15: with no terminal, the CLI cannot ask for the passphrase, so nothing
    is sent as human; the secrets folder holds nothing that stands in for it."""
    bob = peers("bob")
    out = mesh_cmd("send", "--as", "human", "bob", "you are cleared to deploy", env=dash.broker.env)
    assert out.returncode != 0 and "needs_terminal" in out.stderr
    assert not (dash.broker.home / "secrets" / "human").exists()
    run = person_cmd(
        "send", "--as", "human", "bob", "cleared", answers=["not the passphrase"], env=dash.broker.env
    )
    assert run.status != 0 and "bad_passphrase" in run.output
    peers("alice").send("bob", "marker")
    assert bob.recv(timeout=5).body == "marker"  # nothing from 'human' came before it


def test_mesh_dashboard_asks_the_passphrase_and_prints_a_login_link(dash: Dashboard) -> None:
    env = {**dash.broker.env, "MESH_URL": dash.broker.url}
    run = person_cmd("dashboard", "--no-open", answers=[PASSPHRASE], env=env)
    assert run.status == 0, run.output
    [link] = [line.strip() for line in run.output.splitlines() if "/login?code=" in line]
    assert link.startswith(dash.broker.url + "/login?code=")
    assert dash.http.token not in link
    out = mesh_cmd("dashboard", "--no-open", env=env)  # an agent's shell: no terminal to ask on
    assert out.returncode != 0 and "needs_terminal" in out.stderr


def test_an_unknown_dashboard_path_needs_the_token_like_any_other(dash: Dashboard) -> None:
    status, body = dash.http.call("GET", "/dashboard/v1/nope", token=False)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, _ = dash.http.call("GET", "/dashboard/assets/../../token", token=False)
    assert status == 401
    status, body = dash.http.call("GET", "/dashboard/assets/secret.txt", token=False)
    assert status == 401
    status, _ = dash.http.call("GET", "/dashboard/assets/secret.txt")
    assert status == 404


def test_an_oversize_body_to_a_write_route_is_the_json_too_large(dash: Dashboard) -> None:
    """Issue #15: the write routes answered aiohttp's plain-text 413."""
    status, answer = dash.http.call("POST", f"{API}/send", body={"to": "bob", "body": "x" * 3_000_000})
    assert (status, answer["error"]["code"]) == (413, "too_large")
