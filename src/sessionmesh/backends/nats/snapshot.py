"""Snapshots of a machine's state in JetStream: its SQLite cache, copied consistently
and compressed, as the one object ``state`` of the machine's object store
(`Layout.snapshot_bucket`). The object's headers name the state log it belongs to
and the last batch it holds with that batch's stream sequence: a start with no
usable cache restores the snapshot and reads only the log after that sequence.

An object's meta record is written after its last chunk and replaces the previous
one in one step, so a snapshot is there whole or not at all, and the one it
replaces stays readable until then. Chunks of an upload that never finished (the
broker died) belong to no object; `sweep` removes them before the next upload.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zlib
from dataclasses import dataclass
from typing import Any

import nats.js.errors
from nats.js import api
from nats.js.object_store import ObjectStore

from ...errors import StorageError
from .layout import Layout

OBJECT = "state"
FORMAT = "sqlite+zlib/1"  # a SQLite file, zlib-compressed
CHUNK_BYTES = 256 * 1024  # object chunks (NATS's payload limit is 1 MiB)
_READ_BYTES = 1024 * 1024  # what the compressor reads from the file at a time
_NO_MESSAGE = 10037  # JetStream's error code for "no message found" (a 404 like "no such stream")
CHUNK_TIMEOUT = 30.0  # a restore gives up when no chunk arrives for this long
_LEVEL = 1  # zlib's fastest level: the pages are JSON text, most of the gain is there at once


@dataclass(frozen=True, slots=True)
class Head:
    """What a stored snapshot covers."""

    batch: int  # the last state-log batch it holds (every one before it too)
    seq: int  # that batch's sequence in the state stream: the log after it is the tail
    stream: str  # the state log it belongs to (``name@created``, as the cache records it)
    size: int  # bytes stored in JetStream (compressed)
    raw_size: int  # bytes of the SQLite file
    nuid: str  # the object's chunk subject token


# Each function takes nats-py's JetStream context (``NatsConnection.js``).


def _header(headers: dict[str, Any], key: str) -> str:
    """A header's value (the Go clients write each as a list of strings)."""
    value = headers.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str):
        raise StorageError(f"the state snapshot has no {key} header")
    return value


def _bucket(js: Any, layout: Layout) -> ObjectStore:
    return ObjectStore(name=layout.snapshot_bucket, stream=layout.snapshot_stream, js=js)


async def read_head(js: Any, layout: Layout) -> Head | None:
    """The stored snapshot's head, or None when there is none. Raises `StorageError`
    for an object this version cannot read, and what the read raises for anything
    but "no such message": a stream not found (as a cluster may answer while it
    elects leaders) must not pass for "no snapshot", or a start would read a
    compacted log as if it were whole."""
    name = base64.urlsafe_b64encode(OBJECT.encode()).decode()
    try:
        msg = await js.get_last_msg(layout.snapshot_stream, f"$O.{layout.snapshot_bucket}.M.{name}")
    except nats.js.errors.NotFoundError as exc:
        if exc.err_code == _NO_MESSAGE:
            return None
        raise
    try:
        info = api.ObjectInfo.from_response(json.loads(msg.data))
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageError(f"the state snapshot's meta record is not readable: {exc}") from None
    if info.deleted:
        return None
    headers = info.headers or {}
    if _header(headers, "Mesh-Format") != FORMAT:
        raise StorageError(f"the state snapshot is in a format this version does not know: {headers}")
    try:
        return Head(
            batch=int(_header(headers, "Mesh-Batch")),
            seq=int(_header(headers, "Mesh-Seq")),
            stream=_header(headers, "Mesh-Stream"),
            size=int(info.size or 0),
            raw_size=int(_header(headers, "Mesh-Raw-Size")),
            nuid=info.nuid,
        )
    except ValueError:
        raise StorageError(f"the state snapshot's headers are not numbers: {headers}") from None


