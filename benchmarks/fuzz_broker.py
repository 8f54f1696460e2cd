"""The long form of the broker's fuzzers (tests/integration/test_fuzz.py is the short
one): fuzzed WebSocket frames and malformed HTTP requests against a broker in its own
process, then a real round trip to show it still serves.

    python benchmarks/fuzz_broker.py [--frames 250000] [--requests 13500] [--seed 15] [--json]

Prints, for each surface, how many inputs were sent and answered, the typed errors by
code, and the two numbers that must be 0: untyped answers and hung requests. Exits 1
if either is not 0, if the broker died, or if it no longer serves.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _common import broker, emit, parser, raise_nofile  # noqa: E402

from tests.fuzz import Tally, fuzz_http, fuzz_ws  # noqa: E402


def _line(label: str, tally: Tally) -> str:
    top = ", ".join(f"{code} {n}" for code, n in sorted(tally.codes.items(), key=lambda kv: -kv[1])[:6])
    return (
        f"{label:<10} sent {tally.sent:>7}  answered {tally.answered:>7}  untyped {tally.untyped}  "
        f"hung {tally.hung}  reconnects {tally.reconnects}  {tally.seconds:6.1f} s  ({top})"
    )


def _still_serving(settings: object) -> bool:
    from sessionmesh.client.sync import SyncClient

    with SyncClient(settings, "after-a") as a, SyncClient(settings, "after-b") as b:  # type: ignore[arg-type]
        ok = a.send("after-b", "still here?").status == "received"
        return ok and b.recv(timeout=5).body == "still here?"


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--frames", type=int, default=250_000)
    p.add_argument("--requests", type=int, default=13_500)
    p.add_argument("--seed", type=int, default=15)
    args = p.parse_args()
    raise_nofile()
    with broker(prefix="meshfuzz-") as b:
        token = open(os.path.join(b.home, "token")).read().strip()
        ws = asyncio.run(fuzz_ws(b.url, token, args.frames, seed=args.seed))
        http = fuzz_http(b.url, token, args.requests, seed=args.seed)
        alive = b.proc.poll() is None
        serving = alive and _still_serving(b.settings())
    failed = ws.untyped or ws.hung or http.untyped or http.hung or not serving
    emit(
        args,
        "fuzz_broker",
        {"ws": ws.__dict__, "http": http.__dict__, "alive": alive, "serving": serving},
        [_line("websocket", ws), _line("http", http), f"broker alive {alive}, still serving {serving}"],
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
