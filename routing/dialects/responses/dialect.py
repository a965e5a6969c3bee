"""The Responses API on the wire: its events, the Response object, OpenAI-shaped errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from routing.canonical import ChatRequest
from routing.dialects.base import KEEPALIVE_COMMENT, SSE_HEADERS, Answer
from routing.dialects.responses.objects import answer_output, final_status, response_object
from routing.dialects.responses.schema import ResponsesRequest, echo, parse_responses_request
from routing.dialects.responses.stream import ResponsesStream
from routing.errors import RouterError


class Responses:
    name = "responses"
    api = "responses"
    keepalive = KEEPALIVE_COMMENT
    stream_headers = SSE_HEADERS

    def authorization(self, header: Callable[[bytes], str]) -> str:
        return header(b"authorization")

    def parse(self, body: bytes) -> ChatRequest:
        return parse_responses_request(body)

    def wants_usage(self, request: ChatRequest) -> bool:
        return True  # response.completed always carries the usage

    def stream(self, request: ChatRequest, generation_id: str, created: int, model: str) -> ResponsesStream:
        assert isinstance(request, ResponsesRequest)
        return ResponsesStream(generation_id, created, model, request.echo)

    def answer(self, answer: Answer) -> bytes:
        choice = answer.choices[0] if answer.choices else {}
        finish = choice.get("finish_reason") or ""
        output = answer_output(answer.generation_id, choice.get("message") or {})
        payload = response_object(
            answer.generation_id, answer.created, answer.model, _echo(answer.request),
            status=final_status(finish), output=output, usage=answer.usage, finish=finish,
        )  # fmt: skip
        return orjson.dumps(payload)

    def error_body(self, error: RouterError) -> bytes:
        return error.json()


def _echo(request: ChatRequest) -> dict[str, Any]:
    """The request's settings as the Response object repeats them."""
    return request.echo if isinstance(request, ResponsesRequest) else echo({})
