"""How a broker proves who it is to NATS: the nats-py options for each kind of
credential (a sessionmesh credentials file, a JWT creds file, an nkey seed, user and
password, a token) and for TLS. With a sessionmesh credentials file the connection
also takes the machine's own inbox prefix, the only subjects its NATS user may
subscribe to (`cluster.machine_permissions`)."""

from __future__ import annotations

import ssl
from typing import Any

from ...cluster import Credentials, read_credentials
from ...config import Settings
from ...errors import BadRequest
from .layout import Layout, check_label


def credentials_of(settings: Settings) -> Credentials | None:
    """The credentials file ``nats_credentials`` names, checked against the settings:
    `BadRequest` if it is unreadable, readable by others, or made for another
    namespace or another machine label than ``machine``."""
    if not settings.nats_credentials:
        return None
    creds = read_credentials(settings.nats_credentials)
    if creds.namespace != settings.nats_namespace:
        raise BadRequest(
            f"{settings.nats_credentials} is for namespace {creds.namespace!r}, "
            f"but nats_namespace is {settings.nats_namespace!r}",
            hint=f"set nats_namespace = {creds.namespace!r}",
        )
    if settings.machine and creds.machine and creds.machine != settings.machine:
        raise BadRequest(
            f"{settings.nats_credentials} holds machine {creds.machine!r}'s credentials, "
            f"but this broker is machine {settings.machine!r}",
            hint="each machine connects with its own credentials file",
        )
    return creds


def auth_options(settings: Settings, servers: list[str]) -> dict[str, Any]:
    """The nats-py ``connect`` options that authenticate and encrypt. Raises
    `BadRequest` for a bad credentials file or TLS file."""
    s = settings
    opts: dict[str, Any] = {}
    creds = credentials_of(s)
    if creds is not None:
        opts["nkeys_seed_str"] = creds.seed
        if creds.machine is not None:
            layout = Layout(check_label(s.nats_namespace, what="nats_namespace"), creds.machine)
            opts["inbox_prefix"] = layout.inbox_prefix
    if s.nats_creds:
        opts["user_credentials"] = s.nats_creds
    if s.nats_nkey_seed:
        opts["nkeys_seed"] = s.nats_nkey_seed
    if s.nats_user:
        opts["user"] = s.nats_user
        opts["password"] = s.nats_password or ""
    if s.nats_token:
        opts["token"] = s.nats_token
    if s.nats_tls_ca or s.nats_tls_cert or any(u.startswith("tls://") for u in servers):
        try:
            ctx = ssl.create_default_context(cafile=s.nats_tls_ca)
            if s.nats_tls_cert:
                ctx.load_cert_chain(s.nats_tls_cert, s.nats_tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise BadRequest(
                f"cannot load the NATS TLS files: {exc}", hint="check nats_tls_ca/cert/key"
            ) from None
        opts["tls"] = ctx
    return opts
