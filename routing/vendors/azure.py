"""Azure OpenAI: deployment URL or the v1 endpoint, ``api-key`` header or an Entra bearer token.

The bearer token is either given (``entra_token``, for short-lived use) or obtained and
refreshed by the router from a service principal (``entra_tenant_id``, ``entra_client_id``,
``entra_client_secret``; client-credentials grant, scope ``cognitiveservices.azure.com``).

Azure speaks OpenAI chat completions plus content-filter annotations, which the router
drops so that clients see plain OpenAI chunks: a first chunk with ``prompt_filter_results``
(older api-versions: ``prompt_annotations``) and ``choices: []``; ``content_filter_results``
on choices; and, with the asynchronous filter, annotation-only choices that carry no
``delta`` (only ``content_filter_results`` / ``content_filter_offsets``), possibly after the
finish. A late filter block is such a choice with ``finish_reason: "content_filter"``: it is
relayed as an empty delta with that finish reason.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from routing.errors import UpstreamError
from routing.vendors.base import (
    Completion,
    EmbeddingCall,
    OptionSpec,
    SettingProblem,
    StreamEvent,
    UpstreamCall,
    VendorConfig,
)
from routing.vendors.entra import DEFAULT_AUTHORITY, EntraTokenSource
from routing.vendors.openai import LIMIT_FIELD_SPEC, OpenAIAdapter, limit_field_problems

API_STYLES = ("deployment", "v1")
DEFAULT_API_VERSION = "2024-10-21"
STREAM_USAGE_MODES = ("auto", "on", "off")
# stream_options arrived in 2024-09-01-preview; the GA 2024-10-21 request table lacks it.
STREAM_OPTIONS_SINCE = "2024-09-01"
STREAM_OPTIONS_MISSING = {"2024-10-21"}
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
# Azure-only fields on a choice and on a chunk; not part of the OpenAI chunk.
_CHOICE_ANNOTATIONS = ("content_filter_results", "content_filter_offsets")
_CHUNK_ANNOTATIONS = ("prompt_filter_results", "prompt_annotations")
# Azure's documented filter categories: only these names are repeated to the client.
FILTER_CATEGORIES = frozenset(
    ("hate", "sexual", "violence", "self_harm", "profanity", "jailbreak", "indirect_attack",
     "protected_material_text", "protected_material_code", "custom_blocklists")
)  # fmt: skip


def stream_options_supported(api_version: str) -> bool:
    """Return whether the deployment URL accepts ``stream_options`` at ``api_version``."""
    return api_version[:10] >= STREAM_OPTIONS_SINCE and api_version not in STREAM_OPTIONS_MISSING


def max_completion_tokens_supported(api_version: str) -> bool:
    """Return whether the deployment URL accepts ``max_completion_tokens`` at ``api_version``.

    It arrived with ``stream_options`` in 2024-09-01-preview; the 2024-10-21 GA request table
    follows the earlier GA one, so it is treated as lacking both (``max_tokens_field`` overrides).
    """
    return stream_options_supported(api_version)


def clean_choice(choice: Any, body: str = "delta") -> dict[str, Any] | None:
    """Return ``choice`` without Azure annotations, or None when it is only an annotation.

    ``body`` is ``delta`` for stream chunks, ``message`` for whole answers.
    """
    if not isinstance(choice, dict):
        return None
    if body not in choice:
        if not choice.get("finish_reason"):
            return None
        empty: dict[str, Any] = {} if body == "delta" else {"role": "assistant", "content": None}
        return {"index": choice.get("index", 0), body: empty, "finish_reason": choice["finish_reason"]}
    return {k: v for k, v in choice.items() if k not in _CHOICE_ANNOTATIONS}


def filtered_categories(result: Any) -> list[str]:
    if not isinstance(result, dict):
        return []
    return sorted(name for name, value in result.items() if isinstance(value, dict) and value.get("filtered"))


class AzureAdapter(OpenAIAdapter):
    kind = "azure"
    option_names = (
        "api_style",
        "api_version",
        "deployment",
        "stream_usage",
        "entra_tenant_id",
        "entra_client_id",
        "entra_authority",
        "max_tokens_field",
    )
    option_specs = {
        "api_style": OptionSpec(
            choices=tuple((style, style) for style in API_STYLES),
            default="deployment",
            help="deployment: /openai/deployments/NAME/chat/completions with an api-version; v1: /openai/v1, "
            "the deployment named in the model.",
        ),
        "api_version": OptionSpec(default=DEFAULT_API_VERSION, help="For the deployment style only."),
        "deployment": OptionSpec(help="For the deployment style only; blank uses the upstream model of each model."),
        "stream_usage": OptionSpec(
            choices=tuple((mode, mode) for mode in STREAM_USAGE_MODES),
            default="auto",
            help="Whether to ask for usage in streams (stream_options); auto: when the api-version accepts it.",
        ),
        "entra_authority": OptionSpec(default=DEFAULT_AUTHORITY, help="For the client secret only."),
        "max_tokens_field": LIMIT_FIELD_SPEC,
    }
    base_url_example = "https://RESOURCE.openai.azure.com"
    base_url_help = "The resource's endpoint, without /openai."
    # One of: an API key, a ready Entra token, or a service principal's client secret.
    secret_names = ("api_key", "entra_token", "entra_client_secret")

    def __init__(self, vendor: VendorConfig) -> None:
        super().__init__(vendor)
        self.entra: EntraTokenSource | None = None
        secret = vendor.credentials.get("entra_client_secret")
        if secret:
            self.entra = EntraTokenSource(
                vendor,
                str(vendor.options.get("entra_authority") or DEFAULT_AUTHORITY),
                str(vendor.options.get("entra_tenant_id", "")),
                str(vendor.options.get("entra_client_id", "")),
                str(secret),
            )

    @classmethod
    def problems(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        found = cls.endpoint_problems(base_url, options) + limit_field_problems(options)
        if options.get("stream_usage", "auto") not in STREAM_USAGE_MODES:
            found.append(
                SettingProblem("stream_usage", f"{{stream_usage}} must be one of {', '.join(STREAM_USAGE_MODES)}")
            )
        return found + cls.credential_problems(options, credentials)

    @classmethod
    def endpoint_problems(cls, base_url: str, options: dict[str, Any]) -> list[SettingProblem]:
        found: list[SettingProblem] = []
        parts = urlsplit(base_url)
        if not base_url:
            found.append(
                SettingProblem("base_url", "{base_url} is required for Azure (https://RESOURCE.openai.azure.com)")
            )
        elif parts.scheme not in ("http", "https") or not parts.netloc:
            found.append(
                SettingProblem(
                    "base_url", "{base_url} must be an http(s) URL such as https://RESOURCE.openai.azure.com"
                )
            )
        style = options.get("api_style", "deployment")
        if style not in API_STYLES:
            found.append(SettingProblem("api_style", "{api_style} must be 'deployment' or 'v1' (default deployment)"))
        only_deployment = "{api_version} and {deployment} apply to {api_style} deployment only (v1 puts it in model)"
        found.extend(
            SettingProblem(name, only_deployment)
            for name in ("api_version", "deployment")
            if style == "v1" and name in options
        )
        version = options.get("api_version", DEFAULT_API_VERSION)
        if not isinstance(version, str) or not _API_VERSION.fullmatch(version):
            found.append(SettingProblem("api_version", "{api_version} must look like 2024-10-21 or 2025-04-01-preview"))
        return found

    @classmethod
    def credential_problems(cls, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        given = [name for name in cls.secret_names if credentials.get(name)]
        if len(given) != 1:
            message = "Azure needs exactly one of {api_key}, {entra_token} or {entra_client_secret}"
            return [SettingProblem(name, message) for name in (given[1:] or ["api_key"])]
        principal = ("entra_tenant_id", "entra_client_id")
        if given == ["entra_client_secret"]:
            message = "{entra_client_secret} needs {entra_tenant_id} and {entra_client_id}"
            return [SettingProblem(name, message) for name in principal if name not in options]
        message = "{entra_tenant_id}, {entra_client_id} and {entra_authority} need {entra_client_secret}"
        return [SettingProblem(name, message) for name in (*principal, "entra_authority") if name in options]

    @classmethod
    def destinations(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[tuple[str, str]]:
        found = super().destinations(base_url, options, credentials)
        if credentials.get("entra_client_secret"):
            # The client secret goes to the Entra authority, not to the resource.
            found.append(("entra_authority", str(options.get("entra_authority") or DEFAULT_AUTHORITY)))
        return found

    @property
    def api_style(self) -> str:
        return str(self.vendor.options.get("api_style", "deployment"))

    @property
    def api_version(self) -> str:
        return str(self.vendor.options.get("api_version", DEFAULT_API_VERSION))

    def resource_url(self) -> str:
        """The resource's root, whether the operator gave it with ``/openai`` (or ``/openai/v1``) or not."""
        base = self.vendor.base_url.rstrip("/")
        for suffix in ("/openai/v1", "/openai"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
        return base

    def url(self, call: UpstreamCall) -> str:
        return self.operation_url("chat/completions", call.upstream_model)

    def embeddings_url(self, call: EmbeddingCall) -> str:
        return self.operation_url("embeddings", call.upstream_model)

    def operation_url(self, operation: str, upstream_model: str) -> str:
        """The URL of ``operation`` (``chat/completions``, ``embeddings``) in the vendor's API style."""
        if self.api_style == "v1":
            return f"{self.resource_url()}/openai/v1/{operation}"
        deployment = quote(str(self.vendor.options.get("deployment") or upstream_model), safe="")
        version = quote(self.api_version, safe="")
        return f"{self.resource_url()}/openai/deployments/{deployment}/{operation}?api-version={version}"

    def headers(self, call: UpstreamCall | EmbeddingCall) -> dict[str, str]:
        token = self.vendor.credentials.get("entra_token")
        if token:
            return {"authorization": f"Bearer {token}"}
        if self.entra is not None:
            return {}  # set in request(), which may have to fetch a token first
        return {"api-key": str(self.vendor.credentials.get("api_key", ""))}

    async def request(self, call: UpstreamCall, stream: bool) -> httpx.Request:
        return await self.authorized(await super().request(call, stream))

    async def embeddings_request(self, call: EmbeddingCall, inputs: list[Any]) -> httpx.Request:
        return await self.authorized(await super().embeddings_request(call, inputs))

    async def authorized(self, request: httpx.Request) -> httpx.Request:
        if self.entra is not None:
            request.headers["authorization"] = f"Bearer {await self.entra.token()}"
        return request

    def limit_field(self) -> str:
        """``max_completion_tokens`` (reasoning models refuse ``max_tokens``) where the API knows it:
        the v1 API and the api-versions since 2024-09-01-preview whose request table has it;
        ``max_tokens`` on older ones. ``max_tokens_field`` overrides."""
        chosen = self.vendor.options.get("max_tokens_field")
        if chosen:
            return str(chosen)
        if self.api_style == "v1" or max_completion_tokens_supported(self.api_version):
            return "max_completion_tokens"
        return "max_tokens"

    def asks_stream_usage(self) -> bool:
        mode = self.vendor.options.get("stream_usage", "auto")
        if mode != "auto":
            return bool(mode == "on")
        return self.api_style == "v1" or stream_options_supported(self.api_version)

    def body(self, call: UpstreamCall, stream: bool) -> dict[str, Any]:
        body = super().body(call, stream)
        if stream and not self.asks_stream_usage():
            # No usage chunk will come: the relay counts delivered tokens and the prompt itself.
            body.pop("stream_options", None)
        return body

    def on_error(self, status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            inner: dict[str, Any] = error.get("innererror") or {}
            if not isinstance(inner, dict):
                inner = {}
            if error.get("code") == "content_filter" or inner.get("code") == "ResponsibleAIPolicyViolation":
                return self.prompt_filtered(inner.get("content_filter_result"))
        return super().on_error(status, body, headers)

    def prompt_filtered(self, result: Any) -> UpstreamError:
        categories = filtered_categories(result)
        which = f" ({', '.join(categories)})" if categories else ""
        known = [c for c in categories if c in FILTER_CATEGORIES]
        return UpstreamError(
            400,
            f"The prompt was blocked by the content filter of vendor '{self.vendor.name}'{which}.",
            code="content_filter",
            vendor_status=400,
            note=f"filtered: {', '.join(known)}" if known else None,
            param="messages",
        )

    def chunk_events(self, payload: dict[str, Any]) -> list[StreamEvent]:
        choices = [c for c in map(clean_choice, payload.get("choices") or ()) if c is not None]
        rest = {k: v for k, v in payload.items() if k not in _CHUNK_ANNOTATIONS}
        return super().chunk_events({**rest, "choices": choices})

    async def complete(self, call: UpstreamCall) -> Completion:
        completion = await super().complete(call)
        choices = (clean_choice(c, "message") for c in completion.choices)
        completion.choices = [c for c in choices if c is not None]
        return completion
