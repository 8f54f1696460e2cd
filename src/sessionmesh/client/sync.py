"""A blocking client: the `AsyncClient` on an event loop in a background thread.

Every coroutine method of `AsyncClient` is available here under the same name and
signature, run to completion; nothing is written twice.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from typing import Any

from ..config import Settings
from ..envelope import Envelope
from .aio import AsyncClient


class SyncClient:
    def __init__(self, settings: Settings, name: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mesh-client", daemon=True)
        self._thread.start()
        self._async = self._call(self._make(settings, name, kwargs))

    @staticmethod
    async def _make(settings: Settings, name: str | None, kwargs: dict[str, Any]) -> AsyncClient:
        return AsyncClient(settings, name, **kwargs)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._async, attr)
        if inspect.iscoroutinefunction(target):

            def blocking(*args: Any, **kwargs: Any) -> Any:
                return self._call(target(*args, **kwargs))

            blocking.__doc__ = target.__doc__
            return blocking
        return target

    def __enter__(self) -> SyncClient:
        self._call(self._async.connect())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Envelope]:
        while True:
            yield self._call(self._async.recv())

    def close(self, *, graceful: bool = True) -> None:
        try:
            self._call(self._async.close(graceful=graceful))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()


__all__ = ["SyncClient"]
