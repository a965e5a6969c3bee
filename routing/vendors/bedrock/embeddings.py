"""Bedrock embedding models through ``InvokeModel``: Amazon Titan Text Embeddings and Cohere Embed.

Titan takes one text per call (``{"inputText", "dimensions", "normalize"}``), so N inputs are
N calls; Cohere takes up to 96 ``texts`` per call. Titan reports ``inputTextTokenCount`` in
the body; Cohere's body carries no usage, only the ``X-Amzn-Bedrock-Input-Token-Count``
header every ``InvokeModel`` answer has, which is read whenever the body has no count.
``dimensions`` goes to Titan v2 (``dimensions``) and Cohere v4 (``output_dimension``); the
other models have one vector size and refuse it. The model family follows from the model id,
the last segment of an ARN and a cross-region profile's prefix (``us.``) included.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import EmbeddingCall, Embeddings, vendor_token_count
from routing.vendors.batches import batched, fixed_dimensions, is_vector, joined, run_bounded, text_inputs
from routing.vendors.bedrock.events import malformed

if TYPE_CHECKING:
    from routing.vendors.bedrock.adapter import BedrockAdapter

TOKEN_HEADER = "x-amzn-bedrock-input-token-count"
# OpenAI's API has no input type: texts are embedded as documents, Cohere's advice for a corpus.
COHERE_INPUT_TYPE = "search_document"


@dataclass(frozen=True)
class Family:
    """One Bedrock embedding model family's ``InvokeModel`` wire format."""

    vendor: str  # "titan" or "cohere"
    batch: int  # inputs per call
    takes_dimensions: bool  # Titan v2 and Cohere v4; Titan v2 also takes ``normalize``


FAMILIES = (
    (re.compile(r"(^|\.)amazon\.titan-embed-text-v2"), Family("titan", 1, True)),
    (re.compile(r"(^|\.)amazon\.titan-embed-(text-v1|g1-text)"), Family("titan", 1, False)),
    (re.compile(r"(^|\.)cohere\.embed-v4"), Family("cohere", 96, True)),
    (re.compile(r"(^|\.)cohere\.embed-"), Family("cohere", 96, False)),
)


def family_of(model_id: str) -> Family | None:
    """The embedding family of a model id, foundation-model or inference-profile ARN; None if not one."""
    name = model_id.rsplit("/", 1)[-1]
    return next((family for pattern, family in FAMILIES if pattern.search(name)), None)


def invoke_body(family: Family, texts: Sequence[str], dimensions: int | None) -> dict[str, Any]:
    if family.vendor == "titan":
        body: dict[str, Any] = {"inputText": texts[0]}
        if family.takes_dimensions:
            body["normalize"] = True  # OpenAI's vectors are unit length; so are Titan v2's by default
            if dimensions is not None:
                body["dimensions"] = dimensions
        return body
    body = {"texts": list(texts), "input_type": COHERE_INPUT_TYPE, "embedding_types": ["float"]}
    if dimensions is not None:
        body["output_dimension"] = dimensions
    return body


async def embed(adapter: BedrockAdapter, call: EmbeddingCall) -> Embeddings:
    """Return one vector per input of ``call``, in order, from as many calls as the model needs."""
    name, model = adapter.vendor.name, call.upstream_model
    family = family_of(model)
    if family is None:
        raise UpstreamError(
            502,
            f"Vendor '{name}': '{model}' is not a Bedrock embedding model this router speaks "
            "(amazon.titan-embed-text-v1/v2, cohere.embed-*).",
            code="unsupported_upstream_model",
        )
    texts = text_inputs(call, name, model)
    if call.dimensions is not None and not family.takes_dimensions:
        raise fixed_dimensions(name, model)
    url = adapter.operation_url(model, "invoke")
    answers = await run_bounded(
        functools.partial(_invoke, adapter, url, family, batch, call.dimensions)
        for batch in batched(texts, family.batch)
    )
    return joined(answers)


async def _invoke(
    adapter: BedrockAdapter, url: str, family: Family, texts: Sequence[str], dimensions: int | None
) -> tuple[list[list[float]], int | None]:
    request = adapter.post(url, http.json_bytes(invoke_body(family, texts, dimensions)))
    async with http.open_response(adapter.vendor, request, adapter.on_error) as response:
        payload = await http.read_json(adapter.vendor, response)
        headers = response.headers
    name = adapter.vendor.name
    vectors = _vectors(family, payload, len(texts), name)
    count = payload.get("inputTextTokenCount") if family.vendor == "titan" else None
    if count is not None:
        return vectors, vendor_token_count(count, name, "inputTextTokenCount")
    return vectors, vendor_token_count(_header_count(headers), name, TOKEN_HEADER)


def _vectors(family: Family, payload: Any, expected: int, vendor_name: str) -> list[list[float]]:
    if not isinstance(payload, dict):
        raise malformed(vendor_name, "an embedding answer that is not a JSON object")
    if family.vendor == "titan":
        found: Any = [payload.get("embedding")]
    else:
        found = payload.get("embeddings")
        if isinstance(found, dict):  # response_type "embeddings_by_type"
            found = found.get("float")
    if not isinstance(found, list) or len(found) != expected or not all(map(is_vector, found)):
        raise malformed(vendor_name, f"an embedding answer without {expected} float vectors")
    return found


def _header_count(headers: httpx.Headers) -> int | None:
    value = headers.get(TOKEN_HEADER, "")
    return int(value) if value.isascii() and value.isdigit() else None
