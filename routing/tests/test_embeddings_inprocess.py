"""``POST /v1/embeddings`` in process: what the endpoint accepts and refuses, model modes, the demo vendor.

The relay and the ledger are the real ones; the embedding model is served by the demo vendor
(a real kind, no network) and chat models by scripted vendors.
"""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from typing import Any

import jsonschema_rs
import orjson
import pytest

from billing.services import api_key_create
from lib import tokens
from routing.dialects.embeddings.schema import REQUEST, parse_embeddings_request
from routing.errors import RouterError
from routing.models import Deployment, RouterModel
from routing.openapi import openapi_document
from routing.selectors import model_route
from routing.services import model_create, vendor_create
from routing.tests.inprocess import Exchange, InProcessRelay, Script, answer
from routing.vendors.demo import DEMO_DIMENSIONS, demo_vector

EMBEDDER = "e"


@pytest.fixture
def embedder(relay: InProcessRelay) -> InProcessRelay:
    """``relay`` with embedding model ``e`` on the demo vendor and chat model ``m`` on a scripted one."""
    demo = vendor_create("demo", "demo", options={"first_token_delay": 0})
    model_create(EMBEDDER, deployments=[(demo, "embed", 0, 1)], input_price=Decimal("2"), mode="embedding")
    relay.deploy("m", Script("v", answer(2)))
    return relay


def embed(relay: InProcessRelay, body: dict[str, Any] | bytes, key: str | None = None, **options: Any) -> Exchange:
    payload = body if isinstance(body, bytes) else orjson.dumps({"model": EMBEDDER, **body})
    headers = [(b"authorization", f"Bearer {key or relay.key}".encode())]
    exchange = Exchange(payload, headers, path=options.pop("path", "/v1/embeddings"), **options)
    relay.loop.run_until_complete(exchange.run())
    return exchange


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": ""}, "input", "invalid_value"),
        ({"input": []}, "input", "invalid_value"),
        ({"input": ["a", ""]}, "input[1]", "invalid_value"),
        ({"input": ["a", 1]}, "input[1]", "invalid_type"),
        ({"input": [1, "a"]}, "input[1]", "invalid_type"),
        ({"input": [[1, 2], []]}, "input[1]", "invalid_value"),
        ({"input": [[1, 2], [3, -1]]}, "input[1][1]", "invalid_value"),
        ({"input": [[1, 2], ["a"]]}, "input[1][0]", "invalid_value"),
        ({"input": [True]}, "input[0]", "invalid_type"),
        ({"input": {"text": "a"}}, "input", "invalid_type"),
        ({"input": ["a"] * 2049}, "input", "invalid_value"),
        ({}, "input", "missing"),
        ({"input": "a", "model": ""}, "model", "missing"),
        ({"input": "a", "encoding_format": "hex"}, "encoding_format", "invalid_value"),
        ({"input": "a", "dimensions": 0}, "dimensions", "invalid_value"),
        ({"input": "a", "dimensions": "8"}, "dimensions", "invalid_type"),
        ({"input": "a", "user": 5}, "user", "invalid_type"),
        ({"input": "a", "stream": True}, "stream", "unknown_parameter"),
    ],
)
def test_a_bad_request_is_a_400_naming_the_field_and_bills_nothing(embedder, body, param, code):
    seen = embed(embedder, body)
    assert seen.status == 400, seen.raw
    error = seen.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    record = embedder.record(seen.generation_id)
    assert (record.http_status, record.cost) == (400, Decimal("0"))


def test_an_unknown_field_is_named_as_openai_names_it(embedder):
    seen = embed(embedder, {"input": "a", "input_type": "query"})
    assert seen.json()["error"]["message"] == "Unrecognized request argument supplied: input_type"


def test_a_body_that_is_not_json_is_refused_in_openais_shape(embedder):
    seen = embed(embedder, b"{input")
    assert seen.status == 400
    assert seen.json()["error"]["code"] == "invalid_json"


def test_demo_vendor_answers_deterministic_unit_vectors_in_openais_shape(embedder):
    seen = embed(embedder, {"input": ["a cat", "a dog"]})
    assert seen.status == 200, seen.raw
    body = seen.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert (body["object"], body["model"]) == ("list", EMBEDDER)
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert {d["object"] for d in body["data"]} == {"embedding"}
    first, second = (d["embedding"] for d in body["data"])
    assert first == demo_vector("a cat", DEMO_DIMENSIONS) != second
    assert abs(sum(x * x for x in first) - 1) < 1e-9
    encoding = model_route(EMBEDDER).encoding
    counted = tokens.count_text("a cat", encoding) + tokens.count_text("a dog", encoding)
    assert body["usage"] == {"prompt_tokens": counted, "total_tokens": counted}
    assert seen.headers["x-generation-id"] == seen.generation_id
    record = embedder.record(seen.generation_id)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", counted, 0)
    assert record.cost == Decimal(counted) * 2 / 1_000_000


