"""A fake Google Vertex AI: Gemini, Claude on Vertex, and Google's OAuth2 token endpoint.

- ``POST /token``: the JWT-bearer grant google-auth makes for a service account. The fake
  checks the assertion's RS256 signature against the test service account's public key, its
  issuer, audience, scope and expiry, and issues an access token valid ``expires_in`` seconds.
- ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:streamGenerateContent?alt=sse``
  and ``:generateContent``: Gemini answers (SSE ``data:`` events, no ``[DONE]``).
- ``POST .../publishers/anthropic/models/{m}:streamRawPredict`` and ``:rawPredict``: Anthropic
  Messages answers (SSE ``event:``/``data:`` pairs).

Every API call must carry ``Authorization: Bearer <a token this fake issued, unexpired>``.
Every word is one token (see ``fakevendors.openai.WORDS``); ``tokens_written`` counts them.

Gemini 3 models (``gemini-3*``) behave as Google documents for thought signatures: each
``functionCall`` part they answer with carries a ``thoughtSignature``, and a request whose
model turn starts its function calls without one this fake issued (or Google's
``skip_thought_signature_validator`` sentinel, for histories from other models) is a 400.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fakevendors.openai import honoured, own_count, words
from fakevendors.server import Connection, FakeServer, RecordedRequest, dumps

GEMINI_PROMPT_TOKENS = 23  # what the fake reports as Gemini's promptTokenCount
CLAUDE_INPUT_TOKENS = 31  # what the fake reports as Claude's message_start input_tokens
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOOL_ARGUMENTS = ['{"city": ', '"Paris"}']  # Claude streams tool input in these pieces
_PATH = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/([^/]+)/models/([^/:]+):(\w+)$")
_METHODS = {
    "streamGenerateContent": "google", "generateContent": "google",
    "streamRawPredict": "anthropic", "rawPredict": "anthropic",
}  # fmt: skip


def service_account_key(token_uri: str, project: str = "test-project") -> dict[str, Any]:
    """Return a fresh service-account JSON (a new RSA key each call) pointing at ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"router@{project}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbits(64)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }


@dataclass
class Scenario:
    tokens: int = 5
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    # Fail before the answer with this HTTP status and body.
    status: int = 200
    error_body: dict[str, Any] | None = None
    # After this many tokens, send the vendor's in-stream error event.
    error_after: int | None = None
    # Answer with a function call when tools are offered (and no tool result came back yet).
    tool_call: bool = False
    # Reasoning words before the answer (Gemini `thought` parts, Claude thinking deltas).
    thoughts: int = 0
    # Gemini: block the prompt with this promptFeedback.blockReason.
    block_prompt: str | None = None
    # After this many tokens, end the body cleanly without a finish (a cut stream).
    cut_after: int | None = None
    # Seconds the issued access tokens live.
    expires_in: int = 3600
    # Respect maxOutputTokens / max_tokens (a bad vendor ignores it), counting with a tokenizer
    # of this many router tokens per token of its own, in which it also reports usage
    # (see ``fakevendors.openai.honoured`` and ``own_count``).
    honour_max_tokens: bool = True
    tokenizer_ratio: float = 1.0
    # Fields that replace the reported usage's (a broken vendor): Gemini usageMetadata fields,
    # Claude usage fields (in message_start and message_delta alike).
    usage_override: dict[str, Any] | None = None
    # The message of the in-stream error event (error_after), instead of the fake's own.
    error_text: str | None = None


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# Google's documented value for function calls that no Gemini model signed (other models' history).
SKIP_SIGNATURE = "skip_thought_signature_validator"


