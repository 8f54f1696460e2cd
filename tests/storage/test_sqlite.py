"""What only the SQLite store has: the checkpoint thread beside the writer."""

from __future__ import annotations

import threading
from pathlib import Path

from sessionmesh.storage.sqlite import SqliteStore


def _checkpoint_while_closing(store: SqliteStore) -> bool:
    """Close the store while another thread checkpoints it; True if that thread ended."""
    started = threading.Event()

    def checkpoints() -> None:
        started.set()
        for _ in range(200):
            store.checkpoint()

    worker = threading.Thread(target=checkpoints)
    worker.start()
    started.wait(5)
    store.close()
    worker.join(10)
    return not worker.is_alive()


def test_closing_while_another_thread_checkpoints_does_not_crash_the_process(tmp_path: Path) -> None:
    # regression: the broker's shutdown closed the checkpoint connection while the
    # executor thread was inside a checkpoint on it, and the process segfaulted
    for round_ in range(20):
        store = SqliteStore(str(tmp_path / f"mesh-{round_}.db"))
        assert _checkpoint_while_closing(store)
        store.checkpoint()  # after close: a no-op, not an error
