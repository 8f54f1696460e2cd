"""Clients of the broker: `AsyncClient` (asyncio), `SyncClient` (blocking, over it),
and `OneShot` (one HTTP call, standard library only, for commands and hooks)."""
