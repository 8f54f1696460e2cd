"""Observers (the dashboard): every event, plus each stored message with its body."""

from __future__ import annotations

from typing import Any

from sessionmesh.core.effects import Push

from .conftest import Mesh

OBSERVER = 900


def observed(effects: list[Any], event: str | None = None) -> list[dict[str, Any]]:
    return [
        e.frame
        for e in effects
        if isinstance(e, Push) and e.conn == OBSERVER and (event is None or e.frame["event"] == event)
    ]


def test_an_observer_sees_each_stored_message_with_its_body_and_recipients(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    mesh.register("carol")
    mesh.core.observe(OBSERVER)
    call = mesh.call("alice", "send", to="bob", body="<b>plans</b>")
    [frame] = observed(call.effects, "message")
    assert frame["message"]["id"] == call.result["id"]
    assert (frame["message"]["from"], frame["message"]["to"], frame["message"]["body"]) == (
        "alice",
        "bob",
        "<b>plans</b>",
    )
    assert (frame["recipients"], frame["recipient_count"]) == (["bob"], 1)
    fanout = mesh.call("alice", "send", to="broadcast", body="all")
    [frame] = observed(fanout.effects, "message")
    assert (sorted(frame["recipients"]), frame["recipient_count"]) == (["bob", "carol"], 2)


def test_an_observer_sees_receipts_and_joins_like_a_watcher(mesh: Mesh) -> None:
    mesh.core.observe(OBSERVER)
    mesh.connect("alice", meta={"role": "builder"})
    [joined] = observed(mesh.last_connect_effects, "peer_joined")
    assert (joined["name"], joined["meta"]) == ("alice", {"role": "builder"})
    mesh.register("bob")
    sent = mesh.send("alice", "bob", "hi")
    mesh.join("bob")
    effects = mesh.ack("bob", [sent["id"]], "read")
    assert [(f["id"], f["state"]) for f in observed(effects, "receipt")] == [(sent["id"], "read")]


def test_peers_watching_events_never_see_message_bodies(mesh: Mesh) -> None:
    mesh.join("watcher", events=True)
    mesh.register("alice")
    mesh.register("bob")
    call = mesh.call("alice", "send", to="bob", body="secret plans")
    assert "secret plans" not in repr(mesh.frames(call.effects, "watcher"))


def test_an_observer_that_stops_observing_gets_nothing_more(mesh: Mesh) -> None:
    mesh.core.observe(OBSERVER)
    mesh.core.unobserve(OBSERVER)
    mesh.register("alice")
    mesh.register("bob")
    assert observed(mesh.call("alice", "send", to="bob", body="x").effects) == []
    mesh.connect("carol")
    assert observed(mesh.last_connect_effects) == []
