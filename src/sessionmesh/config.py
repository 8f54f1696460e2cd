"""Settings: defaults < ``$MESH_HOME/config.toml`` < ``MESH_*`` environment < flags.

Read once into a frozen `Settings` and passed down; nothing else reads the
environment or the working directory behind the caller's back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import BadRequest
from .quiet import default_home
from .record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PORT = 9474


@record
class Settings:
    """Every setting (a named tuple, not a dataclass: a hook imports this on every tool
    call, and ``dataclasses`` would cost it 8 ms of imports)."""

    home: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    url: str | None = None  # explicit broker address (MESH_URL); wins over broker.json
    name: str | None = None  # MESH_NAME
    token: str | None = None  # MESH_TOKEN; else read from $MESH_HOME/token
    autostart: bool = True
    max_body_bytes: int = 256 * 1024
    default_ttl: float = 7 * 24 * 3600.0
    receive_timeout: float = 2.0  # how long a send waits for a live recipient's receipt
    away_window: float = 300.0
    idle_timeout: float = 600.0  # an auto-started broker exits after this long with no peers
    lock_ttl: float = 600.0
    rate_limit: float = 2000.0  # sends per second per peer (burst: twice that)
    audit_bodies: bool = False
    sqlite_synchronous: str = "NORMAL"
    request_timeout: float = 10.0  # client side: how long to wait for any answer
    hold_patterns: tuple[str, ...] = ()  # RE2 patterns held on top of core.safety's parsed checks
    secret_action: str = "refuse"  # refuse | redact | allow (a SecretAction)
    # inbound policies the person sets (core/policy.py); "*" names every recipient
    inbound: tuple[str, ...] = ()  # rules RECIPIENT=POLICY or RECIPIENT<SENDER=POLICY: accept, hold, refuse
    # -- waking idle agents (core/wakes.py) ----------------------------------------------
    wake_window: float = 1.0  # a burst of mail within this many seconds is one wake
    wake_budget: int = 6  # wakes per agent per wake_budget_window; over it, mail waits
    wake_budget_window: float = 60.0
    # -- many machines (SPEC §8): the broker on a NATS cluster ------------------------
    backend: str = "sqlite"  # "sqlite" (one machine) or "nats"
    nats_url: str = "nats://127.0.0.1:4222"  # comma-separated server list
    machine: str | None = None  # this machine's label (peers elsewhere see LABEL:name)
    nats_namespace: str = "mesh"  # prefix of every stream, bucket and subject
    nats_replicas: int = 1  # stream and bucket replicas (3 on a three-node cluster)
    nats_domain: str | None = None  # JetStream domain of the streams (a leaf node's hub)
    nats_credentials: str | None = None  # this machine's own file: mesh cluster init, mesh hub
    nats_creds: str | None = None  # credentials file (JWT + nkey seed)
    nats_nkey_seed: str | None = None  # nkey seed file
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    nats_timeout: float = 10.0  # how long a NATS call may take before the store gives up
    # -- compaction of the state log (backends/nats/compaction.py) ----------------------
    nats_compact_batches: int = (
        100_000  # batches in the state log past the last snapshot that start a new one
    )
    nats_compact_bytes: int = (
        64 * 1024 * 1024
    )  # bytes in the state log past the last snapshot that start a new one

    @property
    def max_frame_bytes(self) -> int:
        """The largest WebSocket frame or HTTP body read at all: room for a body at the
        limit even when JSON escaping inflates it, so an oversize body gets a
        `too_large` answer instead of a dropped connection."""
        return self.max_body_bytes * 6 + 64 * 1024

    @property
    def db_path(self) -> str:
        return os.path.join(self.home, "mesh.db")

    @property
    def token_path(self) -> str:
        return os.path.join(self.home, "token")

    @property
    def broker_file(self) -> str:
        return os.path.join(self.home, "broker.json")

    @property
    def secrets_dir(self) -> str:
        return os.path.join(self.home, "secrets")

    def with_(self, **changes: Any) -> Settings:
        return self._replace(**{k: v for k, v in changes.items() if v is not None})


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _check_inbound(rules: tuple[str, ...]) -> None:
    from .core.policy import parse_rule
    from .errors import MeshError

    for rule in rules:
        try:
            parse_rule(rule)
        except (ValueError, MeshError) as exc:
            raise BadRequest(
                f"setting inbound: {exc}", hint='rules look like "reviewer=hold" or "*<mallory=refuse"'
            ) from None


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    try:
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _BOOL_TRUE:
                return True
            if text in _BOOL_FALSE:
                return False
            raise ValueError(raw)
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind.startswith("tuple"):
            # a TOML list, or from the environment a JSON list or one bare value
            if isinstance(raw, str):
                import json

                raw = json.loads(raw) if raw.lstrip().startswith("[") else [raw]
            if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
                raise ValueError(raw)
            return tuple(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"setting {name}={raw!r} is not a valid {kind}") from None


def load(*, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings from every layer; raises `BadRequest` for an invalid value."""
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    home = overrides.get("home") or env.get("MESH_HOME") or default_home(env)
    home = os.path.abspath(os.path.expanduser(str(home)))
    layers: dict[str, Any] = {}
    config_file = os.path.join(home, "config.toml")
    if os.path.exists(config_file):
        import tomllib

        with open(config_file, "rb") as fh:
            try:
                layers.update(tomllib.load(fh))
            except tomllib.TOMLDecodeError as exc:
                raise BadRequest(f"{config_file}: {exc}") from None
    for field_name in Settings._fields:
        value = env.get("MESH_" + field_name.upper())
        if value is not None and value != "":
            layers[field_name] = value
    layers.update(overrides)
    layers["home"] = home
    known = dict(Settings.__annotations__)  # each field's type, as its source text
    unknown = set(layers) - set(known)
    if unknown:
        raise BadRequest(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values = {}
    for key, raw in layers.items():
        kind = known[key].replace(" | None", "")
        values[key] = raw if key == "home" else _coerce(key, kind, raw)
    settings = Settings(**values)
    _validate(settings)
    return settings


SECRET_ACTIONS = ("refuse", "redact", "allow")  # core.safety.SecretAction's values (a test checks)


def _validate(settings: Settings) -> None:
    if settings.secret_action not in SECRET_ACTIONS:
        raise BadRequest(
            f"setting secret_action={settings.secret_action!r} must be one of: " + ", ".join(SECRET_ACTIONS)
        )
    if settings.sqlite_synchronous.upper() not in ("NORMAL", "FULL"):
        raise BadRequest(
            f"setting sqlite_synchronous={settings.sqlite_synchronous!r} must be NORMAL or FULL",
            hint="FULL syncs every commit to disk; NORMAL (the default) may lose the last commits on a power cut",
        )
    if settings.nats_compact_batches < 0 or settings.nats_compact_bytes < 0:
        raise BadRequest("settings nats_compact_batches and nats_compact_bytes must be 0 (never) or more")
    if settings.inbound:  # policy imports the envelope: a hook loading the defaults need not
        _check_inbound(settings.inbound)
    if not settings.hold_patterns:
        return  # screening (RE2, the parsers) is imported only to check patterns there are
    from .core.safety import BadPattern, check_patterns

    try:
        check_patterns(settings.hold_patterns)
    except BadPattern as exc:
        raise BadRequest(
            f"setting hold_patterns: {exc.pattern!r} is not a valid pattern: {exc}",
            hint="patterns are RE2 syntax (no lookaround or backreferences)",
        ) from None
