"""A fake Azure OpenAI resource: both URL styles, ``api-key`` or Entra bearer auth, filter annotations.

Wire details follow Microsoft's docs (azure-ai-docs ``concepts/content-streaming.md``,
``content-filter.md``): the first stream chunk carries ``prompt_filter_results`` and
``choices: []`` with empty ``id``/``object``/``model``; in the default filter mode each
content choice carries ``content_filter_results``; in the asynchronous filter mode
annotation-only chunks (a choice with no ``delta``, ``content_filter_results`` and
``content_filter_offsets``) arrive between content chunks and after the finish, and a
late block is such a chunk with ``finish_reason: "content_filter"`` that ends the stream.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from fakevendors.openai import FakeOpenAI, Scenario
from fakevendors.server import Connection, RecordedRequest

# api-versions this fake serves on the deployment URL, and whether stream_options is in their request table.
API_VERSIONS = {"2024-06-01": False, "2024-10-21": False, "2024-12-01-preview": True, "2025-04-01-preview": True}
CATEGORIES = ("hate", "self_harm", "sexual", "violence")


def safe_results() -> dict[str, Any]:
    return {name: {"filtered": False, "severity": "safe"} for name in CATEGORIES}


def annotation_chunk(offset: int, finish: str | None = None, filtered: str | None = None) -> bytes:
    results = safe_results()
    if filtered:
        results[filtered] = {"filtered": True, "severity": "high"}
    choice = {
        "index": 0,
        "finish_reason": finish,
        "content_filter_results": results,
        "content_filter_offsets": {"check_offset": offset, "start_offset": 0, "end_offset": offset},
    }
    payload = {"id": "", "object": "", "created": 0, "model": "", "choices": [choice], "usage": None}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error(http_status: int, code: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return http_status, {"error": {"code": code, "message": message, **extra}}


class FakeAzure(FakeOpenAI):
    def __init__(self, api_key: str = "azure-test-key", entra_token: str | None = None, **scenario: Any) -> None:
        super().__init__(**scenario)
        self.api_key = api_key
        self.entra_token = entra_token
        # Asynchronous filter mode: annotations arrive apart from content, possibly late.
        self.async_filter = False
        # In asynchronous mode: before this token, a late filter block ends the stream.
        self.content_filter_after: int | None = None
        # Reject every prompt as a jailbreak (400 content_filter).
        self.prompt_filtered = False
        # A service principal (tenant, client id, secret): this fake is then also its Entra token endpoint.
        self.principal: tuple[str, str, str] | None = None
        self.token_lifetime = 3600  # seconds, Entra's expires_in
        self.tokens_issued: list[str] = []

    async def respond(self, request: RecordedRequest, conn: Connection) -> None:
        if request.path.endswith("/oauth2/v2.0/token"):
            conn.send_json(*self.issue_token(request))
            return
        await super().respond(request, conn)

    def issue_token(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        """The client-credentials grant of Entra ID (``POST /{tenant}/oauth2/v2.0/token``, form body)."""
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        tenant = request.path.split("/")[1]
        expected = self.principal and {
            "grant_type": "client_credentials",
            "client_id": self.principal[1],
            "client_secret": self.principal[2],
            "scope": "https://cognitiveservices.azure.com/.default",
        }
        if not self.principal or tenant != self.principal[0] or form != expected:
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
            }
        token = f"entra-fake-{len(self.tokens_issued) + 1}"
        self.tokens_issued.append(token)
        return 200, {"token_type": "Bearer", "expires_in": self.token_lifetime, "access_token": token}

    def authorized(self, request: RecordedRequest) -> bool:
        if self.principal is not None:
            return request.headers.get("authorization", "").removeprefix("Bearer ") in self.tokens_issued
        if self.entra_token is not None:
            return request.headers.get("authorization") == f"Bearer {self.entra_token}"
        return request.headers.get("api-key") == self.api_key and "authorization" not in request.headers

    def refuse(self, request: RecordedRequest, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        version = (request.query.get("api-version") or [""])[0]
        parts = request.path.strip("/").split("/")
        deployment_url = parts[:2] == ["openai", "deployments"] and (
            (len(parts) == 5 and parts[3:] == ["chat", "completions"]) or (len(parts) == 4 and parts[3] == "embeddings")
        )
        if request.path in ("/openai/v1/chat/completions", "/openai/v1/embeddings"):
            if version or not body.get("model"):
                return error(400, "BadRequest", "The v1 API takes no api-version and needs 'model'.")
            stream_options_ok = True
        elif deployment_url and version in API_VERSIONS:
            stream_options_ok = API_VERSIONS[version]
        else:
            return error(404, "404", "Resource not found")
        if not self.authorized(request):
            return error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint.")
        if "stream_options" in body and not stream_options_ok:
            return 400, {
                "error": {
                    "message": "Unrecognized request argument supplied: stream_options",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        if self.prompt_filtered:
            return self.prompt_filter_error()
        return None

    def prompt_filter_error(self) -> tuple[int, dict[str, Any]]:
        result = {**safe_results(), "jailbreak": {"filtered": True, "detected": True}}
        return error(
            400,
            "content_filter",
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            param="prompt",
            type=None,
            status=400,
            innererror={"code": "ResponsibleAIPolicyViolation", "content_filter_result": result},
        )

    def _chunk(self, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = orjson.loads(super()._chunk(body, delta, finish)[6:])
        if not self.async_filter and delta.get("content"):
            payload["choices"][0]["content_filter_results"] = safe_results()
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def stream_opening(self, body: dict[str, Any], s: Scenario) -> bytes:
        prompt = {"prompt_index": 0, "content_filter_results": safe_results()}
        payload = {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": [prompt]}
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def between_tokens(self, body: dict[str, Any], s: Scenario, i: int) -> bytes:
        return annotation_chunk(i + 1) if self.async_filter and i % 2 == 1 else b""

    def interruption(self, body: dict[str, Any], s: Scenario, i: int) -> bytes | None:
        if self.async_filter and self.content_filter_after == i:
            return annotation_chunk(i, "content_filter", filtered="violence") + b"data: [DONE]\n\n"
        return super().interruption(body, s, i)

    def stream_closing(self, body: dict[str, Any], s: Scenario, count: int) -> bytes:
        return annotation_chunk(count) if self.async_filter else b""

    def decorate_completion(self, body: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        payload["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": safe_results()}]
        for choice in payload["choices"]:
            choice["content_filter_results"] = safe_results()
        return payload