class FakeVertex(FakeServer):
    def __init__(self, public_key: Any = None, client_email: str = "", *, project: str = "test-project",
                 location: str = "us-central1", **scenario: Any) -> None:  # fmt: skip
        super().__init__()
        self.public_key = public_key
        self.client_email = client_email
        self.project = project
        self.location = location
        self.scenario = Scenario(**scenario)
        self.token_requests: list[RecordedRequest] = []
        self.issued: dict[str, float] = {}  # access token -> monotonic expiry
        self.api_requests: list[RecordedRequest] = []
        self.thought_signatures: set[str] = set()  # issued with Gemini 3 function calls

    def trust(self, service_account: dict[str, Any]) -> None:
        """Accept assertions signed by this service account's key."""
        key = serialization.load_pem_private_key(service_account["private_key"].encode(), password=None)
        self.public_key = key.public_key()
        self.client_email = service_account["client_email"]

    async def respond(self, request: RecordedRequest, conn: Connection) -> None:
        if request.path == "/token":
            self.token_requests.append(request)
            self._token(request, conn)
            return
        self.api_requests.append(request)
        match = _PATH.match(request.path)
        if request.method != "POST" or not match:
            conn.send_json(404, {"error": {"code": 404, "message": "Not found.", "status": "NOT_FOUND"}})
            return
        project, location, publisher, model, method = match.groups()
        if (project, location) != (self.project, self.location) or _METHODS.get(method) != publisher:
            message = f"Publisher model projects/{project}/locations/{location}/publishers/{publisher}/models/{model} not found."
            conn.send_json(404, {"error": {"code": 404, "message": message, "status": "NOT_FOUND"}})
            return
        if not self._authorized(request):
            message = "Request had invalid authentication credentials. Expected OAuth 2 access token."
            conn.send_json(401, {"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}})
            return
        body = request.json()
        if publisher == "google":
            await self._gemini(request, conn, body, model, method)
        else:
            await self._claude(request, conn, body, model, method)

    # -- OAuth2 ---------------------------------------------------------------------------------

    def _token(self, request: RecordedRequest, conn: Connection) -> None:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        problem = self._check_assertion(form)
        if problem:
            conn.send_json(400, {"error": "invalid_grant", "error_description": problem})
            return
        token = f"ya29.fake-{len(self.issued) + 1}-{secrets.token_hex(8)}"
        self.issued[token] = time.monotonic() + self.scenario.expires_in
        conn.send_json(200, {"access_token": token, "expires_in": self.scenario.expires_in, "token_type": "Bearer"})

    def _check_assertion(self, form: dict[str, str]) -> str | None:
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return "Unsupported grant type."
        try:
            header_b64, payload_b64, signature_b64 = form["assertion"].split(".")
            header, claims = orjson.loads(_b64decode(header_b64)), orjson.loads(_b64decode(payload_b64))
            signature = _b64decode(signature_b64)
        except (KeyError, ValueError):
            return "Malformed JWT assertion."
        if header.get("alg") != "RS256" or self.public_key is None:
            return "Unsupported JWT algorithm."
        try:
            signing_input = f"{header_b64}.{payload_b64}".encode()
            self.public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature."
        now = time.time()
        if claims.get("iss") != self.client_email:
            return "Invalid issuer."
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE or SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid audience or scope."
        if not claims.get("iat", now + 999) <= now + 60 < claims.get("exp", 0) + 60:
            return "Invalid JWT: token is expired or not yet valid."
        return None

    def _authorized(self, request: RecordedRequest) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme == "Bearer" and self.issued.get(token, 0) > time.monotonic()

    async def _fail_first(self, conn: Connection, s: Scenario, default: dict[str, Any]) -> bool:
        """Answer with the scenario's HTTP error, if any; return whether it did."""
        if s.status == 200:
            return False
        if await conn.pause(s.first_token_delay):
            conn.send_json(s.status, s.error_body or default)
        return True

    # -- Gemini -----------------------------------------------------------------------------------

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
        if await self._fail_first(conn, s, default_error):
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

    # -- Claude -----------------------------------------------------------------------------------

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
        if await self._fail_first(
            conn, s, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        ):
            return
        problem = self._claude_problem(body, method)
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
            content.append({"type": "thinking", "thinking": "".join(words(s.thoughts)), "signature": "sig"})
        if tool:
            count = 2
            content.append({"type": "tool_use", "id": "toolu_vrtx_fake1", "name": tool, "input": {"city": "Paris"}})
        else:
            content.append({"type": "text", "text": "".join(words(count))})
        stop = "tool_use" if tool else ("max_tokens" if count < s.tokens else "end_turn")
        request.tokens_written = count
        conn.send_json(200, {"id": "msg_vrtx_fake", "type": "message", "role": "assistant", "model": model,
                             "content": content, "stop_reason": stop, "stop_sequence": None,
                             "usage": {"input_tokens": CLAUDE_INPUT_TOKENS, "output_tokens": own_count(count, s.tokenizer_ratio) + s.thoughts,
                                       **(s.usage_override or {})}})  # fmt: skip

    async def _claude_stream(self, request: RecordedRequest, conn: Connection, s: Scenario, count: int, model: str,
                             tool: str | None) -> None:  # fmt: skip
        if not await conn.pause(s.first_token_delay):
            return
        conn.send_head(200, {"Content-Type": "text/event-stream; charset=utf-8"})
        message: dict[str, Any] = {"id": "msg_vrtx_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": CLAUDE_INPUT_TOKENS, "output_tokens": 1, **(s.usage_override or {})}}  # fmt: skip
        conn.write(self._event({"type": "message_start", "message": message}) + self._event({"type": "ping"}))
        index = 0
        if s.thoughts:
            conn.write(self._event({"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "thinking", "thinking": ""}}))  # fmt: skip
            for word in words(s.thoughts):
                conn.write(self._event({"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "thinking_delta", "thinking": word}}))  # fmt: skip
            conn.write(self._event({"type": "content_block_stop", "index": 0}))
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
            delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}}
            if not conn.write(self._event(delta)):
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
