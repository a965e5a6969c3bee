"""Chat completions on the wire: chunks, the ``[DONE]`` line, whole answers, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from routing.canonical import ChatRequest
from routing.dialects.base import KEEPALIVE_COMMENT, SSE_HEADERS, Answer, Choices, ClientUsage
from routing.dialects.chat.schema import parse_chat_request
from routing.errors import RouterError
from routing.vendors.base import TEXT_PROBE, TextRun, TextShape

DONE = b"data: [DONE]\n\n"
_PROBE = TEXT_PROBE.encode()


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(
    generation_id: str, created: int, model: str, choices: Choices, extra: dict[str, Any] | None = None
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


def usage_body(usage: ClientUsage) -> dict[str, Any]:
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class ChatStream:
    """One streamed answer as ``chat.completion.chunk`` events: the vendor's choices under the
    router's id, creation time and model name."""

    __slots__ = ("created", "generation_id", "model", "shape", "shape_cut")

    def __init__(self, generation_id: str, created: int, model: str) -> None:
        self.generation_id = generation_id
        self.created = created
        self.model = model
        self.shape: TextShape | None = None  # the text shape of the last run rendered
        self.shape_cut: tuple[bytes, bytes, bytes] | None = None  # its chunk before and after the text

    def chunk(self, choices: Choices, extra: dict[str, Any] | None, native: dict[str, Any] | None = None) -> bytes:
        return sse(chunk(self.generation_id, self.created, self.model, choices, extra))

    def text_run(self, run: TextRun) -> bytes | None:
        # A chunk of the shape is the same JSON whatever its text, which orjson writes as it is
        # (it needs no escape): the chunk is rendered once, with a probe text, and cut there.
        if run.shape is not self.shape:
            self.shape = run.shape
            self.shape_cut = None
            whole = self.chunk(run.shape.choices(TEXT_PROBE), run.shape.extra)
            head, found, tail = whole.partition(_PROBE)
            if found and _PROBE not in tail:
                self.shape_cut = (head, tail, tail + head)
        if self.shape_cut is None:
            return None
        head, tail, between = self.shape_cut
        return head + between.join(run.raws) + tail

    def cut(self, choices: Choices) -> bytes:
        return self.chunk(choices, None)

    def finish(self, usage: ClientUsage | None) -> bytes:
        if usage is None:
            return DONE
        return self.chunk([], {"usage": usage_body(usage)}) + DONE

    def error(self, error: RouterError) -> bytes:
        """The router's mid-stream error (as OpenRouter does it), followed by ``[DONE]``."""
        choices = [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
        body = {"code": error.code or error.status, "message": error.message, "type": error.type}
        return self.chunk(choices, {"error": body}) + DONE


class ChatCompletions:
    name = "chat.completions"
    api = "chat_completions"
    keepalive = KEEPALIVE_COMMENT
    memory = None  # keeps nothing between requests
    stream_headers = SSE_HEADERS

    def authorization(self, header: Callable[[bytes], str]) -> str:
        return header(b"authorization")

    def parse(self, body: bytes) -> ChatRequest:
        return parse_chat_request(body)

    def wants_usage(self, request: ChatRequest) -> bool:
        return request.include_usage

    def stream(self, request: ChatRequest, generation_id: str, created: int, model: str) -> ChatStream:
        return ChatStream(generation_id, created, model)

    def answer(self, answer: Answer) -> bytes:
        payload: dict[str, Any] = {
            "id": answer.generation_id,
            "object": "chat.completion",
            "created": answer.created,
            "model": answer.model,
            "choices": answer.choices,
        }
        if answer.extra:
            payload.update(answer.extra)
        payload["usage"] = usage_body(answer.usage)
        return orjson.dumps(payload)

    def error_body(self, error: RouterError) -> bytes:
        return error.json()
