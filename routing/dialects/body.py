"""Decode a request body into a JSON object, refusing what no dialect can read."""

from __future__ import annotations

from typing import Any

import orjson

from routing.dialects.faults import Invalid


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json_object(body: bytes, max_depth: int) -> dict[str, Any]:
    """Return the body's JSON object, or raise ``Invalid`` (code ``invalid_json``) saying why not."""
    if not body or body.isspace():  # isspace: the same ASCII whitespace as strip(), without a copy
        raise Invalid("Request body is empty; expected a JSON object.", None, "invalid_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = "body is not valid UTF-8" if "utf-8" in str(exc).lower() else str(exc).split(":")[0]
        raise Invalid(f"Request body is not valid JSON ({detail}).", None, "invalid_json") from None
    if not isinstance(data, dict):
        raise Invalid("Request body must be a JSON object.", None, "invalid_json")
    # Nesting cannot be deeper than the count of '{' and '[' in the body (a C scan): walk the
    # parsed value only when there are more of them than the limit.
    if body.count(b"{") + body.count(b"[") > max_depth and _depth(data, max_depth) > max_depth:
        raise Invalid(f"Request body is nested deeper than {max_depth} levels.", None, "invalid_json")
    return data
