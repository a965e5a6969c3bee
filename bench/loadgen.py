"""A small, fast HTTP/1.1 load generator on raw asyncio sockets (``asyncio.Protocol``).

One ``Conn`` is one keep-alive connection carrying one request at a time. Responses are parsed
incrementally (content-length or chunked); SSE answers are split into events as they arrive,
with the arrival time of the first event carrying a token, the number of chunks, keepalive comments
and content tokens (every word the fake vendor sends is one token).

A target speaks one client API (``Target.api``): chat completions (``data:`` chunks), Anthropic
Messages or OpenAI Responses (``event:``/``data:`` pairs); a chunk is one event carrying data
(Messages' ``ping`` keepalive counts as a keepalive).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

now = time.monotonic  # CLOCK_MONOTONIC: comparable with the fake vendor's times in another process


@dataclass
class Target:
    """Where a request goes and which model name it asks for, per workload."""

    name: str
    host: str
    port: int
    key: str | None
    models: dict[str, str]  # workload -> model name
    api: str = "chat"  # "chat", "messages" or "responses" (see PATHS)

    def body(self, workload: str, stream: bool, content: str = "Say something.") -> bytes:
        model = self.models[workload]
        if self.api == "responses":
            return orjson.dumps({"model": model, "input": content, "stream": stream})
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
        if self.api == "messages":
            body["max_tokens"] = MESSAGES_MAX_TOKENS
            body["stream"] = stream
        elif stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    def request(self, workload: str, stream: bool, content: str = "Say something.") -> bytes:
        payload = self.body(workload, stream, content)
        auth = f"Authorization: Bearer {self.key}\r\n" if self.key else ""
        head = (
            f"POST {PATHS[self.api]} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload


PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}
# Messages requires max_tokens: more than any bench answer, so none is cut.
MESSAGES_MAX_TOKENS = 4096
# The event types of the other APIs that carry some of the answer (what "first token" waits for).
_ANSWER_EVENTS = frozenset(
    {
        "content_block_delta",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)


_ANSWER_FIELDS = ("content", "refusal", "reasoning_content", "reasoning", "tool_calls")


def _deltas(data: bytes, strict: bool) -> list[dict[str, Any]]:
    """The deltas of a chunk's choices; data that is not JSON has none, or raises if ``strict``."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        if strict:
            raise
        return []
    choices = payload.get("choices") if isinstance(payload, dict) else None
    return [choice.get("delta") or {} for choice in choices or ()]


class Response:
    __slots__ = (
        "chunked", "chunks", "count_tokens", "done", "done_at", "first_token_at", "generation_id", "head_done",
        "keepalives", "last_keepalive_at", "length", "on_event", "parts", "received", "sent_at", "sse",
        "sse_buf", "status", "text", "tokens",
    )  # fmt: skip

    def __init__(self, sse: bool = False, count_tokens: bool = False) -> None:
        self.sse = sse
        self.count_tokens = count_tokens
        self.on_event: Callable[[Response], None] | None = None
        self.done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.sent_at = 0.0
        self.done_at = 0.0
        # The first event carrying some of the answer: what "time to first token" measures. A
        # vendor's (or the bare relay's) first event is usually the role chunk, with no token;
        # the router sends that chunk together with the first token.
        self.first_token_at: float | None = None
        self.last_keepalive_at: float | None = None
        self.status = 0
        self.head_done = False
        self.chunked = False
        self.length: int | None = None
        self.received = 0
        self.generation_id = ""
        self.parts: list[bytes] = []
        self.sse_buf = b""
        self.chunks = 0
        self.keepalives = 0
        self.tokens = 0
        self.text: list[str] = []

    def feed(self, piece: bytes) -> None:
        if not self.sse:
            self.parts.append(piece)
            return
        buf = self.sse_buf + piece if self.sse_buf else piece
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            self._event(buf[start:end])
            start = end + 2
        self.sse_buf = buf[start:]

    def _event(self, event: bytes) -> None:
        if event[:1] == b":" or event.startswith(b"event: ping\n"):
            self.keepalives += 1
            self.last_keepalive_at = now()
        elif event.startswith(b"event: "):
            self.chunks += 1
            if self.first_token_at is None:
                data = event[event.find(b"\ndata: ") + 7 :]
                if orjson.loads(data).get("type") in _ANSWER_EVENTS:
                    self.first_token_at = now()
        elif event.startswith(b"data: "):
            data = event[6:]
            if data == b"[DONE]":
                return
            self.chunks += 1
            # Parsed only while the first token is awaited, or when tokens are counted.
            deltas = _deltas(data, self.count_tokens) if self.first_token_at is None or self.count_tokens else []
            if self.first_token_at is None and any(d.get(f) for d in deltas for f in _ANSWER_FIELDS):
                self.first_token_at = now()
            if self.count_tokens:
                for delta in deltas:
                    content = delta.get("content")
                    if content:
                        self.tokens += 1
                        self.text.append(content)
        else:
            return
        if self.on_event is not None:
            self.on_event(self)

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.response: Response | None = None
        self.lost = False
        self.closed_at: float | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        _, conn = await asyncio.get_running_loop().create_connection(cls, host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is not None and not response.done.done():
            if self.closed_at is not None:
                response.done.set_result(response)  # we closed it: the response is what arrived
            else:
                response.done.set_exception(ConnectionError("connection closed before the response ended"))

    def send(self, raw: bytes, response: Response) -> Response:
        assert self.transport is not None
        self.response = response
        response.sent_at = now()
        self.transport.write(raw)
        return response

    async def request(self, raw: bytes, sse: bool = False, count_tokens: bool = False) -> Response:
        return await self.send(raw, Response(sse, count_tokens)).done

    def close(self) -> float:
        self.closed_at = now()
        if self.transport is not None:
            self.transport.close()
        return self.closed_at

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.response is not None:
            self._parse(self.response)

    def _parse(self, r: Response) -> None:
        buf = self.buf
        if not r.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            r.status = int(lines[0].split(b" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    r.length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    r.chunked = True
                elif name == b"x-generation-id":
                    r.generation_id = value.strip().decode()
            r.head_done = True
        if r.chunked:
            while True:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";")[0], 16)
                if size == 0:
                    if len(buf) < end + 4:
                        return
                    del buf[: end + 4]
                    self._finish(r)
                    return
                if len(buf) < end + 2 + size + 2:
                    return
                piece = bytes(buf[end + 2 : end + 2 + size])
                del buf[: end + 2 + size + 2]
                r.feed(piece)
        else:
            length = r.length or 0
            take = min(len(buf), length - r.received)
            if take:
                r.feed(bytes(buf[:take]))
                del buf[:take]
                r.received += take
            if r.received >= length:
                self._finish(r)

    def _finish(self, r: Response) -> None:
        r.done_at = now()
        self.response = None
        if not r.done.done():
            r.done.set_result(r)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
