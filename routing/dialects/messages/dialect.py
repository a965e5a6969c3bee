"""Anthropic's Messages API on the wire: the message object, the event stream, errors, the keepalive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from routing.canonical import ChatRequest
from routing.dialects.base import SSE_HEADERS, Answer
from routing.dialects.messages.request import parse_messages_request
from routing.dialects.messages.stream import MessagesStream, error_payload, event, message_usage, stop_reason
from routing.errors import RouterError

# Anthropic's own keepalive event: its SDKs skip it wherever it comes.
KEEPALIVE = event("ping", {"type": "ping"})


class Messages:
    name = "messages"
    api = "messages"
    keepalive = KEEPALIVE
    memory = None  # keeps nothing between requests
    stream_headers = SSE_HEADERS

    def authorization(self, header: Callable[[bytes], str]) -> str:
        """The key from ``x-api-key`` (what Anthropic's SDKs send), else from ``Authorization``."""
        key = header(b"x-api-key")
        return f"Bearer {key}" if key else header(b"authorization")

    def parse(self, body: bytes) -> ChatRequest:
        return parse_messages_request(body)

    def wants_usage(self, request: ChatRequest) -> bool:
        return True  # message_delta carries the usage in every stream

    def stream(self, request: ChatRequest, generation_id: str, created: int, model: str) -> MessagesStream:
        return MessagesStream(generation_id, model)

    def answer(self, answer: Answer) -> bytes:
        native = answer.native
        if native is not None:
            # Claude's own message (a request sent in its format): its content, thinking
            # signatures and stop as they came; the id, model and usage are the router's.
            content, stop, sequence = (
                native.get("content") or [],
                native.get("stop_reason"),
                native.get("stop_sequence"),
            )
        else:
            choice = answer.choices[0] if answer.choices else {}
            content = content_blocks(choice.get("message") or {}, answer.generation_id)
            stop, sequence = stop_reason(choice.get("finish_reason")), None
        payload = {
            "id": answer.generation_id,
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": answer.model,
            "stop_reason": stop or "end_turn",
            "stop_sequence": sequence,
            "usage": message_usage(answer.usage),
        }
        return orjson.dumps(payload)

    def error_body(self, error: RouterError) -> bytes:
        return orjson.dumps(error_payload(error))


def content_blocks(message: dict[str, Any], generation_id: str) -> list[dict[str, Any]]:
    """A canonical assistant message as Anthropic's content blocks: thinking, text, tool uses."""
    blocks: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content") or message.get("refusal")
    if isinstance(text, str) and text:
        blocks.append({"type": "text", "text": text})
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        tool_id = call.get("id") or f"toolu_{generation_id}_{i}"
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id,
                "name": function.get("name") or "",
                "input": tool_input(function.get("arguments")),
            }
        )
    return blocks


def tool_input(arguments: Any) -> Any:
    """A tool call's arguments as the object Anthropic sends (text that is not a JSON object is kept under ``arguments``)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}
