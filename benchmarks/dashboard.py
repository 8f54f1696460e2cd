"""The dashboard under a big store and a busy mesh, in a real headless Chromium.

Seeds a store with 1,000 peers and 100,000 messages (over the last 24 h, with their
receipts and threads), starts a broker on it, logs a page in through a real login
link, and measures:

* time to first render: navigation start until the page has drawn its first state
  (``window.__meshFirstRender``, set in the first animation frame after the state
  arrived), and the wall time of the same from the benchmark's side; median of runs;
* frame times: ``requestAnimationFrame`` deltas in the page, idle and while clients
  send 200 messages/s to each other (each message also moves two receipts, so the
  page gets ~600 events/s), median / p95 / max and frames over 50 ms;
* whether the page kept up: every message sent during the load is in its list.

    python benchmarks/dashboard.py [--peers 1000] [--messages 100000] [--rate 200]
        [--seconds 10] [--runs 3] [--chromium /usr/bin/chromium] [--screenshots DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import _common as c

FRAME_PROBE = """() => {
  window.__frames = [];
  let last = null;
  const tick = (t) => {
    if (last !== null) window.__frames.push(t - last);
    last = t;
    if (window.__framesOn) requestAnimationFrame(tick);
  };
  window.__framesOn = true;
  requestAnimationFrame(tick);
}"""


def seed(home: str, peers: int, messages: int) -> dict[str, float]:
    """Write the store directly (no broker): peers, messages, receipts, threads."""
    from sessionmesh.core.peers import hash_secret
    from sessionmesh.envelope import Envelope, Kind, ReceiptState, ReplyStatus, Target, new_id
    from sessionmesh.storage import PeerRecord, ReceiptUpdate, ThreadRecord
    from sessionmesh.storage.sqlite import SqliteStore

    os.makedirs(home, mode=0o700, exist_ok=True)
    t0 = time.perf_counter()
    store = SqliteStore(os.path.join(home, "mesh.db"))
    rng = random.Random(7)
    now = time.time()
    names = [f"agent-{i:04d}" for i in range(peers)]
    roles = ["builder", "reviewer", "tester", "docs", "planner"]
    for i, name in enumerate(names):
        meta = {
            "machine": f"box-{i % 7}",
            "client": ["claude-code", "codex", "gemini", "cli"][i % 4],
            "role": roles[i % len(roles)],
            "status": f"working on task {i}",
        }
        store.put_peer(
            PeerRecord(
                name, hash_secret(secrets.token_urlsafe(8)), meta, now - 86400, now - rng.random() * 86400
            )
        )
    words = "retry loop migration schema review build deploy staging cache index lock test docs".split()
    open_requests: list[Envelope] = []
    for n in range(messages):
        ts = now - 86400 + 86400 * n / messages
        sender, recipient = rng.sample(names, 2)
        body = " ".join(rng.choice(words) for _ in range(12)) + f" #{n}"
        parent = open_requests.pop() if open_requests and rng.random() < 0.3 else None
        if parent is not None:
            env = Envelope(
                id=new_id(),
                sender=parent.to.names[0],
                to=Target(names=(parent.sender,)),
                kind=Kind.REPLY,
                body=body,
                re=parent.id,
                thread=parent.thread,
                status=ReplyStatus.PASS,
                ts=ts,
            )
        else:
            msg_id = new_id()
            kind = Kind.REQUEST if rng.random() < 0.2 else Kind.MESSAGE
            env = Envelope(
                id=msg_id,
                sender=sender,
                to=Target(names=(recipient,)),
                kind=kind,
                body=body,
                thread=msg_id,
                ts=ts,
            )
        store.add_message(env)
        store.add_receipts(env, [env.to.names[0]])
        store.update_receipts([ReceiptUpdate(env.id, env.to.names[0], ReceiptState.READ, ts + 1)])
        if env.kind is Kind.REQUEST:
            open_requests.append(env)
        if parent is not None:
            store.update_receipts([ReceiptUpdate(parent.id, env.sender, ReceiptState.ANSWERED, ts)])
            store.put_thread(
                ThreadRecord(parent.thread, "answered", 2, [parent.sender, env.sender], parent.ts, ts)
            )
        if n % 5000 == 4999:
            store.commit()
    store.commit()
    store.close()
    return {"seed_s": round(time.perf_counter() - t0, 1)}


PASSPHRASE = "the benchmark's own passphrase"


def start_broker(home: str) -> tuple[subprocess.Popen[str], str]:
    proc = c.spawn(
        [sys.executable, "-m", "sessionmesh", "serve", "--port", "0", "--home", home],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "MESH_HOME": home, "MESH_RATE_LIMIT": "0"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"broker did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split()[0]


def login_link(home: str, url: str) -> str:
    """A one-time link, as ``mesh dashboard`` gets it: the person's passphrase (set
    here for the benchmark's own home) traded for a login code."""
    from sessionmesh.client.http import OneShot
    from sessionmesh.config import load
    from sessionmesh.person import write_credential

    settings = load(env={}, overrides={"home": home, "url": url, "autostart": False})
    write_credential(settings, PASSPHRASE)
    return str(OneShot(settings).dashboard_login(PASSPHRASE)["url"])


