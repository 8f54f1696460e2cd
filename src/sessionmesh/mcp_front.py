"""The first answers of `mesh mcp`, given before the MCP SDK has loaded.

Importing the SDK takes most of a second, and some programs do not wait that long
for a server they start: Codex lists tools from the servers that answered in its
start-up grace and goes on without the rest. So `mesh mcp` answers ``initialize``
and ``tools/list`` at once, from a snapshot of what the SDK server says
(``assets/mcp/handshake.json``, checked against the live SDK by the tests), while a
thread imports the SDK. Every other request waits for it. Once loaded, the SDK
server is handed the lines already answered (their answers are not written twice)
and everything after them, and serves the rest of the session.

Standard library only, and JSON-RPC over newline-delimited stdio as the MCP stdio
transport defines it.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from collections.abc import AsyncIterator
from importlib import resources
from typing import IO, Any

EOF = object()  # stdin closed
READY = object()  # the SDK server module is imported


class Lines:
    """stdin, read line by line by one thread for the life of the process, so the
    early answers and the SDK server read the same stream in order."""

    def __init__(self, fd: int) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.replay: list[bytes] = []

        def pump() -> None:
            # os.read, not sys.stdin: a daemon thread blocked inside a buffered
            # reader's lock aborts the interpreter at exit
            rest = b""
            while chunk := os.read(fd, 65536):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    self.queue.put(line + b"\n")
            if rest:
                self.queue.put(rest)
            self.queue.put(EOF)

        threading.Thread(target=pump, name="mcp-stdin", daemon=True).start()

    def get(self) -> Any:
        return self.queue.get()

    async def __aiter__(self) -> AsyncIterator[str]:
        """What the SDK server reads: the replayed lines, then stdin to its end.

        A daemon thread hands the lines over, so a server that ends while stdin is
        still open (a failed join) does not wait for the client's next line to exit.
        """
        import asyncio

        for line in self.replay:
            yield line.decode("utf-8", "replace")
        loop = asyncio.get_running_loop()
        handed: asyncio.Queue[Any] = asyncio.Queue()

        def forward() -> None:
            while True:
                item = self.queue.get()
                try:
                    loop.call_soon_threadsafe(handed.put_nowait, item)
                except RuntimeError:  # the loop is closed: the server is gone
                    return
                if item is EOF:
                    return

        threading.Thread(target=forward, name="mcp-lines", daemon=True).start()
        while (item := await handed.get()) is not EOF:
            if isinstance(item, bytes):
                yield item.decode("utf-8", "replace")


class Output:
    """stdout for the SDK server: drops its answers to requests already answered."""

    def __init__(self, stream: IO[bytes], answered: set[Any]) -> None:
        self.stream = stream
        self.answered = answered

    async def write(self, text: str) -> None:
        if self.answered:
            message = json.loads(text)
            if "id" in message and "method" not in message and message["id"] in self.answered:
                self.answered.discard(message["id"])
                return
        self.stream.write(text.encode())

    async def flush(self) -> None:
        self.stream.flush()


def snapshot() -> dict[str, Any]:
    """The SDK server's ``initialize`` result (without ``protocolVersion``), the
    protocol versions it accepts, and its ``tools/list`` result."""
    text = resources.files("sessionmesh").joinpath("assets/mcp/handshake.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def answer(message: dict[str, Any], snap: dict[str, Any]) -> dict[str, Any] | None:
    """The early answer to one client message, or None when the SDK must answer it."""
    method, msg_id = message.get("method"), message.get("id")
    if msg_id is None:
        return None
    if method == "initialize":
        asked = (message.get("params") or {}).get("protocolVersion")
        versions = snap["protocol_versions"]
        version = asked if asked in versions else versions[-1]
        result = {"protocolVersion": version, **snap["initialize"]}
        return {"jsonrpc": "2.0", "id": msg_id, "result": result}
    if method == "tools/list" and not (message.get("params") or {}).get("cursor"):
        return {"jsonrpc": "2.0", "id": msg_id, "result": snap["tools"]}
    return None


def serve_early(lines: Lines, out: IO[bytes]) -> tuple[set[Any], bool]:
    """Answer what can be answered until the SDK is loaded; returns the ids answered
    and whether stdin is still open. Raises what the SDK's import raised."""
    snap = snapshot()
    answered: set[Any] = set()
    while True:
        item = lines.get()
        if item is READY:
            return answered, True
        if isinstance(item, BaseException):
            raise item
        if item is EOF:
            return answered, False
        lines.replay.append(item)
        try:
            message = json.loads(item)
        except ValueError:
            continue  # the SDK answers a parse error once it runs
        reply = answer(message, snap) if isinstance(message, dict) else None
        if reply is not None:
            out.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            out.flush()
            answered.add(message["id"])


def run(
    settings: Any,
    name: str | None,
    *,
    exclusive_cwd: bool = False,
    channel: bool = False,
    client: str = "mcp",
) -> int:
    """`mesh mcp`: answer the handshake at once, then serve with the SDK."""
    lines = Lines(sys.stdin.fileno())

    def load() -> None:
        try:
            from . import mcp  # noqa: F401 - the import is the slow part

            lines.queue.put(READY)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            lines.queue.put(exc)

    threading.Thread(target=load, name="mcp-import", daemon=True).start()
    answered, open_ = serve_early(lines, sys.stdout.buffer)
    if not open_:
        return 0
    from .mcp import run_server

    return run_server(
        settings,
        name,
        exclusive_cwd=exclusive_cwd,
        channel=channel,
        client=client,
        stdin=lines,
        stdout=Output(sys.stdout.buffer, answered),
    )
