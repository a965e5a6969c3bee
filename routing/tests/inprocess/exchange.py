"""One request to the ASGI entry with a scripted ``receive``/``send``, and what the client got.

The body goes whole or in parts; the client can leave at a chosen moment (while the body is
read, once the vendor is called, after N body messages, at a time) or stop reading (``send``
blocks, which the stall guard must notice). The result reads like an ``httpx.Response`` and
offers the SSE events parsed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from django.core.asgi import get_asgi_application

from routing.relay.entry import serve_http

# Bound on one exchange: a relay that never answers fails the test instead of hanging the run.
EXCHANGE_SECONDS = 10.0

Condition = Callable[["Exchange"], bool]


@dataclass
class Exchange:
    """One request through the ASGI entry and what the client got.

    ``body_parts`` splits the body into that many ``http.request`` messages; with
    ``disconnect_in_body`` the client leaves instead of sending the last part. ``disconnect_when``
    is checked every millisecond once the request is running (``after_messages``, ``at``, or any
    condition on the exchange or a script). ``stop_reading_after`` makes ``send`` block forever
    from that body message on: a client that stopped reading. ``during`` runs a coroutine once
    ``during_when`` holds (a server shutdown, say).
    """

    body: bytes
    request_headers: list[tuple[bytes, bytes]]
    path: str = "/v1/chat/completions"
    method: str = "POST"
    query: bytes = b""
    body_parts: int = 1
    disconnect_in_body: bool = False
    disconnect_when: Condition | None = None
    disconnect_after: int | None = None  # body messages received, then the client leaves at once
    stop_reading_after: int | None = None
    during: Callable[[], Awaitable[Any]] | None = None
    during_when: Condition | None = None
    # What the client got.
    status: int = 0
    response_headers: dict[bytes, bytes] = field(default_factory=dict)
    raw: bytes = b""
    messages: int = 0  # body messages sent to the client
    body_reads: int = 0
    started_at: float = 0.0
    disconnected: bool = False
    disconnected_at: float | None = None
    blocked: bool = False  # a send is blocked: the client stopped reading

    def __post_init__(self) -> None:
        self._gone = asyncio.Event()  # binds to the running loop on first wait (Python 3.10+)

    # -- the client's side of ASGI -----------------------------------------------------------

    async def run(self) -> None:
        self.started_at = time.monotonic()
        watchers = [asyncio.create_task(self._disconnect_when())]
        if self.during is not None:
            watchers.append(asyncio.create_task(self._run_during()))
        try:
            async with asyncio.timeout(EXCHANGE_SECONDS):
                await serve_http(django_application(), self.scope(), self.receive, self.send)
        finally:
            for watcher in watchers:
                watcher.cancel()

    def scope(self) -> dict[str, Any]:
        path = self.path
        return {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": self.method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": self.query,
            "headers": [
                (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode()), *self.request_headers,
            ],
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        }  # fmt: skip

    async def receive(self) -> dict[str, Any]:
        if self.body_reads < self.body_parts:
            self.body_reads += 1
            last = self.body_reads == self.body_parts
            if last and self.disconnect_in_body:
                self.disconnect()
                return {"type": "http.disconnect"}
            size = -(-len(self.body) // self.body_parts)
            part = self.body[(self.body_reads - 1) * size : self.body_reads * size]
            return {"type": "http.request", "body": part, "more_body": not last}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_headers = dict(message["headers"])
            return
        if self.stop_reading_after is not None and self.messages >= self.stop_reading_after:
            self.blocked = True
            await asyncio.get_running_loop().create_future()  # until the relay gives up on the client
        if self.disconnected:
            return  # the server drops what it writes to a closed connection
        self.messages += 1
        self.raw += message.get("body", b"")
        if self.messages == self.disconnect_after:
            self.disconnect()

    def disconnect(self) -> None:
        self.disconnected = True
        self.disconnected_at = time.monotonic()
        self._gone.set()

    async def _until(self, condition: Condition | None) -> None:
        """Return once ``condition`` holds, checked every millisecond (it reads plain attributes: no event to wait on)."""
        while True:
            if condition is None or condition(self):
                return
            await asyncio.sleep(0.001)

    async def _disconnect_when(self) -> None:
        if self.disconnect_when is not None:
            await self._until(self.disconnect_when)
            self.disconnect()

    async def _run_during(self) -> None:
        assert self.during is not None
        await self._until(self.during_when)
        await self.during()

    # -- what the client got -----------------------------------------------------------------

    @property
    def generation_id(self) -> str:
        return self.response_headers[b"x-generation-id"].decode()

    def json(self) -> Any:
        return orjson.loads(self.raw)

    # What an ``httpx.Response`` offers, so a test written against a live router reads the same.
    @property
    def status_code(self) -> int:
        return self.status

    @property
    def headers(self) -> httpx.Headers:
        return httpx.Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.response_headers.items()])

    @property
    def text(self) -> str:
        return self.raw.decode()

    def error(self) -> dict[str, Any]:
        assert self.response_headers[b"content-type"] == b"application/json", self.raw
        return dict(orjson.loads(self.raw)["error"])

    def events(self) -> list[Any]:
        """The SSE data payloads, parsed (``"[DONE]"`` kept as the string)."""
        payloads = [line[6:] for line in self.raw.split(b"\n") if line.startswith(b"data: ")]
        return [p.decode() if p == b"[DONE]" else orjson.loads(p) for p in payloads]

    def chunks(self) -> list[dict[str, Any]]:
        return [event for event in self.events() if isinstance(event, dict)]

    def comments(self) -> list[bytes]:
        return [line for line in self.raw.split(b"\n") if line.startswith(b":")]

    def answer(self) -> str:
        """The answer's text: the streamed deltas' content, or a whole answer's message."""
        if self.response_headers.get(b"content-type") == b"application/json":
            return "".join(choice["message"]["content"] or "" for choice in self.json()["choices"])
        return "".join(
            choice.get("delta", {}).get("content") or "" for chunk in self.chunks() for choice in chunk["choices"]
        )

    def finish_reasons(self) -> list[str]:
        """The finish reasons in order: of the streamed chunks, or of a whole answer's choices."""
        if self.response_headers.get(b"content-type") == b"application/json":
            return [choice["finish_reason"] for choice in self.json()["choices"]]
        return [
            choice["finish_reason"]
            for chunk in self.chunks()
            for choice in chunk.get("choices") or []
            if choice.get("finish_reason")
        ]


def after_messages(count: int) -> Condition:
    """A condition: the client has received ``count`` body messages."""
    return lambda exchange: exchange.messages >= count


def at(seconds: float) -> Condition:
    """A condition: ``seconds`` have passed since the request began."""
    return lambda exchange: time.monotonic() - exchange.started_at >= seconds


_django: list[Any] = []


def django_application() -> Any:
    """Django's ASGI application, for the paths that are not the relay's (made once)."""
    if not _django:
        _django.append(get_asgi_application())
    return _django[0]
