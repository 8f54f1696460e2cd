"""``mesh serve`` with what-if patches applied at start-up (for experiments.py only).

Run as ``python _patched_serve.py -m sessionmesh serve ...`` with ``MESH_BENCH_PATCHES``
naming the patches (comma-separated). Nothing under src/ is touched: each patch
replaces one small function or pragma in memory, so the A/B comparison measures the
suggested change and nothing else. See experiments.py for what each one stands for.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys


def apply(patches: set[str]) -> None:
    from sessionmesh import transports
    from sessionmesh.storage import sqlite as sq

    if "nockpt" in patches:
        # no automatic WAL checkpoint inside commit(); the fix would run
        # "PRAGMA wal_checkpoint(PASSIVE)" from a worker thread on its own connection
        orig_init = sq.SqliteStore.__init__

        def init(self, *a, **k):  # type: ignore[no-untyped-def]
            orig_init(self, *a, **k)
            self._db.execute("PRAGMA wal_autocheckpoint=0")

        sq.SqliteStore.__init__ = init  # type: ignore[method-assign]

    if "jsonenc" in patches:
        # one JSONEncoder built once, instead of one per json.dumps(..., separators=...) call
        enc = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        transports.dumps = enc
        sq._dumps = enc

    if "nodelivered" in patches:
        # do not push the 'delivered' receipt to the sender: for a live unicast send the
        # answer 'received' that follows in the same flush says the same thing
        orig_push = transports.Connection.push

        def push(self, frame):  # type: ignore[no-untyped-def]
            if frame.get("op") == "receipt" and frame.get("state") == "delivered":
                return
            orig_push(self, frame)

        transports.Connection.push = push  # type: ignore[method-assign]

    if "batchframes" in patches:
        # everything queued for one connection in one loop turn leaves as ONE WebSocket
        # message (a JSON array of frames): one send() syscall instead of one per frame
        async def writer(self):  # type: ignore[no-untyped-def]
            try:
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    while self._queue:
                        frames = []
                        while self._queue:
                            frame = self._queue.popleft()
                            frame.pop("_shared", None)
                            frames.append(frame)
                        await self.ws.send_str(transports.dumps(frames[0] if len(frames) == 1 else frames))
            except (ConnectionError, RuntimeError, asyncio.CancelledError):
                self._closed = True

        transports.Connection.writer = writer  # type: ignore[method-assign]


    if "answerfirst" in patches:
        # a fan-out send answers its sender before the N deliveries are written
        from sessionmesh.core import broker as cb
        from sessionmesh.core.effects import Respond

        orig_send = cb.Core.send

        def send(self, caller, args, reply_to, now):  # type: ignore[no-untyped-def]
            effects = orig_send(self, caller, args, reply_to, now)
            if len(effects) > 2 and isinstance(effects[-1], Respond):
                effects.insert(0, effects.pop())
            return effects

        cb.Core.send = send  # type: ignore[method-assign]

    if "orjson" in patches:
        # orjson (already a wheel on PyPI) for every frame and stored JSON value
        import orjson

        def odumps(value):  # type: ignore[no-untyped-def]
            return orjson.dumps(value).decode()

        transports.dumps = odumps
        sq._dumps = odumps

    if "uvloop" in patches:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def patch_client_for_batches() -> None:
    """The client half of 'batchframes': accept a JSON array of frames."""
    from sessionmesh.client.aio import AsyncClient

    if getattr(AsyncClient, "_bench_batches", False):
        return
    orig = AsyncClient._on_frame

    async def _on_frame(self, frame):  # type: ignore[no-untyped-def]
        if isinstance(frame, list):
            for f in frame:
                await orig(self, f)
        else:
            await orig(self, frame)

    AsyncClient._on_frame = _on_frame  # type: ignore[method-assign]
    AsyncClient._bench_batches = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    apply({p for p in os.environ.get("MESH_BENCH_PATCHES", "").split(",") if p})
    argv = sys.argv[1:]
    if argv[:2] == ["-m", "sessionmesh"]:
        argv = argv[2:]
    from sessionmesh import cli

    sys.exit(cli.main(argv))
