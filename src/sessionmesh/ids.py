"""The person's reserved name and new message ids: what a one-shot command needs of
`sessionmesh.envelope` without importing it (its dataclasses and patterns cost a CLI
call more than its request). `envelope` re-exports both."""

from __future__ import annotations

import os
import time

PERSON = "human"  # the name the person acts as; no agent may hold it (sessionmesh.person)


def is_person_name(name: object) -> bool:
    """``human``, and every name that reads as one of its sessions or kin
    (``human#2``, ``human-2``, ``human.desk``, ``human_bot``): reserved for the person."""
    return isinstance(name, str) and (name == PERSON or (name.startswith(PERSON) and name[5:6] in "#-._"))


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit ms timestamp, version, 74 random bits; in the
    canonical 8-4-4-4-12 hex form."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
