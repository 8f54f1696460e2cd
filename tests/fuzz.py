"""Fuzzers for the broker's two surfaces, shared by the test suite (a short, bounded
run) and ``benchmarks/fuzz_broker.py`` (the long form: 250,000 frames and more).

Each returns a `Tally`. The broker must answer every input with a typed error or a
result (``untyped`` counts anything else), never leave a request hanging (``hung``),
and keep serving (the caller checks with a real round trip afterwards).
"""

from __future__ import annotations

import json
import random
import socket
import string
import time
from dataclasses import dataclass, field
from typing import Any

from sessionmesh.codec import loads
from sessionmesh.errors import BadFrame

OPS = [
    "send", "ack", "inbox", "peers", "track", "await", "thread", "lock", "unlock", "locks",
    "subscribe", "unsubscribe", "set_status", "log", "ping", "held", "approve", "reject",
    "activity", "wake", "bye", "hello", "", "SEND", "__init__", "send\x00",
]  # fmt: skip
LONG_POLLS = {"await", "wake"}
ARG_KEYS = [
    "to", "body", "re", "id", "ids", "kind", "status", "priority", "ttl", "timeout", "state",
    "resource", "shared", "reason", "topic", "catch_up", "from_start", "limit", "after", "name",
    "secret", "meta", "from", "role", "client", "unique", "events", "person", "session", "close",
]  # fmt: skip


def _text(rng: random.Random) -> str:
    choice = rng.randrange(9)
    if choice == 0:
        return ""
    if choice == 1:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 40)))
    if choice == 2:
        return "".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(rng.randrange(1, 20)))
    if choice == 3:
        return rng.choice(["human", "human#2", "bob#2", "broadcast", "#topic", "a:b", "bob", "fuzz", "BOB"])
    if choice == 4:
        return "01a24daf-ef1f-7df8-836a-ad373b6d4a2e"[: rng.randrange(1, 37)]
    if choice == 5:
        return rng.choice(
            ["rm -rf /", "DROP TABLE users;", "ghp_" + "a" * 36, "-----BEGIN RSA PRIVATE KEY-----"]
        )
    if choice == 6:
        return "x" * rng.choice([100, 5000, 70000])
    if choice == 7:
        return rng.choice(["\ud800", "\x00", "\u202e", "\n\r", "%s%n", "../../etc/passwd"])
    return rng.choice(["received", "read", "delivered", "urgent", "request", "reply", "PASS", "a.py"])


def _value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(10 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**64), 10**400 if rng.random() < 0.1 else 7])
    if choice == 3:
        return rng.choice([0.5, -1e308, 1e308, 3.0, 1e-320])
    if choice in (4, 5):
        return _text(rng)
    if choice in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(ARG_KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def ws_frame(rng: random.Random, rid: int) -> tuple[str, bool]:
    """One frame's text, and whether the broker must answer it with a ``result`` (it
    carries a valid ``rid``)."""
    kind = rng.randrange(20)
    if kind == 0:  # not JSON (a lone surrogate cannot travel in a text frame: replaced)
        return _text(rng).encode("utf-8", "replace").decode(), False
    if kind == 1:
        return json.dumps(_value(rng)), False
    if kind == 2:
        return "{" * rng.randrange(1, 3000), False
    frame: dict[str, Any] = {"op": rng.choice(OPS)}
    args = {rng.choice(ARG_KEYS): _value(rng) for _ in range(rng.randrange(0, 6))}
    frame["args"] = args if kind != 3 else _value(rng)
    answered = kind != 4
    frame["rid"] = rid if answered else _value(rng)
    if frame["op"] == "bye":
        frame["op"] = "ping"
    # long polls answer when their wait ends (up to their timeout), not within a batch
    answered = answered and frame["op"] not in LONG_POLLS
    try:
        text = json.dumps(frame)
    except (ValueError, TypeError):
        return "{}", False
    try:
        loads(text)
    except BadFrame:  # the broker's strict JSON refuses it (an int past 64 bits, a lone
        return text, False  # surrogate): it answers an error frame, which has no rid
    return text, answered


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    typed_errors: int = 0
    untyped: int = 0
    hung: int = 0
    reconnects: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, code: str) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1


def _typed(frame: dict[str, Any], tally: Tally) -> None:
    if frame.get("ok") is True:
        return
    error = frame.get("error")
    if (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    ):
        tally.typed_errors += 1
        tally.count(error["code"])
    else:
        tally.untyped += 1


