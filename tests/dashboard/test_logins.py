"""One-time login codes and sessions, as plain calls."""

from __future__ import annotations

from sessionmesh.dashboard import LOGIN_CODE_TTL, SESSION_TTL, Logins

T0 = 1_000_000.0


def test_a_code_opens_one_session_once() -> None:
    logins = Logins()
    code = logins.mint(T0)
    session = logins.redeem(code, T0 + 1)
    assert session is not None and logins.valid(session, T0 + 2)
    assert logins.redeem(code, T0 + 2) is None


def test_a_stale_code_opens_nothing() -> None:
    logins = Logins()
    code = logins.mint(T0)
    assert logins.redeem(code, T0 + LOGIN_CODE_TTL + 0.1) is None


def test_an_unknown_code_or_session_is_refused() -> None:
    logins = Logins()
    logins.mint(T0)
    assert logins.redeem("made-up", T0) is None
    assert not logins.valid("made-up", T0)
    assert not logins.valid(None, T0)


def test_a_session_ends_after_its_lifetime() -> None:
    logins = Logins()
    session = logins.redeem(logins.mint(T0), T0)
    assert logins.valid(session, T0 + SESSION_TTL - 1)
    assert not logins.valid(session, T0 + SESSION_TTL + 1)


async def test_a_browser_too_slow_for_the_feed_is_told_to_reload_instead_of_buffered() -> None:
    import asyncio
    import json

    from sessionmesh.dashboard import BROWSER_BACKLOG, Browser

    class SlowSocket:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send_str(self, text: str) -> None:
            self.sent.append(text)

    ws = SlowSocket()
    browser = Browser(ws)  # type: ignore[arg-type]
    for i in range(BROWSER_BACKLOG + 5):  # all queued before the writer gets a turn
        browser.send(json.dumps({"op": "events", "n": i}))
    writer = asyncio.create_task(browser.writer())
    async with asyncio.timeout(5):
        while len(ws.sent) < 5:
            await asyncio.sleep(0)  # sleep-ok: yields the loop to the writer, bounded by the timeout
    writer.cancel()
    frames = [json.loads(t) for t in ws.sent]
    assert frames[0] == {"op": "resync"}  # the backlog was dropped, not sent
    assert [f["n"] for f in frames[1:]] == [
        BROWSER_BACKLOG + 1,
        BROWSER_BACKLOG + 2,
        BROWSER_BACKLOG + 3,
        BROWSER_BACKLOG + 4,
    ]
