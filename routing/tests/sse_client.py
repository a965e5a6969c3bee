"""A raw-socket SSE client for tests that must control exactly when the client goes away."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import orjson


class RawStream:
    """POST a chat request and read the SSE answer event by event over a plain socket."""

    def __init__(self, url: str, key: str, body: dict[str, Any]) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        payload = orjson.dumps(body)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + payload)
        self.raw = b""
        self.buffer = b""
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.closed_at: float | None = None

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.raw += data
        if self.status is not None:
            self._dechunk()
        return True

    def _dechunk(self) -> None:
        if self.headers.get("transfer-encoding") != "chunked":
            self.buffer += self.raw
            self.raw = b""
            return
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.raw[:line_end].split(b";")[0], 16)
            if len(self.raw) < line_end + 2 + size + 2:
                return
            self.buffer += self.raw[line_end + 2 : line_end + 2 + size]
            self.raw = self.raw[line_end + 2 + size + 2 :]

    def read_head(self) -> None:
        while b"\r\n\r\n" not in self.raw:
            if not self._fill():
                raise ConnectionError("closed before headers")
        head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._dechunk()

    def next_event(self) -> bytes | None:
        """Return the next SSE event block (``data: ...`` or a ``:`` comment)."""
        if self.status is None:
            self.read_head()
        while True:
            index = self.buffer.find(b"\n\n")
            if index >= 0:
                block, self.buffer = self.buffer[:index], self.buffer[index + 2 :]
                return block
            if not self._fill():
                return None

    def next_data(self) -> dict[str, Any] | str | None:
        """Return the next ``data:`` payload (decoded), skipping comments."""
        while True:
            event = self.next_event()
            if event is None:
                return None
            if event.startswith(b"data:"):
                value = event[5:].strip()
                return "[DONE]" if value == b"[DONE]" else orjson.loads(value)

    def close(self) -> float:
        self.closed_at = time.monotonic()
        self.sock.close()
        return self.closed_at


def content_of(chunk: Any) -> str:
    if not isinstance(chunk, dict):
        return ""
    return "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
