"""Google's text embedding models on Vertex AI through ``:predict``.

``text-embedding-*``, ``text-multilingual-embedding-*`` (and ``textembedding-gecko*``) take up
to 250 ``instances`` per request and at most 20,000 input tokens in all; past that Google
answers 400. The router cannot count with Google's tokenizer, so a batch is cut by UTF-8
bytes instead: no token covers less than one byte, so the bytes bound the tokens (an input
over the whole budget goes alone and Google judges it). ``gemini-embedding-*`` takes one
instance per request, as Google documents, so N inputs are N requests. ``dimensions`` is
``parameters.outputDimensionality``; each prediction's ``statistics.token_count`` is summed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from routing.errors import UpstreamError
from routing.vendors import http
from routing.vendors.base import EmbeddingCall, Embeddings, vendor_token_count
from routing.vendors.batches import batched, budgeted, is_vector, joined, run_bounded, text_inputs

if TYPE_CHECKING:
    from routing.vendors.vertex.adapter import VertexAdapter

TEXT_MODELS = re.compile(r"(text-embedding-|text-multilingual-embedding-|textembedding-gecko)")
GEMINI_MODELS = re.compile(r"gemini-embedding-")
MAX_INSTANCES = 250  # per :predict request
MAX_REQUEST_TOKENS = 20_000  # input tokens per :predict request, all instances together
TOKEN_OVERHEAD = 2  # tokens a model may add to each instance (start and end markers)


def _cost(text: str) -> int:
    """An upper bound on ``text``'s tokens in any tokenizer (see the module's docstring)."""
    return len(text.encode()) + TOKEN_OVERHEAD


def batches(model: str, texts: Sequence[str]) -> list[Sequence[str]]:
    """The inputs of each ``:predict`` request for ``model``, in order."""
    if GEMINI_MODELS.match(model):
        return list(batched(texts, 1))
    return budgeted(texts, MAX_INSTANCES, MAX_REQUEST_TOKENS, _cost)


def predict_body(texts: Sequence[str], dimensions: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"instances": [{"content": text} for text in texts]}
    if dimensions is not None:
        body["parameters"] = {"outputDimensionality": dimensions}
    return body


async def embed(adapter: VertexAdapter, call: EmbeddingCall, publisher: str, model: str) -> Embeddings:
    """Return one vector per input of ``call`` (``model`` of ``publisher``), in order, from as
    many requests as the model needs."""
    name = adapter.vendor.name
    if publisher != "google" or not (TEXT_MODELS.match(model) or GEMINI_MODELS.match(model)):
        raise UpstreamError(
            502,
            f"Vendor '{name}': '{call.upstream_model}' is not a Vertex text embedding model this router speaks "
            "(text-embedding-*, text-multilingual-embedding-*, gemini-embedding-*).",
            code="unsupported_upstream_model",
        )
    texts = text_inputs(call, name, call.upstream_model)
    url = adapter.model_url(publisher, model) + ":predict"
    token = await adapter.tokens.token()
    answers = await run_bounded(
        functools.partial(_predict, adapter, url, token, batch, call.dimensions) for batch in batches(model, texts)
    )
    return joined(answers)


async def _predict(
    adapter: VertexAdapter, url: str, token: str, texts: Sequence[str], dimensions: int | None
) -> tuple[list[list[float]], int | None]:
    request = http.json_request("POST", url, predict_body(texts, dimensions), {"authorization": f"Bearer {token}"})
    async with http.open_response(adapter.vendor, request, adapter.on_error) as response:
        payload = await http.read_json(adapter.vendor, response)
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(texts):
        raise _malformed(adapter.vendor.name, f"an answer without {len(texts)} predictions")
    vectors: list[list[float]] = []
    total: int | None = 0
    for prediction in predictions:
        embedding = prediction.get("embeddings") if isinstance(prediction, dict) else None
        if not isinstance(embedding, dict) or not is_vector(embedding.get("values")):
            raise _malformed(adapter.vendor.name, "a prediction without a float vector")
        vectors.append(embedding["values"])
        count = _token_count(embedding, adapter.vendor.name)
        total = None if total is None or count is None else total + count
    return vectors, total


def _token_count(embedding: dict[str, Any], vendor_name: str) -> int | None:
    statistics = embedding.get("statistics")
    if not isinstance(statistics, dict):
        return None
    # :predict answers are protobuf Struct values, written snake_case (the typed reference says tokenCount).
    count = statistics.get("token_count", statistics.get("tokenCount"))
    if type(count) is float and count.is_integer():
        count = int(count)  # a Struct holds every number as a double
    return vendor_token_count(count, vendor_name, "statistics.token_count")


def _malformed(vendor_name: str, what: str) -> UpstreamError:
    return UpstreamError(502, f"Vendor '{vendor_name}' sent {what}.", code="upstream_malformed")
