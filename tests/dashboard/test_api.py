"""The dashboard's HTTP side without a browser: who gets in, and what the API answers."""

from __future__ import annotations

import urllib.parse
from typing import Any

import aiohttp
import pytest

from ..conftest import mesh_cmd
from .conftest import Dashboard, Peers

API = "/dashboard/v1"


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
def test_without_a_token_or_a_session_nothing_is_served(dash: Dashboard, method: str, path: str) -> None:
    status, body = dash.http.call(method, path, token=False, body={} if method == "POST" else None)
    assert status == 401
    if path == "/":
        assert "mesh dashboard" in body  # the page says how to get in
    else:
        assert body["error"]["code"] == "unauthorized"


def test_with_the_token_a_script_reads_the_api(dash: Dashboard, peers: Peers) -> None:
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
    # a session cannot mint login links: that takes the token
    status, _ = dash.http.call("POST", f"{API}/login", token=False, body={}, headers=page_headers)
    assert status == 401


async def test_the_feed_refuses_a_websocket_without_credentials(dash: Dashboard) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(dash.broker.url + f"{API}/feed")
        assert info.value.status == 401
        ws = await http.ws_connect(
            dash.broker.url + f"{API}/feed", headers={"Authorization": f"Bearer {dash.http.token}"}
        )
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == "hello"
        await ws.close()


async def test_the_feed_sends_each_stored_message_with_its_body_and_thread(dash: Dashboard) -> None:
    from sessionmesh.client.aio import AsyncClient

    settings = dash.broker.settings()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            dash.broker.url + f"{API}/feed", headers={"Authorization": f"Bearer {dash.http.token}"}
        )
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
    # the human's secret is kept like any name's, so the CLI can act as the human too
    out = mesh_cmd("send", "--as", "human", "bob", "and from the shell", env=dash.broker.env)
    assert out.returncode == 0, out.stderr
    assert bob.recv(timeout=5).body == "and from the shell"


def test_mesh_dashboard_prints_a_login_link(dash: Dashboard) -> None:
    out = mesh_cmd("dashboard", "--no-open", env={**dash.broker.env, "MESH_URL": dash.broker.url})
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip()
    assert link.startswith(dash.broker.url + "/login?code=")
    assert dash.http.token not in link


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
