"""Issue #15: the person's names and client kind are the person's alone."""

from __future__ import annotations

import pytest

from sessionmesh.envelope import is_person_name
from sessionmesh.errors import NotApprover, ReservedName

from .conftest import Mesh


@pytest.mark.parametrize("name", ["human", "human#2", "human#77", "human-2", "human.desk", "human_bot"])
def test_every_name_that_reads_as_the_person_is_reserved(mesh: Mesh, name: str) -> None:
    mesh.join("bob")
    assert is_person_name(name)
    with pytest.raises(ReservedName):
        mesh.connect(name, None)
    with pytest.raises(ReservedName):
        mesh.core.authenticate(name, None, mesh.now)
    assert name not in {p["name"] for p in mesh.ok("bob", "peers")["peers"]}


@pytest.mark.parametrize("name", ["humanoid", "humane", "bob", "the-human"])
def test_names_that_only_contain_the_word_are_free(mesh: Mesh, name: str) -> None:
    assert not is_person_name(name)
    assert mesh.join(name) == name


def test_asking_for_a_unique_person_name_is_refused_not_renamed(mesh: Mesh) -> None:
    mesh.register_person()
    with pytest.raises(ReservedName):
        mesh.connect("human", None, unique=True)


def test_the_person_session_opens_only_human_itself(mesh: Mesh) -> None:
    assert mesh.register_person() == "human"
    with pytest.raises(ReservedName):
        mesh.core.authenticate("human#2", None, mesh.now, person=True)


@pytest.mark.parametrize("meta", [{"client": "human"}, {"role": "person"}, {"role": "human"}])
def test_a_peer_cannot_claim_the_persons_client_kind(mesh: Mesh, meta: dict[str, str]) -> None:
    with pytest.raises(ReservedName):
        mesh.connect("mallory", None, meta=meta)
    mesh.join("mallory")
    assert isinstance(mesh.fails("mallory", "set_status", **meta), ReservedName)
    [peer] = [p for p in mesh.ok("mallory", "peers")["peers"] if p["name"] == "mallory"]
    assert peer["meta"].get("client") != "human" and peer["meta"].get("role") not in ("person", "human")


def test_only_the_person_approves(mesh: Mesh) -> None:
    mesh.register("alice")
    mesh.register("bob")
    held = mesh.send("alice", "bob", "rm -rf / please")["id"]
    assert isinstance(mesh.fails("bob", "approve", ids=[held]), NotApprover)
    assert isinstance(mesh.fails("alice", "approve", ids=[held]), NotApprover)
    mesh.register_person()
    assert mesh.ok("human", "approve", ids=[held]) == {"approved": [held]}