class Load:
    """Clients sending ``rate`` messages/s to each other, on their own thread and loop."""

    def __init__(self, home: str, url: str, rate: float, pairs: int = 4) -> None:
        from sessionmesh.config import load

        self.settings = load(env={}, overrides={"home": home, "url": url, "autostart": False})
        self.rate = rate
        self.pairs = pairs
        self.sent: list[str] = []
        self.statuses: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._go: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(),), daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the load clients did not connect")

    async def _main(self) -> None:
        from sessionmesh.client.aio import AsyncClient

        self._stop = asyncio.Event()
        self._go = asyncio.Event()
        clients = [AsyncClient(self.settings, f"load-{i}") for i in range(2 * self.pairs)]
        for cl in clients:
            await cl.connect()
        readers = [asyncio.create_task(self._drain(cl)) for cl in clients]
        self._ready.set()
        await self._go.wait()
        interval = 0.05
        per_tick = self.rate * interval
        due = 0.0
        start = time.perf_counter()
        tick = 0
        pending: set[asyncio.Task[Any]] = set()
        while not self._stop.is_set():
            due += per_tick
            batch = int(due)
            due -= batch
            for k in range(batch):
                a = clients[(tick + k) % len(clients)]
                b = clients[(tick + k + 1 + (k % (len(clients) - 1))) % len(clients)]
                if b is a:
                    b = clients[(clients.index(a) + 1) % len(clients)]
                task = asyncio.create_task(self._send(a, b.name, tick, k))
                pending.add(task)
                task.add_done_callback(pending.discard)
            tick += 1
            wait = start + tick * interval - time.perf_counter()
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, wait))  # the pacing clock
            except TimeoutError:
                pass
        if pending:
            await asyncio.wait(pending, timeout=10)
        for r in readers:
            r.cancel()
        for cl in clients:
            await cl.close()

    async def _send(self, client: Any, to: str, tick: int, k: int) -> None:
        result = await client.send(to, f"load {tick}.{k}: " + c.BODY)
        self.sent.append(result.id)
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1

    async def _drain(self, client: Any) -> None:
        while True:
            await client.recv()

    def begin(self) -> None:
        assert self._go is not None
        self._loop.call_soon_threadsafe(self._go.set)

    def stop(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def frames_summary(deltas: list[float]) -> dict[str, Any]:
    if not deltas:
        return {"frames": 0}
    return {
        "frames": len(deltas),
        "median_ms": round(statistics.median(deltas), 1),
        "p95_ms": round(c.pct(deltas, 95), 1),
        "max_ms": round(max(deltas), 1),
        "over_50ms": sum(1 for d in deltas if d > 50),
        "fps": round(1000.0 * len(deltas) / sum(deltas), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=int, default=1000)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=200.0, help="messages per second during the load")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the idle and the load windows")
    p.add_argument("--runs", type=int, default=3, help="page loads for the first-render figure")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--screenshots", help="also save screenshots of the loaded page here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    home = tempfile.mkdtemp(prefix="mesh-dash-bench-")
    results: dict[str, Any] = {"peers": args.peers, "messages": args.messages, "rate": args.rate}
    proc = None
    try:
        results.update(seed(home, args.peers, args.messages))
        proc, url = start_broker(home)
        results["db_mib"] = round(os.path.getsize(os.path.join(home, "mesh.db")) / 2**20, 1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=args.chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            firsts, walls, state_ms = [], [], []
            for _ in range(args.runs):
                page = browser.new_page(viewport={"width": 1400, "height": 860})
                link = login_link(home, url)
                t0 = time.perf_counter()
                page.goto(link)
                page.wait_for_selector("body[data-ready='1']", timeout=60_000)
                walls.append((time.perf_counter() - t0) * 1000)
                firsts.append(page.evaluate("window.__meshFirstRender"))
                state_ms.append(
                    page.evaluate(
                        "performance.getEntriesByType('resource').filter(e => e.name.includes('/state'))"
                        ".map(e => e.duration)[0]"
                    )
                )
                page.close()
            results["first_render"] = {
                "in_page_ms_median": round(statistics.median(firsts), 1),
                "in_page_ms_runs": [round(x, 1) for x in firsts],
                "wall_ms_median": round(statistics.median(walls), 1),
                "state_request_ms_median": round(statistics.median(state_ms), 1),
            }

            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(login_link(home, url))
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            page.wait_for_selector("#conn.live", timeout=60_000)
            load = Load(home, url, args.rate)
            load.start()
            page.wait_for_function("document.querySelectorAll('#peers .peer').length > 0")

            page.evaluate(FRAME_PROBE)
            ticks = c.machine_ticks()
            page.wait_for_timeout(args.seconds * 1000)  # the measuring window itself
            idle = page.evaluate("window.__framesOn = false, window.__frames")
            results["frames_idle"] = {**frames_summary(idle), **c.machine_load(ticks, c.machine_ticks())}

            before = int(page.inner_text("#msg-count").strip("(+)"))
            page.evaluate(FRAME_PROBE)
            ticks = c.machine_ticks()
            cpu0 = c.cpu_seconds(proc.pid)
            t_load = time.perf_counter()
            load.begin()
            page.wait_for_timeout(args.seconds * 1000)
            busy = page.evaluate("window.__framesOn = false, window.__frames")
            load.stop()
            elapsed = time.perf_counter() - t_load
            broker_cpu = c.cpu_seconds(proc.pid) - cpu0
            results["frames_load"] = {**frames_summary(busy), **c.machine_load(ticks, c.machine_ticks())}
            results["load"] = {
                "sent": len(load.sent),
                "rate_achieved": round(len(load.sent) / elapsed, 1),
                "statuses": load.statuses,
                "broker_cpu_cores": round(broker_cpu / elapsed, 2),
            }
            # the page kept up: its list holds every message stored during the load
            t0 = time.perf_counter()
            page.wait_for_function(
                "n => parseInt(document.getElementById('msg-count').textContent.slice(1)) >= n",
                arg=before + len(load.sent),
                timeout=30_000,
            )
            results["load"]["all_shown_after_stop_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            results["load"]["message_count_shown"] = page.inner_text("#msg-count")
            if args.screenshots:
                os.makedirs(args.screenshots, exist_ok=True)
                page.screenshot(path=os.path.join(args.screenshots, "dashboard-busy.png"))
            page.close()
            browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        shutil.rmtree(home, ignore_errors=True)
    results["machine"] = c.machine()
    if args.json:
        print(json.dumps(results))
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
