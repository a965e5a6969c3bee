"""BytePlus ModelArk: ``POST {base}/api/v3/chat/completions``, Bearer key, model id or ``ep-...`` endpoint id.

OpenAI-compatible, with reasoning text in ``delta.reasoning_content`` (relayed as is and
billed as delivered text) and its own error codes in ``{"error": {"code", "message",
"param", "type"}}``, sent with an HTTP status before the stream and as a ``data:`` block
inside it. The base URL is regional (``https://ark.ap-southeast.bytepluses.com``) and so
are the keys, so the operator names it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from routing.canonical import FIELDS, PARAMETERS
from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import EmbeddingCall, SettingProblem, StreamEvent, UpstreamCall
from routing.vendors.openai import OpenAIAdapter

API_PATH = "/api/v3"
# Error codes that mean the router's configuration, not the client's request, is wrong:
# another deployment may still serve the model, so they are retryable.
_ENDPOINT_CODES = (
    "InvalidEndpoint.NotFound",
    "InvalidEndpointOrModel.NotFound",
    "InvalidEndpoint.ClosedEndpoint",
    "ModelNotOpen",
)


def error_fields(payload: Any) -> tuple[str, str, str | None]:
    """Return (code, message, param) of a ModelArk error body ('' when absent)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "", "", None
    param = error.get("param")
    return str(error.get("code") or ""), str(error.get("message") or "")[:300], str(param) if param else None


class BytePlusAdapter(OpenAIAdapter):
    kind = "byteplus"
    option_names = ()
    secret_names = ("api_key",)
    # ModelArk's max_tokens bounds the answer only; max_completion_tokens includes reasoning.
    max_tokens_counts_reasoning = False

    base_url_example = "https://ark.ap-southeast.bytepluses.com"
    base_url_help = "The region's ModelArk endpoint; the API key must be of the same region."

    @classmethod
    def problems(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        found: list[SettingProblem] = []
        parts = urlsplit(base_url)
        if not base_url:
            message = "{base_url} is required for BytePlus (regional, e.g. https://ark.ap-southeast.bytepluses.com)"
            found.append(SettingProblem("base_url", message))
        elif parts.scheme not in ("http", "https") or not parts.netloc:
            message = "{base_url} must be an http(s) URL such as https://ark.ap-southeast.bytepluses.com"
            found.append(SettingProblem("base_url", message))
        if not credentials.get("api_key"):
            message = "{api_key} is required for BytePlus (an ARK API key of the same region)"
            found.append(SettingProblem("api_key", message))
        return found

    # ModelArk's text embedding models take at most 256 texts per call.
    embedding_batch = 256

    def url(self, call: UpstreamCall) -> str:
        return self.api_root() + "/chat/completions"

    def embeddings_url(self, call: EmbeddingCall) -> str:
        return self.api_root() + "/embeddings"

    def api_root(self) -> str:
        base = self.vendor.base_url.rstrip("/")
        return base if base.endswith(API_PATH) else base + API_PATH

    def limit_field(self) -> str:
        # ModelArk's max_tokens bounds the answer only, not the chain of thought; the credit hold
        # bills reasoning as output, so only max_completion_tokens makes the hold a ceiling.
        return "max_completion_tokens"

    def body(self, call: UpstreamCall, stream: bool) -> dict[str, Any]:
        body = super().body(call, stream)
        if body.get("max_completion_tokens") is not None:
            # ModelArk rejects both together; max_completion_tokens also bounds reasoning, so it wins.
            body.pop("max_tokens", None)
        return body

    def on_error(self, status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
        try:
            code, message, param = error_fields(orjson.loads(body))
        except orjson.JSONDecodeError:
            code, message, param = "", "", None
        mapped = self.vendor_error(code, message, param, http.retry_after_seconds(headers))
        if mapped is None:
            return super().on_error(status, body, headers)
        mapped.vendor_status = status
        return mapped

    def chunk_events(self, payload: dict[str, Any]) -> list[StreamEvent]:
        if payload.get("error"):
            code, message, param = error_fields(payload)
            mapped = self.vendor_error(code, message, param, None)
            if mapped is None:
                name = self.vendor.name
                text = f"Vendor '{name}' reported an error: {message or 'unknown error'}"
                mapped = UpstreamError(502, text, code=code or "upstream_error")
            raise mapped
        return super().chunk_events(payload)

    def vendor_error(
        self, code: str, message: str, param: str | None, retry_after: float | None
    ) -> UpstreamError | None:
        """Map a ModelArk error code to what the client sees; None for codes left to the HTTP status."""
        name = self.vendor.name
        if code.startswith("RateLimitExceeded") or code == "ServerOverloaded":
            text = f"Vendor '{name}' is rate limiting the router ({code}); retry later."
            return UpstreamError(429, text, code=code, retryable=True, retry_after=retry_after)
        if code == "AuthenticationError":
            # The vendor's message is not echoed: it may quote part of the key.
            text = f"Vendor '{name}' rejected the router's credentials: its BytePlus API key is wrong or revoked."
            return UpstreamError(502, text, code="vendor_auth_failed", retryable=True)
        if code == "AccountOverdueError":
            text = f"Vendor '{name}' refused the request: the BytePlus account has an overdue balance."
            return UpstreamError(502, text, code="vendor_account_overdue", retryable=True)
        if code == "AccessDenied":
            text = f"Vendor '{name}' refused the request: the BytePlus account may not use this model or endpoint."
            return UpstreamError(502, text, code="vendor_access_denied", retryable=True)
        if code in _ENDPOINT_CODES:
            # The client named a router model that exists; the vendor-side id is the operator's to fix.
            text = f"Vendor '{name}' does not serve the model or endpoint configured for this deployment ({code})."
            return UpstreamError(502, text, code="upstream_model_unavailable", retryable=True)
        if code.startswith("SensitiveContentDetected"):
            text = f"The request was blocked by the content filter of vendor '{name}' ({code})."
            return self.client_error(text, "content_filter", param or "messages")
        if code in ("MissingParameter", "InvalidParameter") or code.startswith("InvalidParameter."):
            text = f"Vendor '{name}' rejected a parameter: {message or code}"
            return self.client_error(text, code, param)
        return None

    @staticmethod
    def client_error(message: str, code: str, param: str | None) -> UpstreamError:
        # The vendor's param reaches the client only when it names one of the client's own fields.
        client_field = param if param in PARAMETERS or param in FIELDS else None
        return UpstreamError(400, message, code=code, param=client_field)
