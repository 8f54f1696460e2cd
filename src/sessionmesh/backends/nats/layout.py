"""The names of one mesh on NATS: machine labels, subject tokens, and the streams,
subjects and buckets each machine uses (`Layout`). Pure: no I/O."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any

from ...config import Settings
from ...errors import BadRequest

LABEL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
PRESENCE_TTL = 30.0  # a presence entry not refreshed for this long is gone (the bucket's max age)


def check_label(label: Any, *, what: str = "machine label") -> str:
    """A valid machine label or namespace, else `BadRequest`."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise BadRequest(
            f"invalid {what} {label!r}", hint="1-32 chars of a-z 0-9 _ -, starting with a letter or digit"
        )
    return label


def default_machine() -> str:
    """This host's name as a label: the first part, lower-cased, other chars as '-'."""
    host = socket.gethostname().split(".", 1)[0].lower()
    label = re.sub(r"[^a-z0-9_-]", "-", host).strip("-_")[:32]
    return label or "machine"


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def token(text: str) -> str:
    """``text`` as one subject token and KV key part: a-z 0-9 - kept, every other
    byte as ``_xx`` (so ``#``, ``.``, ``:`` and ``_`` never clash)."""
    if all(c in _SAFE for c in text):
        return text
    return "".join(c if c in _SAFE else "".join(f"_{b:02x}" for b in c.encode()) for c in text)


def untoken(tok: str) -> str:
    """The inverse of `token`."""
    if "_" not in tok:
        return tok
    out = bytearray()
    i = 0
    while i < len(tok):
        if tok[i] == "_":
            out.append(int(tok[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(tok[i].encode())
            i += 1
    return out.decode()


@dataclass(frozen=True, slots=True)
class Layout:
    """The names of every stream, subject and bucket of one mesh, seen from one machine."""

    namespace: str
    machine: str

    @property
    def state_stream(self) -> str:
        return f"{self.namespace}_state_{self.machine}"

    @property
    def state_prefix(self) -> str:
        return f"{self.namespace}.state.{self.machine}."

    def state_log_subject(self, batch: int) -> str:
        """Where batch ``batch`` of the state log goes (`journal`): a subject of its
        own, so a batch written again replaces its first copy."""
        return f"{self.state_prefix}log.{batch}"

    @property
    def state_log_filter(self) -> str:
        """Every batch of the state log."""
        return f"{self.state_prefix}log.>"

    @property
    def snapshot_bucket(self) -> str:
        """The object store holding the newest snapshot of the state log (`snapshot`)."""
        return f"{self.namespace}_snap_{self.machine}"

    @property
    def snapshot_stream(self) -> str:
        """The stream behind `snapshot_bucket` (JetStream names it ``OBJ_<bucket>``)."""
        return f"OBJ_{self.snapshot_bucket}"

    @property
    def audit_stream(self) -> str:
        return f"{self.namespace}_audit_{self.machine}"

    @property
    def audit_subject(self) -> str:
        return f"{self.namespace}.audit.{self.machine}"

    @property
    def route_stream(self) -> str:
        """This machine's incoming routes: what other brokers hand it."""
        return f"{self.namespace}_route_{self.machine}"

    @property
    def route_filter(self) -> str:
        """Every subject of `route_stream` (``ns.to.<this>.<sender>``)."""
        return f"{self.namespace}.to.{self.machine}.*"

    def route_subject(self, machine: str) -> str:
        """Where this machine publishes a record for ``machine``: the subject names the
        sender, and a machine's NATS user may publish only under its own label
        (`route_publish_allowed`), so the receiver knows who sent it."""
        return f"{self.namespace}.to.{machine}.{self.machine}"

    @property
    def route_publish_allowed(self) -> str:
        """The route subjects this machine's credentials may publish to."""
        return f"{self.namespace}.to.*.{self.machine}"

    def route_sender(self, subject: str) -> str | None:
        """The sending machine a route subject names (None if it is not one of ours)."""
        prefix = f"{self.namespace}.to.{self.machine}."
        sender = subject[len(prefix) :] if subject.startswith(prefix) else ""
        return sender if LABEL_RE.fullmatch(sender) else None

    @property
    def own_streams(self) -> tuple[str, ...]:
        """The streams only this machine writes and reads."""
        return (self.state_stream, self.audit_stream, self.route_stream, self.snapshot_stream)

    @property
    def shared_buckets(self) -> tuple[str, ...]:
        """The KV buckets every machine reads (and writes under its own keys, the lease
        table as a whole). A new stream or bucket goes in this or `own_streams`:
        `cluster.machine_permissions` grants access to what these two name, no more."""
        return (self.peers_bucket, self.presence_bucket, self.leases_bucket)

    @property
    def inbox_prefix(self) -> str:
        """Reply subjects of this machine's connection (its credentials may subscribe
        under this prefix only, so no machine sees another's replies)."""
        return f"_INBOX.{self.namespace}.{self.machine}"

    @property
    def peers_bucket(self) -> str:
        return f"{self.namespace}_peers"

    @property
    def presence_bucket(self) -> str:
        return f"{self.namespace}_presence"

    @property
    def leases_bucket(self) -> str:
        return f"{self.namespace}_leases"


def layout_of(settings: Settings) -> Layout:
    """This broker's layout: its label is ``machine``, else the one its credentials
    file names, else the host's name. Raises `BadRequest` for a bad label or a
    credentials file that does not fit (`auth.credentials_of`)."""
    machine = settings.machine
    if settings.nats_credentials:
        from .auth import credentials_of

        creds = credentials_of(settings)
        machine = machine or (creds.machine if creds else None)
    return Layout(
        check_label(settings.nats_namespace, what="nats_namespace"), check_label(machine or default_machine())
    )
