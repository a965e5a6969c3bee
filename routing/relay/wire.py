"""What the relay writes to the client: ASGI messages, SSE frames, OpenAI bodies."""

from __future__ import annotations

from typing import Any

import orjson

from routing.errors import RouterError

KEEPALIVE = b": Siraya Model Router PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]


def start(status: int, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(
    generation_id: str, created: int, model: str, choices: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": generation_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if extra:
        payload.update(extra)
    return payload


def usage_body(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def error_chunk(generation_id: str, created: int, model: str, error: RouterError) -> bytes:
    """The router's mid-stream error (as OpenRouter does it), followed by ``[DONE]``."""
    payload = chunk(
        generation_id,
        created,
        model,
        [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        {"error": {"code": error.code or error.status, "message": error.message, "type": error.type}},
    )
    return sse(payload) + DONE


def error_response_headers(error: RouterError, generation_id: str | None) -> list[tuple[bytes, bytes]]:
    headers = list(JSON_HEADERS)
    if generation_id:
        headers.append((b"x-generation-id", generation_id.encode()))
    headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and "retry-after" not in {k.lower() for k in error.headers}:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    return headers


_PLAIN_DELTA = frozenset(("role", "content"))


def delivered_text(choices: list[dict[str, Any]]) -> str:
    """Text the client is billed for in a chunk: content, refusal, reasoning, tool-call arguments."""
    if len(choices) == 1:
        # The usual streamed chunk: one choice whose delta holds content (and perhaps the role).
        delta = choices[0].get("delta")
        if type(delta) is dict and delta.keys() <= _PLAIN_DELTA:
            content = delta.get("content")
            return content if type(content) is str else ""
    parts: list[str] = []
    for choice in choices:
        delta = choice.get("delta") or choice.get("message")
        if not isinstance(delta, dict):
            continue
        for name in ("content", "refusal", "reasoning_content", "reasoning"):
            value = delta.get(name)
            if isinstance(value, str) and value:
                parts.append(value)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                parts.append(function["arguments"])
    return "".join(parts)


def finish_reason(choices: list[dict[str, Any]]) -> str:
    """The last finish reason among a chunk's choices ("" when none has finished)."""
    found = ""
    for choice in choices:
        if choice.get("finish_reason"):
            found = choice["finish_reason"]
    return found


def carries_answer(choices: list[dict[str, Any]], text: str | None = None) -> bool:
    """Whether a chunk holds any of the answer (text, a tool call, or the end of it).

    ``text``: the chunk's ``delivered_text`` when the caller has it already."""
    for choice in choices:
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta") or {}
        if delta.get("tool_calls") or delta.get("function_call"):
            return True
    return bool(delivered_text(choices) if text is None else text)
