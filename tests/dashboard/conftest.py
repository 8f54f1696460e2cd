"""A real broker process, a real headless Chromium (Debian's ``chromium``, driven by
Playwright without a downloaded browser) and a way to log in as a person would."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sessionmesh.client.sync import SyncClient
from sessionmesh.person import write_credential

from ..conftest import PASSPHRASE, BrokerProcess

CHROMIUM = os.environ.get("MESH_TEST_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 10_000  # the bound on every wait for the page


def _chromium_or_skip() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"no chromium at {CHROMIUM}: .ci/run installs it")
        pytest.skip("no chromium here (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@dataclass
class Http:
    """Plain HTTP to the broker (standard library): with the token and a person
    session (a script of the person's), the token alone (an agent's), or neither."""

    url: str
    token: str
    person: str = ""

    def call(
        self,
        method: str,
        path: str,
        *,
        token: bool = True,
        person: bool = True,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if token and person and self.person:
            request.add_header("X-Mesh-Person", self.person)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                raw, status, kind = resp.read(), resp.status, resp.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            raw, status, kind = exc.read(), exc.code, exc.headers.get_content_type()
        return status, json.loads(raw) if kind == "application/json" else raw.decode()


@dataclass
class Dashboard:
    broker: BrokerProcess
    http: Http

    def login_link(self) -> str:
        """A one-time link, as ``mesh dashboard`` gets it with the typed passphrase."""
        status, login = self.http.call(
            "POST", "/dashboard/v1/login", person=False, body={"passphrase": PASSPHRASE}
        )
        assert status == 200, login
        return str(login["url"])

    def open(self, browser: Any) -> Any:
        """A new page, logged in through a fresh one-time link, showing the first state."""
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors
        page.goto(self.login_link())
        page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
        page.wait_for_selector("#conn.live", timeout=WAIT_MS)
        return page

    def peer(self, name: str, **kwargs: Any) -> SyncClient:
        client = SyncClient(self.broker.settings(), name, **kwargs)
        client.__enter__()
        return client


@pytest.fixture
def dash(broker_proc: BrokerProcess) -> Dashboard:
    """The broker's dashboard, with the person's passphrase set (as ``mesh person init``
    leaves it) and a person session for plain HTTP calls."""
    write_credential(broker_proc.settings(), PASSPHRASE)
    token = (broker_proc.home / "token").read_text().strip()
    http = Http(broker_proc.url, token)
    status, session = http.call("POST", "/v1/person/session", person=False, body={"passphrase": PASSPHRASE})
    assert status == 200, session
    http.person = session["session"]
    return Dashboard(broker_proc, http)


class Peers:
    """``peers("alice", ...)`` connects a real client; ``peers.leave(c)`` disconnects it;
    whoever is still connected leaves at the end of the test."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash
        self.live: list[SyncClient] = []

    def __call__(self, name: str, **kwargs: Any) -> SyncClient:
        client = self.dash.peer(name, **kwargs)
        self.live.append(client)
        return client

    def leave(self, client: SyncClient) -> None:
        self.live.remove(client)
        client.close()


@pytest.fixture
def peers(dash: Dashboard) -> Iterator[Peers]:
    made = Peers(dash)
    yield made
    for client in list(made.live):
        made.leave(client)
