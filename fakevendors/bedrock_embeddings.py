"""The fake Bedrock's ``InvokeModel`` for embedding models: Amazon Titan Text Embeddings and Cohere Embed.

Bodies are checked as Bedrock checks them, against each model's schema, and refused with a
``ValidationException`` worded as Bedrock words it ("Malformed input request: #/texts: ...").
Titan (``amazon.titan-embed-text-v2:0``: ``inputText``, ``dimensions`` 256/512/1024,
``normalize``, ``embeddingTypes``; v1: ``inputText`` only) answers ``embedding``,
``inputTextTokenCount`` (and v2 ``embeddingsByType``). Cohere (``cohere.embed-*-v3``,
``cohere.embed-v4:0``: ``texts`` up to 96, ``input_type``, ``embedding_types``, ``truncate``;
v4 ``output_dimension``) answers ``embeddings`` (a list, or by type when ``embedding_types``
was given), ``id``, ``response_type`` and ``texts``, with no usage in the body. Every answer
carries ``X-Amzn-Bedrock-Input-Token-Count``.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from fakevendors.vectors import tokens, vector

TITAN_V2 = re.compile(r"(^|\.)amazon\.titan-embed-text-v2")
TITAN_V1 = re.compile(r"(^|\.)amazon\.titan-embed-(text-v1|g1-text)")
COHERE_V4 = re.compile(r"(^|\.)cohere\.embed-v4")
COHERE_V3 = re.compile(r"(^|\.)cohere\.embed-(english|multilingual)(-light)?-v3")
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
COHERE_BATCH = 96


class Refused(Exception):
    """A request Bedrock refuses: its status, exception name and message."""

    def __init__(self, message: str, error_type: str = "ValidationException", status: int = 400) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def malformed(problem: str) -> Refused:
    return Refused(f"Malformed input request: {problem}, please reformat your input and try again.")


def invoke(model_id: str, body: Any) -> tuple[dict[str, Any], int]:
    """Return the answer to an ``InvokeModel`` body and its input tokens; raise ``Refused``."""
    if not isinstance(body, dict):
        raise malformed("#: expected type: JSONObject")
    model_id = model_id.rsplit("/", 1)[-1]  # a foundation-model or inference-profile ARN's id
    if TITAN_V2.search(model_id):
        return _titan(body, ("inputText", "dimensions", "normalize", "embeddingTypes"), 1024)
    if TITAN_V1.search(model_id):
        return _titan(body, ("inputText",), 1536)
    if COHERE_V4.search(model_id):
        return _cohere(body, ("output_dimension", "max_tokens"), 1536)
    if COHERE_V3.search(model_id):
        return _cohere(body, (), 384 if "light" in model_id else 1024)
    raise Refused("The provided model identifier is invalid.")


def _known_keys(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise malformed(f"#: extraneous key [{key}] is not permitted")


def _titan(body: dict[str, Any], allowed: tuple[str, ...], default: int) -> tuple[dict[str, Any], int]:
    _known_keys(body, allowed)
    text = body.get("inputText")
    if not isinstance(text, str):
        raise malformed(
            "#: required key [inputText] not found" if text is None else "#/inputText: expected type: String"
        )
    dimensions = body.get("dimensions", default)
    if dimensions not in (256, 512, 1024) and "dimensions" in body:
        raise malformed(f"#/dimensions: {dimensions} is not a valid enum value")
    if "normalize" in body and not isinstance(body["normalize"], bool):
        raise malformed("#/normalize: expected type: Boolean")
    embedding = vector(text, dimensions)
    answer: dict[str, Any] = {"embedding": embedding, "inputTextTokenCount": tokens(text)}
    if "dimensions" in allowed:
        answer["embeddingsByType"] = {"float": embedding}
    return answer, tokens(text)


def _cohere(body: dict[str, Any], extra: tuple[str, ...], default: int) -> tuple[dict[str, Any], int]:
    _known_keys(body, ("texts", "images", "input_type", "truncate", "embedding_types", *extra))
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise malformed("#: required key [texts] not found" if texts is None else "#/texts: expected type: JSONArray")
    if len(texts) > COHERE_BATCH:
        raise malformed(f"#/texts: expected maximum item count: {COHERE_BATCH}, found: {len(texts)}")
    if body.get("input_type") not in INPUT_TYPES:
        raise malformed(f"#/input_type: {body.get('input_type')} is not a valid enum value")
    dimensions = body.get("output_dimension", default)
    if dimensions not in (256, 512, 1024, 1536) and "output_dimension" in body:
        raise malformed(f"#/output_dimension: {dimensions} is not a valid enum value")
    types = body.get("embedding_types")
    if types is not None and (not isinstance(types, list) or not set(types) <= {"float", "int8", "binary"}):
        raise malformed("#/embedding_types: expected a list of float, int8, uint8, binary, ubinary")
    vectors = [vector(text, dimensions) for text in texts]
    answer: dict[str, Any] = {"id": secrets.token_hex(16), "texts": texts}
    if types is None:
        answer.update(embeddings=vectors, response_type="embeddings_floats")
    else:
        answer.update(embeddings={"float": vectors} if "float" in types else {}, response_type="embeddings_by_type")
    return answer, sum(tokens(text) for text in texts)
