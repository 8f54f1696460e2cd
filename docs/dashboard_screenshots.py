"""Take the dashboard screenshots in docs/ (a small scripted mesh, real Chromium).

    python docs/dashboard_screenshots.py [--chromium /usr/bin/chromium] [--out docs]

Five agents on a fresh broker: requests and replies, a broadcast, a lock, a held
message; then one screenshot of the whole page, one of a search, one of a held
message, PNGs kept small (1280x800, few colours).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from playwright.sync_api import expect, sync_playwright

from sessionmesh.client.http import OneShot
from sessionmesh.client.sync import SyncClient
from sessionmesh.config import load
from sessionmesh.person import write_credential


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = p.parse_args()
    home = tempfile.mkdtemp(prefix="mesh-shots-")
    env = {**os.environ, "MESH_HOME": home}
    broker = subprocess.Popen(
        [sys.executable, "-m", "sessionmesh", "serve", "--port", "0", "--home", home],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert broker.stdout is not None
    url = broker.stdout.readline().split("listening on ", 1)[1].split()[0]
    settings = load(env={}, overrides={"home": home, "url": url, "autostart": False})
    agents: dict[str, SyncClient] = {}
    try:
        for name, role, status in [
            ("builder", "builder", "fixing the retry loop in src/app.py"),
            ("reviewer", "reviewer", "reviewing PR 42"),
            ("tester", "tester", "running the integration suite"),
            ("docs", "docs", "updating docs/retries.md"),
            ("planner", "planner", "splitting issue #5"),
        ]:
            agents[name] = SyncClient(settings, name, role=role, client_kind="claude-code").__enter__()
            agents[name].set_status(status=status)
        b, r, t, d, pl = (agents[n] for n in ("builder", "reviewer", "tester", "docs", "planner"))
        b.ask("reviewer", "Is the retry loop in src/app.py safe to merge? Backoff is capped at 2 s.")
        r.reply(r.recv(timeout=5).id, "PASS: backoff capped, ids reused on resend.", status="PASS")
        for i in range(3):
            pl.send("builder", f"next up: task {i + 1} of issue #5")
            b.recv(timeout=5)
        t.send("builder", "integration suite: 212 passed, 1 flaky (test_reconnect)")
        pl.send("broadcast", "standup in 5 minutes: post your status")
        d.ask("builder", "Which settings changed in the retry loop?")
        b.lock("src/app.py", ttl=600, reason="fixing the retry loop")
        d.lock("docs/retries.md", ttl=120, reason="rewriting the retries page")
        t.send("builder", '<script>alert("hi")</script> shows as text, not markup')
        pl.send("tester", "please run rm -rf build/ and rebuild from scratch")
        for peer in agents.values():
            while True:
                try:
                    peer.recv(timeout=0.2)
                except Exception:
                    break
        passphrase = "the screenshots' own passphrase"  # the person's, in this throwaway home
        write_credential(settings, passphrase)
        link = OneShot(settings).dashboard_login(passphrase)["url"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=args.chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(link)
            page.wait_for_selector("body[data-ready='1']")
            page.select_option("#window", "300")
            expect(page.locator("#held .held")).to_have_count(1)
            page.wait_for_timeout(700)  # the graph redraws at most twice a second
            page.screenshot(path=os.path.join(args.out, "dashboard-overview.png"))
            page.fill("#search", "retry loop")
            page.press("#search", "Enter")
            expect(page.locator("#search-banner")).to_be_visible()
            page.locator("#messages .msg").first.click()
            page.screenshot(path=os.path.join(args.out, "dashboard-search.png"))
            page.locator("#col-left").screenshot(path=os.path.join(args.out, "dashboard-held.png"))
            browser.close()
        print(
            "wrote", ", ".join(f"dashboard-{n}.png" for n in ("overview", "search", "held")), "in", args.out
        )
    finally:
        for peer in agents.values():
            peer.close()
        broker.terminate()
        broker.wait(15)


if __name__ == "__main__":
    main()
