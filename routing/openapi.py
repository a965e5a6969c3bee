"""The OpenAPI 3.1 document of the public API, served at ``/v1/openapi.json``.

Each client API's request schema comes from the declaration that validates it (chat completions:
``routing.dialects.chat.schema``, Responses: ``routing.dialects.responses.schema``, Messages and
its token count: ``routing.dialects.messages.schema``, whose part of the document is
``routing.dialects.messages.openapi``); embeddings: ``routing.dialects.embeddings.schema``); the
rest is kept by hand beside the code it describes, and ``ops/tests/test_openapi.py`` runs
schemathesis against a live router so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from billing.models import UsageApi
from routing.dialects.chat.schema import MESSAGE, REQUEST
from routing.dialects.embeddings.schema import EMBEDDING_LIST
from routing.dialects.embeddings.schema import REQUEST as EMBEDDINGS_REQUEST
from routing.dialects.messages import openapi as messages
from routing.dialects.responses.paths import RESPONSE, stored_response_paths
from routing.dialects.responses.schema import REQUEST as RESPONSES_REQUEST

Schema = dict[str, Any]

_NULLABLE_STRING: Schema = {"type": ["string", "null"]}
_NULLABLE_INT: Schema = {"type": ["integer", "null"]}
# Money is a decimal string (USD), never a float.
_MONEY: Schema = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "USD, decimal string"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


_ERRORS = {
    "400": _error("Invalid JSON or fields; `param` names the field."),
    "401": _error("Missing, unknown, revoked or expired API key."),
    "402": _error("Credit limit reached."),
    "404": _error("Unknown model or generation."),
    "405": _error("Wrong HTTP method."),
    "413": _error("Body larger than SIRAYA_MAX_BODY_BYTES."),
    "429": _error("Rate limit or concurrent-stream cap reached."),
    "502": _error("The vendor failed."),
    "503": _error("No deployment can serve the model now."),
    "504": _error("The vendor timed out."),
}


_EMBEDDINGS: Schema = {
    "operationId": "createEmbedding",
    "summary": "Embeddings of a string, strings or token arrays, from a model whose mode is embedding.",
    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("EmbeddingRequest")}}},
    "responses": {
        "200": {
            "description": "One embedding per input, in input order.",
            "headers": {"X-Generation-Id": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": _ref("EmbeddingList")}},
        },
        **_ERRORS,
    },
}
_AUTH_ERRORS = {code: _ERRORS[code] for code in ("400", "401", "405", "429")}

_USAGE: Schema = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer", "minimum": 0},
        "completion_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
    },
}

_COMPLETION: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string", "pattern": "^gen-"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message"],
                "properties": {
                    "index": {"type": "integer"},
                    "message": {"type": "object", "required": ["role"]},
                    "finish_reason": _NULLABLE_STRING,
                },
            },
        },
        "usage": _USAGE,
    },
}

_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code", "param"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "integer", "null"]},
                "param": _NULLABLE_STRING,
            },
        }
    },
}

_MODEL_LIST: Schema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by", "mode", "context_length", "pricing"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                    "mode": {"enum": ["chat", "embedding"], "description": "The APIs that may ask it."},
                    "context_length": _NULLABLE_INT,
                    "pricing": {
                        "type": "object",
                        "required": ["input", "output", "request", "unit"],
                        "properties": {
                            "input": _MONEY,
                            "output": _MONEY,
                            "request": _MONEY,
                            "unit": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}

_GENERATION: Schema = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": [
                "id",
                "api",
                "model",
                "status",
                "streamed",
                "created_at",
                "prompt_tokens",
                "completion_tokens",
                "cost",
            ],
            "properties": {
                "id": {"type": "string"},
                "api": {"enum": list(UsageApi.values), "description": "The client API the request came through."},
                "model": {"type": "string"},
                "status": {"enum": ["in_progress", "completed", "cancelled", "error", "interrupted"]},
                "streamed": {"type": "boolean"},
                "created_at": {"type": "string", "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "vendor": _NULLABLE_STRING,
                "upstream_model": _NULLABLE_STRING,
                "prompt_tokens": {"type": "integer", "minimum": 0},
                "completion_tokens": {"type": "integer", "minimum": 0},
                "cached_tokens": {"type": "integer", "minimum": 0},
                "reasoning_tokens": {"type": "integer", "minimum": 0},
                "usage_source": {"enum": ["vendor", "router", "mixed", "none"]},
                "tokens_delivered": {"type": "integer", "minimum": 0},
                "cost": _MONEY,
                "currency": {"const": "USD"},
                "finish_reason": _NULLABLE_STRING,
                "http_status": _NULLABLE_INT,
                "error": {"type": ["object", "null"]},
                "timings": {"type": "object"},
                "attempts": {"type": "array"},
            },
        }
    },
}

_PERIOD_TOTALS: Schema = {
    "type": "object",
    "required": ["requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost"],
    "properties": {
        "requests": {"type": "integer", "minimum": 0},
        "prompt_tokens": {"type": "integer", "minimum": 0},
        "completion_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
        "cost": _MONEY,
    },
}
_NULLABLE_MONEY: Schema = {"oneOf": [_MONEY, {"type": "null"}]}
_NULLABLE_TIME: Schema = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}

_KEY: Schema = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": [
                "name",
                "prefix",
                "currency",
                "credit_limit",
                "limit_reset",
                "period",
                "spend",
                "reserved",
                "remaining",
                "rate_limits",
                "usage",
            ],
            "properties": {
                "name": {"type": "string"},
                "prefix": {"type": "string", "description": "Display prefix of the key (not the key)."},
                "currency": {"const": "USD"},
                "credit_limit": {**_NULLABLE_MONEY, "description": "Credit limit in USD; null: none."},
                "limit_reset": {"enum": ["never", "daily", "weekly", "monthly"]},
                "period": {
                    "type": "object",
                    "required": ["start", "resets_at"],
                    "properties": {"start": _NULLABLE_TIME, "resets_at": _NULLABLE_TIME},
                },
                "spend": {**_MONEY, "description": "USD spent in the current limit period."},
                "reserved": {**_MONEY, "description": "USD held by requests in flight (their worst case)."},
                "remaining": {**_NULLABLE_MONEY, "description": "USD left; null: no limit."},
                "rate_limits": {
                    "type": "object",
                    "required": ["requests_per_minute", "tokens_per_minute"],
                    "properties": {"requests_per_minute": _NULLABLE_INT, "tokens_per_minute": _NULLABLE_INT},
                },
                "usage": {
                    "type": "object",
                    "required": ["today", "this_week", "this_month"],
                    "properties": {
                        "today": _PERIOD_TOTALS,
                        "this_week": _PERIOD_TOTALS,
                        "this_month": _PERIOD_TOTALS,
                    },
                },
            },
        }
    },
}


def openapi_document(server_url: str = "/") -> Schema:
    """Return the OpenAPI 3.1 document of the public API."""
    bearer: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Siraya Model Router",
            "version": "1",
            "description": "OpenAI chat completions, Responses and embeddings, and Anthropic Messages, in front of "
            "many vendors, with usage and cost per request.",
        },
        "servers": [{"url": server_url}],
        "security": bearer,
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "summary": "Chat completion, streamed as Server-Sent Events (`stream: true`) or one JSON body.",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ChatRequest")}}},
                    "responses": {
                        "200": {
                            "description": "The answer. With `stream: true`, `data: {chunk}` lines ending with `data: [DONE]`.",
                            "headers": {"X-Generation-Id": {"schema": {"type": "string"}}},
                            "content": {
                                "application/json": {"schema": _ref("ChatCompletion")},
                                "text/event-stream": {"schema": _ref("StreamEvent")},
                            },
                        },
                        **_ERRORS,
                    },
                }
            },
            "/v1/responses": {
                "post": {
                    "operationId": "createResponse",
                    "summary": "OpenAI Responses API: the Response object, or its events (`stream: true`).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ResponsesRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "The Response object. With `stream: true`, `event:`/`data:` pairs from "
                            "`response.created` to `response.completed`, `response.incomplete` or `response.failed`.",
                            "headers": {"X-Generation-Id": {"schema": {"type": "string"}}},
                            "content": {
                                "application/json": {"schema": _ref("Response")},
                                "text/event-stream": {"schema": _ref("StreamEvent")},
                            },
                        },
                        **_ERRORS,
                    },
                }
            },
            **stored_response_paths(_ref("Response"), {**_AUTH_ERRORS, "404": _error("No such stored response.")}),
            "/v1/embeddings": {"post": _EMBEDDINGS},
            **messages.PATHS,
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "Enabled models with context length and prices (USD per million tokens).",
                    "responses": {
                        "200": {
                            "description": "Models.",
                            "content": {"application/json": {"schema": _ref("ModelList")}},
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/generation": {
                "get": {
                    "operationId": "getGeneration",
                    "summary": "The usage record of one generation of the calling key.",
                    "parameters": [
                        {"name": "id", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}}
                    ],
                    "responses": {
                        "200": {
                            "description": "The usage record.",
                            "content": {"application/json": {"schema": _ref("Generation")}},
                        },
                        **_AUTH_ERRORS,
                        "404": _ERRORS["404"],
                    },
                }
            },
            "/v1/key": {
                "get": {
                    "operationId": "getKey",
                    "summary": "The calling key: limit, spend, remaining credit, rate limits, totals.",
                    "responses": {
                        "200": {"description": "The key.", "content": {"application/json": {"schema": _ref("Key")}}},
                        **_AUTH_ERRORS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "sk-siraya-..."},
                **messages.SECURITY_SCHEMES,
            },
            "schemas": {
                # The chat request is documented from the declaration that validates it.
                "ChatRequest": REQUEST.schema(),
                "ChatMessage": MESSAGE.schema(),
                "ChatCompletion": _COMPLETION,
                "Usage": _USAGE,
                # The Responses request, documented from the declaration that validates it.
                "ResponsesRequest": RESPONSES_REQUEST.schema(),
                "Response": RESPONSE,
                "EmbeddingRequest": EMBEDDINGS_REQUEST.schema(),
                "EmbeddingList": EMBEDDING_LIST,
                **messages.SCHEMAS,
                # One Server-Sent Event: `data` is a chat.completion.chunk as JSON, or `[DONE]`.
                "StreamEvent": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                },
                "Error": _ERROR,
                "ModelList": _MODEL_LIST,
                "Generation": _GENERATION,
                "Key": _KEY,
            },
        },
    }
