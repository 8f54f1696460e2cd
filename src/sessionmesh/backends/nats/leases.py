"""The lease table of the whole mesh, in one KV key: read by every broker, written
only by a compare-and-set on the revision it was read at, so two brokers never both
grant overlapping locks. Holders on this machine are plain names; holders elsewhere
are ``LABEL:name``."""

from __future__ import annotations

import logging
from typing import Any

from ...codec import dumps_bytes, loads
from ...core.locks import Lease
from ...errors import Contention, StorageError, Unavailable
from .connection import NatsConnection
from .layout import Layout

log = logging.getLogger("sessionmesh.nats")
LEASE_READ_TIMEOUT = 1.0  # the tick reads the lease table: it must not stall the broker long


class SharedLeases:
    """The lease methods of a `Store`, over the mesh's KV lease table.

    `leases` reads the table (or, when NATS is gone or slow, keeps the one last
    read), and `put_lease` writes it by compare-and-set on the revision `leases`
    saw, raising `Contention` when another broker wrote in between."""

    _conn: NatsConnection
    layout: Layout

    def _init_leases(self) -> None:
        self._lease_rev: int | None = None
        self._lease_rows: list[dict[str, Any]] = []
        # the table as a KV watch on the broker's loop last delivered it (None: no
        # watch): `leases` then reads no NATS, unless a write just met `Contention`
        self._lease_live: tuple[list[dict[str, Any]], int] | None = None
        self._lease_stale = False

    def lease_table_seen(self, data: bytes | None, rev: int) -> None:
        """The lease table at revision ``rev``, from the backend's KV watch (on the
        broker's loop, as every store call)."""
        if self._lease_live is None or rev > self._lease_live[1]:
            self._lease_live = (loads(data)["leases"] if data else [], rev)

    def _qualify(self, holder: str) -> str:
        return holder if ":" in holder else f"{self.layout.machine}:{holder}"

    def _local(self, holder: str) -> str:
        mine = self.layout.machine + ":"
        return holder[len(mine) :] if holder.startswith(mine) else holder

    def _read_leases(self) -> None:
        data, rev = self._conn.call(
            self._conn.kv_get(self.layout.leases_bucket, "table"),
            timeout=LEASE_READ_TIMEOUT,
            doing="reading the lease table",
        )
        self._lease_rows = loads(data)["leases"] if data else []
        self._lease_rev = rev
        self._lease_stale = False
        if self._lease_live is not None:
            self.lease_table_seen(data, rev)

    def _refresh_leases(self) -> None:
        """The table as the watch last saw it, else read; when NATS is gone or slow,
        the one last read. A stale table is safe: every write is a compare-and-set on
        the revision it was read at, and after a refused one the table is read."""
        if self._lease_live is not None and not self._lease_stale:
            self._lease_rows, self._lease_rev = self._lease_live
            return
        try:
            self._read_leases()
        except (Unavailable, StorageError) as exc:
            log.debug("nats: the lease table as last read (%s)", exc)

    def _write_leases(self, rows: list[dict[str, Any]]) -> None:
        """Compare-and-set the table against the revision last read; `Contention` if
        another broker wrote since (the cached table is then dropped)."""
        if self._lease_rev is None:
            self._read_leases()
        try:
            rev = self._conn.call(
                self._conn.kv_put(
                    self.layout.leases_bucket, "table", dumps_bytes({"leases": rows}), last=self._lease_rev
                ),
                doing="writing the lease table",
            )
        except Contention:
            self._lease_rev = None
            self._lease_stale = True
            raise
        self._lease_rows, self._lease_rev = rows, rev
        if self._lease_live is not None and rev > self._lease_live[1]:
            self._lease_live = (rows, rev)

    def leases(self) -> list[Lease]:
        self._refresh_leases()
        found = [
            Lease(
                r["resource"],
                self._local(r["holder"]),
                r["exclusive"],
                r["reason"],
                r["acquired_at"],
                r["expires_at"],
            )
            for r in self._lease_rows
        ]
        return sorted(found, key=lambda lease: (lease.acquired_at, lease.resource))

    def put_lease(self, lease: Lease) -> None:
        """Raises `Contention` if the table changed since `leases` read it."""
        holder = self._qualify(lease.holder)
        row = {**lease.to_wire(), "holder": holder}
        rows = [r for r in self._lease_rows if (r["resource"], r["holder"]) != (lease.resource, holder)]
        self._write_leases([*rows, row])

    def delete_lease(self, resource: str, holder: str) -> None:
        holder = self._qualify(holder)
        for _ in range(50):
            self._read_leases()
            rows = [r for r in self._lease_rows if (r["resource"], r["holder"]) != (resource, holder)]
            if len(rows) == len(self._lease_rows):
                return
            try:
                self._write_leases(rows)
                return
            except Contention:
                continue
        raise Contention(f"could not release {resource!r}: the lease table keeps changing")
