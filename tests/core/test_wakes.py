"""Waking an idle agent (core/wakes.py): activity, the wait for mail, bursts, the
wake budget, as plain calls with a clock the test moves."""

from __future__ import annotations

from sessionmesh.errors import BadFrame

from .conftest import Mesh, responses


def setup(mesh: Mesh) -> None:
    mesh.register("agent")
    mesh.register("bob")


def test_a_wait_answers_once_the_burst_window_has_passed_with_every_message_of_the_burst(mesh: Mesh) -> None:
    setup(mesh)
    wait = mesh.call("agent", "wake", timeout=60)
    assert not wait.answered
    first = mesh.send("bob", "agent", "one")["id"]
    assert responses(mesh.advance(0.5), wait.reply_to) == []
    second = mesh.send("bob", "agent", "two")["id"]
    [answer] = mesh.responses_after_tick(0.6, wait.reply_to)  # 1.1 s after the first
    assert [m["id"] for m in answer.result["messages"]] == [first, second]
    assert mesh.track("bob", first)["agent"] == "delivered"
    assert mesh.core.wakes_of("agent") == 1
    assert mesh.core.counters["wakes"] == 1


def test_an_urgent_message_wakes_at_once(mesh: Mesh) -> None:
    setup(mesh)
    wait = mesh.call("agent", "wake")
    call = mesh.call("bob", "send", to="agent", body="prod is down", priority="urgent")
    [answer] = responses(call.effects, wait.reply_to)
    assert answer.result["messages"][0]["body"] == "prod is down"


def test_mail_that_waited_longer_than_the_window_wakes_at_once(mesh: Mesh) -> None:
    setup(mesh)
    msg = mesh.send("bob", "agent", "queued before")["id"]
    mesh.advance(2)
    wait = mesh.call("agent", "wake")
    assert [m["id"] for m in wait.result["messages"]] == [msg]


def test_mail_the_waiter_was_already_shown_does_not_wake_it(mesh: Mesh) -> None:
    setup(mesh)
    shown = mesh.send("bob", "agent", "the hook showed this")["id"]
    wait = mesh.call("agent", "wake", exclude=[shown])
    assert mesh.responses_after_tick(5, wait.reply_to) == []
    new = mesh.send("bob", "agent", "this is new")["id"]
    [answer] = mesh.responses_after_tick(1.0, wait.reply_to)
    assert [m["id"] for m in answer.result["messages"]] == [new]


def test_a_working_agent_is_not_woken_and_is_once_it_goes_idle(mesh: Mesh) -> None:
    setup(mesh)
    assert mesh.ok("agent", "activity", state="working")["activity"] == "working"
    wait = mesh.call("agent", "wake")
    mesh.send("bob", "agent", "while you work")
    assert mesh.responses_after_tick(3, wait.reply_to) == []  # its hooks bring it into the turn
    idle = mesh.call("agent", "activity", state="idle")
    [answer] = responses(idle.effects, wait.reply_to)  # the window passed long ago
    assert answer.result["messages"][0]["body"] == "while you work"


def test_the_wake_budget_makes_extra_mail_wait_for_the_next_slot(make_mesh) -> None:  # noqa: ANN001
    mesh = make_mesh(wake_budget=2, wake_budget_window=60.0)
    setup(mesh)
    for n in range(2):
        wait = mesh.call("agent", "wake")
        call = mesh.call("bob", "send", to="agent", body=f"burst {n}", priority="urgent")
        [answer] = responses(call.effects, wait.reply_to)
        mesh.ack("agent", [m["id"] for m in answer.result["messages"]], "read")
    wait = mesh.call("agent", "wake")
    mesh.call("bob", "send", to="agent", body="third", priority="urgent")
    assert mesh.responses_after_tick(30, wait.reply_to) == []  # over budget: two wakes this minute
    [answer] = mesh.responses_after_tick(31, wait.reply_to)
    assert answer.result["messages"][0]["body"] == "third"
    assert mesh.core.wakes_of("agent") == 3


def test_a_wait_that_times_out_answers_empty(mesh: Mesh) -> None:
    setup(mesh)
    wait = mesh.call("agent", "wake", timeout=5)
    [answer] = mesh.responses_after_tick(5, wait.reply_to)
    assert answer.result == {"messages": [], "timed_out": True}


def test_bad_arguments_are_refused(mesh: Mesh) -> None:
    setup(mesh)
    assert isinstance(mesh.fails("agent", "wake", exclude="nope"), BadFrame)
    assert isinstance(mesh.fails("agent", "wake", exclude=["not-an-id"]), BadFrame)
    assert isinstance(mesh.fails("agent", "wake", timeout=-1), BadFrame)
    assert isinstance(mesh.fails("agent", "activity", state="sleeping"), BadFrame)
    assert isinstance(mesh.fails("agent", "activity", state="idle", extra=1), BadFrame)


def test_a_caller_that_hung_up_is_forgotten(mesh: Mesh) -> None:
    setup(mesh)
    wait = mesh.call("agent", "wake")
    mesh.core.forget(wait.reply_to)
    mesh.send("bob", "agent", "nobody waits", priority="urgent")
    assert mesh.responses_after_tick(2, wait.reply_to) == []
    assert mesh.core.wakes_of("agent") == 0


def test_peers_show_each_agents_activity_and_wakes(mesh: Mesh) -> None:
    setup(mesh)
    mesh.ok("agent", "activity", state="working")
    wait = mesh.call("agent", "wake")
    mesh.ok("agent", "activity", state="idle")
    mesh.call("bob", "send", to="agent", body="x", priority="urgent")
    peers = {p["name"]: p for p in mesh.ok("bob", "peers")["peers"]}
    assert (peers["agent"]["activity"], peers["agent"]["wakes"]) == ("idle", 1)
    assert "activity" not in peers["bob"] and peers["bob"]["wakes"] == 0
    assert len(mesh.audit("peer_woken")) == 1 and not responses([], wait.reply_to)


def test_a_stopping_broker_answers_every_wait(mesh: Mesh) -> None:
    setup(mesh)
    wait = mesh.call("agent", "wake", timeout=600)
    [answer] = responses(mesh.core.release_wakes(), wait.reply_to)
    assert answer.result == {"messages": [], "timed_out": True, "stopping": True}


def test_an_agent_waiting_for_its_user_is_not_woken_and_is_not_idle(mesh: Mesh) -> None:
    """#17 item 2: a line typed into an agent at its user's dialog would answer the dialog."""
    setup(mesh)
    mesh.ok("agent", "activity", state="waiting")
    wait = mesh.call("agent", "wake")
    idle = mesh.call("bob", "await_idle", {"name": "agent", "timeout": 60})
    call = mesh.call("bob", "send", to="agent", body="prod is down", priority="urgent")
    assert responses(call.effects, wait.reply_to) == [] and not idle.answered
    peers = {p["name"]: p for p in mesh.ok("bob", "peers")["peers"]}
    assert peers["agent"]["activity"] == "waiting"
    back = mesh.call("agent", "activity", state="idle")
    [woken] = responses(back.effects, wait.reply_to)
    assert woken.result["messages"][0]["body"] == "prod is down"
    assert responses(back.effects, idle.reply_to)[0].result["activity"] == "idle"
