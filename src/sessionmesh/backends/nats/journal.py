"""The state log's records: a commit's operations packed into numbered batches, and
batches read back in the order they were written. Pure: no I/O.

A batch is ``{"n": N, "ops": [op, ...]}``; each op is a JSON array whose first
item names it (`NatsStore` writes and applies them). Batch numbers run on without a
gap for the life of a machine's state stream. JetStream may hold them out of order
or twice (a batch written again after a lost acknowledgement, with the ones after
it), so a reader applies each number once, in order (`Reorder`).
"""

from __future__ import annotations

from typing import Any

from ...codec import loads
from ...errors import MeshError, StorageError

BATCH_BYTES = 256 * 1024  # a batch's ops stop growing past this (NATS's payload limit is 1 MiB)


def pack(ops: list[bytes], first: int) -> list[tuple[int, bytes]]:
    """Encoded ops as batches numbered from ``first`` on, each at most `BATCH_BYTES`
    of ops (one op alone may be larger)."""
    out: list[tuple[int, bytes]] = []
    chunk: list[bytes] = []
    size = 0
    for op in ops:
        if chunk and size + len(op) > BATCH_BYTES:
            out.append(_batch(first + len(out), chunk))
            chunk, size = [], 0
        chunk.append(op)
        size += len(op) + 1
    if chunk:
        out.append(_batch(first + len(out), chunk))
    return out


def _batch(n: int, ops: list[bytes]) -> tuple[int, bytes]:
    return n, b'{"n":%d,"ops":[' % n + b",".join(ops) + b"]}"


def unpack(data: bytes) -> tuple[int, list[list[Any]]]:
    """A batch's number and ops. Raises `StorageError` for what is not a batch."""
    try:
        record = loads(data)
        n, ops = record["n"], record["ops"]
    except (MeshError, KeyError, TypeError) as exc:
        raise StorageError(f"not a state-log batch: {exc}") from None
    if not isinstance(n, int) or not isinstance(ops, list):
        raise StorageError("not a state-log batch: no number or no ops")
    return n, ops


class Reorder:
    """Batches as read from the log in, each number once and in order out.

    ``applied`` is the last number already applied; smaller ones are skipped, and a
    batch that comes before the one it follows waits for it. `rest` gives what still
    waits when the log ends: batches written after one that was never stored
    (never acknowledged either; applying them is what JetStream holds)."""

    def __init__(self, applied: int) -> None:
        self.applied = applied
        self._waiting: dict[int, list[list[Any]]] = {}

    def add(self, n: int, ops: list[list[Any]]) -> list[list[list[Any]]]:
        """The batches that may be applied now, in order (maybe none)."""
        if n <= self.applied:
            return []
        self._waiting[n] = ops
        ready = []
        while self.applied + 1 in self._waiting:
            self.applied += 1
            ready.append(self._waiting.pop(self.applied))
        return ready

    @property
    def waiting(self) -> list[int]:
        """The numbers that wait for one before them, in order."""
        return sorted(self._waiting)

    def rest(self) -> list[list[list[Any]]]:
        """What still waits, in order; afterwards `applied` is the last of them."""
        ready = []
        for n in sorted(self._waiting):
            ready.append(self._waiting.pop(n))
            self.applied = n
        return ready
