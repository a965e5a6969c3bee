"""The OpenAPI document at /v1/openapi.json describes what a live router really answers (schemathesis)."""

from __future__ import annotations

import copy

import httpx
import pytest
import schemathesis
from django.urls import Resolver404, resolve
from hypothesis import given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ops.tests.conftest import DEMO_EMBEDDING_MODEL, DEMO_MODEL

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def routed(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def test_document_is_openapi_31_for_the_public_api(live_router):
    response = httpx.get(live_router.url + "/v1/openapi.json", timeout=10)
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/responses/{response_id}/input_items",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models",
        "/v1/generation",
        "/v1/key",
    }
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def focused(document: dict) -> dict:
    """The served document, with requests aimed at the demo model so that most examples reach a vendor."""
    document = copy.deepcopy(document)
    request = document["components"]["schemas"]["ChatRequest"]
    request["properties"]["model"] = {"const": DEMO_MODEL}
    request["properties"].pop("models")
    message = document["components"]["schemas"]["ChatRequest"]["properties"]["messages"]
    message["maxItems"] = 3
    responses = document["components"]["schemas"]["ResponsesRequest"]["properties"]
    responses["model"] = {"const": DEMO_MODEL}
    document["components"]["schemas"]["EmbeddingRequest"]["properties"]["model"] = {"const": DEMO_EMBEDDING_MODEL}
    for name in ("MessagesRequest", "MessagesCountTokensRequest"):
        anthropic = document["components"]["schemas"][name]["properties"]
        anthropic["model"] = {"const": DEMO_MODEL}
        anthropic["messages"]["maxItems"] = 3
    return document


@pytest.mark.slow
def test_live_router_conforms_to_its_openapi_document(demo_cast):
    served = httpx.get(demo_cast.url + "/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(focused(served))
    if not routed("/v1/key"):
        schema = schema.exclude(path="/v1/key")
    # A real generation, so /v1/generation is also exercised on its 200 path.
    known = demo_cast.chat(messages=[{"role": "user", "content": "hello"}]).json()["id"]
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 3
    for operation in operations:
        exercise(operation, demo_cast, known, statuses.setdefault(operation.label, set()))
    # Every operation was answered successfully at least once, not only refused.
    assert all(200 in codes for codes in statuses.values()), statuses


def exercise(operation, cast, known_generation: str, seen: set[int]) -> None:
    """Send generated requests for one operation; each response must match the document."""

    @settings(max_examples=25)
    @given(case=operation.as_strategy())
    def check(case):
        if operation.path == "/v1/generation" and not seen:
            case.query = {"id": known_generation}
        if operation.path.startswith("/v1/responses/") and not seen:
            # A response of the key's own, so that the 200 path is exercised too.
            case.path_parameters = {"response_id": stored_response(cast)}
            case.query = {}
        response = case.call(base_url=cast.url, headers=cast.headers(), timeout=30)
        seen.add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    check()


def stored_response(cast) -> str:
    body = {"model": DEMO_MODEL, "input": "hello", "store": True}
    answer = httpx.post(cast.url + "/v1/responses", json=body, headers=cast.headers(), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]
