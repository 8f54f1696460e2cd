"""A bare aiohttp WebSocket relay: the transport floor under sessionmesh's round trip.

Two clients connect to ``/ws?as=a`` and ``/ws?as=b``; every text frame from one is
forwarded to the other, parsed and re-encoded on the way (as any JSON broker must).
No storage, no receipts, no validation. Prints ``relay listening on PORT`` and
serves until SIGTERM. Used by bench_roundtrip.py as a baseline: the same stack as
``mesh serve`` (this interpreter, aiohttp, orjson through sessionmesh.codec, and
uvloop when it is installed, as server.run does) and the same number of hops as
mesh's send -> deliver -> ack -> answer. ``--plain`` runs it on asyncio's own loop
with the standard json module instead (the relay of the first measurement).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import WSMsgType, web

PLAIN = "--plain" in sys.argv[1:]
if PLAIN:

    def encode(value):  # type: ignore[no-untyped-def]
        return json.dumps(value, separators=(",", ":"))

    decode = json.loads
else:
    from sessionmesh.codec import dumps as encode
    from sessionmesh.codec import loads as decode


async def main() -> None:
    peers: dict[str, web.WebSocketResponse] = {}

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        me = request.query["as"]
        other = "b" if me == "a" else "a"
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peers[me] = ws
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and other in peers:
                await peers[other].send_str(encode(decode(msg.data)))
        peers.pop(me, None)
        return ws

    app = web.Application()
    app.add_routes([web.get("/ws", ws_handler)])
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"relay listening on {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    try:
        if PLAIN:
            raise ImportError
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
