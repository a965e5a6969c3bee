"""OpenAI and any OpenAI-compatible endpoint: ``POST {base}/chat/completions``, Bearer key."""

from __future__ import annotations

import base64
import binascii
import functools
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import orjson

from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import (
    ChunkEvent,
    Completion,
    EmbeddingCall,
    Embeddings,
    OptionSpec,
    SettingProblem,
    StreamEvent,
    UpstreamCall,
    Usage,
    UsageEvent,
    VendorAdapter,
    vendor_token_count,
)
from routing.vendors.sse import sse_data_batches
from routing.vendors.textruns import TextRuns

_CHUNK_EXTRAS = ("system_fingerprint", "service_tier")
# The fields that carry a completion limit: ``max_completion_tokens`` counts reasoning and answer
# (OpenAI's reasoning models accept only it; ``max_tokens`` is deprecated there); many
# OpenAI-compatible servers know only ``max_tokens``.
LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")


@functools.lru_cache(maxsize=256)
def _extras(fingerprint: Any, tier: Any) -> dict[str, Any] | None:
    found = {"system_fingerprint": fingerprint, "service_tier": tier}
    return {k: v for k, v in found.items() if v is not None} or None


def chunk_extras(fingerprint: Any, tier: Any) -> dict[str, Any] | None:
    """The extra fields of a chunk, one shared (read-only) dict per distinct pair: a stream
    repeats the same fingerprint in every chunk."""
    if type(fingerprint) not in _HASHABLE or type(tier) not in _HASHABLE:
        return {k: v for k, v in (("system_fingerprint", fingerprint), ("service_tier", tier)) if v is not None}
    return _extras(fingerprint, tier)


_HASHABLE = {str, int, float, bool, type(None)}


def usage_from_openai(usage: dict[str, Any], vendor_name: str) -> Usage:
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    return Usage(
        prompt_tokens=vendor_token_count(usage.get("prompt_tokens"), vendor_name, "prompt_tokens"),
        completion_tokens=vendor_token_count(usage.get("completion_tokens"), vendor_name, "completion_tokens"),
        cached_tokens=vendor_token_count(prompt_details.get("cached_tokens"), vendor_name, "cached_tokens") or 0,
        reasoning_tokens=(
            vendor_token_count(completion_details.get("reasoning_tokens"), vendor_name, "reasoning_tokens") or 0
        ),
    )


def mid_stream_error(vendor_name: str, payload: dict[str, Any]) -> UpstreamError:
    message, code = http.error_message(payload)
    return UpstreamError(
        502, f"Vendor '{vendor_name}' reported an error: {message or 'unknown error'}", code=code or "upstream_error"
    )


LIMIT_FIELD_SPEC = OptionSpec(
    choices=(("", "Automatic"), *((name, name) for name in LIMIT_FIELDS)),
    help="The field that carries the model's output ceiling. Automatic: max_completion_tokens for OpenAI "
    "itself, max_tokens elsewhere.",
)


def limit_field_problems(options: dict[str, Any]) -> list[SettingProblem]:
    field = options.get("max_tokens_field")
    if field is not None and field not in LIMIT_FIELDS:
        return [SettingProblem("max_tokens_field", f"{{max_tokens_field}} must be one of {', '.join(LIMIT_FIELDS)}")]
    return []


