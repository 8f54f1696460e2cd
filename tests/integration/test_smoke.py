from sessionmesh.client.aio import AsyncClient


async def test_message_between_two_live_peers_is_received_and_read(broker):
    async with AsyncClient(broker.settings, "alice") as alice, AsyncClient(broker.settings, "bob") as bob:
        result = await alice.send("bob", "hello")
        assert result.status.value == "received"
        env = await bob.recv(timeout=5)
        assert (env.sender, env.body) == ("alice", "hello")
        receipt = await alice.next_receipt(timeout=5)
        while receipt["state"] != "read":
            receipt = await alice.next_receipt(timeout=5)
        assert receipt == {**receipt, "id": result.id, "recipient": "bob", "state": "read"}
