"""The Messages, token count and Responses requests have one source each: what the parser accepts is
what /v1/openapi.json documents (as ``test_schema_single_source`` checks for chat completions).

Every field the parser takes is documented and no other; every documented field takes each value its
schema allows (the fields the dialect refuses by name whatever their value excepted, and those say
so); a name the document does not list is refused, naming it, at the top and inside each object the
document closes (``additionalProperties: false``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from routing.dialects.messages import schema as messages_schema
from routing.dialects.messages.request import parse_count_request, parse_messages_request
from routing.dialects.responses import schema as responses_schema
from routing.dialects.responses.schema import parse_responses_request
from routing.errors import RouterError
from routing.openapi import openapi_document
from routing.tests.test_schema_single_source import allowed

USER = [{"role": "user", "content": "hi"}]
# (document schema, parser, the smallest valid body, its declaration, fields refused whatever their value)
APIS: dict[str, tuple[str, Callable[[bytes], Any], dict[str, Any], Any, frozenset[str]]] = {
    "messages": (
        "MessagesRequest",
        parse_messages_request,
        {"model": "m", "max_tokens": 10, "messages": USER},
        messages_schema.REQUEST,
        frozenset(),
    ),
    "count_tokens": (
        "MessagesCountTokensRequest",
        parse_count_request,
        {"model": "m", "messages": USER},
        messages_schema.COUNT_REQUEST,
        frozenset(),
    ),
    "responses": (
        "ResponsesRequest",
        parse_responses_request,
        {"model": "m", "input": "hi"},
        responses_schema.REQUEST,
        frozenset(responses_schema._REFUSED),
    ),
}


def documented(api: str) -> dict[str, Any]:
    return openapi_document()["components"]["schemas"][APIS[api][0]]


def parse(api: str, body: dict[str, Any]) -> Any:
    return APIS[api][1](orjson.dumps(body))


def fields_of(api: str) -> list[tuple[str, str]]:
    return [(api, name) for name in sorted(documented(api)["properties"])]


def test_the_document_has_each_apis_operations_and_its_key_header():
    document = openapi_document()
    assert {"/v1/messages", "/v1/messages/count_tokens", "/v1/responses"} <= set(document["paths"])
    message = document["paths"]["/v1/messages"]["post"]
    assert message["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MessagesRequest"
    }
    assert {"bearerAuth": []} in message["security"] and {"anthropicApiKey": []} in message["security"]
    assert document["components"]["securitySchemes"]["anthropicApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    # Errors in each API's own shape.
    assert message["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/MessagesError")
    responses = document["paths"]["/v1/responses"]["post"]
    assert responses["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


@pytest.mark.parametrize("api", sorted(APIS))
def test_every_accepted_field_is_documented_and_no_other(api):
    schema = documented(api)
    declaration = APIS[api][3]
    assert set(schema["properties"]) == set(declaration.fields)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {name for name, f in declaration.fields.items() if f.required is True}
    assert set(schema["required"]) <= set(APIS[api][2])


@pytest.mark.parametrize(("api", "name"), [f for api in sorted(APIS) for f in fields_of(api)])
def test_documented_field_accepts_every_value_its_schema_allows(api, name):
    schema = documented(api)["properties"][name]
    values = allowed(schema)
    assert values
    for value in values:
        body = {**APIS[api][2], name: value}
        if name in APIS[api][4] and value not in (None, False, ""):
            with pytest.raises(RouterError) as refused:
                parse(api, body)
            assert refused.value.param == name and refused.value.status == 400
            assert schema.get("description") or refused.value.code == "unsupported_parameter"
        else:
            try:
                parse(api, body)
            except RouterError as error:
                # Where the document is looser than the parser (a block kind its role does not take,
                # Responses input items and tool_choice objects checked beyond what is documented):
                # still a 400 that names a member inside this field, never a crash.
                assert error.status == 400 and (error.param or "").startswith(name), (value, error)


@pytest.mark.parametrize("api", sorted(APIS))
@pytest.mark.parametrize("name", ["functions", "best_of", "Model", "prompt_cache_key", "n"])
def test_undocumented_field_is_refused_naming_it(api, name):
    assert name not in documented(api)["properties"]
    with pytest.raises(RouterError) as refused:
        parse(api, {**APIS[api][2], name: 1})
    assert refused.value.status == 400 and refused.value.param == name
    assert name in refused.value.message


# A step of a path into the document: a member's name, an array's item (0), or alternative i of a oneOf.
Step = str | int | tuple[str, int]


def closed_objects(schema: dict[str, Any], path: tuple[Step, ...] = ()) -> list[tuple[tuple[Step, ...], dict]]:
    """(path, schema) of every object the document closes, reached through properties, array items and alternatives."""
    found = []
    if schema.get("additionalProperties") is False:
        found.append((path, schema))
    for name, sub in (schema.get("properties") or {}).items():
        found += closed_objects(sub, (*path, name))
    if isinstance(schema.get("items"), dict):
        found += closed_objects(schema["items"], (*path, 0))
    for i, alternative in enumerate(schema.get("oneOf") or ()):
        found += closed_objects(alternative, (*path, ("oneOf", i)))
    return found


def minimal(schema: dict[str, Any]) -> Any:
    """The smallest value of an object schema: its required members, each the first value its schema allows."""
    return {name: allowed(schema["properties"][name])[-1] for name in schema.get("required", [])}


def placed(schema: dict[str, Any], base: dict[str, Any], path: tuple[Step, ...], value: Any) -> dict[str, Any]:
    """``base`` with ``value`` at ``path`` of ``schema``; every object on the way its smallest value (its tag, if tagged)."""

    def build(schema: dict[str, Any], steps: tuple[Step, ...], around: dict[str, Any] | None) -> Any:
        if not steps:
            return value
        step, rest = steps[0], steps[1:]
        if isinstance(step, tuple):
            return build(schema["oneOf"][step[1]], rest, around)
        if isinstance(step, int):
            return [build(schema["items"], rest, None)]
        return {**(minimal(schema) if around is None else around), step: build(schema["properties"][step], rest, None)}

    return build(schema, path, dict(base))


@pytest.mark.parametrize("api", sorted(APIS))
def test_every_closed_object_refuses_a_member_it_does_not_list(api):
    """Where the document says ``additionalProperties: false``, the parser refuses an unlisted member, naming it."""
    document = documented(api)
    closed = [(path, schema) for path, schema in closed_objects(document) if path]
    assert closed or api != "messages"
    for path, schema in closed:
        extra = {**minimal(schema), "not_a_member": 1}
        with pytest.raises(RouterError) as refused:
            parse(api, placed(document, APIS[api][2], path, extra))
        assert refused.value.status == 400, path
        assert "not_a_member" in (refused.value.param or "") + refused.value.message, (path, refused.value)


@pytest.mark.parametrize(
    ("member", "value", "param"),
    [
        ("tool_choice", {"type": "sometimes"}, "tool_choice.type"),
        ("thinking", {"type": "adaptive"}, "thinking.type"),
        ("system", [{"type": "document", "text": "x"}], "system[0].type"),
    ],
)
def test_a_messages_tag_the_document_does_not_list_is_a_400_naming_it(member, value, param):
    """Once a KeyError in the dialect (a 500): the document lists the tags, and the parser refuses the others."""
    with pytest.raises(RouterError) as refused:
        parse("messages", {**APIS["messages"][2], member: value})
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, param, "unsupported_value")
    assert repr((value if isinstance(value, dict) else value[0])["type"]) in refused.value.message
