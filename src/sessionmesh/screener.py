"""Screening costly bodies in a process of its own.

A body the screen's parsers must read (core/safety/) costs up to a few hundred
milliseconds of CPU. On a worker *thread* that time still competes for the
interpreter's lock with the event loop, and under load the other peers' round trips
felt it. So the broker hands costly bodies to a small pool of worker processes,
started when the first such body arrives (a broker that never sees one never starts
them) and ended with the broker. Processes are spawned, not forked: a fork would copy
the broker's threads and its listening socket.

If a worker dies, its body is screened on a thread instead and the pool is started
afresh for the next one; nothing is sent unscreened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .core.safety import Screen, SecretAction, SecretFinding, screen, warm

WORKERS = 2


PR_SET_PDEATHSIG = 1  # Linux prctl: a signal for this process when its parent dies


def _worker_start(parent: int) -> None:
    """In the worker, first: end with the broker, whatever way the broker ends (its
    pool cannot tell a worker anything once it is gone); then load the parsers."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the broker ended before the line above ran
        os._exit(0)
    warm()


def _screen_parts(
    body: Any, action: SecretAction, patterns: tuple[str, ...]
) -> tuple[list[SecretFinding], Any, str | None]:
    """In the worker: the secrets, the redacted body (None when it is the body), the hold."""
    done = screen(body, action, patterns)
    return done.secrets, (None if done.redacted is body else done.redacted), done.hold


class Screener:
    def __init__(self, action: SecretAction, patterns: tuple[str, ...]) -> None:
        self.action = action
        self.patterns = patterns
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=WORKERS,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start,
            initargs=(os.getpid(),),
        )
        return self._pool

    async def screen(self, body: Any) -> Screen:
        """The whole screening of ``body``, done in a worker process."""
        pool = self._pool or self._start()
        loop = asyncio.get_running_loop()
        try:
            secrets, redacted, hold = await loop.run_in_executor(
                pool, _screen_parts, body, self.action, self.patterns
            )
        except BrokenProcessPool:
            self.close()
            return await asyncio.to_thread(screen, body, self.action, self.patterns)
        return Screen(body, secrets, body if redacted is None else redacted, hold)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
