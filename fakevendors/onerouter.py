"""A fake OneRouter (OpenRouter-style aggregator): ``POST /v1/chat/completions`` and ``/v1/embeddings``, Bearer key.

It sends ``: ONEROUTER PROCESSING`` comment lines before and between chunks, reports usage
(with ``cost``) when asked with ``usage: {include: true}`` or ``stream_options``, answers
errors before the stream with the HTTP status equal to ``error.code`` and, mid-stream, as a
``data:`` event carrying ``error`` and a ``finish_reason: "error"`` choice under HTTP 200.
"""

from __future__ import annotations

import time
from typing import Any

from fakevendors.openai import FakeOpenAI, Scenario
from fakevendors.server import RecordedRequest

COMMENT = b": ONEROUTER PROCESSING\n\n"
COST_PER_TOKEN = 0.000001  # USD; what the fake reports as its own cost


class FakeOneRouter(FakeOpenAI):
    def __init__(self, api_key: str = "or-test-key", **scenario: Any) -> None:
        super().__init__(**scenario)
        self.api_key = api_key
        self.stream_error_code = 502

    def fail_with(self, code: int, message: str = "fake upstream failure") -> None:
        """Answer every request with this error before streaming (HTTP status = code)."""
        self.scenario.status = code
        self.scenario.error_body = {"error": {"code": code, "message": message, "metadata": {"provider_name": "fake"}}}

    def refuse(self, request: RecordedRequest, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if request.path not in ("/v1/chat/completions", "/v1/embeddings"):
            return 404, {"error": {"code": 404, "message": "Not Found"}}
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"code": 401, "message": "No auth credentials found"}}
        return None

    def wants_usage(self, body: dict[str, Any]) -> bool:
        return bool((body.get("usage") or {}).get("include")) or super().wants_usage(body)

    def stream_opening(self, body: dict[str, Any], s: Scenario) -> bytes:
        return COMMENT * 2

    def between_tokens(self, body: dict[str, Any], s: Scenario, i: int) -> bytes:
        return COMMENT if i % 2 == 0 else b""

    def error_event(self, s: Scenario) -> dict[str, Any]:
        return {
            "id": "gen-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "fake",
            "provider": "fake",
            "error": {"code": self.stream_error_code, "message": "Provider disconnected"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }

    def _usage(self, completion: int) -> dict[str, Any]:
        usage = super()._usage(completion)
        usage["cost"] = round(usage["total_tokens"] * COST_PER_TOKEN, 9)
        return usage
