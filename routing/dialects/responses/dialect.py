"""The Responses API on the wire: its events, the Response object, OpenAI-shaped errors."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from routing.canonical import ChatRequest
from routing.dialects.base import KEEPALIVE_COMMENT, SSE_HEADERS, Answer
from routing.dialects.responses.memory import ResponsesMemory
from routing.dialects.responses.objects import answer_response
from routing.dialects.responses.schema import ResponsesRequest, parse_responses_request
from routing.dialects.responses.stream import ResponsesStream
from routing.errors import RouterError


class Responses:
    name = "responses"
    api = "responses"
    keepalive = KEEPALIVE_COMMENT
    memory = ResponsesMemory()
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
        return orjson.dumps(answer_response(answer))

    def error_body(self, error: RouterError) -> bytes:
        return error.json()
