"""Where a broker keeps its state and how it reaches other machines.

A backend gives the `Runner` its `Store` and, while the broker serves, may carry
traffic to and from other brokers. Two exist: ``sqlite`` (one machine, the embedded
store, nothing to start) and ``nats`` (``backends/nats/``: the store in JetStream
and KV, and routes between machines). The core never knows which one runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..config import Settings
from ..errors import BadRequest
from ..storage import Store

if TYPE_CHECKING:
    from ..server import Runner


class Backend(Protocol):
    """A store, and the work a backend does beside it while the broker runs."""

    store: Store

    async def start(self, runner: Runner) -> None:
        """The broker is listening: begin carrying traffic for it."""
        ...

    async def stop(self) -> None:
        """The broker is stopping; the store is closed after this."""
        ...

    def health(self) -> dict[str, object]:
        """What `/health` reports about the backend."""
        ...


class SqliteBackend:
    """The default: one machine, one SQLite file under ``$MESH_HOME``."""

    def __init__(self, settings: Settings) -> None:
        from ..storage.sqlite import SqliteStore

        self.store: Store = SqliteStore(settings.db_path, synchronous=settings.sqlite_synchronous)

    async def start(self, runner: Runner) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> dict[str, object]:
        return {"backend": "sqlite"}


BACKENDS = ("sqlite", "nats")


def open_backend(settings: Settings) -> Backend:
    """The backend ``settings.backend`` names, with its store open.

    Raises `BadRequest` for an unknown backend, and what opening the store raises
    (`StorageError`, `Unavailable` when NATS cannot be reached)."""
    if settings.backend == "sqlite":
        return SqliteBackend(settings)
    if settings.backend == "nats":
        try:
            from .nats import NatsBackend
        except ImportError as exc:
            raise BadRequest(
                f"the nats backend needs nats-py ({exc})", hint="pip install 'sessionmesh[nats]'"
            ) from None

        return NatsBackend(settings)
    raise BadRequest(f"unknown backend {settings.backend!r}", hint="backends: " + ", ".join(BACKENDS))
