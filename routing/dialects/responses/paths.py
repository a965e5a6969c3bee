"""The OpenAPI paths of stored responses (``GET``/``DELETE /v1/responses/{id}``, its ``input_items``)."""

from __future__ import annotations

from typing import Any

from routing.dialects.responses.items import MAX_PAGE

Schema = dict[str, Any]

_ID: Schema = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_NULLABLE_STRING: Schema = {"type": ["string", "null"]}
# The Response object, as the POST answers it and the stored responses' GET returns it.
RESPONSE: Schema = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": {"type": "string", "pattern": "^resp_"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
        "incomplete_details": {"type": ["object", "null"]},
        "error": {"type": ["object", "null"]},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object", "required": ["type", "id"]}},
        "usage": {
            "type": ["object", "null"],
            "required": ["input_tokens", "output_tokens", "total_tokens"],
            "properties": {
                "input_tokens": {"type": "integer", "minimum": 0},
                "output_tokens": {"type": "integer", "minimum": 0},
                "total_tokens": {"type": "integer", "minimum": 0},
            },
        },
    },
}

_PAGE: list[Schema] = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 20}},
    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"], "default": "desc"}},
    {"name": "after", "in": "query", "schema": {"type": "string"}, "description": "List the items after this one."},
    {"name": "before", "in": "query", "schema": {"type": "string"}, "description": "List the items before this one."},
]
_ITEMS: Schema = {
    "type": "object",
    "required": ["object", "data", "first_id", "last_id", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"type": "object", "required": ["id", "type"]}},
        "first_id": _NULLABLE_STRING,
        "last_id": _NULLABLE_STRING,
        "has_more": {"type": "boolean"},
    },
}
_DELETED: Schema = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "deleted": {"const": True}},
}


def stored_response_paths(response: Schema, errors: dict[str, Schema]) -> dict[str, Schema]:
    """Return the path items; ``response`` is the Response object's schema, ``errors`` the error answers."""

    def answer(description: str, schema: Schema) -> dict[str, Schema]:
        ok = {"description": description, "content": {"application/json": {"schema": schema}}}
        return {"200": ok, **errors}

    return {
        "/v1/responses/{response_id}": {
            "parameters": [_ID],
            "get": {
                "operationId": "getResponse",
                "summary": "A Response the calling key stored (`store: true`), as its client got it.",
                "responses": answer("The Response object.", response),
            },
            "delete": {
                "operationId": "deleteResponse",
                "summary": "Delete a Response the calling key stored.",
                "responses": answer("Deleted.", _DELETED),
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "parameters": [_ID],
            "get": {
                "operationId": "listInputItems",
                "summary": "The stored Response's input items, a page at a time (newest first unless `order=asc`).",
                "parameters": _PAGE,
                "responses": answer("One page of input items.", _ITEMS),
            },
        },
    }
