"""What the core asks its server to do after a command: answer, push, or mark.

Effects go out after the commit that stores what they speak of, except those marked
``early``: a live delivery (the recipient takes it while the broker commits, and
de-duplicates it by id if a crash makes the sender send it again) and what a
recipient's ack answers (the message was committed before it could be delivered; the
ack's own receipt move is what a crash can undo). docs/design.md, "Effects before
the commit", says what a crash in that window can and cannot do."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..errors import MeshError


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the command that was given ``reply_to`` (now or later)."""

    reply_to: Hashable
    result: dict[str, Any] | None = None
    error: MeshError | None = None
    early: bool = False  # may go out before the batch's commit (see above)


@dataclass(frozen=True, slots=True)
class Push:
    """Send an unsolicited frame (deliver, receipt, event) down one live connection."""

    conn: int
    frame: dict[str, Any]
    early: bool = False  # may go out before the batch's commit (see above)


@dataclass(frozen=True, slots=True)
class Mark:
    """Set (or, with ``None``, clear) the block a guard put on ``name``, where the
    grip's pre-tool hook reads it without asking the broker (`sessionmesh.marks`)."""

    name: str
    block: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Mail:
    """New mail was stored for ``names``: touch their mail marks, which a quiet hook
    compares with its last look at the broker (`sessionmesh.marks`, `sessionmesh.quiet`)."""

    names: tuple[str, ...]


Effect = Respond | Push | Mark | Mail
