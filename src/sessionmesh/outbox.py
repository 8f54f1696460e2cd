"""When each effect of the broker's commands goes out (`core.effects`): after the
commit that stores what it speaks of, or before it when it is ``early``, on SQLite
(`Outbox._flush`) and on NATS (`Outbox._flush_async`). docs/design.md, "Effects
before the commit", says what a crash in each window can and cannot do."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from .core.effects import Effect, Push, Respond
from .errors import StorageError

# effects in one flush above which nothing goes out before the commit (docs/performance.md)
EARLY_BATCH = 16
# (NATS) how long JetStream may lag behind the cache before nothing goes out early:
# while it is away, the broker answers no more than the cache alone makes durable
EARLY_PATIENCE = 1.0
# (NATS) turns of the loop a commit waits after an early frame went down a link: the
# backend drains its route records in the next turn, publishes them in the one after,
# and nats-py's flusher writes them to the socket in the third; the cache commit
# (100-200 µs) runs after that instead of in front of it
LINK_TURNS = 3
log = logging.getLogger("sessionmesh.broker")


class Outbox:
    """The effects of the commands since the last flush, and of the batches whose
    commit has not finished. ``carry`` carries effects out (the `Runner`'s);
    ``redelivers(conn)`` says whether a connection's commands stay in JetStream
    until their batch is stored (a link to another machine); ``failed`` is told of
    a commit that failed, after which nothing more goes out (``broken``)."""

    def __init__(
        self,
        store: Any,
        carry: Callable[[list[Effect]], None],
        redelivers: Callable[[Hashable], bool],
        failed: Callable[[StorageError], None],
    ) -> None:
        self.store = store
        self._carry = carry
        self._redelivers = redelivers
        self._failed = failed
        self.broken = False  # a commit failed: nothing more is answered
        self._outbox: list[Effect] = []
        self._flush_handle: asyncio.Handle | None = None
        self._commit_handle: asyncio.Handle | None = None
        self._uncommitted: list[Effect] = []  # (SQLite) effects waiting for the next commit
        self._begin_handle: asyncio.Handle | None = None  # (NATS) the next `_begin`
        self._to_begin: list[Effect] = []  # (NATS) held effects of the batch `_begin` starts
        self._to_begin_conns: set[Hashable] = set()  # the connections they write to
        # (NATS) batches not yet stored: (begun at, done, held effects)
        self._committing: collections.deque[tuple[float, concurrent.futures.Future[None], list[Effect]]] = (
            collections.deque()
        )
        # (NATS) connection -> how many of its effects wait in `_committing` or `_to_begin`
        self._held: collections.Counter[Hashable] = collections.Counter()

    def add(self, effects: list[Effect]) -> None:
        self._outbox.extend(effects)
        self.schedule()

    def schedule(self) -> None:
        """Flush in the loop's next turn (a command wrote to the store)."""
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    @property
    def flushing(self) -> bool:
        """A flush, or the commit of a background-committing store that one started,
        is still to run in a coming turn of the loop."""
        return self._flush_handle is not None or self._begin_handle is not None

    def finish(self) -> None:
        """(the broker stops) Run the flush and commits still to come, now."""
        for handle, run in (
            (self._flush_handle, self._flush),
            (self._commit_handle, self._commit),
            (self._begin_handle, self._begin),
        ):
            if handle is not None:
                handle.cancel()
                run()

    def _flush(self) -> None:
        """Commit, then carry out everything the committed commands asked for.

        On a store that commits in place (SQLite), the effects marked ``early`` go
        out first (`core.effects`), and the commit runs in the loop's next turn, after
        each connection has written those frames to its socket (the writes were
        scheduled first: `Connection._write_queued`): the recipient
        reads its delivery, and the sender its ``received``, while the broker commits.
        A batch of more than `EARLY_BATCH` effects is under load, where sending early
        only splits the batches group commit needs: it commits first, whole.
        Nothing is read from a socket between the two turns, so no command can see
        the batch's effects before its commit has run.

        A store with `commit_async` (NATS) writes its batches to JetStream in the
        background (`_flush_async`)."""
        self._flush_handle = None
        if self.broken:
            self._outbox.clear()
            return
        outbox, self._outbox = self._outbox, []
        if hasattr(self.store, "commit_async"):
            self._flush_async(outbox)
            return
        if len(outbox) > EARLY_BATCH:  # under load: one commit per batch, as large as it comes
            self._uncommitted.extend(outbox)
            self._commit()
            return
        early: list[Effect] = []
        for effect in outbox:
            (early if isinstance(effect, Push | Respond) and effect.early else self._uncommitted).append(
                effect
            )
        self._carry(early)
        if self._commit_handle is None:
            self._commit_handle = asyncio.get_running_loop().call_soon(self._commit)

    def _flush_async(self, outbox: list[Effect]) -> None:
        """Commit through a store that writes in the background (NATS): `_begin` runs
        in the loop's next turn, after each connection has written this turn's early
        frames (`LINK_TURNS` turns later when one went down a link). It commits the
        cache and starts writing the batch to JetStream; the effects wait, in order
        behind the batches before them, until JetStream has it, while the loop goes
        on with the next commands. The early ones need not:

        - a live delivery goes out at once (as on SQLite);
        - an answer or receipt goes out at once when JetStream has stored every
          earlier batch, the one that stored the message among them: what is
          acknowledged is durable. One to a link answers another machine, whose
          route record stays in JetStream until this batch is stored.

        Nothing goes out early past a frame that an earlier batch still holds for
        the same connection (frames on one connection keep their order, protocol.md
        5.5), nor while JetStream has not stored a batch begun `EARLY_PATIENCE` ago.
        An early effect that may not go out yet waits for the last batch already
        begun (and so for every earlier one), not for its own, unless a frame for
        its connection waits for its own."""
        begun = self._begin_handle is None  # every earlier command's batch has begun
        stored = begun and not self._committing  # and JetStream has it
        keeping_up = stored or (
            bool(self._committing) and time.monotonic() - self._committing[0][0] < EARLY_PATIENCE
        )
        last = self._committing[-1][2] if self._committing and begun else None
        early: list[Effect] = []
        for effect in outbox:
            key = _conn_of(effect)
            if key is None:  # a mark: after the commit
                self._to_begin.append(effect)
                continue
            if effect.early and key not in self._to_begin_conns:  # type: ignore[union-attr]
                if (
                    keeping_up
                    and not self._held[key]
                    and (stored or _delivers(effect) or self._redelivers(key))
                ):
                    early.append(effect)
                    continue
                if last is not None:
                    last.append(effect)
                    self._held[key] += 1
                    continue
            self._to_begin.append(effect)
            self._to_begin_conns.add(key)
            self._held[key] += 1
        self._carry(early)
        if self._begin_handle is None:
            linked = any(self._redelivers(_conn_of(e)) for e in early)  # type: ignore[arg-type]
            self._begin_in(LINK_TURNS if linked else 1)

    def _begin_in(self, turns: int) -> None:
        """Run `_begin` in ``turns`` turns of the loop (`finish` can still run it now)."""
        loop = asyncio.get_running_loop()
        if turns > 1:
            self._begin_handle = loop.call_soon(self._begin_in, turns - 1)
        else:
            self._begin_handle = loop.call_soon(self._begin)

    def _begin(self) -> None:
        """Commit the cache and start writing the batch to JetStream (`_flush_async`)."""
        self._begin_handle = None
        begun = time.monotonic()
        done = self.store.commit_async()  # type: ignore[attr-defined]
        held, self._to_begin = self._to_begin, []
        self._to_begin_conns.clear()
        self._committing.append((begun, done, held))
        loop = asyncio.get_running_loop()

        def stored(_: concurrent.futures.Future[None]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the broker stopped
                loop.call_soon_threadsafe(self._release)

        done.add_done_callback(stored)

    def _commit(self) -> None:
        """Commit what the commands since the last commit wrote, then carry out the
        rest of their effects. A commit that fails stops the broker: its early
        effects are out, so nothing may answer as if the batch were stored."""
        self._commit_handle = None
        try:
            self.store.commit()
        except StorageError as exc:
            self.broken = True
            self._uncommitted.clear()
            self._failed(exc)
            return
        done, self._uncommitted = self._uncommitted, []
        self._carry(done)

    def _release(self) -> None:
        """Carry out the effects of every batch now stored, oldest first. A batch that
        JetStream never stored (its write was cancelled, or failed) breaks the outbox
        as a failed commit does: were it only dropped, `_committing` could empty and
        the next answer go out as if JetStream had every batch before it."""
        while self._committing and self._committing[0][1].done():
            _, done, outbox = self._committing.popleft()
            for effect in outbox:
                key = _conn_of(effect)
                if key is not None:
                    self._held[key] -= 1
                    if not self._held[key]:
                        del self._held[key]
            if self.broken:
                continue
            if done.cancelled() or done.exception() is not None:
                self.broken = True
                reason = "cancelled" if done.cancelled() else done.exception()
                self._failed(StorageError(f"JetStream did not store a batch ({reason})"))
                continue
            self._carry(outbox)


def _conn_of(effect: Effect) -> Hashable | None:
    """The connection an effect writes to (a `Respond` to an HTTP call: its own
    waiter), or None for one that writes to none: a mark, or the answer to a frame
    without ``rid`` that succeeded (an ack's, `Runner._respond`)."""
    if isinstance(effect, Push):
        return effect.conn
    if isinstance(effect, Respond):
        key = effect.reply_to
        if isinstance(key, tuple) and key and key[0] != "http":
            return None if key[-1] is None and effect.error is None else key[0]
        return key
    return None


def _delivers(effect: Effect) -> bool:
    return isinstance(effect, Push) and effect.frame.get("op") == "deliver"
