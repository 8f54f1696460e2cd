"""A real broker that dies, as SIGKILL would end it, inside the window between a
batch's early effects and its commit (docs/design.md, "Effects before the commit").

Run as ``python -m tests.crash_at_commit WHAT TEXT MARKER serve …``: the arguments
after MARKER are `mesh`'s own. At the first commit whose batch holds WHAT for a
message whose body contains TEXT, it writes MARKER and exits at once, without
committing and without any clean-up:

- ``stored``: the batch stores the message (its delivery is already out);
- ``read``: the batch moves the message's receipt to ``read`` (the sender's
  ``received`` and the reader's ``acked`` are already out).

Once MARKER exists it commits as usual, so a restart on the same home is plain.
"""

from __future__ import annotations

import os
import sys

from sessionmesh.console import main
from sessionmesh.storage.sqlite import SqliteStore


def _batch_holds(store: SqliteStore, what: str, text: str) -> bool:
    db = store._db
    rows = db.execute("SELECT id FROM messages WHERE body LIKE ?", (f"%{text}%",)).fetchall()
    if what == "stored":
        # the first commit that sees the row is the one that stores it
        return bool(rows)
    # the first commit that sees the copy read is the one that moves it there
    store._flush_receipts()
    return any(
        db.execute("SELECT 1 FROM receipts WHERE msg_id = ? AND state = 'read'", (row[0],)).fetchone()
        for row in rows
    )


def crash_at_commit(what: str, text: str, marker: str) -> None:
    commit = SqliteStore.commit

    def commit_or_die(store: SqliteStore) -> None:
        if not os.path.exists(marker) and _batch_holds(store, what, text):
            with open(marker, "w") as fh:
                fh.write(what)
            os._exit(137)
        commit(store)

    SqliteStore.commit = commit_or_die  # type: ignore[method-assign]


if __name__ == "__main__":
    what, text, marker, *argv = sys.argv[1:]
    if what not in ("stored", "read"):
        raise SystemExit(f"WHAT must be 'stored' or 'read', not {what!r}")
    crash_at_commit(what, text, marker)
    sys.argv = ["mesh", *argv]
    main()
