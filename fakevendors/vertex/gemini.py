"""The fake Vertex's Gemini answers (``generateContent``, ``streamGenerateContent``), thought signatures included."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import orjson

from fakevendors.openai import honoured, own_count, words
from fakevendors.server import Connection, RecordedRequest, dumps
from fakevendors.vertex.scenario import Scenario, fail_first

GEMINI_PROMPT_TOKENS = 23  # what the fake reports as Gemini's promptTokenCount
# Google's documented value for function calls that no Gemini model signed (other models' history).
SKIP_SIGNATURE = "skip_thought_signature_validator"


class GeminiAnswers:
    """Gemini's side of the fake Vertex (a mixin of ``FakeVertex``)."""

    scenario: Scenario
    thought_signatures: set[str]  # issued with Gemini 3 function calls

    def _gemini_problem(self, body: dict[str, Any], model: str, method: str, query: dict[str, list[str]]) -> str | None:
        if method == "streamGenerateContent" and query.get("alt") != ["sse"]:
            return "This fake only streams with alt=sse."
        if model.startswith("gemini-3"):
            for content in body.get("contents") or ():
                calls = [p for p in content.get("parts") or () if "functionCall" in p]
                if calls and calls[0].get("thoughtSignature") not in {*self.thought_signatures, SKIP_SIGNATURE}:
                    return "Function call is missing a thought_signature in functionCall parts."
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return "contents is required."
        called: list[str] = []
        for i, content in enumerate(contents):
            if content.get("role") not in ("user", "model") or not content.get("parts"):
                return f"contents[{i}] needs a role of user or model and parts."
            if i and content["role"] == contents[i - 1]["role"]:
                return f"contents[{i}] repeats the role of contents[{i - 1}]."
            for part in content["parts"]:
                if "functionCall" in part:
                    called.append(part["functionCall"]["name"])
                if "functionResponse" in part:
                    name = part["functionResponse"].get("name")
                    if name not in called or not isinstance(part["functionResponse"].get("response"), dict):
                        return f"functionResponse '{name}' answers no functionCall."
        return None

    def _gemini_usage(self, count: int, s: Scenario) -> dict[str, Any]:
        count = own_count(count, s.tokenizer_ratio)  # reported in its own tokens
        usage: dict[str, Any] = {"promptTokenCount": GEMINI_PROMPT_TOKENS, "candidatesTokenCount": count,
                                 "totalTokenCount": GEMINI_PROMPT_TOKENS + count + s.thoughts}  # fmt: skip
        if s.thoughts:
            usage["thoughtsTokenCount"] = s.thoughts
        return {**usage, **(s.usage_override or {})}

    def _gemini_chunk(self, parts: list[dict[str, Any]], usage: dict[str, Any], finish: str | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        if finish:
            candidate["finishReason"] = finish
        payload = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-fake"}
        return b"data: " + dumps(payload) + b"\r\n\r\n"

    async def _gemini(self, request: RecordedRequest, conn: Connection, body: dict[str, Any], model: str, method: str) -> None:  # fmt: skip
        s = self.scenario
        default_error = {"error": {"code": s.status, "message": "Resource exhausted. Please try again later.",
                                   "status": "RESOURCE_EXHAUSTED"}}  # fmt: skip
        if await fail_first(conn, s, default_error):
            return
        problem = self._gemini_problem(body, model, method, request.query)
        if problem:
            conn.send_json(400, {"error": {"code": 400, "message": problem, "status": "INVALID_ARGUMENT"}})
            return
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        count = honoured(s.tokens, limit, s.tokenizer_ratio, s.honour_max_tokens)
        answered = any("functionResponse" in p for p in body["contents"][-1]["parts"])
        tools = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
        call: dict[str, Any] | None = None
        if s.tool_call and tools and not answered:
            call = {"functionCall": {"name": tools[0]["name"], "args": {"city": "Paris"}}}
            if model.startswith("gemini-3"):
                signature = base64.b64encode(secrets.token_bytes(24)).decode()
                self.thought_signatures.add(signature)
                call["thoughtSignature"] = signature
        if method == "generateContent":
            await self._gemini_whole(request, conn, s, count, call)
        else:
            await self._gemini_stream(request, conn, s, count, call)

    async def _gemini_whole(self, request: RecordedRequest, conn: Connection, s: Scenario, count: int,
                            call: dict[str, Any] | None) -> None:  # fmt: skip
        if not await conn.pause(s.first_token_delay + s.token_delay * count):
            return
        usage = self._gemini_usage(0, s)
        if s.block_prompt:
            conn.send_json(200, {"promptFeedback": {"blockReason": s.block_prompt}, "usageMetadata": usage})
            return
        parts: list[dict[str, Any]] = [{"text": "".join(words(s.thoughts)), "thought": True}] if s.thoughts else []
        if call:
            count = 1
            parts.append(call)
        else:
            parts.append({"text": "".join(words(count))})
        usage = self._gemini_usage(count, s)
        finish = "MAX_TOKENS" if count < s.tokens and not call else "STOP"
        payload = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish}],
                   "usageMetadata": usage, "modelVersion": "gemini-fake"}  # fmt: skip
        request.tokens_written = count
        conn.send_json(200, payload)

    async def _gemini_stream(self, request: RecordedRequest, conn: Connection, s: Scenario, count: int,
                             call: dict[str, Any] | None) -> None:  # fmt: skip
        if not await conn.pause(s.first_token_delay):
            return
        conn.send_head(200, {"Content-Type": "text/event-stream"})
        if s.block_prompt:
            payload = {"promptFeedback": {"blockReason": s.block_prompt}, "usageMetadata": self._gemini_usage(0, s)}
            conn.write(b"data: " + orjson.dumps(payload) + b"\r\n\r\n")
            return
        for word in words(s.thoughts):
            if not conn.write(self._gemini_chunk([{"text": word, "thought": True}], self._gemini_usage(0, s))):
                return
        if call:
            request.tokens_written = 1
            conn.write(self._gemini_chunk([call], self._gemini_usage(1, s), "STOP"))
            return
        for i, word in enumerate(words(count)):
            if i and not await conn.pause(s.token_delay):
                return
            if s.cut_after == i:
                return
            if s.error_after == i:
                error = {
                    "error": {
                        "code": 503,
                        "message": s.error_text or "The service is currently unavailable.",
                        "status": "UNAVAILABLE",
                    }
                }
                conn.write(b"data: " + orjson.dumps(error) + b"\r\n\r\n")
                return
            if not conn.write(self._gemini_chunk([{"text": word}], self._gemini_usage(i + 1, s))):
                return
            request.tokens_written += 1
        finish = "MAX_TOKENS" if count < s.tokens else "STOP"
        conn.write(self._gemini_chunk([{"text": ""}], self._gemini_usage(count, s), finish))
