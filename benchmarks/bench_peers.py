"""1,000 connected peers: the broker's resident memory (VmRSS from /proc/PID/status).

RLIMIT_NOFILE is raised first (the broker subprocess inherits it): 1,000 WebSockets
need 1,000 descriptors on each side. The peers are `AsyncClient`s in this process,
connected 50 at a time. Reported: broker RSS idle (once the broker has loaded its
screening parsers), with all peers connected and after one broadcast to all of them
(which every peer must receive), plus the time to connect them all.

    python benchmarks/bench_peers.py [--peers 1000] [--json]
"""

from __future__ import annotations

import asyncio
import time

import _common as c


async def settled_rss_kib(pid: int, *, steady: float = 1.0, bound: float = 15.0) -> int:
    """The broker's RSS once it has stopped growing for ``steady`` seconds (at most
    ``bound``): a broker loads its screening parsers (~19 MiB) in the background just
    after it starts, which the peers must not be charged for."""
    deadline = time.monotonic() + bound
    last, since = c.rss_kib(pid), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = c.rss_kib(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= steady:
            break
    return last


async def run(peers: int, parallel: int) -> dict:
    from sessionmesh.client.aio import AsyncClient

    nofile = c.raise_nofile(max(65536, 4 * peers))
    with c.broker() as b:
        settings = b.settings()
        rss_idle = await settled_rss_kib(b.pid)
        clients = [AsyncClient(settings, f"pp-{i:04d}") for i in range(peers)]
        sem = asyncio.Semaphore(parallel)

        async def connect(x: AsyncClient) -> None:
            async with sem:
                await x.connect()

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(connect(x) for x in clients)), 300)
        connect_s = time.perf_counter() - t0
        rss_connected = c.rss_kib(b.pid)
        fds = len(__import__("os").listdir(f"/proc/{b.pid}/fd"))

        # one broadcast from the first peer to all the others, received by each
        sender, rest = clients[0], clients[1:]
        t1 = time.perf_counter()
        res = await sender.send("broadcast", c.BODY)
        await asyncio.wait_for(asyncio.gather(*(x.recv() for x in rest)), 60)
        bcast_s = time.perf_counter() - t1
        rss_after = c.rss_kib(b.pid)
        t2 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(x.close() for x in clients), return_exceptions=True), 120)
        close_s = time.perf_counter() - t2
    return {
        "peers": peers,
        "nofile_limit": list(nofile),
        "broker_fds": fds,
        "connect_all_s": round(connect_s, 2),
        "broker_rss_mib_idle": round(rss_idle / 1024, 1),
        "broker_rss_mib_connected": round(rss_connected / 1024, 1),
        "broker_rss_kib_per_peer": round((rss_connected - rss_idle) / peers, 1),
        "broadcast_status": res.status.value,
        "broadcast_recipients": res.recipients,
        "broadcast_all_received_s": round(bcast_s, 3),
        "broker_rss_mib_after_broadcast": round(rss_after / 1024, 1),
        "close_all_s": round(close_s, 2),
        "targets": {"under_200_mb": rss_after / 1024 < 200 and rss_connected / 1024 < 200},
    }


def main() -> None:
    p = c.parser(__doc__.split("\n")[0])
    p.add_argument("--peers", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=50)
    args = p.parse_args()
    r = asyncio.run(run(args.peers, args.parallel))
    lines = [
        f"{r['peers']} peers connected in {r['connect_all_s']} s (broker fds {r['broker_fds']}, "
        f"RLIMIT_NOFILE {r['nofile_limit']})",
        f"broker RSS: idle {r['broker_rss_mib_idle']} MiB, {r['peers']} connected "
        f"{r['broker_rss_mib_connected']} MiB ({r['broker_rss_kib_per_peer']} KiB/peer), after a broadcast to all "
        f"{r['broker_rss_mib_after_broadcast']} MiB",
        f"broadcast to {r['broadcast_recipients']}: all received in {r['broadcast_all_received_s']} s",
        f"targets: {r['targets']}",
    ]
    c.emit(args, "peers", r, lines)


if __name__ == "__main__":
    main()
