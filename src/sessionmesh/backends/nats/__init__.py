"""The NATS backend: a broker's state in JetStream and KV, and routes between machines.

The only package that imports nats-py; every nats error becomes a `MeshError` here.
Modules: `layout` (names), `connection` (the client and the commit writer), `store`
(`NatsStore`), `routing` (`NatsBackend`: links, routes, directory, presence).

What lives where (``ns`` is ``nats_namespace``, ``L`` this machine's label):

- ``ns_state_L`` (stream, one message per subject): the broker's durable state, one
  record per peer, message, receipt, thread and subscription under
  ``ns.state.L.<kind>.<key>``. The broker keeps a working copy in memory and writes
  every changed record here, acknowledged by JetStream, before any peer is told
  (the same group commit as SQLite's); on start it reads the stream back.
- ``ns_audit_L`` (stream): the audit log; an entry's sequence is its stream sequence.
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
  compare-and-set on its revision, so two brokers never both grant overlapping locks.

The NATS client runs on a thread of its own with its own event loop: the store's
methods are synchronous (the core calls them inline), and block on that loop only
for what must be remote (a commit, the lease table, the audit log).
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
