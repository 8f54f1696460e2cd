"""The broker's own cost per message, without sockets: `Core` + `SqliteStore` in-process.

One "message" is the full life of a live unicast send, as the broker sees it:
``send`` (store, audit, thread, answer) -> commit -> the recipient's ``ack
delivered`` (receipt, answer ``received``) -> commit -> ``ack read`` -> commit, with
every outgoing frame JSON-encoded the way transports.py does. This isolates the
core and the store from aiohttp and the network, so it is far steadier than the
end-to-end figures on a noisy machine, and it is the number to watch when changing
core/broker.py or storage/sqlite.py.

* ``sequential``: one message at a time, three commits each (the round-trip case).
* ``batched``: 64 sends, one commit, their 64 delivered acks, one commit, the read
  acks, one commit (what group commit achieves under load).

    python benchmarks/bench_core.py [--messages 5000] [--json]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import _common as c


def run(mode: str, messages: int, store_kind: str) -> dict:
    from sessionmesh.config import load
    from sessionmesh.core.broker import Caller, Core
    from sessionmesh.core.effects import Push
    from sessionmesh.envelope import new_id
    from sessionmesh.storage.memory import MemoryStore
    from sessionmesh.storage.sqlite import SqliteStore
    from sessionmesh.transports import dumps

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
            else:
                dumps({"op": "result", "rid": 1, "ok": True, "result": e.result})
            frames += 1

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
            encode(core.handle(alice, "send", {"id": msg_id, "to": "bob", "body": c.BODY}, (1, rid), time.time()))
        store.commit()
        encode(core.handle(bob, "ack", {"ids": ids, "state": "delivered"}, None, time.time()))
        store.commit()
        encode(core.handle(bob, "ack", {"ids": ids, "state": "read"}, None, time.time()))
        store.commit()
        done += n
    elapsed = time.perf_counter() - t0
    store.close()
    shutil.rmtree(home, ignore_errors=True)
    return {"mode": mode, "store": store_kind, "messages": messages,
            "us_per_message": round(elapsed / messages * 1e6, 1),
            "messages_per_s": round(messages / elapsed, 1),
            "frames_per_message": round(frames / messages, 2)}


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported")
    p.add_argument("--memory", action="store_true",
                   help="also the in-memory test store (it deep-copies everything: not a production figure)")
    args = p.parse_args()
    cases = []
    for store_kind in ("sqlite", "memory") if args.memory else ("sqlite",):
        for mode in ("sequential", "batched"):
            runs = [run(mode, args.messages, store_kind) for _ in range(args.repeat)]
            best = sorted(runs, key=lambda r: r["us_per_message"])[len(runs) // 2]
            best["all_us_per_message"] = [r["us_per_message"] for r in runs]
            cases.append(best)
    lines = [f"{r['store']:<7} {r['mode']:<11} {r['us_per_message']:7.1f} us/message "
             f"({r['messages_per_s']:.0f}/s, {r['frames_per_message']} frames/message; runs {r['all_us_per_message']})"
             for r in cases]
    c.emit(args, "core", {"cases": cases}, lines)


if __name__ == "__main__":
    main()