class OpenAIAdapter(VendorAdapter):
    kind = "openai"
    # max_tokens_field: the field that carries the model's ceiling when the client sets no limit.
    option_names: ClassVar[tuple[str, ...]] = ("organization", "max_tokens_field")
    option_specs: ClassVar[Mapping[str, OptionSpec]] = {"max_tokens_field": LIMIT_FIELD_SPEC}
    base_url_example = "https://api.openai.com/v1"
    base_url_help = "The API root, the part before /chat/completions."

    @classmethod
    def problems(cls, base_url: str, options: dict[str, Any], credentials: dict[str, Any]) -> list[SettingProblem]:
        found = (
            [] if base_url else [SettingProblem("base_url", "{base_url} is required for an OpenAI-compatible vendor")]
        )
        return found + limit_field_problems(options)

    # Hooks the OpenAI-compatible kinds (Azure, BytePlus, OneRouter) override.
    def url(self, call: UpstreamCall) -> str:
        return self.vendor.base_url.rstrip("/") + "/chat/completions"

    def headers(self, call: UpstreamCall | EmbeddingCall) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self.vendor.credentials.get('api_key', '')}"}
        if self.vendor.options.get("organization"):
            headers["openai-organization"] = self.vendor.options["organization"]
        return headers

    def limit_field(self) -> str:
        """The field that carries the model's ceiling when the client sets no limit of its own.

        OpenAI itself: ``max_completion_tokens``, the one field every model accepts (and it
        includes reasoning, which the credit hold bills as output). Other OpenAI-compatible
        servers: ``max_tokens``, the field they all know, unless the operator says otherwise.
        """
        chosen = self.vendor.options.get("max_tokens_field")
        if chosen in LIMIT_FIELDS:
            return str(chosen)
        host = urlsplit(self.vendor.base_url).hostname or ""
        return "max_completion_tokens" if host == "openai.com" or host.endswith(".openai.com") else "max_tokens"

    def body(self, call: UpstreamCall, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {**call.request.params, "model": call.upstream_model, "messages": call.request.messages}
        if call.request.max_tokens is None:
            # The credit hold assumed the model's ceiling: the vendor must not be free to exceed it.
            for name in LIMIT_FIELDS:
                body.pop(name, None)  # a client's explicit null
            body[self.limit_field()] = call.max_output_tokens
        if stream:
            body["stream"] = True
            # Always ask for usage; the relay forwards it only when the client asked.
            body["stream_options"] = {"include_usage": True}
        return body

    def on_error(self, status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
        return http.upstream_http_error(self.vendor, status, body, headers)

    async def request(self, call: UpstreamCall, stream: bool) -> httpx.Request:
        return http.json_request("POST", self.url(call), self.body(call, stream), self.headers(call))

    def chunk_events(self, payload: dict[str, Any]) -> list[StreamEvent]:
        """Turn one upstream chunk into events."""
        if payload.get("error"):
            raise mid_stream_error(self.vendor.name, payload)
        events: list[StreamEvent] = []
        choices = payload.get("choices")
        if choices:
            extra = None
            if "system_fingerprint" in payload or "service_tier" in payload:
                extra = chunk_extras(payload.get("system_fingerprint"), payload.get("service_tier"))
            events.append(ChunkEvent(choices, extra))
        usage = payload.get("usage")
        if usage and isinstance(usage, dict):
            events.append(UsageEvent(usage_from_openai(usage, self.vendor.name)))
        return events

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[StreamEvent]]:
        request = await self.request(call, stream=True)
        runs = TextRuns(self.chunk_events, self._decode_one)  # text chunks read without a parse each
        async with http.open_response(self.vendor, request, self.on_error) as response:
            async with aclosing(sse_data_batches(self.vendor.name, response.aiter_raw(), runs.decode)) as batches:
                async for batch in batches:
                    yield batch

    def _decode_one(self, data: bytes, batch: list[StreamEvent]) -> bool:
        """Append the events of one SSE message's data to ``batch``; return True at ``[DONE]``."""
        if data == b"[DONE]":
            return True
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                502, f"Vendor '{self.vendor.name}' sent a malformed stream chunk.", code="upstream_malformed"
            ) from None
        if isinstance(payload, dict):
            batch.extend(self.chunk_events(payload))
        return False

    async def complete(self, call: UpstreamCall) -> Completion:
        request = await self.request(call, stream=False)
        async with http.open_response(self.vendor, request, self.on_error) as response:
            payload = await http.read_json(self.vendor, response)
        if not isinstance(payload, dict) or payload.get("error"):
            raise mid_stream_error(self.vendor.name, payload if isinstance(payload, dict) else {})
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise UpstreamError(
                502, f"Vendor '{self.vendor.name}' sent an answer without choices.", code="upstream_malformed"
            )
        usage = payload.get("usage")
        extra = {k: payload[k] for k in _CHUNK_EXTRAS if payload.get(k) is not None} or None
        found = usage_from_openai(usage, self.vendor.name) if usage and isinstance(usage, dict) else None
        return Completion(choices, found, extra)

    # -- embeddings: ``POST {base}/embeddings`` -------------------------------------------

    serves_embeddings = True
    # The most inputs one embeddings call may carry (OpenAI's limit); more go in several calls.
    embedding_batch: ClassVar[int] = 2048

    def embeddings_url(self, call: EmbeddingCall) -> str:
        return self.vendor.base_url.rstrip("/") + "/embeddings"

    async def embeddings_request(self, call: EmbeddingCall, inputs: list[Any]) -> httpx.Request:
        # Floats on the wire: every OpenAI-compatible server speaks them (base64 is not universal).
        body: dict[str, Any] = {"model": call.upstream_model, "input": inputs, "encoding_format": "float"}
        if call.dimensions is not None:
            body["dimensions"] = call.dimensions
        if call.user is not None:
            body["user"] = call.user
        return http.json_request("POST", self.embeddings_url(call), body, self.headers(call))

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        vectors: list[list[float]] = []
        counted: int | None = 0
        size = self.embedding_batch
        for start in range(0, len(call.inputs), size):
            inputs = [item if isinstance(item, str) else list(item) for item in call.inputs[start : start + size]]
            request = await self.embeddings_request(call, inputs)
            async with http.open_response(self.vendor, request, self.on_error) as response:
                payload = await http.read_json(self.vendor, response)
            batch, prompt_tokens = embeddings_of(payload, len(inputs), self.vendor.name)
            vectors += batch
            # The sum of every call's figure; one call without a figure leaves the router to count.
            counted = None if counted is None or prompt_tokens is None else counted + prompt_tokens
        return Embeddings(vectors, counted)


