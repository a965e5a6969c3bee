"""A fake Google Vertex AI: Gemini, Claude on Vertex, and Google's OAuth2 token endpoint.

- ``POST /token``: the JWT-bearer grant google-auth makes for a service account. The fake
  checks the assertion's RS256 signature against the test service account's public key, its
  issuer, audience, scope and expiry, and issues an access token valid ``expires_in`` seconds.
- ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:streamGenerateContent?alt=sse``
  and ``:generateContent``: Gemini answers (SSE ``data:`` events, no ``[DONE]``).
- ``POST .../publishers/anthropic/models/{m}:streamRawPredict`` and ``:rawPredict``: Anthropic
  Messages answers (SSE ``event:``/``data:`` pairs).
- ``POST .../publishers/google/models/{m}:predict``: text embeddings (``embeddings``).

Every API call must carry ``Authorization: Bearer <a token this fake issued, unexpired>``.
Every word is one token (see ``fakevendors.openai.WORDS``); ``tokens_written`` counts them.

Gemini 3 models (``gemini-3*``) behave as Google documents for thought signatures: each
``functionCall`` part they answer with carries a ``thoughtSignature``, and a request whose
model turn starts its function calls without one this fake issued (or Google's
``skip_thought_signature_validator`` sentinel, for histories from other models) is a 400.

The package: ``oauth`` (the token endpoint), ``gemini`` and ``claude`` (each publisher's
answers), ``embeddings`` (``:predict``), ``scenario`` (how the fake answers).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization

from fakevendors.claude import Signatures
from fakevendors.server import Connection, FakeServer, RecordedRequest
from fakevendors.vertex.claude import ClaudeAnswers
from fakevendors.vertex.embeddings import EmbeddingAnswers
from fakevendors.vertex.gemini import GeminiAnswers
from fakevendors.vertex.oauth import assertion_problem
from fakevendors.vertex.scenario import Scenario

_PATH = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/([^/]+)/models/([^/:]+):(\w+)$")
_METHODS = {
    "streamGenerateContent": "google", "generateContent": "google",
    "streamRawPredict": "anthropic", "rawPredict": "anthropic", "predict": "google",
}  # fmt: skip


class FakeVertex(GeminiAnswers, ClaudeAnswers, EmbeddingAnswers, FakeServer):
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
        self.claude_signatures = Signatures()  # issued with Claude's thinking

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
        if method == "predict":
            await self._predict(conn, body, model)
        elif publisher == "google":
            await self._gemini(request, conn, body, model, method)
        else:
            await self._claude(request, conn, body, model, method)

    # -- OAuth2 ---------------------------------------------------------------------------------

    def _token(self, request: RecordedRequest, conn: Connection) -> None:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        problem = assertion_problem(form, self.public_key, self.client_email)
        if problem:
            conn.send_json(400, {"error": "invalid_grant", "error_description": problem})
            return
        token = f"ya29.fake-{len(self.issued) + 1}-{secrets.token_hex(8)}"
        self.issued[token] = time.monotonic() + self.scenario.expires_in
        conn.send_json(200, {"access_token": token, "expires_in": self.scenario.expires_in, "token_type": "Bearer"})

    def _authorized(self, request: RecordedRequest) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme == "Bearer" and self.issued.get(token, 0) > time.monotonic()
