"""The chat-completions request: one declaration that validates bodies and documents them (OpenAPI).

Errors name the offending field in the router's words (``param`` is its path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routing.canonical import ChatRequest
from routing.dialects.body import parse_json_object
from routing.dialects.faults import Invalid, Message
from routing.dialects.fields import Field, RequiredUnless
from routing.dialects.spec import (
    AnyJson,
    Array,
    Boolean,
    Enum,
    Integer,
    Number,
    Object,
    OneOf,
    String,
    Tagged,
)
from routing.errors import RouterError, invalid

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MAX_DEPTH = 64
MAX_MESSAGES = 100_000
# Longest model name accepted; longer names are refused rather than echoed back in errors.
MAX_MODEL_NAME = 256
MAX_TOKENS = 10_000_000

_NAMES_REFUSED: Message = ("'{path}' must be a non-empty array of model names.", "invalid_value")
_NAME_TOO_LONG: Message = (f"Model names are at most {MAX_MODEL_NAME} characters.", "invalid_value")
# A missing or non-string model, in every client API that names one the same way.
NO_MODEL: Message = ("'{path}' is required and must be a string.", "missing")
_NO_MESSAGES = "'{path}' must be a non-empty array."
# OpenAI parameters the router forwards without judging them.
_FORWARDED_AS_SENT = (
    "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls", "store", "reasoning_effort",
    "service_tier", "modalities", "prediction", "verbosity", "web_search_options", "audio",
    "thinking",  # BytePlus ModelArk and other vendors' reasoning switch
)  # fmt: skip
_FORWARDED = "Forwarded to the vendor as sent (OpenAI's meaning); the vendor judges the value."


def _first_model(request: Mapping[str, Any]) -> str | None:
    models = request.get("models")
    return models[0] if models else None


_CONTENT_PART = Tagged(
    "type",
    {
        "text": Object(
            {"text": Field(String(errors={"missing": ("'{path}' must be a string.", "invalid_type")}), required=True)}
        )
    },
)
_TOOL_CALL = Object({"function": Object({"name": String(), "arguments": String()})})
MESSAGE = Object(
    {
        "role": Field(Enum(ROLES), required=True),
        "content": Field(
            OneOf(
                String(),
                Array(_CONTENT_PART),
                errors={"missing": ("'{path}' is required for role '{obj[role]}'.", "missing")},
            ),
            # An assistant turn may carry only tool calls; a legacy function turn may be empty.
            required=RequiredUnless("role", {"assistant", "function"}, given="tool_calls"),
        ),
        "tool_calls": Array(_TOOL_CALL),
        "name": String(),
        "tool_call_id": AnyJson(description="The tool call a `tool` message answers."),
    }
)

# Members in the order they are checked: the first fault found is the one reported.
REQUEST = Object(
    {
        "models": Array(
            String(min_length=1, max_length=MAX_MODEL_NAME),
            min_items=1,
            atomic=True,
            message=_NAMES_REFUSED,
            errors={"long": _NAME_TOO_LONG},
            description="Fallback models, tried in order; the first stands in for a missing `model`.",
        ),
        "model": Field(
            String(
                min_length=1,
                max_length=MAX_MODEL_NAME,
                errors={"type": NO_MODEL, "short": NO_MODEL, "missing": NO_MODEL},
            ),
            required=True,
            blank_is_absent=True,
            fallback=_first_model,
        ),
        "messages": Field(
            Array(
                MESSAGE,
                min_items=1,
                max_items=MAX_MESSAGES,
                errors={"type": (_NO_MESSAGES, "invalid_type"), "missing": (_NO_MESSAGES, "missing")},
            ),
            required=True,
            blank_is_absent=True,
        ),
        "stream": Field(Boolean(), default=False),
        "stream_options": Object({"include_usage": Field(Boolean(), default=False)}),
        "temperature": Number(0, 2),
        "top_p": Number(0, 1),
        "presence_penalty": Number(-2, 2),
        "frequency_penalty": Number(-2, 2),
        "max_tokens": Integer(1, MAX_TOKENS),
        "max_completion_tokens": Integer(1, MAX_TOKENS),
        "n": Integer(1, 128, choices=(1,), errors={"choice": ("Only '{path}': 1 is supported.", "unsupported_value")}),
        "seed": Integer(-(2**63), 2**63, message=("'{path}' must be a 64-bit integer.", "invalid_type")),
        "stop": OneOf(
            String(),
            Array(String(), max_items=4),
            atomic=True,
            message=("'{path}' must be a string or an array of at most 4 strings.", "invalid_value"),
        ),
        "tools": Array(),
        "tool_choice": OneOf(String(), Object()),
        "response_format": Object(),
        "user": String(),
        "metadata": Object(),
        "provider": Field(
            Object(description="Vendor preferences: `order`, `allow_fallbacks` (see the README)."),
            blank_is_absent=True,
        ),
        **{name: AnyJson(description=_FORWARDED) for name in _FORWARDED_AS_SENT},
        "usage": AnyJson(description="Accepted for OpenRouter clients; usage is always reported."),
    },
    additional=False,
)

# Parameters the router itself reads; every other member is forwarded to OpenAI-compatible vendors.
ROUTER_FIELDS = {"model", "messages", "stream", "stream_options", "models", "provider", "usage"}
PASSTHROUGH = set(REQUEST.fields) - ROUTER_FIELDS


def parse_chat_request(body: bytes) -> ChatRequest:
    """Return the canonical request of a chat-completions body, or raise a 400 naming the field."""
    try:
        data = parse_json_object(body, MAX_DEPTH)
        clean = REQUEST.validate(data)
    except Invalid as error:
        raise _refusal(error) from None
    options = clean.get("stream_options")
    models = clean.get("models")
    return ChatRequest(
        model=clean["model"],
        messages=clean["messages"],
        stream=clean["stream"],
        include_usage=options["include_usage"] if options else False,
        max_tokens=clean.get("max_completion_tokens") or clean.get("max_tokens"),
        params={k: v for k, v in data.items() if k in PASSTHROUGH},
        models=list(models) if models else [],
        provider=clean.get("provider") or {},
    )


def _refusal(error: Invalid) -> RouterError:
    return invalid(error.message, error.param, error.code)
