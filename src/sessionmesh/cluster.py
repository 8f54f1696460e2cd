"""Each machine's own NATS credentials, and the permissions that bind them to its label.

`mesh cluster init --machines a,b,c` writes, into one directory:

- ``auth.conf``: the nats-server ``authorization`` block (include it from the server's
  config). One nkey user per machine, whose subject permissions let it publish only
  as its own label and read only its own streams (`machine_permissions`), and one
  ``admin`` user, unrestricted, that creates the streams and buckets (`setup`).
- ``credentials/<label>.json`` (mode 0600) per machine and ``credentials/admin.json``:
  a small JSON document with the label, the namespace and the nkey seed
  (`Credentials`). A broker takes it with one setting, ``nats_credentials``.

Running it again keeps every existing key and adds the new machines. nats-server
holds only public keys; the seeds never leave the credentials files.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadRequest

KIND = "sessionmesh-nats-credentials"
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Credentials:
    """One NATS identity of a mesh: a machine's (``machine`` set) or the admin's."""

    namespace: str
    seed: str  # an nkey user seed, "SU..."
    machine: str | None = None

    @property
    def label(self) -> str:
        return self.machine or ADMIN

    @property
    def public_key(self) -> str:
        """The nkey public key nats-server knows this identity by ("U...")."""
        import nkeys

        try:
            return str(nkeys.from_seed(bytearray(self.seed.encode())).public_key.decode())
        except Exception as exc:  # nkeys raises its own ErrInvalidSeed and binascii errors
            raise BadRequest(f"the nkey seed of {self.label!r} is not valid: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "namespace": self.namespace, "machine": self.machine, "nkey_seed": self.seed}

    @classmethod
    def from_json(cls, data: Any, *, source: str = "credentials") -> Credentials:
        """Raises `BadRequest` for anything but a credentials document."""
        from .backends.nats.layout import check_label

        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise BadRequest(f"{source} is not a sessionmesh NATS credentials file")
        seed, machine = data.get("nkey_seed"), data.get("machine")
        if not isinstance(seed, str) or not seed.startswith("SU"):
            raise BadRequest(f"{source} holds no nkey user seed")
        creds = cls(
            check_label(data.get("namespace"), what="namespace"),
            seed,
            None if machine is None else check_label(machine),
        )
        creds.public_key  # noqa: B018 - validates the seed
        return creds

    def write(self, path: Path) -> None:
        """Write the file, mode 0600 (`write_private`)."""
        write_private(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, mode 0600 from its first byte (never readable by
    other users, not even while it is written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def new_credentials(namespace: str, machine: str | None) -> Credentials:
    """A fresh nkey for ``machine`` (None: the admin)."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
    return Credentials(namespace, seed, machine)


def read_credentials(path: str | os.PathLike[str]) -> Credentials:
    """The credentials in ``path``. Raises `BadRequest` when the file is missing, is
    not a credentials file, or can be read by other users (it must be 0600)."""
    try:
        info = os.stat(path)
        text = Path(path).read_text()
    except OSError as exc:
        raise BadRequest(f"cannot read the NATS credentials file {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadRequest(
            f"the NATS credentials file {path} can be read by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o})",
            hint=f"chmod 600 {path}",
        )
    try:
        data = json.loads(text)
    except ValueError:
        raise BadRequest(f"{path} is not a sessionmesh NATS credentials file (not JSON)") from None
    return Credentials.from_json(data, source=str(path))


# -- permissions -----------------------------------------------------------------------


def _stream_access(stream: str, *, own: bool) -> list[str]:
    """JetStream API subjects for reading ``stream`` through consumers and direct gets;
    on its own streams a machine may also purge and delete messages. Never create,
    update or delete a stream: whoever makes a stream chooses its subjects, and a
    stream on ``_INBOX.<ns>.<other>.>`` would keep a copy of every reply another
    machine gets (the admin makes them all: `setup`)."""
    api = "$JS.API"
    allowed = [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"{api}.CONSUMER.INFO.{stream}.*",
        f"{api}.CONSUMER.DELETE.{stream}.*",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
        f"{api}.CONSUMER.NAMES.{stream}",
        f"{api}.CONSUMER.LIST.{stream}",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]
    if own:
        allowed += [f"{api}.STREAM.PURGE.{stream}", f"{api}.STREAM.MSG.DELETE.{stream}"]
    return allowed


def machine_permissions(namespace: str, machine: str) -> dict[str, Any]:
    """What machine ``machine``'s NATS user may publish and subscribe to.

    It publishes its own state, audit, snapshots and outgoing route records (``NS.route.<to>.<it>``:
    the subject names the sender, and the receiving broker checks the record against
    it), its own keys of the peers and presence directories, and the shared lease
    table. It reads its own streams, the three shared buckets, and replies on its own
    inbox prefix only: no core subscription to anything else, so another machine's
    traffic is never in reach."""
    from .backends.nats.layout import Layout

    mine = Layout(namespace, machine)
    publish = [
        mine.state_prefix + ">",
        mine.audit_subject,
        mine.route_publish_allowed,
        f"$O.{mine.snapshot_bucket}.>",
        f"$KV.{mine.peers_bucket}.{machine}",
        f"$KV.{mine.peers_bucket}.{machine}.>",
        f"$KV.{mine.presence_bucket}.{machine}",
        f"$KV.{mine.presence_bucket}.{machine}.>",
        f"$KV.{mine.leases_bucket}.>",
        "$JS.API.INFO",
    ]
    for stream in mine.own_streams:
        publish += _stream_access(stream, own=True)
    for bucket in mine.shared_buckets:
        publish += _stream_access(f"KV_{bucket}", own=False)
    return {"publish": {"allow": publish}, "subscribe": {"allow": [mine.inbox_prefix + ".>"]}}


