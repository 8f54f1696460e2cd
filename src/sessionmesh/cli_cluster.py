"""The commands of a mesh across machines: `mesh hub`, `mesh join-hub`, `mesh cluster
init|setup`. Parsing only; `hub` and `cluster` do the work, imported when a command
runs (a hook's `mesh` call never pays for them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from .config import load

    return load(overrides={"home": args.home, "url": args.url, **extra})


def cmd_hub(args: argparse.Namespace) -> int:
    from . import hub

    return hub.cmd_hub(args, _settings(args, machine=args.machine, nats_namespace=args.nats_namespace))


def cmd_join_hub(args: argparse.Namespace) -> int:
    from . import hub

    return hub.cmd_join_hub(args, _settings(args))


def cmd_cluster(args: argparse.Namespace) -> int:
    from . import hub

    nats = {k: getattr(args, k, None) for k in ("nats_url", "nats_namespace", "nats_replicas", "nats_tls_ca")}
    return hub.cmd_cluster(args, _settings(args, **nats))


def register(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add the commands to `mesh`'s parser (``add`` is `cli.build_parser`'s)."""
    p = add(
        "hub",
        cmd_hub,
        "run a NATS hub for a mesh across machines; prints the command each other machine joins with",
        [common],
    )
    p.add_argument(
        "--machines", help="labels of the machines that will join, comma-separated (kept across runs)"
    )
    p.add_argument("--machine", help="this machine's label (default: the machine setting, else the hostname)")
    p.add_argument("--port", type=int, default=4222, help="client port (default 4222; 0 picks a free one)")
    p.add_argument("--listen", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument(
        "--advertise",
        action="append",
        metavar="HOST",
        help="name or address other machines reach the hub by (repeatable; default: this host's address)",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="no TLS: only on a private network such as Tailscale or WireGuard",
    )
    p.add_argument("--nats-namespace", help="prefix of every stream, bucket and subject (default mesh)")
    p = add("join-hub", cmd_join_hub, "join a mesh hub: the command mesh hub printed", [common])
    p.add_argument("ticket", help="the ticket mesh hub printed (mesh1-...)")
    p = add("cluster", cmd_cluster, "per-machine NATS credentials for your own NATS cluster", [common])
    p.add_argument(
        "cluster_command", choices=["init", "setup"], help="init: write them; setup: create the streams"
    )
    p.add_argument("--machines", help="init: machine labels, comma-separated (a,b,c)")
    p.add_argument("--dir", help="where the files go (default: $MESH_HOME/cluster)")
    p.add_argument("--nats-namespace", help="prefix of every stream, bucket and subject (default mesh)")
    p.add_argument("--nats-url", help="setup: the cluster's server(s), comma-separated")
    p.add_argument("--nats-replicas", type=int, help="setup: replicas of each stream (3 on three nodes)")
    p.add_argument("--nats-tls-ca", help="setup: CA file to verify the servers")
