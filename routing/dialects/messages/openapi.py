"""The Messages API's part of the OpenAPI document (``routing.openapi``).

Both request bodies are the declarations that validate them (``schema.REQUEST``,
``schema.COUNT_REQUEST``); the answer, its stream and its errors are Anthropic's shapes as this
dialect renders them (``dialect.py``, ``stream.py``): stop reasons and error types from the
dialect's own tables.
"""

from __future__ import annotations

from typing import Any

from routing.dialects.messages.schema import COUNT_REQUEST, REQUEST
from routing.dialects.messages.stream import ERROR_TYPES, STOP_REASONS

Schema = dict[str, Any]

# The Anthropic SDKs send the key in ``x-api-key``; ``Authorization: Bearer`` is taken as well.
SECURITY_SCHEMES: Schema = {"anthropicApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"anthropicApiKey": []}]
_HEADERS = {
    "anthropic-version": "Accepted (the router answers in one version of the API, 2023-06-01).",
    "anthropic-beta": "Accepted and not forwarded.",
}
_HEADER_PARAMETERS = [
    {"name": name, "in": "header", "required": False, "description": why, "schema": {"type": "string"}}
    for name, why in _HEADERS.items()
]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref("MessagesError")}}}


_ERRORS = {
    "400": _error("Invalid JSON or fields (`invalid_request_error`, the message names the field)."),
    "401": _error("Missing, unknown, revoked or expired API key (`authentication_error`)."),
    "402": _error("Credit limit reached (`billing_error`)."),
    "404": _error("Unknown model (`not_found_error`)."),
    "405": _error("Wrong HTTP method."),
    "413": _error("Body larger than SIRAYA_MAX_BODY_BYTES."),
    "429": _error("Rate limit or concurrent-stream cap reached (`rate_limit_error`)."),
    "502": _error("The vendor failed (`api_error`)."),
    "503": _error("No deployment can serve the model now (`overloaded_error`)."),
    "504": _error("The vendor timed out (`timeout_error`)."),
}
_COUNT_ERRORS = {code: _ERRORS[code] for code in ("400", "401", "404", "405", "413")}

_USAGE: Schema = {
    "type": "object",
    "required": ["input_tokens", "output_tokens"],
    "properties": {
        name: {"type": "integer", "minimum": 0}
        for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    },
}
_BLOCK: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["text", "thinking", "tool_use"]}},
}
MESSAGE: Schema = {
    "type": "object",
    "required": ["id", "type", "role", "content", "model", "stop_reason", "usage"],
    "properties": {
        "id": {"type": "string", "pattern": "^gen-", "description": "The router's generation id (X-Generation-Id)."},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "content": {"type": "array", "items": _BLOCK},
        "model": {"type": "string"},
        "stop_reason": {"enum": sorted(set(STOP_REASONS.values()) | {"end_turn"})},
        "stop_sequence": {"type": ["string", "null"]},
        "usage": _USAGE,
    },
}
ERROR: Schema = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"enum": sorted({*ERROR_TYPES.values(), "api_error", "invalid_request_error"})},
                "message": {"type": "string"},
            },
        },
    },
}
COUNT: Schema = {
    "type": "object",
    "required": ["input_tokens"],
    "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
}

PATHS: Schema = {
    "/v1/messages": {
        "post": {
            "operationId": "createMessage",
            "summary": "Anthropic Messages API: the message object, or its events (`stream: true`).",
            "security": _SECURITY,
            "parameters": _HEADER_PARAMETERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("MessagesRequest")}}},
            "responses": {
                "200": {
                    "description": "The message. With `stream: true`, `event:`/`data:` pairs from `message_start` "
                    "to `message_stop` (`ping` as the keepalive, `error` for a failure after the stream began).",
                    "headers": {"X-Generation-Id": {"schema": {"type": "string"}}},
                    "content": {
                        "application/json": {"schema": _ref("Message")},
                        "text/event-stream": {"schema": _ref("StreamEvent")},
                    },
                },
                **_ERRORS,
            },
        }
    },
    "/v1/messages/count_tokens": {
        "post": {
            "operationId": "countMessageTokens",
            "summary": "The prompt's input tokens for the model, counted as the router bills them.",
            "security": _SECURITY,
            "parameters": _HEADER_PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("MessagesCountTokensRequest")}},
            },
            "responses": {
                "200": {"description": "The count.", "content": {"application/json": {"schema": _ref("TokenCount")}}},
                **_COUNT_ERRORS,
            },
        }
    },
}

SCHEMAS: Schema = {
    # Both requests are documented from the declarations that validate them.
    "MessagesRequest": REQUEST.schema(),
    "MessagesCountTokensRequest": COUNT_REQUEST.schema(),
    "Message": MESSAGE,
    "MessagesError": ERROR,
    "TokenCount": COUNT,
}
