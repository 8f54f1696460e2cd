"""Which route records one drain publishes (`routing._encoded`): an answer that only
says ``received`` goes when a receipt in the same drain says as much for every name;
any other answer goes as it is."""

from __future__ import annotations

from typing import Any

from sessionmesh.backends.nats.routing import _encoded
from sessionmesh.codec import loads

TO_A = "ns.to.a.b"


def _answer(statuses: dict[str, str], msg_id: str = "m1") -> tuple[str, dict[str, Any], None]:
    return (TO_A, {"op": "answer", "id": msg_id, "statuses": statuses, "from": "b"}, None)


def _receipt(
    recipient: str, state: str, msg_id: str = "m1", subject: str = TO_A
) -> tuple[str, dict[str, Any], None]:
    return (
        subject,
        {"op": "receipt", "id": msg_id, "recipient": recipient, "state": state, "from": "b"},
        None,
    )


def _ops(records: list[Any]) -> list[tuple[str, str]]:
    return [(loads(payload)["op"], loads(payload).get("state", "")) for _, payload, _ in _encoded(records)]


def test_a_received_answer_goes_when_the_read_receipt_for_each_name_goes_with_it() -> None:
    records = [
        _answer({"bob": "received", "carol": "received"}),
        _receipt("bob", "read"),
        _receipt("carol", "delivered"),
    ]
    assert _ops(records) == [("receipt", "read"), ("receipt", "delivered")]


def test_every_other_answer_is_published_as_it_is() -> None:
    cases = [
        [_answer({"bob": "received"})],  # no receipt in this drain
        [_answer({"bob": "received", "carol": "received"}), _receipt("bob", "read")],  # carol's is missing
        [_answer({"bob": "queued"}), _receipt("bob", "read")],  # queued releases the wait
        [_answer({"bob": "received"}), _receipt("bob", "rejected")],  # not a taking
        [_answer({"bob": "received"}), _receipt("bob", "read", msg_id="m2")],  # another message
        [_answer({"bob": "received"}), _receipt("bob", "read", subject="ns.to.c.b")],  # another machine
    ]
    for records in cases:
        assert _ops(records)[0] == ("answer", ""), records


def test_encoded_values_pass_through_in_order() -> None:
    kv = ("$KV.presence.b", b'{"at":1}', None)
    out = _encoded([kv, _receipt("bob", "read")])
    assert out[0] == kv and loads(out[1][1])["op"] == "receipt"