async def fuzz_ws(url: str, token: str, frames: int, *, seed: int = 0, batch: int = 50) -> Tally:
    """Send ``frames`` fuzzed frames on a session as ``fuzzer``, ``batch`` at a time,
    and check every answer."""
    import aiohttp

    rng = random.Random(seed)
    tally = Tally()
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        ws = None
        rid = 0
        while tally.sent < frames:
            if ws is None or ws.closed:
                tally.reconnects += ws is not None
                ws = await http.ws_connect(
                    url + "/v1/ws", headers={"Authorization": f"Bearer {token}"}, max_msg_size=0
                )
                await ws.send_str(json.dumps({"op": "hello", "args": {"name": "fuzzer"}}))
                hello = json.loads((await ws.receive(timeout=10)).data)
                assert hello["op"] == "welcome", hello
            waiting: set[int] = set()
            for _ in range(min(batch, frames - tally.sent)):
                rid += 1
                text, answered = ws_frame(rng, rid)
                await ws.send_str(text)
                tally.sent += 1
                if answered:
                    waiting.add(rid)
            deadline = time.monotonic() + 10
            while waiting and not ws.closed:
                try:
                    msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                if frame.get("op") == "result":
                    waiting.discard(frame.get("rid"))
                    tally.answered += 1
                    _typed(frame, tally)
                elif frame.get("op") == "error":
                    _typed(frame, tally)
            if waiting and not ws.closed:
                tally.hung += len(waiting)
        if ws is not None:
            await ws.close()
    tally.seconds = time.perf_counter() - started
    return tally


def http_request(rng: random.Random, token: str, host: str) -> bytes:
    """One raw HTTP request, valid or broken in one of many ways."""
    kind = rng.randrange(12)
    path = rng.choice(["/v1/send", "/v1/ping", "/v1/join", "/health", "/dashboard/v1/state", "/v1/person/session",
                       "/dashboard/v1/login", "/v1/" + _text(rng)[:20], "/%zz", "/" + "a" * 9000, "*"])  # fmt: skip
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "OPTIONS", "BREW", "G\x00T", ""])
    body = json.dumps(_value(rng)).encode() if rng.random() < 0.7 else _text(rng).encode("utf-8", "replace")
    headers = {
        "Host": rng.choice([host, host, "evil.example", "", "127.0.0.1:1"]),
        "Authorization": rng.choice([f"Bearer {token}", f"Bearer {token}", "Bearer x", "", "Basic a"]),
        "X-Mesh-Name": rng.choice(["fuzzer", "human", "bob#2", "", "\u00e9"]),
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    if kind == 0:
        headers["Content-Length"] = rng.choice(["-1", "abc", "99999999999", str(len(body) + 5)])
    if kind == 1:
        headers["Transfer-Encoding"] = "chunked"
    if kind == 2:
        headers[_text(rng)[:30] or "X"] = _text(rng)[:100]
    lines = [f"{method} {path} HTTP/1.1"]
    if kind == 3:
        lines = [rng.choice(["GET", "POST /v1/ping HTTP/9.9", "\x16\x03\x01", "GET / HTTP/1.1 extra"])]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace") + body
    if kind == 4:
        raw = raw.replace(b"\r\n", b"\n")
    if kind == 5:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    return raw


def _one_request(host: str, port: int, raw: bytes, timeout: float) -> tuple[str, str | None]:
    """Send one raw request on a connection of its own: ``("answered" | "hung", code)``,
    where ``code`` is the typed error's code, ``"untyped"`` for a JSON error without
    one, and None for anything else (a success, a plain-text 400 for a request that is
    not HTTP, a close without a word)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            return "hung", None
        except (ConnectionResetError, BrokenPipeError):
            return "answered", None  # refused at once: not hung
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if not status or b"application/json" not in head.lower() or int(status[0]) < 400:
        return "answered", None
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "answered", "untyped"
    typed = (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    )
    return "answered", error["code"] if typed else "untyped"


def fuzz_http(url: str, token: str, requests: int, *, seed: int = 0, timeout: float = 15.0) -> Tally:
    """Send ``requests`` raw requests (32 at a time, each on a connection of its own,
    ``Connection: close``); each must be answered or closed within ``timeout``, and a
    JSON error must be typed. A request whose body never comes all the way is answered
    after the broker's body deadline (10 s), hence the concurrency."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(seed)
    host_port = url.split("//", 1)[1]
    host, port = host_port.rsplit(":", 1)
    raws = [http_request(rng, token, host_port) for _ in range(requests)]
    tally = Tally()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for outcome, code in pool.map(lambda raw: _one_request(host, int(port), raw, timeout), raws):
            tally.sent += 1
            if outcome == "hung":
                tally.hung += 1
                continue
            tally.answered += 1
            if code == "untyped":
                tally.untyped += 1
            elif code is not None:
                tally.typed_errors += 1
                tally.count(code)
    tally.seconds = time.perf_counter() - started
    return tally
