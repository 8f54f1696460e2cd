"""The broker's own cost per message, without sockets: `Core` + `SqliteStore` in-process.

One "message" is the full life of a live unicast send, as the broker sees it, with
every outgoing frame JSON-encoded the way transports.py does. Two ack flows:

* ``read`` (the default, what the Python client does today when its application
  takes the message in the same loop turn): ``send`` -> commit -> ``ack read``
  (receipt, answer ``received``) -> commit.
* ``delivered+read`` (a client that acknowledges arrival and reading separately, and
  the flow of the first measurement): ``send`` -> commit -> ``ack delivered`` ->
  commit -> ``ack read`` -> commit.

This isolates the core and the store from aiohttp and the network, so it is far
steadier than the end-to-end figures on a noisy machine, and it is the number to
watch when changing core/broker.py or storage/sqlite.py.

* ``sequential``: one message at a time, one commit per step (the round-trip case).
* ``batched``: 64 sends, one commit, their 64 acks, one commit (and the read acks,
  one commit, in the two-ack flow): what group commit achieves under load.

``--unscreened`` replaces the core's two body screens (secrets, destructive requests)
with no-ops: run it alternately with the plain command to see what screening costs.

    python benchmarks/bench_core.py [--messages 5000] [--flow read --flow delivered+read] [--unscreened] [--json]
"""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import tempfile
import time

import _common as c


def run(mode: str, messages: int, store_kind: str, flow: str = "read", *, screened: bool = True) -> dict:
    from sessionmesh.codec import dumps
    from sessionmesh.config import load
    from sessionmesh.core import sending
    from sessionmesh.core.broker import Caller, Core
    from sessionmesh.core.effects import Push, Respond
    from sessionmesh.core.safety import warm
    from sessionmesh.envelope import new_id
    from sessionmesh.storage.memory import MemoryStore
    from sessionmesh.storage.sqlite import SqliteStore

    home = tempfile.mkdtemp(prefix="meshbench-core-")
    settings = load(env={}, overrides={"home": home, "autostart": False, "rate_limit": 0})
    store = SqliteStore(os.path.join(home, "mesh.db")) if store_kind == "sqlite" else MemoryStore()
    core = Core(store, settings)
    now = time.time()
    core.connect(1, "alice", None, now)
    core.connect(2, "bob", None, now)
    store.commit()
    alice, bob = Caller("alice", 1), Caller("bob", 2)
    frames = 0

    def encode(effects: list) -> None:
        nonlocal frames
        for e in effects:
            if isinstance(e, Push):
                dumps(e.frame)
            elif isinstance(e, Respond):
                dumps({"op": "result", "rid": 1, "ok": True, "result": e.result})
            else:
                continue  # a mark for the hooks (Mail, Mark): a file the server touches, no frame
            frames += 1

    # As the broker does at its start (server.py): the screening parsers are loaded
    # before the clock starts (the first send would pay ~0.2 s for them), and what
    # start-up made is frozen, so no full collection walks it again.
    warm()
    gc.collect()
    gc.freeze()
    screens = sending.find_secrets, sending.hold_reason
    if not screened:
        sending.find_secrets, sending.hold_reason = (lambda body: []), (lambda body, patterns=(): None)
    batch = 1 if mode == "sequential" else 64
    rid = 0
    t0 = time.perf_counter()
    done = 0
    while done < messages:
        n = min(batch, messages - done)
        ids = []
        for _ in range(n):
            rid += 1
            msg_id = new_id()
            ids.append(msg_id)
            encode(
                core.handle(alice, "send", {"id": msg_id, "to": "bob", "body": c.BODY}, (1, rid), time.time())
            )
        store.commit()
        if flow == "delivered+read":
            encode(core.handle(bob, "ack", {"ids": ids, "state": "delivered"}, None, time.time()))
            store.commit()
        encode(core.handle(bob, "ack", {"ids": ids, "state": "read"}, None, time.time()))
        store.commit()
        done += n
    elapsed = time.perf_counter() - t0
    sending.find_secrets, sending.hold_reason = screens
    store.close()
    shutil.rmtree(home, ignore_errors=True)
    return {
        "mode": mode,
        "flow": flow,
        "store": store_kind,
        "screened": screened,
        "messages": messages,
        "us_per_message": round(elapsed / messages * 1e6, 1),
        "messages_per_s": round(messages / elapsed, 1),
        "frames_per_message": round(frames / messages, 2),
    }


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported")
    p.add_argument(
        "--flow",
        action="append",
        choices=["read", "delivered+read"],
        help="ack flow (repeatable; default: both)",
    )
    p.add_argument(
        "--unscreened",
        action="store_true",
        help="the core's body screens replaced by no-ops (what screening costs, against a plain run)",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="also the in-memory test store (it deep-copies everything: not a production figure)",
    )
    args = p.parse_args()
    cases = []
    for store_kind in ("sqlite", "memory") if args.memory else ("sqlite",):
        for flow, mode in itertools.product(
            args.flow or ["read", "delivered+read"], ("sequential", "batched")
        ):
            runs = [
                run(mode, args.messages, store_kind, flow, screened=not args.unscreened)
                for _ in range(args.repeat)
            ]
            best = sorted(runs, key=lambda r: r["us_per_message"])[len(runs) // 2]
            best["all_us_per_message"] = [r["us_per_message"] for r in runs]
            cases.append(best)
    lines = [
        f"{r['store']:<7} {r['flow']:<15} {r['mode']:<11} {r['us_per_message']:7.1f} us/message "
        f"({r['messages_per_s']:.0f}/s, {r['frames_per_message']} frames/message; runs {r['all_us_per_message']})"
        for r in cases
    ]
    c.emit(args, "core", {"cases": cases}, lines)


if __name__ == "__main__":
    main()
