"""One HTTP/1.1 request over a plain socket, for the short-lived callers of the JSON API.

A hook runs on every tool call and a CLI command is one or two requests; both pay for
every import. The broker's API (docs/protocol.md §6) needs nothing of ``http.client``
(18–25 ms to import): one request per connection (``Connection: close``), a body with
``Content-Length``, and an answer read to the end. A loopback IPv4 broker (the usual
one) is reached with the ``_socket`` C module alone, and a host is never handed to
``getaddrinfo`` as ``str``, which would import the idna codec (8 ms).
"""

from __future__ import annotations

import _socket


class Endpoint:
    """Where the broker listens: ``http://HOST:PORT`` as a socket address and a Host header."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        netloc = self.url.split("://", 1)[-1].split("/", 1)[0]
        host, sep, port = netloc.rpartition(":")
        if not sep or "]" in port:  # no port (or only an IPv6 address's colons)
            host, port = netloc, "80"
        self.netloc = netloc
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)

    def connect(self, timeout: float) -> _socket.socket:
        """A connected socket, or `OSError`."""
        if self.host.count(".") == 3 and self.host.replace(".", "").isdigit():
            sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect((self.host, self.port))
            except OSError:
                sock.close()
                raise
            return sock
        import socket

        host = self.host.encode() if self.host.isascii() else self.host
        return socket.create_connection((host, self.port), timeout=timeout)

    def encode(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """The request's bytes: one request per connection (``Connection: close``)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        """``(status, payload)``; `OSError` (`TimeoutError` included) when the broker
        cannot be reached or does not answer, `ValueError` for an answer not HTTP."""
        sock = self.connect(timeout)
        chunks = []
        try:
            sock.sendall(self.encode(method, path, body, headers))
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        finally:
            sock.close()
        return answer(b"".join(chunks))


def answer(data: bytes) -> tuple[int, bytes]:
    """``(status, payload)`` of a whole HTTP/1.1 answer; `ValueError` if it is not one."""
    status_line, _, rest = data.partition(b"\r\n")
    head_block, _, payload = rest.partition(b"\r\n\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:60]!r}")
    if b"transfer-encoding: chunked" in head_block.lower():
        payload = _unchunk(payload)
    return int(parts[1]), payload


def _unchunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2 :]
    return b"".join(out)
