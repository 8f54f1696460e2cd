"""Bad input and authentication at the broker's edge: typed errors, nothing changed,
and the broker keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from typing import Any

import aiohttp
import pytest

from sessionmesh.client.aio import AsyncClient
from sessionmesh.errors import BadSecret, InvalidName, Timeout, Unauthorized
from tests.conftest import visit


async def _raw_ws(broker, token=None):
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(
        broker.settings.url + "/v1/ws", headers={"Authorization": f"Bearer {token or broker.runner.token}"}
    )
    return session, ws


async def _hello(ws, name, secret=None):
    await ws.send_str(json.dumps({"op": "hello", "args": {"name": name, "secret": secret}}))
    return json.loads((await ws.receive(timeout=5)).data)


async def _call(ws, rid, op, **args):
    await ws.send_str(json.dumps({"op": op, "rid": rid, "args": args}))
    while True:
        frame = json.loads((await ws.receive(timeout=5)).data)
        if frame.get("op") in ("result", "error"):
            return frame


async def test_websocket_without_the_token_is_refused_before_upgrade(broker):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(
                broker.settings.url + "/v1/ws", headers={"Authorization": "Bearer wrong"}
            )
    assert info.value.status == 401


async def test_client_with_a_wrong_token_gets_unauthorized(broker):
    with pytest.raises(Unauthorized):
        await visit(broker.settings.with_(token="not-the-token"), "alice")


async def test_http_without_token_is_401_but_health_answers(broker):
    async with aiohttp.ClientSession() as session:
        async with session.post(broker.settings.url + "/v1/peers", json={}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
        async with session.get(broker.settings.url + "/metrics") as resp:
            assert resp.status == 401
        async with session.get(broker.settings.url + "/health") as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True


async def test_malformed_frames_get_typed_errors_and_the_session_keeps_serving(broker):
    session, ws = await _raw_ws(broker)
    try:
        welcome = await _hello(ws, "alice")
        assert welcome["op"] == "welcome" and welcome["name"] == "alice"
        await ws.send_str("{not json")
        frame = json.loads((await ws.receive(timeout=5)).data)
        assert frame["op"] == "error" and frame["error"]["code"] == "bad_frame"
        assert (await _call(ws, 1, "frobnicate"))["error"]["code"] == "unknown_op"
        bad_types = await _call(ws, 2, "send", to=42, body="x")
        assert bad_types["error"]["code"] == "bad_frame"
        bad_ttl = await _call(ws, 3, "send", to="alice2", body="x", ttl="soon")
        assert bad_ttl["error"]["code"] == "bad_frame"
        bad_id = await _call(ws, 4, "track", id="nope")
        assert bad_id["error"]["code"] == "bad_frame"
        pong = await _call(ws, 5, "ping")
        assert pong["ok"] is True and pong["result"]["name"] == "alice"
    finally:
        await ws.close()
        await session.close()
    # nothing of the bad frames reached the store
    events = {e["event"] for e in broker.runner.store.read_audit(after=0, limit=100)}
    assert events <= {"peer_registered", "peer_joined", "peer_left"}


async def test_send_as_another_name_is_impersonation_and_stores_nothing(broker):
    async with AsyncClient(broker.settings, "mallory") as mallory, AsyncClient(broker.settings, "bob"):
        from sessionmesh.errors import Impersonation

        with pytest.raises(Impersonation):
            await mallory.request("send", to="bob", body="hi", **{"from": "alice"})
        assert broker.runner.store.queue_depths() == {}


async def test_oversize_body_is_refused_with_the_limit_and_not_stored(broker):
    async with AsyncClient(broker.settings, "alice") as alice, AsyncClient(broker.settings, "bob"):
        result = await alice.send("bob", "x" * (broker.settings.max_body_bytes + 1))
        assert result.status.value == "refused"
        assert result.reason["code"] == "too_large"
        assert broker.runner.store.get_message(result.id) is None


async def test_invalid_names_are_refused_in_sends_and_rejected_in_hello(broker):
    async with AsyncClient(broker.settings, "alice") as alice:
        result = await alice.send("Not A Name!", "x")
        assert result.status.value == "refused" and result.reason["code"] == "invalid_name"
    with pytest.raises(InvalidName):
        await visit(broker.settings, "-bad")


async def test_a_second_connection_of_the_same_agent_attaches_and_unique_asks_for_a_session_of_its_own(
    broker,
):
    async with (
        AsyncClient(broker.settings, "alice", events=True) as first,
        AsyncClient(broker.settings, "bob") as bob,
    ):
        async with AsyncClient(broker.settings, "alice") as second:  # e.g. mesh watch beside mesh mcp
            assert second.name == "alice"
            sent = await bob.send("alice", "to both attachments")
            assert sent.status == "received"
            assert (await first.recv(timeout=5)).id == sent.id  # read by the first attachment
            async with asyncio.timeout(5):
                while sent.id not in second.taken:  # the other attachment learns it was taken
                    await asyncio.sleep(0.01)  # sleep-ok: bounded wait for a frame on another connection
            with pytest.raises(Timeout):
                await second.recv(timeout=0.2)  # and does not hand it over again
        assert [p["presence"] for p in await bob.peers() if p["name"] == "alice"] == ["online"]
        async with AsyncClient(broker.settings, "alice", unique=True) as own:
            assert own.name == "alice#2"


async def test_a_held_name_cannot_be_taken_without_its_secret(broker, tmp_path):
    await visit(broker.settings, "alice")
    # another machine's home: same broker and token, but no saved secret for alice
    other = broker.settings.with_(home=str(tmp_path / "elsewhere"), token=broker.runner.token)
    with pytest.raises(BadSecret):
        await visit(other, "alice")


async def test_metrics_are_prometheus_text_with_statuses_depths_peers_and_latency(broker):
    async with AsyncClient(broker.settings, "alice") as alice, AsyncClient(broker.settings, "bob"):
        await alice.send("bob", "hi")
        await alice.send("nobody", "hi")
        async with aiohttp.ClientSession() as session:
            async with session.get(
                broker.settings.url + "/metrics", headers={"Authorization": f"Bearer {broker.runner.token}"}
            ) as resp:
                text = await resp.text()
    assert 'mesh_messages_total{status="received"} 1.0' in text
    assert 'mesh_messages_total{status="denied"} 1.0' in text
    assert "mesh_connected_peers 2.0" in text
    assert "mesh_send_latency_seconds_count 2.0" in text
    assert "mesh_queue_depth" in text


async def test_a_wake_is_counted_per_agent_in_metrics(broker):
    async with AsyncClient(broker.settings, "agent") as agent, AsyncClient(broker.settings, "bob") as bob:
        waiting = asyncio.create_task(agent.request("wake", timeout=30, answer_timeout=35))
        await agent.request("ping")  # the wait is parked at the broker before the send
        await bob.send("agent", "wake up", priority="urgent")
        assert (await asyncio.wait_for(waiting, 10))["messages"][0]["body"] == "wake up"
        async with aiohttp.ClientSession() as session:
            async with session.get(
                broker.settings.url + "/metrics", headers={"Authorization": f"Bearer {broker.runner.token}"}
            ) as resp:
                text = await resp.text()
    assert 'mesh_wakes_total{peer="agent"} 1.0' in text


async def test_a_failing_frame_without_rid_gets_an_error_frame_and_binary_is_refused(broker):
    session, ws = await _raw_ws(broker)
    try:
        await _hello(ws, "alice")
        await ws.send_str(json.dumps({"op": "ack", "args": {"ids": "not-a-list"}}))
        frame = json.loads((await ws.receive(timeout=5)).data)
        assert frame == {"op": "error", "error": frame["error"]} and frame["error"]["code"] == "bad_frame"
        await ws.send_bytes(b"\x00\x01")
        frame = json.loads((await ws.receive(timeout=5)).data)
        assert frame["op"] == "error" and "binary" in frame["error"]["message"]
    finally:
        await ws.close()
        await session.close()


async def test_http_calls_need_a_joined_name_and_oversize_bodies_get_json_413(broker):
    headers = {"Authorization": f"Bearer {broker.runner.token}", "X-Mesh-Name": "stranger"}
    async with aiohttp.ClientSession() as session:
        async with session.post(broker.settings.url + "/v1/peers", json={}, headers=headers) as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_peer"
        # the failed call registered nothing: the name can still join
        async with session.post(
            broker.settings.url + "/v1/join", json={"name": "stranger"}, headers=headers
        ) as resp:
            joined = await resp.json()
            assert resp.status == 200 and joined["secret"]
        huge = b'{"to":"x","body":"' + b"x" * (broker.settings.max_frame_bytes + 10) + b'"}'
        async with session.post(
            broker.settings.url + "/v1/send",
            data=io.BytesIO(huge),
            headers={**headers, "X-Mesh-Secret": joined["secret"]},
        ) as resp:
            assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"


async def test_a_frame_too_large_for_the_wire_is_refused_by_the_client_and_the_session_lives(broker):
    async with AsyncClient(broker.settings, "alice") as alice, AsyncClient(broker.settings, "bob") as bob:
        # each char escapes to 6 bytes of JSON: the frame would be over the wire limit
        result = await alice.send("bob", "\u0001" * (broker.settings.max_body_bytes + 20000))
        assert result.status.value == "refused" and result.reason["code"] == "too_large"
        audit = {e["event"] for e in broker.runner.store.read_audit(after=0, limit=100)}
        assert "send_refused" not in audit  # refused before it left the client
        assert (await alice.send("bob", "small")).status.value == "received"
        assert (await bob.recv(timeout=5)).body == "small"


async def test_every_route_refuses_a_host_that_is_not_the_brokers_own(broker):
    """A DNS-rebinding page reaches 127.0.0.1 under its own host name: issue #15."""
    url = str(broker.settings.url)
    auth = {"Authorization": f"Bearer {broker.runner.token}"}
    async with aiohttp.ClientSession() as session:
        for path, method in (
            ("/health", "GET"),
            ("/metrics", "GET"),
            ("/v1/peers", "POST"),
            ("/dashboard/", "GET"),
        ):
            async with session.request(
                method, url + path, headers={**auth, "Host": "attacker.example"}
            ) as resp:
                assert resp.status == 421, path
                assert (await resp.json())["error"]["code"] == "wrong_host"
        for host in ("localhost", f"127.0.0.1:{broker.settings.url.rsplit(':', 1)[1]}", "[::1]:1"):
            async with session.get(url + "/health", headers={"Host": host}) as resp:
                assert resp.status == 200, host
                health = await resp.json()
    assert "home" not in health and broker.settings.home not in json.dumps(health)