def embeddings_of(payload: Any, expected: int, vendor_name: str) -> tuple[list[list[float]], int | None]:
    """Return the vectors of an OpenAI-shaped embeddings answer, in input order, and its prompt tokens."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != expected:
        if isinstance(payload, dict) and payload.get("error"):
            raise mid_stream_error(vendor_name, payload)
        raise UpstreamError(
            502, f"Vendor '{vendor_name}' sent an embeddings answer without one vector per input.",
            code="upstream_malformed",
        )  # fmt: skip
    vectors: list[list[float] | None] = [None] * expected
    for position, item in enumerate(data):
        index = item.get("index", position) if isinstance(item, dict) else None
        vector = item.get("embedding") if isinstance(item, dict) else None
        if type(index) is not int or not 0 <= index < expected or vectors[index] is not None:
            raise UpstreamError(502, f"Vendor '{vendor_name}' sent a bad embedding index.", code="upstream_malformed")
        vectors[index] = float_vector(vector, vendor_name)
    usage = payload.get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return [v for v in vectors if v is not None], vendor_token_count(prompt, vendor_name, "prompt_tokens")


def float_vector(vector: Any, vendor_name: str) -> list[float]:
    """A vendor's embedding as floats: a JSON array of numbers, or base64 little-endian float32."""
    if isinstance(vector, str):  # a server that answers base64 whatever it was asked
        try:
            raw = base64.b64decode(vector, validate=True)
        except binascii.Error:
            raw = b""
        if raw and len(raw) % 4 == 0:
            return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    elif isinstance(vector, list) and vector and all(type(x) in (int, float) for x in vector):
        return [float(x) for x in vector]
    raise UpstreamError(
        502, f"Vendor '{vendor_name}' sent an embedding that is not a vector.", code="upstream_malformed"
    )
