"""The fake Vertex's Claude answers (``rawPredict``, ``streamRawPredict``): Anthropic Messages and its SSE events."""

from __future__ import annotations

from typing import Any

from fakevendors import claude as native
from fakevendors.openai import honoured, own_count, words
from fakevendors.server import Connection, RecordedRequest, dumps
from fakevendors.vertex.scenario import Scenario, fail_first

CLAUDE_INPUT_TOKENS = native.INPUT_TOKENS  # what the fake reports as Claude's message_start input_tokens
TOOL_ARGUMENTS = ['{"city": ', '"Paris"}']  # Claude streams tool input in these pieces


class ClaudeAnswers:
    """Claude's side of the fake Vertex (a mixin of ``FakeVertex``)."""

    scenario: Scenario
    claude_signatures: native.Signatures

    def _claude_usage(self, s: Scenario, output_tokens: int) -> dict[str, Any]:
        counts = native.usage(CLAUDE_INPUT_TOKENS, s.cache_read_tokens, s.cache_write_tokens, output_tokens)
        return {**counts, **(s.usage_override or {})}

    def _claude_problem(self, body: dict[str, Any], method: str) -> str | None:
        if body.get("anthropic_version") != "vertex-2023-10-16":
            return "anthropic_version: must be vertex-2023-10-16"
        if "model" in body:
            return "model: Extra inputs are not permitted"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        if bool(body.get("stream")) != (method == "streamRawPredict"):
            return "stream: must be true for streamRawPredict only"
        used: set[str] = set()
        for i, message in enumerate(body.get("messages") or ()):
            if i and message.get("role") == body["messages"][i - 1].get("role"):
                return f"messages.{i}: roles must alternate between user and assistant"
            for block in message.get("content") if isinstance(message.get("content"), list) else ():
                if block.get("type") == "tool_use":
                    used.add(block.get("id"))
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in used:
                    return f"messages.{i}: tool_result block(s) provided without a matching tool_use"
        return None

    def _event(self, payload: dict[str, Any]) -> bytes:
        return f"event: {payload['type']}\n".encode() + b"data: " + dumps(payload) + b"\n\n"

    async def _claude(self, request: RecordedRequest, conn: Connection, body: dict[str, Any], model: str, method: str) -> None:  # fmt: skip
        s = self.scenario
        if await fail_first(conn, s, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}):
            return
        problem = self._claude_problem(body, method) or self.claude_signatures.problem(body)
        if problem:
            conn.send_json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": problem}})
            return
        count = honoured(s.tokens, body["max_tokens"], s.tokenizer_ratio, s.honour_max_tokens)
        last = body["messages"][-1]["content"]
        answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
        tool = (
            (body.get("tools") or [{}])[0].get("name") if s.tool_call and body.get("tools") and not answered else None
        )
        if method == "rawPredict":
            await self._claude_whole(request, conn, s, count, model, tool)
        else:
            await self._claude_stream(request, conn, s, count, model, tool)

    async def _claude_whole(self, request: RecordedRequest, conn: Connection, s: Scenario, count: int, model: str,
                            tool: str | None) -> None:  # fmt: skip
        if not await conn.pause(s.first_token_delay + s.token_delay * count):
            return
        content: list[dict[str, Any]] = []
        if s.thoughts:
            content.append(native.thinking_block(s.thoughts, self.claude_signatures))
        if tool:
            count = 2
            content.append({"type": "tool_use", "id": "toolu_vrtx_fake1", "name": tool, "input": {"city": "Paris"}})
        else:
            content.append({"type": "text", "text": "".join(words(count))})
        stop = "tool_use" if tool else ("max_tokens" if count < s.tokens else "end_turn")
        request.tokens_written = count
        counts = self._claude_usage(s, own_count(count, s.tokenizer_ratio) + s.thoughts)
        conn.send_json(200, native.message(model, content, stop, counts))

    async def _claude_stream(self, request: RecordedRequest, conn: Connection, s: Scenario, count: int, model: str,
                             tool: str | None) -> None:  # fmt: skip
        if not await conn.pause(s.first_token_delay):
            return
        conn.send_head(200, {"Content-Type": "text/event-stream; charset=utf-8"})
        start = native.message_start(model, self._claude_usage(s, 1))
        start["message"]["usage"].update(s.usage_override or {})
        conn.write(self._event(start) + self._event({"type": "ping"}))
        index = 0
        if s.thoughts:
            conn.write(b"".join(self._event(e) for e in native.thinking_events(0, s.thoughts, self.claude_signatures)))
            index = 1
        if tool:
            await self._claude_tool(request, conn, index, tool, s)
            return
        conn.write(self._event({"type": "content_block_start", "index": index,
                                "content_block": {"type": "text", "text": ""}}))  # fmt: skip
        for i, word in enumerate(words(count)):
            if i and not await conn.pause(s.token_delay):
                return
            if s.cut_after == i:
                return
            if s.error_after == i:
                conn.write(
                    self._event(
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": s.error_text or "Overloaded"},
                        }
                    )
                )
                return
            if not conn.write(self._event(native.text_delta(index, word))):
                return
            request.tokens_written += 1
        conn.write(self._event({"type": "content_block_stop", "index": index}))
        stop = "max_tokens" if count < s.tokens else "end_turn"
        self._claude_end(conn, stop, own_count(count, s.tokenizer_ratio) + s.thoughts, s)

    async def _claude_tool(
        self, request: RecordedRequest, conn: Connection, index: int, tool: str, s: Scenario
    ) -> None:
        block = {"type": "tool_use", "id": "toolu_vrtx_fake1", "name": tool, "input": {}}
        conn.write(self._event({"type": "content_block_start", "index": index, "content_block": block}))
        for piece in TOOL_ARGUMENTS:
            if not await conn.pause(s.token_delay):
                return
            conn.write(self._event({"type": "content_block_delta", "index": index,
                                    "delta": {"type": "input_json_delta", "partial_json": piece}}))  # fmt: skip
            request.tokens_written += 1
        conn.write(self._event({"type": "content_block_stop", "index": index}))
        self._claude_end(conn, "tool_use", len(TOOL_ARGUMENTS) + s.thoughts, s)

    def _claude_end(self, conn: Connection, stop: str, output_tokens: int, s: Scenario) -> None:
        override = {k: v for k, v in (s.usage_override or {}).items() if k == "output_tokens"}
        conn.write(self._event({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": output_tokens, **override}}))  # fmt: skip
        conn.write(self._event({"type": "message_stop"}))
