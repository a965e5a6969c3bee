"""A real HTTP/1.1 server on loopback, run in a background thread, for fake vendors.

Each fake vendor subclasses ``FakeServer`` and implements ``respond(request, conn)``.
The server records every request, how many tokens it wrote, and the moment it saw the
client's socket close (``asyncio.Protocol.connection_lost``, so the time is exact).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import orjson


def dumps(value: Any) -> bytes:
    """JSON bytes, with integers past 64 bits too (a broken vendor's figures; orjson refuses them)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    raw_target: str = ""
    received_at: float = field(default_factory=time.monotonic)
    tokens_written: int = 0
    finished: bool = False  # the fake wrote its whole answer
    closed_at: float | None = None  # monotonic time the client's socket closed

    def json(self) -> Any:
        return orjson.loads(self.body)


class Connection(asyncio.Protocol):
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self.data = asyncio.Event()
        self.current: RecordedRequest | None = None
        self.chunked = False
        self.writable = asyncio.Event()  # clear while the transport's write buffer is full
        self.writable.set()

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.open_connections += 1
        self.server.connections.add(self)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def drain(self) -> bool:
        """Wait while the client reads slower than we write (TCP backpressure), as a real server does."""
        while not self.writable.is_set():
            await self.writable.wait()  # also set when the connection is lost
        return not self.closed.is_set()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.data.set()

    def eof_received(self) -> bool:
        self._lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        if self.closed.is_set():
            return
        now = time.monotonic()
        self.server.open_connections -= 1
        self.server.connections.discard(self)
        if self.current is not None and self.current.closed_at is None:
            self.current.closed_at = now
        self.closed.set()
        self.data.set()
        self.writable.set()

    # -- reading a request --
    async def _read_until(self, marker: bytes) -> bytes | None:
        while True:
            index = self.buffer.find(marker)
            if index >= 0:
                head = bytes(self.buffer[:index])
                del self.buffer[: index + len(marker)]
                return head
            if self.closed.is_set():
                return None
            self.data.clear()
            await self.data.wait()

    async def _read_exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if self.closed.is_set():
                return None
            self.data.clear()
            await self.data.wait()
        body = bytes(self.buffer[:size])
        del self.buffer[:size]
        return body

    async def _read_request(self) -> RecordedRequest | None:
        head = await self._read_until(b"\r\n\r\n")
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self._read_exactly(int(headers.get("content-length", "0") or 0))
        if body is None:
            return None
        parts = urlsplit(target)
        return RecordedRequest(method, parts.path, parse_qs(parts.query), headers, body, raw_target=target)

    async def _serve(self) -> None:
        try:
            while not self.closed.is_set():
                request = await self._read_request()
                if request is None:
                    break
                self.current = request
                self.server.requests.append(request)
                await self.server.respond(request, self)
                if self.chunked and not self.closed.is_set():
                    self.end()
                if request.headers.get("connection", "").lower() == "close":
                    self.close()
        except Exception as exc:  # a fake must never die silently
            self.server.errors.append(exc)
            self.close()

    # -- writing a response --
    def write_raw(self, data: bytes) -> bool:
        if self.closed.is_set() or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def send_head(self, status: int, headers: dict[str, str] | None = None, chunked: bool = True) -> None:
        lines = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        self.chunked = chunked
        self.write_raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send_body(
        self, status: int, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        self.send_head(
            status, {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}, chunked=False
        )
        self.write_raw(body)
        if self.current is not None:
            self.current.finished = True

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, dumps(payload), headers=headers)

    def write(self, data: bytes) -> bool:
        """Write one chunk of a chunked body; False once the client has gone."""
        if not data:
            return not self.closed.is_set()
        return self.write_raw(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self) -> None:
        if self.chunked:
            self.chunked = False
            self.write_raw(b"0\r\n\r\n")
            if self.current is not None:
                self.current.finished = True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Reset the connection (RST), as a crashing vendor would."""
        if self.transport is not None:
            self.transport.abort()

    async def pause(self, seconds: float) -> bool:
        """Sleep, waking early if the client goes away. Return whether it is still there."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self.closed.wait(), seconds)
            except TimeoutError:
                pass
        return not self.closed.is_set()


class FakeServer:
    """Base of the fake vendors: a thread with its own event loop serving HTTP on loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.errors: list[Exception] = []
        self.open_connections = 0
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def respond(self, request: RecordedRequest, conn: Connection) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self._server = self.loop.run_until_complete(
                self.loop.create_server(lambda: Connection(self), self.host, self.port, backlog=4096)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()
            self.loop.close()

        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self.loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for conn in list(self.connections):
                conn.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self.loop = None

    def wait_closed(self, request: RecordedRequest, timeout: float = 2.0) -> float | None:
        """Block until the fake saw ``request``'s client close; return that moment."""
        deadline = time.monotonic() + timeout
        while request.closed_at is None and time.monotonic() < deadline:
            time.sleep(0.001)
        return request.closed_at

    def last(self) -> RecordedRequest:
        deadline = time.monotonic() + 5
        while not self.requests and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.requests[-1]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
