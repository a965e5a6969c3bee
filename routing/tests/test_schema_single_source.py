"""The chat request has one source: what the parser accepts is what /v1/openapi.json documents.

Walks the served document: every field the parser takes is documented, every documented field
takes each value its schema allows, and a name the document does not list is refused.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import orjson
import pytest

from routing.canonical import FIELDS, PARAMETERS
from routing.dialects.chat.schema import PASSTHROUGH, ROUTER_FIELDS, parse_chat_request
from routing.errors import RouterError
from routing.openapi import openapi_document

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANY_JSON = [{"any": ["json", 1.5, None, True]}, "text", 3, [1, 2], False]


def request_schema() -> dict[str, Any]:
    return openapi_document()["components"]["schemas"]["ChatRequest"]


DOCUMENTED = sorted(request_schema()["properties"])


def allowed(schema: dict[str, Any]) -> list[Any]:
    """Return the candidate values that the documented ``schema`` allows (checked by jsonschema_rs)."""
    validator = jsonschema_rs.validator_for(schema)
    return [value for value in candidates(schema) if validator.is_valid(value)]


def candidates(schema: dict[str, Any]) -> list[Any]:
    """Propose values for ``schema``: its bounds, each alternative, null; some may not be allowed."""
    if "enum" in schema:
        return list(schema["enum"])
    if "const" in schema:  # a tagged variant's tag
        return [schema["const"]]
    if "oneOf" in schema:
        return [value for alternative in schema["oneOf"] for value in _alternative(alternative)]
    kinds = schema.get("type")
    if kinds is None:
        return ANY_JSON
    return [value for kind in ([kinds] if isinstance(kinds, str) else kinds) for value in _of_type(kind, schema)]


def _alternative(schema: dict[str, Any]) -> list[Any]:
    """A tagged variant (an object with a constant member) proposes one value: its tag and the
    members it requires (all its combinations would be too many, nested); another, its candidates."""
    properties = schema.get("properties", {})
    if any("const" in sub for sub in properties.values()):
        return [{name: candidates(properties[name])[-1] for name in schema.get("required", [])}]
    return candidates(schema)


def _of_type(kind: str, schema: dict[str, Any]) -> list[Any]:
    if kind == "null":
        return [None]
    if kind == "boolean":
        return [True, False]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", -3), schema.get("maximum", 3)
        return [low, high, (low + high) // 2 if kind == "integer" else (low + high) / 2]
    if kind == "string":
        return ["a" * schema.get("minLength", 0), "a" * schema.get("maxLength", 40)]
    if kind == "array":
        items = candidates(schema["items"]) if "items" in schema else ANY_JSON
        return [
            [],
            items[: schema.get("maxItems", len(items))],
            *([item] * schema.get("minItems", 1) for item in items),
        ]
    assert kind == "object", kind
    return _objects(schema)


def _objects(schema: dict[str, Any]) -> list[Any]:
    """Vary one member at a time over a base of the required members, for each of their values."""
    properties = schema.get("properties", {})
    bases: list[dict[str, Any]] = [{}]
    for name in schema.get("required", []):
        bases = [{**base, name: value} for base in bases for value in candidates(properties[name])]
    out = [*bases, {**bases[0], **{name: candidates(sub)[0] for name, sub in properties.items()}}]
    for name, sub in properties.items():
        out += [{**base, name: value} for base in bases for value in candidates(sub)]
    return out


def test_every_accepted_field_is_documented_and_no_other():
    document = request_schema()
    assert set(document["properties"]) == PASSTHROUGH | ROUTER_FIELDS
    assert document["additionalProperties"] is False
    assert set(document["required"]) == {"model", "messages"}


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_field_accepts_every_value_its_schema_allows(name):
    values = allowed(request_schema()["properties"][name])
    assert values
    for value in values:
        request = parse_chat_request(orjson.dumps({**BASE, name: value}))
        if name in PASSTHROUGH:
            assert request.params[name] == value


def test_documented_message_members_are_accepted():
    message = request_schema()["properties"]["messages"]["items"]
    assert {"role", "content", "name", "tool_calls", "tool_call_id"} <= set(message["properties"])
    values = allowed(message)
    assert len(values) > 50
    for value in values:
        request = parse_chat_request(orjson.dumps({**BASE, "messages": [value]}))
        assert request.messages == [value]


@pytest.mark.parametrize(
    "name", ["functions", "function_call", "best_of", "echo", "suffix", "prompt", "Model", "top_k"]
)
def test_undocumented_field_is_refused(name):
    assert name not in request_schema()["properties"]
    with pytest.raises(RouterError) as refused:
        parse_chat_request(orjson.dumps({**BASE, name: 1}))
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, "unknown_parameter", name)


def test_documented_bounds_are_the_parsers():
    """One step past each documented bound is refused, naming the field."""
    properties = request_schema()["properties"]
    for name, schema in properties.items():
        for bound, past in (("minimum", -1), ("maximum", 1)):
            if bound in schema:
                with pytest.raises(RouterError) as refused:
                    parse_chat_request(json.dumps({**BASE, name: schema[bound] + past}).encode())
                assert refused.value.param == name
    too_long = {**BASE, "model": "m" * (properties["model"]["maxLength"] + 1)}
    with pytest.raises(RouterError, match="'model' is at most"):
        parse_chat_request(orjson.dumps(too_long))


def test_the_chat_dialect_declares_the_canonical_parameters():
    """Vendor adapters know the canonical names (routing.canonical), not the chat dialect."""
    assert PASSTHROUGH == PARAMETERS
    assert ROUTER_FIELDS == FIELDS
