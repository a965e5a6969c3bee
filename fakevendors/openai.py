"""A fake OpenAI-compatible vendor: ``POST /chat/completions``, one token per chunk, and
``POST /embeddings`` (deterministic vectors, ``EMBEDDING_TOKENS`` prompt tokens per input).

Behaviour is set through ``FakeOpenAI.scenario`` (or per request, by the upstream model id
``fake?tokens=20&token_delay=0.05``, so one fake can serve several behaviours at once).
Every word in ``WORDS`` is one token in both cl100k_base and o200k_base, so a test knows
exactly how many tokens a stream of N chunks holds.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qsl

import orjson

from fakevendors.server import Connection, FakeServer, RecordedRequest, dumps

WORDS = [" the", " cat", " sat", " on", " a", " mat", " and", " then", " it", " slept"]
PROMPT_TOKENS = 17  # what this fake reports as prompt tokens, whatever the prompt
EMBEDDING_TOKENS = 7  # the prompt tokens this fake reports per embedding input, whatever the input
EMBEDDING_DIMENSIONS = 8  # a vector's length when the request sets no dimensions
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per call


def fake_vector(item: str | list[int], size: int) -> list[float]:
    """The fake's vector of an input: the same input, the same floats (exact in float32)."""
    digest = hashlib.sha256(str(item).encode()).digest() * (size // 32 + 1)
    return [(byte - 128) / 128 for byte in digest[:size]]


def embedding_inputs(body: dict[str, Any]) -> list[Any] | None:
    """The inputs of an OpenAI embeddings body, or None when OpenAI would refuse them."""
    given = body.get("input")
    if isinstance(given, str):
        given = [given]
    elif isinstance(given, list) and given and all(isinstance(t, int) for t in given):
        given = [given]
    if not isinstance(given, list) or not given or len(given) > MAX_EMBEDDING_INPUTS:
        return None
    if not all((isinstance(i, str) or isinstance(i, list)) and i for i in given):
        return None
    return given


def words(count: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(count)]


def honoured(tokens: int, limit: Any, ratio: float = 1.0, honour: bool = True) -> int:
    """The words a fake writes when asked for ``tokens`` under a completion ``limit``.

    ``ratio`` is the router's tokens per token of the fake's own tokenizer: a vendor that honours
    a limit of N of its tokens may write N * ratio of the router's. A fake that does not honour
    limits (``honour=False``) writes all it was asked for.
    """
    if not honour or not isinstance(limit, int) or limit <= 0:
        return tokens
    return min(tokens, int(limit * ratio))


def own_count(words_written: int, ratio: float = 1.0) -> int:
    """The tokens a fake reports for ``words_written`` of the router's tokens, counted with its
    own tokenizer (``ratio`` of the router's tokens per token of its own)."""
    return math.ceil(words_written / ratio)


@dataclass
class Scenario:
    tokens: int = 5
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    # Fail before the stream with this HTTP status and body.
    status: int = 200
    error_body: dict[str, Any] | None = None
    retry_after: str | None = None
    # After this many tokens, send an error event in the stream (OpenRouter style).
    error_after: int | None = None
    # After this many tokens, reset the connection.
    reset_after: int | None = None
    # After this many tokens, send a chunk that is not JSON.
    malformed_after: int | None = None
    # Never answer (hold the connection open) before / after this many tokens.
    hang_after: int | None = None
    # Report usage when the client asked for it (include_usage).
    report_usage: bool = True
    # Respect max_tokens (a bad vendor ignores it).
    honour_max_tokens: bool = True
    # The router's tokens per token of this vendor's tokenizer: it honours limits and reports
    # usage in its own tokens (see ``honoured`` and ``own_count``).
    tokenizer_ratio: float = 1.0
    # Answer with a tool call instead of text.
    tool_call: bool = False
    # Split every write into pieces of this many bytes (exercise the SSE parser).
    split_bytes: int | None = None
    # Split write number i of the stream in two at byte split_sweep + i (0: off).
    split_sweep: int = 0
    # Pause between the pieces of a split write, so the router reads them separately.
    split_pause: float = 0.002
    # Words (tokens) per content chunk.
    words_per_chunk: int = 1
    # Send one content chunk of this many tokens (4 bytes each: " the") before the others.
    big_chunk_tokens: int = 0
    # Fields that replace the reported usage's (a broken vendor: {"prompt_tokens": -5}).
    usage_override: dict[str, Any] | None = None
    # The message of the mid-stream error event (error_after), instead of the fake's own.
    error_text: str | None = None


class FakeOpenAI(FakeServer):
    def __init__(self, **scenario: Any) -> None:
        super().__init__()
        self.scenario = Scenario(**scenario)

    def scenario_for(self, request: RecordedRequest, body: dict[str, Any]) -> Scenario:
        scenario = self.scenario
        messages = body.get("messages") or [{}]
        if scenario.tool_call and messages[-1].get("role") == "tool":
            scenario = replace(scenario, tool_call=False)  # the tool answered: now answer in text
        model = str(body.get("model", ""))
        if "?" not in model:
            return scenario
        names = {f.name: f.type for f in fields(Scenario)}
        overrides: dict[str, Any] = {}
        for name, value in parse_qsl(model.split("?", 1)[1]):
            if name in names:
                kind = names[name]
                overrides[name] = float(value) if "float" in str(kind) else int(value) if "int" in str(kind) else value
        return replace(scenario, **overrides)

    # -- hooks: the fakes of OpenAI-compatible vendors (Azure, BytePlus, OneRouter) override these --

    def refuse(self, request: RecordedRequest, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """Return (status, error body) when the vendor would reject the request (URL, auth, fields)."""
        if not request.path.endswith(("/chat/completions", "/embeddings")):
            return 404, {"error": {"message": "not found", "type": "invalid_request_error"}}
        return None

    def token_delta(self, s: Scenario, i: int, word: str) -> dict[str, Any]:
        if not s.tool_call:
            return {"content": word}
        call: dict[str, Any] = {"index": 0, "function": {"arguments": word}}
        if i == 0:
            call.update({"id": "call_fake1", "type": "function"})
            call["function"]["name"] = "get_weather"
        return {"tool_calls": [call]}

    def error_event(self, s: Scenario) -> dict[str, Any]:
        """The payload of a mid-stream error event (``Scenario.error_after``)."""
        return {"error": {"message": "fake mid-stream failure", "type": "server_error", "code": 502}}

    def interruption(self, body: dict[str, Any], s: Scenario, i: int) -> bytes | None:
        """Bytes that end the stream before token ``i`` (None: go on)."""
        if s.error_after == i:
            event = self.error_event(s)
            if s.error_text is not None:
                event["error"]["message"] = s.error_text
            return b"data: " + orjson.dumps(event) + b"\n\n"
        return None

    def stream_opening(self, body: dict[str, Any], s: Scenario) -> bytes:
        """Bytes sent after the response head, before the first chunk."""
        return b""

    def between_tokens(self, body: dict[str, Any], s: Scenario, i: int) -> bytes:
        """Bytes sent after token ``i`` (annotations, comment lines)."""
        return b""

    def stream_closing(self, body: dict[str, Any], s: Scenario, count: int) -> bytes:
        """Bytes sent after the finish chunk, before the usage chunk."""
        return b""

    def wants_usage(self, body: dict[str, Any]) -> bool:
        return bool((body.get("stream_options") or {}).get("include_usage"))

    def decorate_completion(self, body: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    def honoured_count(self, body: dict[str, Any], s: Scenario) -> int:
        """The tokens (words) of the answer, within the request's limit when the fake honours it."""
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        return honoured(s.tokens, limit, s.tokenizer_ratio, s.honour_max_tokens)

    async def respond(self, request: RecordedRequest, conn: Connection) -> None:
        body = request.json() if request.body else {}
        refusal = self.refuse(request, body)
        if refusal is not None:
            conn.send_json(*refusal)
            return
        scenario = self.scenario_for(request, body)
        if scenario.status != 200:
            headers = {"Retry-After": scenario.retry_after} if scenario.retry_after else None
            error = scenario.error_body or {"error": {"message": "fake failure", "type": "server_error", "code": None}}
            if not await conn.pause(scenario.first_token_delay):
                return
            conn.send_json(scenario.status, error, headers)
            return
        if request.path.endswith("/embeddings"):
            await self.embeddings(conn, body, scenario)
            return
        count = self.honoured_count(body, scenario)
        if body.get("stream"):
            await self._stream(request, conn, body, scenario, count)
        else:
            await self._complete(request, conn, body, scenario, count)

    def embedding_refusal(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The vendor's 400 for an embeddings body it would refuse (OpenAI's words)."""
        fault = None
        if embedding_inputs(body) is None:
            fault = "input"
        elif body.get("encoding_format", "float") not in ("float", "base64"):
            fault = "encoding_format"
        elif "dimensions" in body and (type(body["dimensions"]) is not int or body["dimensions"] < 1):
            fault = "dimensions"
        if fault is None:
            return None
        message = (
            f"'$.{fault}' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
        )
        return 400, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}

    async def embeddings(self, conn: Connection, body: dict[str, Any], s: Scenario) -> None:
        refusal = self.embedding_refusal(body)
        if refusal is not None:
            conn.send_json(*refusal)
            return
        if s.hang_after is not None:
            await conn.pause(3600)
            return
        if not await conn.pause(s.first_token_delay):
            return
        inputs = embedding_inputs(body) or []
        size = body.get("dimensions") or EMBEDDING_DIMENSIONS
        data = []
        for index, item in enumerate(inputs):
            vector: Any = fake_vector(item, size)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        data.reverse()  # the index, not the order, says which input a vector answers
        tokens = EMBEDDING_TOKENS * len(inputs)
        payload: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
        if s.report_usage:
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens, **(s.usage_override or {})}
        conn.send_json(200, payload)

    def reported_usage(self, s: Scenario, completion: int) -> dict[str, Any]:
        """The usage this fake reports: its own figures, or the scenario's broken ones."""
        return {**self._usage(completion), **(s.usage_override or {})}

    def _usage(self, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion,
            "total_tokens": PROMPT_TOKENS + completion,
        }

    async def _complete(
        self, request: RecordedRequest, conn: Connection, body: dict[str, Any], s: Scenario, count: int
    ) -> None:
        if s.hang_after is not None:
            await conn.pause(3600)
            return
        if not await conn.pause(s.first_token_delay + s.token_delay * count):
            return
        message: dict[str, Any] = {"role": "assistant", "content": "".join(words(count))}
        finish = "stop"
        if s.tool_call:
            message = {"role": "assistant", "content": None, "tool_calls": [self._tool_call(count)]}
            finish = "tool_calls"
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": self.reported_usage(s, own_count(count, s.tokenizer_ratio)),
        }
        request.tokens_written = count
        conn.send_json(200, self.decorate_completion(body, payload))

    def _tool_call(self, count: int) -> dict[str, Any]:
        return {
            "id": "call_fake1",
            "type": "function",
            "function": {
                "name": "get_weather",
                "arguments": orjson.dumps({"city": "".join(words(count)).strip()}).decode(),
            },
        }

    def _chunk(self, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    async def _send(self, conn: Connection, data: bytes, s: Scenario) -> bool:
        """Write ``data`` (split as the scenario says), then wait while the router reads slowly."""
        cuts: list[int] = []
        if s.split_bytes:
            cuts = list(range(s.split_bytes, len(data), s.split_bytes))
        elif s.split_sweep:
            self._writes = getattr(self, "_writes", 0) + 1
            cut = (s.split_sweep + self._writes) % len(data)
            cuts = [cut] if cut else []
        start = 0
        for cut in [*cuts, len(data)]:
            if not conn.write(data[start:cut]):
                return False
            start = cut
            if cut < len(data) and not await conn.pause(s.split_pause):
                return False
        return await conn.drain()

    async def _stream(
        self, request: RecordedRequest, conn: Connection, body: dict[str, Any], s: Scenario, count: int
    ) -> None:
        if s.hang_after == 0:
            await conn.pause(3600)
            return
        if not await conn.pause(s.first_token_delay):
            return
        conn.send_head(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        self._writes = 0
        opening = self.stream_opening(body, s) + self._chunk(body, {"role": "assistant", "content": ""})
        if not await self._send(conn, opening, s):
            return
        if s.big_chunk_tokens:
            if not await self._send(conn, self._chunk(body, {"content": " the" * s.big_chunk_tokens}), s):
                return
            request.tokens_written += s.big_chunk_tokens
        pieces = ["".join(words(s.words_per_chunk)) for _ in range(count)] if s.words_per_chunk > 1 else words(count)
        for i, word in enumerate(pieces):
            if i and not await conn.pause(s.token_delay):
                return
            interruption = self.interruption(body, s, i)
            if interruption is not None:
                await self._send(conn, interruption, s)
                return
            if s.reset_after == i:
                conn.abort()
                return
            if s.malformed_after == i:
                await self._send(conn, b"data: {not json\n\n", s)
                return
            if s.hang_after == i:
                await conn.pause(3600)
                return
            if not await self._send(conn, self._chunk(body, self.token_delta(s, i, word)), s):
                return
            request.tokens_written += s.words_per_chunk
            extra = self.between_tokens(body, s, i)
            if extra and not await self._send(conn, extra, s):
                return
        finish = "tool_calls" if s.tool_call else ("length" if count < s.tokens else "stop")
        await self._send(conn, self._chunk(body, {}, finish) + self.stream_closing(body, s, count), s)
        if s.report_usage and self.wants_usage(body):
            usage: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": body.get("model"), "choices": [], "usage": self.reported_usage(s, own_count(request.tokens_written, s.tokenizer_ratio))}  # fmt: skip
            await self._send(conn, b"data: " + dumps(usage) + b"\n\n", s)
        await self._send(conn, b"data: [DONE]\n\n", s)
        conn.end()
