"""``mesh serve`` with what-if patches applied at start-up (for experiments.py only).

Run as ``python _patched_serve.py -m sessionmesh serve ...`` with ``MESH_BENCH_PATCHES``
naming the patches (comma-separated). Nothing under src/ is touched: each patch
replaces one small function in memory, so the A/B comparison measures the suggested
change and nothing else. Only changes that are *not* in src/ belong here; a patch
whose fix has been applied is deleted. See experiments.py for what each one stands for.
"""

from __future__ import annotations

import asyncio
import os
import sys

KNOWN = {"batchframes"}


def apply(patches: set[str]) -> None:
    unknown = patches - KNOWN
    if unknown:
        raise SystemExit(
            f"unknown patch(es): {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN))}"
        )
    from sessionmesh import transports

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