async def write(js: Any, layout: Layout, path: str, *, batch: int, seq: int, stream: str) -> Head:
    """Store the SQLite file at ``path`` as the snapshot holding every batch up to
    ``batch`` (at ``seq``) of ``stream``; it replaces the previous one only once its
    last chunk is stored. Raises what the writes raise."""
    raw_size = os.path.getsize(path)
    headers = {
        "Mesh-Format": [FORMAT],
        "Mesh-Batch": [str(batch)],
        "Mesh-Seq": [str(seq)],
        "Mesh-Stream": [stream],
        "Mesh-Raw-Size": [str(raw_size)],
    }
    meta = api.ObjectMeta(
        name=OBJECT,
        description=f"sessionmesh state of machine {layout.machine} up to batch {batch}",
        headers=headers,
        options=api.ObjectMetaOptions(max_chunk_size=CHUNK_BYTES),
    )
    with open(path, "rb") as fh:
        info = await _bucket(js, layout).put(OBJECT, _Deflating(fh), meta=meta)  # type: ignore[arg-type]
    return Head(batch, seq, stream, int(info.size or 0), raw_size, info.nuid)


async def fetch(js: Any, layout: Layout, head: Head, dest: str) -> None:
    """Write the snapshot ``head`` names, decompressed, to ``dest``. Raises
    `StorageError` when what arrives is not that snapshot whole (its digest and its
    size are checked). The chunks are read by an ordered consumer bound to the
    object store's stream by name (a machine's credentials may not look streams up)."""
    info = await _bucket(js, layout).get_info(OBJECT)
    if info.nuid != head.nuid:
        raise StorageError("the state snapshot was replaced before it was read; start again")
    sub = await js.subscribe(
        f"$O.{layout.snapshot_bucket}.C.{info.nuid}", stream=layout.snapshot_stream, ordered_consumer=True
    )
    digest = hashlib.sha256()
    try:
        with open(dest, "wb") as fh:
            sink = _Inflating(fh)
            for _ in range(int(info.chunks or 0)):
                msg = await sub.next_msg(timeout=CHUNK_TIMEOUT)
                digest.update(msg.data)
                sink.write(msg.data)
            sink.finish()
            written = fh.tell()
    finally:
        await sub.unsubscribe()
    want = (info.digest or "").partition("=")[2]
    if base64.urlsafe_b64decode(want + "=" * (-len(want) % 4)) != digest.digest():
        raise StorageError("the state snapshot's chunks do not match its digest")
    if written != head.raw_size:
        raise StorageError(f"the state snapshot is {written} bytes unpacked, its head says {head.raw_size}")


async def sweep(js: Any, layout: Layout) -> int:
    """Purge the chunks no snapshot owns (an upload cut short); returns how many
    subjects were purged."""
    head = await read_head(js, layout)
    keep = f"$O.{layout.snapshot_bucket}.C.{head.nuid}" if head else None
    info = await js.stream_info(layout.snapshot_stream, subjects_filter=f"$O.{layout.snapshot_bucket}.C.>")
    purged = 0
    for subject in info.state.subjects or {}:
        if subject != keep:
            await js.purge_stream(layout.snapshot_stream, subject=subject)
            purged += 1
    return purged


def stream_config(layout: Layout, replicas: int) -> api.StreamConfig:
    """The object store's stream, as nats-py and the nats CLI make one."""
    bucket = layout.snapshot_bucket
    return api.StreamConfig(
        name=layout.snapshot_stream,
        subjects=[f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"],
        num_replicas=replicas,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.NEW,
        allow_rollup_hdrs=True,
        allow_direct=True,
    )


class _Deflating(io.RawIOBase):
    """A file read as its zlib-compressed bytes (what the object store uploads)."""

    def __init__(self, fh: io.BufferedReader) -> None:
        self._fh = fh
        self._z = zlib.compressobj(_LEVEL)
        self._out = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        while len(self._out) < len(view) and not self._done:
            data = self._fh.read(_READ_BYTES)
            if data:
                self._out += self._z.compress(data)
            else:
                self._out += self._z.flush()
                self._done = True
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        del self._out[:n]
        return n


class _Inflating:
    """Where the object store writes a snapshot's chunks: decompressed into a file."""

    def __init__(self, fh: io.BufferedWriter) -> None:
        self._fh = fh
        self._z = zlib.decompressobj()

    def write(self, data: bytes) -> int:
        try:
            self._fh.write(self._z.decompress(data))
        except zlib.error as exc:
            raise StorageError(f"the state snapshot is corrupt: {exc}") from None
        return len(data)

    def finish(self) -> None:
        if not self._z.eof:
            raise StorageError("the state snapshot ends before its compressed data does")
        self._fh.write(self._z.flush())
