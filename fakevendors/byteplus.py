"""A fake BytePlus ModelArk region: ``POST /api/v3/chat/completions`` and ``/api/v3/embeddings``, Bearer ARK key.

Speaks ModelArk's differences from OpenAI: reasoning text in ``delta.reasoning_content``
before the answer, ``completion_tokens_details.reasoning_tokens`` in usage, errors as
``{"error": {"code", "message", "param", "type"}}`` with the HTTP status of ModelArk's
public error table, and the same object as a ``data:`` block inside a stream. It rejects
``max_tokens`` together with ``max_completion_tokens`` and more than 4 ``stop`` sequences.
Its limits count as ModelArk's do: ``max_tokens`` bounds the answer only, without the
reasoning text; ``max_completion_tokens`` bounds both.
"""

from __future__ import annotations

from typing import Any

from fakevendors.openai import PROMPT_TOKENS, FakeOpenAI, Scenario, honoured
from fakevendors.server import RecordedRequest

MAX_EMBEDDING_TEXTS = 256  # ModelArk's text embedding models, per call
REQUEST_ID = "Request id: 021700000000000fakefakefakefakefakefake"
# code: (HTTP status, type, message), from ModelArk's public error-code table.
ERRORS: dict[str, tuple[int, str, str]] = {
    "MissingParameter": (400, "BadRequest", "The request failed because it is missing one or multiple required parameters."),
    "InvalidParameter": (400, "BadRequest", "One or more parameters specified in the request are not valid."),
    "AuthenticationError": (401, "Unauthorized", "The API key or AK/SK in the request is missing or invalid."),
    "AccountOverdueError": (403, "Forbidden", "The request failed because your account has an overdue balance."),
    "AccessDenied": (403, "Forbidden", "The request failed because you do not have access to the requested resource."),
    "InvalidEndpoint.NotFound": (404, "NotFound", "The model or endpoint does not exist or you do not have access to it."),
    "InvalidEndpointOrModel.NotFound": (404, "NotFound", "The model or endpoint does not exist or you do not have access to it."),
    "SensitiveContentDetected": (400, "BadRequest", "The request failed because the input text may contain sensitive information."),
    "RateLimitExceeded.EndpointRPMExceeded": (429, "TooManyRequests", "The request has exceeded the RPM limit."),
    "RateLimitExceeded.EndpointTPMExceeded": (429, "TooManyRequests", "The request has exceeded the TPM limit."),
    "InternalServiceError": (500, "InternalServerError", "The service encountered an unexpected internal error."),
}  # fmt: skip


def error_body(code: str, param: str = "") -> tuple[int, dict[str, Any]]:
    status, kind, message = ERRORS[code]
    return status, {"error": {"code": code, "message": f"{message} {REQUEST_ID}", "param": param, "type": kind}}


class FakeBytePlus(FakeOpenAI):
    def __init__(self, api_key: str = "ark-test-key", **scenario: Any) -> None:
        super().__init__(**scenario)
        self.api_key = api_key
        # The first this many tokens of an answer are reasoning text.
        self.reasoning_tokens = 0
        # The code of the error block sent inside the stream at Scenario.error_after.
        self.stream_error_code = "InternalServiceError"

    def fail_with(self, code: str) -> None:
        """Answer every request with ModelArk's error ``code`` before streaming."""
        self.scenario.status, self.scenario.error_body = error_body(code)

    def refuse(self, request: RecordedRequest, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if request.path not in ("/api/v3/chat/completions", "/api/v3/embeddings"):
            return 404, {"error": {"code": "NotFound", "message": "not found", "param": "", "type": "NotFound"}}
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error_body("AuthenticationError")
        if not body.get("model"):
            return error_body("MissingParameter", "model")
        if "max_tokens" in body and "max_completion_tokens" in body:
            return error_body("InvalidParameter", "max_tokens")
        if request.path.endswith("/embeddings"):
            return self.embedding_fault(body)
        stop = body.get("stop")
        if isinstance(stop, list) and len(stop) > 4:
            return error_body("InvalidParameter", "stop")
        return None

    def embedding_fault(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """ModelArk's refusals of an embeddings body: texts only, at most ``MAX_EMBEDDING_TEXTS`` of them."""
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return error_body("InvalidParameter", "input")
        if len(texts) > MAX_EMBEDDING_TEXTS:
            return error_body("InvalidParameter", "input")
        return None

    def honoured_count(self, body: dict[str, Any], s: Scenario) -> int:
        if body.get("max_completion_tokens"):
            return honoured(s.tokens, body["max_completion_tokens"], s.tokenizer_ratio, s.honour_max_tokens)
        reasoning = min(self.reasoning_tokens, s.tokens)
        answer = honoured(s.tokens - reasoning, body.get("max_tokens"), s.tokenizer_ratio, s.honour_max_tokens)
        return reasoning + answer

    def token_delta(self, s: Scenario, i: int, word: str) -> dict[str, Any]:
        if i < self.reasoning_tokens:
            return {"reasoning_content": word}
        return super().token_delta(s, i - self.reasoning_tokens, word)

    def error_event(self, s: Scenario) -> dict[str, Any]:
        return error_body(self.stream_error_code)[1]

    def _usage(self, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion,
            "total_tokens": PROMPT_TOKENS + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": min(self.reasoning_tokens, completion)},
        }

    def decorate_completion(self, body: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        if self.reasoning_tokens:
            message = payload["choices"][0]["message"]
            content = message.get("content") or ""
            words = content.split(" ")
            cut = self.reasoning_tokens + 1  # content starts with a space
            message["reasoning_content"] = " ".join(words[:cut])
            message["content"] = " " + " ".join(words[cut:]) if len(words) > cut else ""
        return payload
