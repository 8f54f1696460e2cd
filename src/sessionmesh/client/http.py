"""One-shot calls over the HTTP JSON API, standard library only (fast to start).

The CLI's send/inbox/peers/track/locks... each make one or two requests here
(`plainhttp`, one connection each); they never claim the name's live session, so they
work beside a running ``mesh watch``.
"""

from __future__ import annotations

from ..config import Settings
from ..errors import BadFrame, BadSecret, MeshError, Timeout, Unavailable, UnknownPeer, from_wire
from ..ids import is_person_name
from ..plainjson import dumps, loads
from ..quiet import default_name
from . import discovery
from .plainhttp import Endpoint

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a one-shot command imports this)
if TYPE_CHECKING:
    from typing import Any


class OneShot:
    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or settings.name or default_name()
        self.address = discovery.locate(settings)
        self.endpoint = Endpoint(self.address.url)
        self._person: str | None = None

    def _post(
        self, path: str, args: dict[str, Any], headers: dict[str, str], timeout: float
    ) -> dict[str, Any]:
        try:
            body = dumps(args).encode()
        except (TypeError, ValueError) as exc:  # NaN or an infinity (--ttl nan), a lone surrogate
            raise BadFrame(f"cannot send this as JSON: {exc}") from None
        headers = {
            "Authorization": f"Bearer {self.address.token}",
            "Content-Type": "application/json",
            **headers,
        }
        try:
            status, data = self.endpoint.request("POST", path, body, headers, timeout)
        except TimeoutError:
            raise Timeout(f"the broker did not answer {path} in {timeout:g}s") from None
        except (OSError, ValueError) as exc:
            raise Unavailable(f"cannot reach the broker at {self.address.url}: {exc}") from None
        try:
            payload = loads(data) if data else {}
        except ValueError:
            raise Unavailable(f"the broker answered {path} with something that is not JSON") from None
        if status != 200:
            raise from_wire(payload.get("error") or {"message": f"HTTP {status}"})
        return payload

    def _secret(self, *, register: bool = True) -> str | None:
        secret = discovery.load_secret(self.settings, self.name)
        if secret is None and not register:
            raise UnknownPeer(
                f"{self.name!r} has not joined from here",
                hint=f"act as a name you use (--as NAME), or register this one: mesh join {self.name}",
            )
        if secret is None:
            joined = self._post(
                "/v1/join",
                {"name": self.name, "meta": discovery.peer_meta("cli")},
                {},
                self.settings.request_timeout,
            )
            secret = joined.get("secret")
            if secret:
                discovery.save_secret(self.settings, self.name, secret)
        if secret is None:
            raise BadSecret(
                f"the name {self.name!r} is held, and no secret for it is saved here",
                hint=f"pick another name (--as) or copy its secret into {self.settings.secrets_dir}",
            )
        return secret

    def person_session(self) -> str:
        """A person session, for the passphrase the person types on this terminal
        (`sessionmesh.person.ask`); asked once per command."""
        if self._person is None:
            from ..person import ask

            passphrase = ask(f"the person's passphrase (to act as {self.name!r}): ")
            login = self._post(
                "/v1/person/session", {"passphrase": passphrase}, {}, self.settings.request_timeout
            )
            self._person = str(login["session"])
        return self._person

    def dashboard_login(self, passphrase: str) -> dict[str, Any]:
        """A one-time dashboard login link for the person's passphrase:
        ``{"code", "url", "ttl"}``."""
        return self._post(
            "/dashboard/v1/login", {"passphrase": passphrase}, {}, self.settings.request_timeout
        )

    def call(
        self, op: str, *, answer_timeout: float | None = None, register: bool = True, **args: Any
    ) -> dict[str, Any]:
        """Run one broker op as this peer; raises the broker's `MeshError`. As the
        person (``human``), the person is asked for their passphrase first. Without
        ``register``, a name with no secret saved here is an error, not a new peer
        (read-only commands register no one).

        ``answer_timeout`` bounds the wait for the HTTP answer (default: request_timeout).
        """
        if is_person_name(self.name):
            headers = {"X-Mesh-Name": self.name, "X-Mesh-Person": self.person_session()}
        else:
            headers = {"X-Mesh-Name": self.name, "X-Mesh-Secret": self._secret(register=register) or ""}
        return self._post(f"/v1/{op}", args, headers, answer_timeout or self.settings.request_timeout)

    def observe(self, op: str, **args: Any) -> dict[str, Any]:
        """A read-only op (``peers``, ``locks``, ``log``) as an observer: no name."""
        return self._post(f"/v1/{op}", args, {}, self.settings.request_timeout)

    def join(self) -> bool:
        """Register this name (its secret is saved here); False if it already was."""
        had = discovery.load_secret(self.settings, self.name) is not None
        self._secret()
        return not had

    def shutdown(self) -> dict[str, Any]:
        """Ask the broker to stop gracefully (needs only the broker token)."""
        return self._post("/v1/shutdown", {}, {}, self.settings.request_timeout)

    def close(self) -> None:
        """Nothing stays open between requests (kept for callers that close)."""


__all__ = ["OneShot", "MeshError"]
