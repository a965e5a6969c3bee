"""Google Vertex AI: Gemini (``generateContent``), Anthropic Claude (``rawPredict``), embeddings (``predict``).

Which dialect a deployment speaks follows from its upstream model id: ``anthropic/<id>``
or a bare id starting with ``claude`` is Claude (publisher ``anthropic``); ``google/<id>``
or any other bare id is Gemini (publisher ``google``). Options: ``project`` and ``location``;
the base URL defaults to ``https://{location}-aiplatform.googleapis.com`` (``global``:
``https://aiplatform.googleapis.com``). Credentials: ``credentials_json`` (a service-account
key, exchanged for OAuth2 tokens) or a static ``access_token``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from types import ModuleType
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import (
    Completion,
    EmbeddingCall,
    Embeddings,
    OptionSpec,
    SettingProblem,
    StreamEvent,
    UpstreamCall,
    VendorAdapter,
    VendorConfig,
)
from routing.vendors.sse import SseEvent, sse_batches
from routing.vendors.vertex import claude, embeddings, gemini
from routing.vendors.vertex.auth import AccessTokens, service_account_credentials

DIALECTS: dict[str, ModuleType] = {"google": gemini, "anthropic": claude}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")  # project ids (domain-scoped ones hold ':' and '.')


def api_root(base_url: str, location: str) -> str:
    """The Vertex API root: the operator's base URL, or the location's public endpoint."""
    if base_url:
        return base_url.rstrip("/")
    return (
        "https://aiplatform.googleapis.com" if location == "global" else f"https://{location}-aiplatform.googleapis.com"
    )


def publisher_and_model(upstream_model: str) -> tuple[str, str]:
    """Return (publisher, model id) for a deployment's upstream model id."""
    publisher, slash, model = upstream_model.partition("/")
    if slash:
        return publisher, model
    return ("anthropic" if upstream_model.startswith("claude") else "google"), upstream_model


class VertexAdapter(VendorAdapter):
    kind = "vertex"
    option_names = ("project", "location")
    secret_names = ("credentials_json", "access_token")
    serves_embeddings = True  # text-embedding-*, text-multilingual-embedding-*, gemini-embedding-* (:predict)
    option_specs = {
        "project": OptionSpec(help="The Google Cloud project ID, e.g. my-project-123."),
        "location": OptionSpec(help="The region, e.g. us-central1, or global."),
    }
    base_url_help = (
        "Blank uses Google's endpoint for the location (https://LOCATION-aiplatform.googleapis.com); "
        "set it only for a proxy or a private endpoint."
    )

    def __init__(self, vendor: VendorConfig) -> None:
        super().__init__(vendor)
        self.tokens = AccessTokens(vendor)

    @classmethod
    def problems(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        found: list[SettingProblem] = []
        for name in ("project", "location"):
            value = options.get(name)
            if not value:
                found.append(SettingProblem(name, f"{{{name}}} is required for a Vertex AI vendor"))
            elif not isinstance(value, str) or not _NAME.match(value):
                found.append(SettingProblem(name, f"{{{name}}} is not a valid Google Cloud {name}"))
        info = credentials.get("credentials_json")
        if info is not None:
            try:
                service_account_credentials(info)
            except ValueError as error:
                found.append(SettingProblem.literal("credentials_json", str(error)))
        elif not credentials.get("access_token"):
            message = "a Vertex AI vendor needs {credentials_json} (a service-account JSON key)"
            found.append(SettingProblem("credentials_json", message))
        return found

    @classmethod
    def destinations(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[tuple[str, str]]:
        found = [("base_url" if base_url else "location", api_root(base_url, str(options.get("location", ""))))]
        info = credentials.get("credentials_json")
        if isinstance(info, dict) and isinstance(info.get("token_uri"), str):
            found.append(("credentials_json", info["token_uri"]))  # the signed assertion goes there
        return found

    @classmethod
    def parse_secret(cls, name: str, text: str) -> Any:
        if name != "credentials_json":
            return text
        try:
            info = json.loads(text)
        except ValueError:
            raise ValueError("This is not valid JSON: paste the whole service-account key file.") from None
        service_account_credentials(info)
        return info

    def base_url(self) -> str:
        return api_root(self.vendor.base_url, self.vendor.options["location"])

    def dialect(self, call: UpstreamCall) -> tuple[ModuleType, str]:
        publisher, model = publisher_and_model(call.upstream_model)
        if publisher not in DIALECTS:
            raise UpstreamError(
                502,
                f"Vendor '{self.vendor.name}': Vertex publisher '{publisher}' is not supported (google, anthropic).",
                code="unsupported_upstream_model",
            )
        return DIALECTS[publisher], self.model_url(publisher, model)

    def model_url(self, publisher: str, model: str) -> str:
        options = self.vendor.options
        return (
            f"{self.base_url()}/v1/projects/{quote(options['project'], safe=':')}/locations/{options['location']}"
            f"/publishers/{publisher}/models/{quote(model, safe='@')}"
        )

    async def request(self, call: UpstreamCall, stream: bool) -> tuple[ModuleType, httpx.Request]:
        dialect, url = self.dialect(call)
        payload = dialect.body(call, stream)
        token = await self.tokens.token()
        headers = {"authorization": f"Bearer {token}"}
        return dialect, http.json_request("POST", f"{url}:{dialect.method(stream)}", payload, headers)

    def on_error(self, status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
        error = http.upstream_http_error(self.vendor, status, body, headers)
        try:
            detail = orjson.loads(body)
        except orjson.JSONDecodeError:
            return error
        if isinstance(detail, list) and detail:
            detail = detail[0]
        inner = detail.get("error") if isinstance(detail, dict) else None
        # Google names the failure in `status` (RESOURCE_EXHAUSTED), Anthropic in `type`.
        named = inner.get("status") or inner.get("type") if isinstance(inner, dict) else None
        if named and error.code != "vendor_auth_failed":
            error.vendor_code = str(named)
        return error

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[StreamEvent]]:
        dialect, request = await self.request(call, stream=True)
        state = dialect.stream_state(self.vendor.name, call)
        decode = functools.partial(self._decode, state)
        async with http.open_response(self.vendor, request, self.on_error) as response:
            async with aclosing(sse_batches(self.vendor.name, response.aiter_raw(), decode)) as batches:
                async for batch in batches:
                    yield batch
            if state.done:
                return
        if not state.finished:
            # A clean end without a finish reason (Gemini) or message_stop (Claude) is a cut stream.
            raise UpstreamError(
                502, f"Vendor '{self.vendor.name}' ended the stream before the answer was complete.",
                code="upstream_truncated", retryable=True,
            )  # fmt: skip

    def _decode(self, state: Any, events: list[SseEvent], batch: list[StreamEvent]) -> bool:
        for event in events:
            batch.extend(state.events(self._json(event.data)))
            if state.done:
                break
        return bool(state.done)

    def _json(self, data: bytes) -> dict[str, Any]:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            raise UpstreamError(
                502, f"Vendor '{self.vendor.name}' sent a malformed stream event.", code="upstream_malformed"
            )
        return payload

    async def complete(self, call: UpstreamCall) -> Completion:
        dialect, request = await self.request(call, stream=False)
        async with http.open_response(self.vendor, request, self.on_error) as response:
            payload = await http.read_json(self.vendor, response)
        result: Completion = dialect.completion(self.vendor.name, payload, call)
        return result

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        publisher, model = publisher_and_model(call.upstream_model)
        return await embeddings.embed(self, call, publisher, model)