def authorization_block(users: Iterable[Credentials]) -> str:
    """The nats-server ``authorization`` block for these identities: each machine
    bound by `machine_permissions`, the admin unrestricted."""
    lines = ["authorization {", "  users: ["]
    for creds in sorted(users, key=lambda c: (c.machine is None, c.label)):
        entry: dict[str, Any] = {"nkey": creds.public_key}
        if creds.machine is not None:
            entry["permissions"] = machine_permissions(creds.namespace, creds.machine)
        lines.append(f"    # {creds.label}")
        lines.append(json.dumps(entry, indent=2).replace("\n", "\n    ").join(["    ", ","]))
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


# -- the cluster directory -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterFiles:
    """What `init` wrote: the authorization block and each identity's file."""

    directory: Path
    namespace: str
    machines: tuple[str, ...]

    @property
    def auth_conf(self) -> Path:
        return self.directory / "auth.conf"

    def credentials_path(self, label: str) -> Path:
        return self.directory / "credentials" / f"{label}.json"

    def credentials(self, label: str) -> Credentials:
        return read_credentials(self.credentials_path(label))


def parse_machines(text: str | Iterable[str]) -> tuple[str, ...]:
    """``a,b,c`` as labels, checked, in order, without repeats; `BadRequest` if one is
    invalid, is ``admin``, or none is given."""
    from .backends.nats.layout import check_label

    items = text.split(",") if isinstance(text, str) else list(text)
    labels: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        check_label(item)
        if item == ADMIN:
            raise BadRequest("'admin' is the name of the admin's credentials, not a machine label")
        if item not in labels:
            labels.append(item)
    if not labels:
        raise BadRequest("no machine labels given", hint="--machines a,b,c")
    return tuple(labels)


def init(directory: str | os.PathLike[str], machines: Iterable[str], *, namespace: str) -> ClusterFiles:
    """Write (or extend) a cluster directory: a credentials file per machine and for
    the admin, and ``auth.conf`` for all of them. Keys already there are kept, so
    running it again with one more machine adds that machine only. Raises
    `BadRequest` for a bad label, or a directory made for another namespace."""
    from .backends.nats.layout import check_label

    check_label(namespace, what="namespace")
    root = Path(directory)
    wanted = parse_machines(machines)
    files = ClusterFiles(root, namespace, ())
    known: dict[str, Credentials] = {}
    cred_dir = root / "credentials"
    existing = sorted(cred_dir.glob("*.json")) if cred_dir.is_dir() else []
    for path in existing:
        creds = read_credentials(path)
        if creds.namespace != namespace:
            raise BadRequest(
                f"{root} holds credentials for namespace {creds.namespace!r}, not {namespace!r}",
                hint="use another --dir, or the same --nats-namespace",
            )
        known[creds.label] = creds
    for label in [ADMIN, *wanted]:
        if label not in known:
            known[label] = new_credentials(namespace, None if label == ADMIN else label)
    block = authorization_block(known.values())  # every seed checked before anything is written
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    for label, creds in known.items():
        path = files.credentials_path(label)
        if not path.exists():
            creds.write(path)
    tmp = files.auth_conf.with_name("auth.conf.tmp")
    tmp.write_text(
        "# nats-server authorization for sessionmesh, written by `mesh cluster init`.\n"
        "# Include it from the server's config: include auth.conf\n" + block
    )
    os.replace(tmp, files.auth_conf)
    machines_all = tuple(sorted(label for label in known if label != ADMIN))
    return ClusterFiles(root, namespace, machines_all)


def setup(settings: Any, machines: Iterable[str]) -> None:
    """Create every stream and bucket of these machines on the cluster, connected as
    the admin (``settings`` carries the admin's credentials and the cluster's URL).
    Machines' own credentials may not create or change another's streams; creating
    them all first leaves none for a machine to shape. Raises `Unavailable` when NATS
    cannot be reached, `StorageError` when a stream cannot be created."""
    from .backends.nats.connection import NatsConnection
    from .backends.nats.layout import Layout, check_label
    from .backends.nats.store import ensure_layout

    namespace = check_label(settings.nats_namespace, what="nats_namespace")
    conn = NatsConnection(settings).open()
    try:
        for machine in parse_machines(machines):
            conn.call(
                ensure_layout(conn, Layout(namespace, machine), settings.nats_replicas),
                timeout=max(conn.timeout, 30.0),
                doing=f"creating the streams of machine {machine}",
            )
    finally:
        conn.close()


__all__ = [
    "Credentials",
    "ClusterFiles",
    "authorization_block",
    "init",
    "machine_permissions",
    "new_credentials",
    "parse_machines",
    "read_credentials",
    "setup",
]
