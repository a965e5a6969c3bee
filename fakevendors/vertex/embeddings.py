"""The fake Vertex's text embeddings: ``POST .../publishers/google/models/{m}:predict``.

``text-embedding-*`` and ``text-multilingual-embedding-*`` (768 dimensions) take up to 250
``instances`` and 20,000 input tokens per request; ``gemini-embedding-*`` (3072) takes one
instance per request. ``parameters.outputDimensionality`` shortens the vectors (up to the
model's size). Each prediction is ``{"embeddings": {"values", "statistics": {"token_count",
"truncated"}}}`` as the REST ``:predict`` answer writes it; a bad request is a 400
``INVALID_ARGUMENT``, a quota failure (``Scenario.status`` 429) ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

from typing import Any

from fakevendors.server import Connection
from fakevendors.vectors import tokens, vector
from fakevendors.vertex.scenario import Scenario, fail_first

MAX_INSTANCES = 250
MAX_REQUEST_TOKENS = 20_000


def model_dimensions(model: str) -> int | None:
    """The vector size of a Google embedding model, None for a model that does not embed."""
    if model.startswith("gemini-embedding-"):
        return 3072
    if model.startswith(("text-embedding-", "text-multilingual-embedding-", "textembedding-gecko")):
        return 768
    return None


def predict_problem(model: str, body: Any) -> str | None:
    """Why Google refuses this ``:predict`` body with INVALID_ARGUMENT, or None."""
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or not instances:
        return "instances must be a non-empty list."
    if model.startswith("gemini-embedding-") and len(instances) > 1:
        return f"Model {model} supports only 1 instance per request; the request had {len(instances)}."
    if len(instances) > MAX_INSTANCES:
        return f"The request has {len(instances)} instances; the limit is {MAX_INSTANCES}."
    if not all(isinstance(i, dict) and isinstance(i.get("content"), str) for i in instances):
        return "Each instance must have a string 'content'."
    total = sum(tokens(i["content"]) for i in instances)
    if total > MAX_REQUEST_TOKENS:
        return f"Unable to submit request because the input token count is {total} but the model supports up to {MAX_REQUEST_TOKENS}."  # fmt: skip
    wanted = (body.get("parameters") or {}).get("outputDimensionality")
    size = model_dimensions(model) or 0
    if wanted is not None and (type(wanted) is not int or not 1 <= wanted <= size):
        return f"Unsupported output dimensionality {wanted} for model {model}; it supports up to {size}."
    return None


class EmbeddingAnswers:
    """``:predict`` for Google's embedding models (a mixin of ``FakeVertex``)."""

    scenario: Scenario
    predictions = 0  # :predict requests received

    async def _predict(self, conn: Connection, body: Any, model: str) -> None:
        s = self.scenario
        self.predictions += 1
        if self.predictions > s.predictions_before_failure:
            message = (
                "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model "
                f"with base model: {model}. Please submit a quota increase request."
            )
            if await fail_first(conn, s, {"error": {"code": s.status, "message": message, "status": "RESOURCE_EXHAUSTED"}}):  # fmt: skip
                return
        size = model_dimensions(model)
        if size is None:
            message = f"Publisher model {model} does not support predict for embeddings."
            conn.send_json(400, {"error": {"code": 400, "message": message, "status": "FAILED_PRECONDITION"}})
            return
        problem = predict_problem(model, body)
        if problem:
            conn.send_json(400, {"error": {"code": 400, "message": problem, "status": "INVALID_ARGUMENT"}})
            return
        size = (body.get("parameters") or {}).get("outputDimensionality") or size
        predictions = [
            {"embeddings": {"values": vector(i["content"], size),
                            "statistics": {"token_count": tokens(i["content"]), "truncated": False}}}
            for i in body["instances"]
        ]  # fmt: skip
        if await conn.pause(s.first_token_delay):
            conn.send_json(200, {"predictions": predictions, "metadata": {"billableCharacterCount": 0}})
