"""Claude's own format on the fake Bedrock: ``InvokeModel`` answers the message JSON,
``InvokeModelWithResponseStream`` each of Claude's stream events, base64, in the ``bytes`` of a
``chunk`` frame (``fakevendors.claude`` builds the events, thinking signatures and cache usage)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakevendors import claude as native
from fakevendors.eventstream import chunk, exception
from fakevendors.openai import honoured, own_count, words
from fakevendors.server import Connection, RecordedRequest

CLAUDE_VERSION = "bedrock-2023-05-31"


class ClaudeInvoke:
    """Claude's own format on the fake Bedrock (a mixin of ``FakeBedrock``)."""

    scenario: Any  # fakevendors.bedrock.Scenario
    prompt_tokens: int
    claude_signatures: native.Signatures
    _error: Callable[..., None]  # the fake's error answer and its write (split into pieces or not)
    _write: Callable[[Connection, bytes, Any], bool]

    def _claude_problem(self, body: dict[str, Any]) -> str | None:
        if body.get("anthropic_version") != CLAUDE_VERSION:
            return f"anthropic_version: must be {CLAUDE_VERSION}"
        for extraneous in ("model", "stream"):
            if extraneous in body:
                return f"extraneous key [{extraneous}] is not permitted"
        if set(body.get("metadata") or {}) - {"user_id"}:
            return "metadata: Extra inputs are not permitted"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: required key [max_tokens] not found"
        return self.claude_signatures.problem(body)

    def _claude_usage(self, s: Any, output_tokens: int) -> dict[str, Any]:
        counts = native.usage(self.prompt_tokens, s.cache_read_tokens, s.cache_write_tokens, output_tokens)
        return {**counts, **(s.usage_override or {})}

    async def _invoke(self, request: RecordedRequest, conn: Connection, body: dict[str, Any], model: str,
                      stream: bool) -> None:  # fmt: skip
        s = self.scenario
        problem = self._claude_problem(body)
        if problem:
            self._error(conn, 400, "ValidationException", problem)
            return
        count = honoured(s.tokens, body["max_tokens"], s.tokenizer_ratio, s.honour_max_tokens)
        stop = "max_tokens" if count < s.tokens else "end_turn"
        output = own_count(count, s.tokenizer_ratio) + s.reasoning_tokens
        if not stream:
            if not await conn.pause(s.first_token_delay + s.token_delay * count):
                return
            content = [native.thinking_block(s.reasoning_tokens, self.claude_signatures)] if s.reasoning_tokens else []
            content.append({"type": "text", "text": "".join(words(count))})
            request.tokens_written = count
            conn.send_json(200, native.message(model, content, stop, self._claude_usage(s, output)))
            return
        if not await conn.pause(s.first_token_delay):
            return
        conn.send_head(
            200, {"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": "fake-request-id"}
        )
        opening = [native.message_start(model, self._claude_usage(s, 1))]
        index = 0
        if s.reasoning_tokens:
            opening += native.thinking_events(0, s.reasoning_tokens, self.claude_signatures)
            index = 1
        opening.append({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        if not self._write(conn, b"".join(chunk(e) for e in opening), s):
            return
        for i, word in enumerate(words(count)):
            if i and not await conn.pause(s.token_delay):
                return
            if s.exception_after == i:
                self._write(conn, exception(s.exception_type, s.exception_message), s)
                conn.end()
                return
            if not self._write(conn, chunk(native.text_delta(index, word)), s):
                return
            request.tokens_written += 1
        delta, stop_event = native.message_end(stop, output)
        metrics = {"inputTokenCount": self.prompt_tokens, "outputTokenCount": output, "invocationLatency": 42,
                   "firstByteLatency": 7}  # fmt: skip
        tail = [{"type": "content_block_stop", "index": index}, delta,
                {**stop_event, "amazon-bedrock-invocationMetrics": metrics}]  # fmt: skip
        self._write(conn, b"".join(chunk(e) for e in tail), s)
        conn.end()
