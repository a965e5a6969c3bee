"""OneRouter, an OpenRouter-style aggregator: ``POST {base}/chat/completions``, Bearer key.

Usage is asked for with ``usage: {include: true}`` (its own switch) as well as
``stream_options``. Its ``: ONEROUTER PROCESSING`` keepalives are SSE comments, which the
decoder skips. Errors are ``{"error": {"code": <int>, "message", ...}}``: before the stream
the HTTP status equals ``code``; once streaming, the same object arrives as a ``data:``
event under HTTP 200 and ends the stream, so it becomes the router's own mid-stream error.
The ``cost`` it reports is not kept: the router bills at its own prices.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import EmbeddingCall, SettingProblem, StreamEvent, UpstreamCall
from routing.vendors.openai import OpenAIAdapter

DEFAULT_BASE_URL = "https://llm.onerouter.pro/v1"


class OneRouterAdapter(OpenAIAdapter):
    kind = "onerouter"
    option_names = ()
    secret_names = ("api_key",)

    base_url_example = DEFAULT_BASE_URL
    base_url_help = f"Blank uses {DEFAULT_BASE_URL}."

    @classmethod
    def problems(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        found: list[SettingProblem] = []
        parts = urlsplit(base_url)
        if base_url and (parts.scheme not in ("http", "https") or not parts.netloc):
            found.append(
                SettingProblem("base_url", f"{{base_url}} must be an http(s) URL (default {DEFAULT_BASE_URL})")
            )
        if not credentials.get("api_key"):
            found.append(SettingProblem("api_key", "{api_key} is required for OneRouter"))
        return found

    @classmethod
    def destinations(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[tuple[str, str]]:
        return [("base_url", base_url or DEFAULT_BASE_URL)]

    def url(self, call: UpstreamCall) -> str:
        return (self.vendor.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"

    def embeddings_url(self, call: EmbeddingCall) -> str:
        return (self.vendor.base_url or DEFAULT_BASE_URL).rstrip("/") + "/embeddings"

    def limit_field(self) -> str:
        return "max_tokens"  # the field OneRouter documents; it passes it on to the model's provider

    def body(self, call: UpstreamCall, stream: bool) -> dict[str, Any]:
        body = super().body(call, stream)
        body["usage"] = {"include": True}
        return body

    def on_error(self, status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
        if status == 402:
            text = f"Vendor '{self.vendor.name}' refused the request: the OneRouter account is out of credits."
            return UpstreamError(502, text, code="vendor_insufficient_credits", retryable=True, vendor_status=402)
        return super().on_error(status, body, headers)

    def chunk_events(self, payload: dict[str, Any]) -> list[StreamEvent]:
        error = payload.get("error")
        if error:
            message, _ = http.error_message(payload)
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 502
            text = f"Vendor '{self.vendor.name}' reported an error mid-stream: {message or 'unknown error'}"
            raise UpstreamError(
                http.vendor_status_to_client(status),
                text,
                code=f"upstream_{status}",
                retryable=status in http.RETRYABLE_STATUSES,
                vendor_status=status,
            )
        return super().chunk_events(payload)