def test_a_broker_bound_to_every_interface_answers_any_host() -> None:
    from sessionmesh.transports import host_ok

    assert host_ok("attacker.example", "0.0.0.0")
    assert not host_ok("attacker.example", "127.0.0.1")
    assert not host_ok(None, "127.0.0.1")
    assert host_ok("10.0.0.5:9474", "10.0.0.5") and not host_ok("10.0.0.6:9474", "10.0.0.5")


def _bare_ws(url: str, token: str, hello: dict[str, Any]) -> Any:
    """A WebSocket client on a bare socket that says hello and then never reads (a
    library client would keep reading into its own buffer)."""
    import base64
    import os as os_
    import socket

    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: a writer to it blocks soon
    sock.settimeout(5)
    sock.connect((host, int(port)))
    key = base64.b64encode(os_.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    assert b" 101 " in sock.recv(4096)
    sock.sendall(_ws_frame(json.dumps({"op": "hello", "args": hello})))
    return sock


def _ws_frame(text: str) -> bytes:
    import os as os_
    import struct

    data, mask = text.encode(), os_.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return struct.pack("!BB", 0x81, 0x80 | len(data)) + mask + masked


def _flood_without_reading(url: str, token: str, frames: int) -> tuple[int, Any]:
    """Send ``frames`` pings on a bare socket that never reads. Returns how many got
    out before the broker stopped reading it (its sends then time out), and the
    socket, still open, for the caller to close."""
    sock = _bare_ws(url, token, {"name": "hostile"})
    ping = _ws_frame(json.dumps({"op": "ping", "rid": 1, "args": {}})) * 100
    sock.settimeout(2.0)
    sent = 0
    with contextlib.suppress(TimeoutError):  # the broker stopped reading: sends block
        while sent < frames:
            sock.sendall(ping)
            sent += 100
    return sent, sock


async def test_a_client_that_never_reads_its_answers_is_not_read_either(broker):
    """Issue #15: one client that pipelined requests and never read grew the broker by
    gigabytes. The broker stops reading it, its queue stays bounded, and a bystander's
    round trips go on."""
    from sessionmesh.transports import HIGH_WATER, READ_BATCH

    flooding = asyncio.create_task(
        asyncio.to_thread(_flood_without_reading, str(broker.settings.url), broker.runner.token, 2_000_000)
    )
    async with AsyncClient(broker.settings, "bystander") as bystander:
        times = []
        for _ in range(30):
            started = asyncio.get_running_loop().time()
            await bystander.request("ping")
            times.append(asyncio.get_running_loop().time() - started)
        sent, sock = await asyncio.wait_for(flooding, 60)
        queued = max(c._items for c in broker.runner.conns.values())
        sock.close()
    assert sent < 2_000_000  # its sends stalled: the broker stopped reading it
    assert queued <= HIGH_WATER + READ_BATCH
    assert max(times) < 1.0, times


async def test_a_peer_that_never_reads_its_pushes_is_closed_and_gets_them_again_later(broker, monkeypatch):
    """Past the bound, pushes to a peer that reads nothing drop its connection; the
    messages stay unread and come again in its backlog."""
    from sessionmesh import transports
    from sessionmesh.client import discovery

    monkeypatch.setattr(transports, "HIGH_WATER", 10)
    monkeypatch.setattr(transports, "MAX_QUEUED", 20)
    await visit(broker.settings, "slow")  # its secret is saved: the bare socket says hello with it
    secret = discovery.load_secret(broker.settings, "slow")
    sock = await asyncio.to_thread(
        _bare_ws, str(broker.settings.url), broker.runner.token, {"name": "slow", "secret": secret}
    )
    try:
        async with AsyncClient(broker.settings, "sender") as sender:
            async with asyncio.timeout(10):
                while not any(c.name == "slow" for c in broker.runner.conns.values()):
                    await asyncio.sleep(0.02)  # sleep-ok: bounded wait for its hello
            big = "x" * 200_000  # a few of these fill the socket's buffers: the writer blocks
            sent = await asyncio.gather(*(sender.send("slow", f"{n} {big}") for n in range(60)))
            async with asyncio.timeout(30):
                while any(c.name == "slow" for c in broker.runner.conns.values()):
                    await asyncio.sleep(0.05)  # sleep-ok: bounded wait for the broker to drop it
    finally:
        sock.close()
    async with AsyncClient(broker.settings, "slow", auto_read=False) as again:
        got = {(await again.recv(timeout=10)).id for _ in range(60)}
    assert got == {r.id for r in sent}


async def test_a_session_that_says_bye_is_released_at_once(broker):
    """Issue #15: each session ended with `bye` stayed in memory 20-45 s (a heartbeat
    timer re-armed after the close); 2,000 connections grew RSS from 47 to 113 MB."""
    import gc

    from aiohttp import web

    for i in range(30):
        session, ws = await _raw_ws(broker)
        assert (await _hello(ws, f"brief-{i}"))["op"] == "welcome"
        assert (await _call(ws, 1, "bye"))["result"] == {"bye": True}
        await ws.close()
        await session.close()
    async with asyncio.timeout(5):
        while True:
            gc.collect()
            if not any(isinstance(o, web.WebSocketResponse) for o in gc.get_objects()):
                break
            await asyncio.sleep(0.05)  # sleep-ok: polls a bounded condition


async def test_a_client_that_answers_no_ping_is_dropped(broker, monkeypatch):
    from sessionmesh import transports

    monkeypatch.setattr(transports, "HEARTBEAT", 0.3)
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(
        broker.settings.url + "/v1/ws",
        headers={"Authorization": f"Bearer {broker.runner.token}"},
        autoping=False,  # hears the pings, answers none
    )
    assert (await _hello(ws, "deaf"))["op"] == "welcome"
    async with asyncio.timeout(5):
        while "deaf" in broker.runner.core.online_names():
            await ws.receive()  # pings, then the close
    await session.close()


async def test_welcome_and_health_announce_the_limits(broker):
    """Issue #16: a client could not learn the body and frame limits before it sent."""
    from sessionmesh.client.discovery import health

    session, ws = await _raw_ws(broker)
    welcome = await _hello(ws, "limited")
    await session.close()
    limits = {
        "max_body_bytes": broker.settings.max_body_bytes,
        "max_frame_bytes": broker.settings.max_frame_bytes,
    }
    assert welcome["limits"] == limits
    assert (await asyncio.to_thread(health, broker.settings.url))["limits"] == limits


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "permessage-deflate"])
async def test_frames_of_every_length_arrive_whole_and_in_order_with_or_without_compression(broker, compress):
    """The broker frames what it writes itself unless the session compresses: bodies
    whose frames need each of RFC 6455's three length forms (7 bits, 16 bits, 64 bits)
    arrive whole and in order, pushed in one turn, through either path."""
    bodies = ["short", "m" * 300, "x" * 70_000, "é" * 40_000, "last"]
    async with AsyncClient(broker.settings, "alice") as alice:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                broker.settings.url + "/v1/ws",
                headers={"Authorization": f"Bearer {broker.runner.token}"},
                compress=compress,
            )
            assert ws.compress == compress  # what the broker agreed to
            welcome = await _hello(ws, "bob")
            assert welcome["op"] == "welcome"
            got: list[str] = []

            async def read() -> None:
                while len(got) < len(bodies):
                    frame = json.loads((await ws.receive(timeout=5)).data)
                    if frame.get("op") == "deliver":
                        got.extend(m["body"] for m in frame["messages"])
                        ids = [m["id"] for m in frame["messages"]]
                        await ws.send_str(json.dumps({"op": "ack", "args": {"ids": ids}}))

            reader = asyncio.create_task(read())
            statuses = [(await alice.send("bob", body)).status.value for body in bodies]
            await asyncio.wait_for(reader, 5)
            assert got == bodies
            assert statuses == ["received"] * len(bodies)
        finally:
            await session.close()
