"""The NATS backend: a broker's state in JetStream and KV, and routes between machines.

The only package that imports nats-py; every nats error becomes a `MeshError` here.
Modules: `layout` (names), `connection` (the clients and the commit writer),
`journal` (the state log's batches, pure), `store` (`NatsStore`), `snapshot` (the
state's snapshots in an object store), `compaction` (snapshot, then purge the log),
`leases` (the shared lease table), `legacy` (taking over a state stream of the older
per-record format), `auth` (a machine's credentials), `routing` (`NatsBackend`:
links, routes, directory, presence).

What lives where (``ns`` is ``nats_namespace``, ``L`` this machine's label):

- ``ns_state_L`` (stream): the machine's **state log**. Each commit is written as
  numbered batches of operations (`journal`), and nothing is answered before
  JetStream acknowledged them (group commit). The audit entries travel in the same
  batches. The broker's working state is a SQLite file under ``$MESH_HOME``
  (`NatsStore`: the one-machine store's queries and indexes, so memory is bounded by
  what is live, not by history); the file records how far into the log it is, so a
  start reads only the batches after it, and a lost file is rebuilt from the newest
  snapshot and the log after it. Once the log past the last snapshot has grown
  enough, a new snapshot is written and the batches it holds are purged
  (`compaction`).
- ``OBJ_ns_snap_L`` (object store ``ns_snap_L``): the newest snapshot of the
  machine's state (its SQLite cache, compressed), one object ``state``.
- ``ns_audit_L`` (stream): still created, no longer written (the audit is in the log).
- ``ns_route_L`` (stream, work queue, per-message TTL): what other brokers hand this
  one: messages for its peers, and the receipts and answers that come back, under
  ``ns.to.L.<sender>``. The subject names the sending machine, whose NATS user may
  publish under its own label only (`cluster.machine_permissions`); a record that
  claims another is refused. Each broker reads its stream with a durable consumer.
- KV ``ns_peers``: every machine's peers (no secrets) and the topics each subscribes
  to, key ``L.<name>``.
- KV ``ns_presence``: who is online where, key ``L.<name>``; entries age out, so a
  broker that dies takes its peers offline with it.
- KV ``ns_leases``: the one lease table of the whole mesh, written only by a
  compare-and-set on its revision, so two brokers never both grant overlapping locks;
  each broker watches it.

Two NATS clients: the hot path (commits, routes, directory, presence) runs on the
broker's own event loop; the store's synchronous reads that must be remote (the
lease table's compare-and-set, a start's catch-up) block on a second client's thread.
"""

from .connection import NatsConnection
from .layout import Layout, check_label, default_machine, layout_of, token, untoken
from .routing import NatsBackend
from .store import NatsStore, open_store

__all__ = [
    "NatsBackend",
    "NatsConnection",
    "NatsStore",
    "Layout",
    "layout_of",
    "open_store",
    "token",
    "untoken",
    "check_label",
    "default_machine",
]
