"""The one plain HTTP/1.1 request the hooks, the waiter and the one-shot CLI share
(`sessionmesh.client.plainhttp`), against a real broker and on what it parses."""

from __future__ import annotations

import json

import pytest

from sessionmesh.client.plainhttp import Endpoint, answer

from ..conftest import BrokerProcess


@pytest.mark.parametrize(
    ("url", "host", "port", "netloc"),
    [
        ("http://127.0.0.1:9474", "127.0.0.1", 9474, "127.0.0.1:9474"),
        ("http://127.0.0.1:9474/", "127.0.0.1", 9474, "127.0.0.1:9474"),
        ("http://localhost", "localhost", 80, "localhost"),
        ("http://[::1]:8080", "::1", 8080, "[::1]:8080"),
        ("http://[::1]", "::1", 80, "[::1]"),
    ],
)
def test_an_address_is_read_from_the_url(url: str, host: str, port: int, netloc: str) -> None:
    endpoint = Endpoint(url)
    assert (endpoint.host, endpoint.port, endpoint.netloc) == (host, port, netloc)


def test_answers_are_parsed_whole_and_chunked_and_anything_else_is_refused() -> None:
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert answer(plain) == (200, b"{}")
    chunked = (
        b'HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'
    )
    assert answer(chunked) == (404, b'{"a":1}')
    for junk in (b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 abc\r\n\r\n"):
        with pytest.raises(ValueError):
            answer(junk)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_real_broker_answers_health_by_address_and_by_name(broker_proc: BrokerProcess, host: str) -> None:
    port = broker_proc.url.rsplit(":", 1)[1]
    status, payload = Endpoint(f"http://{host}:{port}").request("GET", "/health", b"", {}, 5.0)
    assert status == 200 and json.loads(payload)["ok"] is True


def test_nothing_listening_is_an_os_error(broker_proc: BrokerProcess) -> None:
    port = broker_proc.url.rsplit(":", 1)[1]
    broker_proc.stop()
    with pytest.raises(OSError):
        Endpoint(f"http://127.0.0.1:{port}").request("GET", "/health", b"", {}, 2.0)