def test_base64_is_little_endian_float32_of_the_same_vector(embedder):
    floats = embed(embedder, {"input": "hello", "dimensions": 5}).json()["data"][0]["embedding"]
    packed = embed(embedder, {"input": "hello", "dimensions": 5, "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert len(raw) == 5 * 4
    assert list(struct.unpack("<5f", raw)) == pytest.approx(floats, rel=1e-6)


def test_token_arrays_are_embedded_and_counted_by_their_length(embedder):
    body = embed(embedder, {"input": [[1, 2, 3], [4, 5]]}).json()
    assert [d["embedding"] for d in body["data"]] == [
        demo_vector((1, 2, 3), DEMO_DIMENSIONS),
        demo_vector((4, 5), DEMO_DIMENSIONS),
    ]
    assert body["usage"]["prompt_tokens"] == 5
    one = embed(embedder, {"input": [7, 8, 9]}).json()
    assert len(one["data"]) == 1 and one["usage"]["prompt_tokens"] == 3


def test_a_chat_model_asked_for_embeddings_is_a_400_naming_its_mode(embedder):
    seen = embed(embedder, {"model": "m", "input": "a"})
    assert seen.status == 400
    error = seen.json()["error"]
    assert (error["code"], error["param"]) == ("model_mode_mismatch", "model")
    assert "chat model" in error["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"input": "hi"}),
    ],
)
def test_an_embedding_model_asked_to_chat_is_a_400_naming_its_mode(embedder, path, body):
    seen = embed(embedder, {**body}, path=path)
    assert seen.status == 400, seen.raw
    error = seen.json()["error"]
    assert (error["code"], error["param"]) == ("model_mode_mismatch", "model")
    assert "embedding model" in error["message"] and "/v1/embeddings" in error["message"]


def test_an_embedding_model_asked_for_messages_is_an_anthropic_400(embedder):
    payload = orjson.dumps({"model": EMBEDDER, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    seen = embed(embedder, payload, path="/v1/messages")
    assert seen.status == 400
    body = seen.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "embedding model" in body["error"]["message"]


def test_count_tokens_of_an_embedding_model_is_an_anthropic_400_naming_its_mode(embedder):
    def count(model: str) -> Exchange:
        payload = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        return embed(embedder, payload, path="/v1/messages/count_tokens")

    refused = count(EMBEDDER)
    assert refused.status == 400, refused.raw
    body = refused.json()
    assert (body["type"], body["error"]["type"]) == ("error", "invalid_request_error")
    assert body["error"]["message"] == f"The model '{EMBEDDER}' is an embedding model: ask it through /v1/embeddings."
    counted = count("m")  # a chat model's prompt is counted as before
    assert counted.status == 200 and counted.json()["input_tokens"] > 0


def test_an_embedding_model_in_a_chat_requests_fallback_models_is_refused(embedder):
    seen = embedder.chat(models=["m", EMBEDDER])
    assert seen.status == 400
    assert (seen.error()["code"], seen.error()["param"]) == ("model_mode_mismatch", "models")


def test_get_is_a_405_in_openais_shape(embedder):
    seen = embed(embedder, b"", method="GET")
    assert seen.status == 405
    assert seen.json()["error"]["code"] == "method_not_allowed"


def test_a_vendor_kind_without_embeddings_cannot_serve_an_embedding_model(embedder):
    scripted = embedder.vendor(Script("s", answer(1)))
    with pytest.raises(ValueError, match="serve no embeddings"):
        model_create("e2", deployments=[(scripted, "x", 0, 1)], mode="embedding")
    # Written around the service: the router leaves such a deployment out.
    model = model_create("e3", deployments=[], mode="embedding")
    Deployment.objects.create(model=model, vendor=scripted, upstream_model="x")
    seen = embed(embedder, {"model": "e3", "input": "a"})
    assert (seen.status, seen.json()["error"]["code"]) == (503, "no_deployment")


def test_the_hold_and_the_rate_limit_count_the_input_alone(embedder):
    # An output price and ceiling that a chat hold would count: an embedding's hold does not.
    RouterModel.objects.filter(name=EMBEDDER).update(output_price=Decimal("1000"), max_output_tokens=100_000)
    _, frugal = api_key_create("frugal", credit_limit=Decimal("0.0001"))
    assert embed(embedder, {"input": "hello"}, key=frugal).status == 200
    _, narrow = api_key_create("narrow", tokens_per_minute=50)
    assert embed(embedder, {"input": [[1] * 40]}, key=narrow).status == 200
    refused = embed(embedder, {"input": [[1] * 60]}, key=narrow)
    assert (refused.status, refused.json()["error"]["code"]) == (429, "request_exceeds_rate_limit")


def test_the_openapi_document_is_the_schema_the_endpoint_validates_with():
    documented = openapi_document()["components"]["schemas"]["EmbeddingRequest"]
    assert documented == REQUEST.schema()
    assert documented["additionalProperties"] is False
    assert set(documented["properties"]) == {"model", "input", "encoding_format", "dimensions", "user"}
    validator = jsonschema_rs.validator_for(documented)
    for given in ("a", ["a", "b"], [1, 2], [[1], [2, 3]]):
        assert validator.is_valid({"model": "e", "input": given})
        parse_embeddings_request(orjson.dumps({"model": "e", "input": given}))
    for refused in ("", [], ["a", 1], [[]], [[1], "a"]):
        assert not validator.is_valid({"model": "e", "input": refused})
        with pytest.raises(RouterError):
            parse_embeddings_request(orjson.dumps({"model": "e", "input": refused}))
