"""The embeddings request: one declaration that validates bodies and documents them (OpenAPI).

OpenAI's rules: ``input`` is a string, an array of strings, an array of token ids, or an array
of token arrays, none of them empty, at most ``MAX_INPUTS`` entries; ``encoding_format`` is
``float`` or ``base64``; ``dimensions`` a positive integer; any other member is refused.
"""

from __future__ import annotations

from typing import Any

from routing.canonical import EmbeddingRequest
from routing.dialects.body import parse_json_object
from routing.dialects.chat.schema import MAX_MODEL_NAME, NO_MODEL
from routing.dialects.faults import Fault, Invalid
from routing.dialects.fields import Field
from routing.dialects.spec import Enum, Integer, Object, Schema, Spec, String
from routing.errors import invalid

# OpenAI's limit on the entries of one request's input (and so of one vendor call).
MAX_INPUTS = 2048
# Token ids are non-negative 32-bit integers; no tokenizer has more.
MAX_TOKEN_ID = 2**31 - 1
MAX_DIMENSIONS = 65_536
MAX_DEPTH = 8
ENCODING_FORMATS = frozenset({"float", "base64"})


class EmbeddingInput(Spec):
    """``input``: one of four forms, checked whole so that a mixed array is refused at its first stray entry."""

    label = "a string, an array of strings, an array of token ids or an array of token arrays"
    messages = {
        **Spec.messages,
        "type": ("'{path}' must be {spec.label}.", "invalid_type"),
        "mixed": ("'{path}' must be of the same kind as the first entry of 'input'.", "invalid_type"),
        "empty": ("'{path}' must not be empty.", "invalid_value"),
        "many": (f"'{{path}}' has more than {MAX_INPUTS} entries.", "invalid_value"),
        "token": (f"'{{path}}' must be a token id from 0 to {MAX_TOKEN_ID}.", "invalid_value"),
    }

    def check(self, value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                raise Fault(self, "empty", value)
            return value
        if not isinstance(value, list):
            raise Fault(self, "type", value)
        if not value:
            raise Fault(self, "empty", value)
        if len(value) > MAX_INPUTS:
            raise Fault(self, "many", value)
        first = value[0]
        entry = _text if isinstance(first, str) else _token_array if isinstance(first, list) else _token
        for i, item in enumerate(value):
            try:
                entry(self, item)
            except Fault as fault:
                fault.path.append(i)
                raise
        return value

    def shape(self) -> Schema:
        token = {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID}
        text = {"type": "string", "minLength": 1}
        tokens = {"type": "array", "items": token, "minItems": 1}
        return {
            "oneOf": [
                text,
                {"type": "array", "items": text, "minItems": 1, "maxItems": MAX_INPUTS},
                {**tokens, "maxItems": MAX_INPUTS},
                {"type": "array", "items": tokens, "minItems": 1, "maxItems": MAX_INPUTS},
            ]
        }


def _token(spec: Spec, item: Any) -> None:
    if isinstance(item, bool) or not isinstance(item, int):
        raise Fault(spec, "mixed", item)
    if not 0 <= item <= MAX_TOKEN_ID:
        raise Fault(spec, "token", item)


def _text(spec: Spec, item: Any) -> None:
    if not isinstance(item, str):
        raise Fault(spec, "mixed", item)
    if not item:
        raise Fault(spec, "empty", item)


def _token_array(spec: Spec, item: Any) -> None:
    if not isinstance(item, list):
        raise Fault(spec, "mixed", item)
    if not item:
        raise Fault(spec, "empty", item)
    for i, token in enumerate(item):
        try:
            _token(spec, token)
        except Fault as fault:
            fault.reason = "token" if fault.reason == "mixed" else fault.reason
            fault.path.append(i)
            raise


REQUEST = Object(
    {
        "model": Field(
            String(
                min_length=1,
                max_length=MAX_MODEL_NAME,
                errors={"type": NO_MODEL, "short": NO_MODEL, "missing": NO_MODEL},
            ),
            required=True,
            blank_is_absent=True,
        ),
        "input": Field(EmbeddingInput(description="What to embed; one vector answers each entry."), required=True),
        "encoding_format": Field(Enum(ENCODING_FORMATS), default="float"),
        "dimensions": Integer(
            1, MAX_DIMENSIONS, description="The vectors' length, for models that can shorten them (the vendor judges)."
        ),
        "user": String(description="The end user, passed on to the vendor."),
    },
    additional=False,
)


def parse_embeddings_request(body: bytes) -> EmbeddingRequest:
    """Return the canonical embedding request of a body, or raise a 400 naming the field."""
    try:
        clean = REQUEST.validate(parse_json_object(body, MAX_DEPTH))
    except Invalid as error:
        raise invalid(error.message, error.param, error.code) from None
    given = clean["input"]
    if isinstance(given, str):
        inputs: tuple[str, ...] | tuple[tuple[int, ...], ...] = (given,)
    elif isinstance(given[0], str):
        inputs = tuple(given)
    elif isinstance(given[0], int):
        inputs = (tuple(given),)
    else:
        inputs = tuple(tuple(tokens) for tokens in given)
    return EmbeddingRequest(
        clean["model"], inputs, clean["encoding_format"], clean.get("dimensions"), clean.get("user")
    )


# The answer, for the OpenAPI document (``routing.openapi``); rendered by ``dialect.Embeddings.answer``.
EMBEDDING_LIST: Schema = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer", "minimum": 0},
                    "embedding": {
                        "oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}],
                        "description": "Floats, or with `encoding_format: base64` little-endian float32 bytes in base64.",
                    },
                },
            },
        },
        "model": {"type": "string"},
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "total_tokens"],
            "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
        },
    },
}
