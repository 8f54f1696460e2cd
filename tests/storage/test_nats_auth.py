"""The NATS store connects with each kind of credential the docs describe (token,
user and password, nkey seed, TLS with a private CA) and is refused without them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nkeys
import pytest

from sessionmesh.backends.nats import open_store
from sessionmesh.config import load
from sessionmesh.errors import MeshError
from tests.conftest import nats_overrides
from tests.natsserver import NatsNode


def node_with(tmp_path: Path, extra: str) -> Iterator[NatsNode]:
    node = NatsNode("auth", tmp_path, extra=extra).start()
    try:
        yield node
    finally:
        node.stop()


def opens(tmp_path: Path, node_url: str, **auth: Any) -> bool:
    overrides = {"home": str(tmp_path / "home"), **nats_overrides(node_url, nats_timeout=3.0), **auth}
    try:
        store = open_store(load(env={}, overrides=overrides))
    except MeshError:
        return False
    store.close()
    return True


@pytest.fixture
def token_node(tmp_path: Path) -> Iterator[NatsNode]:
    yield from node_with(tmp_path, 'authorization { token: "s3cret-token" }')


def test_a_token_opens_the_store_and_its_absence_is_refused(token_node: NatsNode, tmp_path: Path) -> None:
    assert opens(tmp_path, token_node.url, nats_token="s3cret-token")
    assert not opens(tmp_path, token_node.url, nats_token="wrong")
    assert not opens(tmp_path, token_node.url)


@pytest.fixture
def user_node(tmp_path: Path) -> Iterator[NatsNode]:
    yield from node_with(tmp_path, 'authorization { user: "mesh", password: "pa55" }')


def test_a_user_and_password_open_the_store(user_node: NatsNode, tmp_path: Path) -> None:
    assert opens(tmp_path, user_node.url, nats_user="mesh", nats_password="pa55")
    assert not opens(tmp_path, user_node.url, nats_user="mesh", nats_password="nope")


def test_an_nkey_seed_file_opens_the_store(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed + b"\n")
    seed_file.chmod(0o600)
    gen = node_with(tmp_path, f'authorization {{ users: [ {{ nkey: "{public}" }} ] }}')
    node = next(gen)
    try:
        assert opens(tmp_path, node.url, nats_nkey_seed=str(seed_file))
        assert not opens(tmp_path, node.url)
    finally:
        gen.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_tls_with_a_private_ca_opens_the_store(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mesh-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=certs)  # fmt: skip
    (certs / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=certs)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.cnf", "-out", "server.pem", cwd=certs)  # fmt: skip
    gen = node_with(tmp_path, f'tls {{ cert_file: "{certs}/server.pem", key_file: "{certs}/server.key" }}')
    node = next(gen)
    try:
        assert opens(tmp_path, f"tls://127.0.0.1:{node.port}", nats_tls_ca=str(certs / "ca.pem"))
        # the system CAs do not know this one
        assert not opens(tmp_path, f"tls://127.0.0.1:{node.port}", nats_timeout=1.0)
    finally:
        gen.close()
