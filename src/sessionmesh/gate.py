"""The broker's door: connections that have not shown the token are few and brief.

Issue #15: under the common limit of 1,024 open files, 1,100 idle TCP connections
(no token, no bytes) locked every client out, and a request that stopped halfway was
never timed out. So a connection is *pending* from its TCP accept until a request on
it passes the token check (the WebSocket upgrade, any API call). Pending connections
are capped in number (`Gate.limit`: past it, the oldest pending one is closed) and in
time (`Gate.deadline`: a pending connection older than that is closed, whatever it
has sent). A connection that has shown the token is left alone, so a flood of
strangers cannot push out the agents that are already in; the broker raises its
open-file limit at start (`raise_file_limit`) and keeps the pending cap well under
it, which leaves the rest for clients that authenticate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from typing import Any

from aiohttp import web

log = logging.getLogger("sessionmesh.broker")

PENDING_LIMIT = 256  # connections that have not yet shown the token
PENDING_DEADLINE = 10.0  # seconds a connection may take to show it
SWEEP_INTERVAL = 0.5
FILE_LIMIT_WANTED = 65536


def raise_file_limit() -> int:
    """Raise this process's soft open-file limit toward the hard one; returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILE_LIMIT_WANTED if hard == resource.RLIM_INFINITY else min(hard, FILE_LIMIT_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
    return soft


class _Guarded(asyncio.Protocol):
    """aiohttp's request handler, with the gate told when its connection opens and
    closes. Every protocol callback goes to the handler unchanged."""

    def __init__(self, gate: Gate, inner: Any) -> None:
        self._gate = gate
        self._inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)
        self._gate.opened(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.closed(self._inner.transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class Gate:
    """Pending connections, oldest first, each with the time it must be in by."""

    def __init__(self, *, limit: int = PENDING_LIMIT, deadline: float = PENDING_DEADLINE) -> None:
        self.limit = limit
        self.deadline = deadline
        self._pending: dict[asyncio.BaseTransport, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.closed_pending = 0  # how many the gate has closed (a metric)

    def opened(self, transport: asyncio.BaseTransport) -> None:
        self._pending[transport] = time.monotonic() + self.deadline
        while len(self._pending) > self.limit:
            self._close(next(iter(self._pending)))

    def closed(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._pending.pop(transport, None)

    def admitted(self, transport: asyncio.BaseTransport | None) -> None:
        """A request on this connection showed the token: it is no longer pending."""
        if transport is not None:
            self._pending.pop(transport, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _close(self, transport: asyncio.BaseTransport) -> None:
        self._pending.pop(transport, None)
        self.closed_pending += 1
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()
        else:
            transport.close()

    def sweep(self) -> None:
        now = time.monotonic()
        for transport, due in list(self._pending.items()):
            if due > now:
                break  # oldest first: the rest are due later
            self._close(transport)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()


class GatedSite(web.BaseSite):
    """A TCP site whose every connection passes through ``gate``."""

    def __init__(self, runner: web.AppRunner, gate: Gate, host: str, port: int) -> None:
        super().__init__(runner)
        self._gate = gate
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Guarded(self._gate, server()), self._host, self._port, reuse_address=True
        )

    @property
    def sockets(self) -> list[Any]:
        assert self._server is not None
        return list(self._server.sockets)  # type: ignore[union-attr]
