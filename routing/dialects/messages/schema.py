"""The Messages request: one declaration that validates bodies (and can document them), in Anthropic's words.

Blocks only Claude reads (thinking signatures, ``cache_control``, documents) are accepted: a Claude
deployment (Vertex, Bedrock) is sent the body as it came; other vendors get the canonical
translation, which carries what it can (``routing.dialects.messages.request``). What no vendor
behind the router would take is refused by name: server tools, and block kinds not declared here.
"""

from __future__ import annotations

from routing.dialects.chat.schema import MAX_MODEL_NAME
from routing.dialects.fields import Field
from routing.dialects.spec import AnyJson, Array, Boolean, Enum, Integer, Number, Object, OneOf, String, Tagged

MAX_DEPTH = 64
MAX_MESSAGES = 100_000
MAX_TOKENS = 10_000_000

# Anthropic's own words for a member the API does not know.
UNKNOWN = ("{path}: Extra inputs are not permitted", "unknown_parameter")
_TEXT_REQUIRED = ("'{path}' is required and must be a string.", "missing")

TEXT_BLOCK = Object(
    {
        "type": String(),
        "text": Field(String(errors={"missing": _TEXT_REQUIRED}), required=True),
        "cache_control": AnyJson(description="Sent on to Claude (Vertex, Bedrock); other vendors cache on their own."),
        "citations": AnyJson(description="Sent on to Claude; not to other vendors."),
    },
    additional=False,
    errors={"unknown": UNKNOWN},
)
IMAGE_SOURCE = Tagged(
    "type",
    {
        "base64": Object({"media_type": Field(String(), required=True), "data": Field(String(), required=True)}),
        "url": Object({"url": Field(String(min_length=1), required=True)}),
    },
    closed=True,
)
IMAGE_BLOCK = Object({"source": Field(IMAGE_SOURCE, required=True), "cache_control": AnyJson()})
TOOL_RESULT_BLOCK = Object(
    {
        "tool_use_id": Field(String(min_length=1), required=True),
        "content": OneOf(String(), Array(Tagged("type", {"text": TEXT_BLOCK, "image": IMAGE_BLOCK}))),
        "is_error": Boolean(),
        "cache_control": AnyJson(),
    }
)
TOOL_USE_BLOCK = Object(
    {
        "id": Field(String(min_length=1), required=True),
        "name": Field(String(min_length=1), required=True),
        "input": Field(Object(), required=True),
        "cache_control": AnyJson(),
    }
)
# Earlier turns' reasoning: sent on to Claude with its signature, which Claude checks; other
# vendors cannot verify a signature, so the canonical translation leaves these blocks out.
THINKING_BLOCK = Object({"thinking": String(), "signature": String(), "cache_control": AnyJson()})
DOCUMENT_SOURCE = Tagged(
    "type",
    {
        "base64": Object({"media_type": Field(String(), required=True), "data": Field(String(), required=True)}),
        "text": Object({"media_type": String(), "data": Field(String(), required=True)}),
        "url": Object({"url": Field(String(min_length=1), required=True)}),
        "content": Object(
            {
                "content": Field(
                    OneOf(String(), Array(Tagged("type", {"text": TEXT_BLOCK, "image": IMAGE_BLOCK}, closed=True))),
                    required=True,
                )
            }
        ),
    },
    # Another source (the Files API's file_id) is one no vendor the router reaches can read.
    closed=True,
)
DOCUMENT_BLOCK = Object(
    {
        "source": Field(DOCUMENT_SOURCE, required=True),
        "title": String(),
        "context": String(),
        "citations": AnyJson(),
        "cache_control": AnyJson(),
    }
)
BLOCK_KINDS = {
    "text": TEXT_BLOCK,
    "image": IMAGE_BLOCK,
    "document": DOCUMENT_BLOCK,
    "tool_use": TOOL_USE_BLOCK,
    "tool_result": TOOL_RESULT_BLOCK,
    "thinking": THINKING_BLOCK,
    "redacted_thinking": Object({"data": String(), "cache_control": AnyJson()}),
}
MESSAGE = Object(
    {
        "role": Field(Enum({"user", "assistant"}), required=True),
        "content": Field(OneOf(String(), Array(Tagged("type", BLOCK_KINDS))), required=True),
    },
    additional=False,
    errors={"unknown": UNKNOWN},
)
TOOL = Object(
    {
        "name": Field(String(min_length=1, max_length=128), required=True),
        "description": String(),
        "input_schema": Field(Object(), required=True),
        "type": Enum(
            {"custom"},
            errors={"type": ("'{path}': only custom tools are supported; got {shown!r}.", "unsupported_value")},
        ),
        "cache_control": AnyJson(),
    },
    additional=False,
    errors={"unknown": UNKNOWN},
)
_PARALLEL = {"disable_parallel_tool_use": Boolean()}
TOOL_CHOICE = Tagged(
    "type",
    {
        "auto": Object(_PARALLEL),
        "any": Object(_PARALLEL),
        "none": Object(),
        "tool": Object({"name": Field(String(min_length=1), required=True), **_PARALLEL}),
    },
    closed=True,
)
THINKING = Tagged(
    "type",
    {
        "enabled": Object({"budget_tokens": Field(Integer(1024, MAX_TOKENS), required=True)}),
        "disabled": Object(),
    },
    closed=True,
)

REQUEST = Object(
    {
        "model": Field(String(min_length=1, max_length=MAX_MODEL_NAME), required=True),
        "messages": Field(Array(MESSAGE, min_items=1, max_items=MAX_MESSAGES), required=True),
        "max_tokens": Field(Integer(1, MAX_TOKENS), required=True),
        "system": OneOf(String(), Array(Tagged("type", {"text": TEXT_BLOCK}, closed=True))),
        "stop_sequences": Array(String()),
        "temperature": Number(0, 1),
        "top_p": Number(0, 1),
        "top_k": Integer(
            0,
            MAX_TOKENS,
            description="Sent to Claude (Vertex, Bedrock) and Gemini; vendors without it answer without it.",
        ),
        "tools": Array(TOOL),
        "tool_choice": TOOL_CHOICE,
        "thinking": THINKING,
        "metadata": Object({"user_id": String(max_length=256)}, additional=False, errors={"unknown": UNKNOWN}),
        "stream": Field(Boolean(), default=False),
    },
    additional=False,
    errors={"unknown": UNKNOWN},
)

# ``POST /v1/messages/count_tokens``: what shapes the prompt, without the answer's parameters.
COUNT_REQUEST = Object(
    {name: REQUEST.fields[name] for name in ("model", "messages", "system", "tools", "tool_choice", "thinking")},
    additional=False,
    errors={"unknown": UNKNOWN},
)
