"""Vertex AI embeddings: the adapter's ``embed`` against the fake Vertex's ``:predict`` on loopback.

The fake issues access tokens only for the test service account's signed assertion and
refuses API calls without one, and refuses bodies past Google's documented limits (250
instances and 20,000 tokens a request for ``text-embedding-*``, one instance for
``gemini-embedding-*``), so every answer here proves the router authenticated and batched
as Google requires.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from fakevendors.vectors import tokens, vector
from fakevendors.vertex import FakeVertex
from fakevendors.vertex.embeddings import predict_problem
from routing.errors import UPSTREAM_MESSAGES, UpstreamError
from routing.vendors import http
from routing.vendors.base import EmbeddingCall, Embeddings, VendorConfig
from routing.vendors.vertex import VertexAdapter
from routing.vendors.vertex.embeddings import batches

TEXT_MODEL = "text-embedding-005"
PREDICT = "/v1/projects/test-project/locations/us-central1/publishers/google/models/{}:predict"


def embed(fake: FakeVertex, credentials: dict[str, Any], model: str, inputs: Any, **call: Any) -> Embeddings:
    options = {"project": fake.project, "location": fake.location}
    adapter = VertexAdapter(VendorConfig(3, "vertex", "vertex", fake.url, options, credentials, 5.0, 30.0, 30.0))

    async def scenario() -> Embeddings:
        try:
            return await adapter.embed(EmbeddingCall(tuple(inputs), model, "gen-embed-1", **call))
        finally:
            await http.close_loop_client()

    return asyncio.run(scenario())


def refusal(fake: FakeVertex, credentials: dict[str, Any], model: str, inputs: Any, **call: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as raised:
        embed(fake, credentials, model, inputs, **call)
    return raised.value


@pytest.fixture
def static_token(fake_vertex: FakeVertex) -> dict[str, Any]:
    fake_vertex.issued["ya29.static-operator-token"] = time.monotonic() + 3600
    return {"access_token": "ya29.static-operator-token"}


def sent(fake: FakeVertex) -> list[list[str]]:
    """The texts of each :predict request, in input order (the requests run concurrently)."""
    groups = [[i["content"] for i in request.json()["instances"]] for request in fake.api_requests]
    return sorted(groups, key=lambda texts: int(texts[0].split()[-1]))


def test_text_embedding_model_batches_250_instances_with_the_service_account(fake_vertex, service_account):
    texts = [f"passage {i}" for i in range(300)]
    result = embed(fake_vertex, {"credentials_json": service_account}, TEXT_MODEL, texts, dimensions=256)
    assert result.vectors == [vector(text, 256) for text in texts]
    assert result.prompt_tokens == sum(tokens(text) for text in texts)
    assert sent(fake_vertex) == [texts[:250], texts[250:]]
    assert {r.path for r in fake_vertex.api_requests} == {PREDICT.format(TEXT_MODEL)}
    assert all(r.json()["parameters"] == {"outputDimensionality": 256} for r in fake_vertex.api_requests)
    assert len(fake_vertex.token_requests) == 1  # one token for every request of the call
    assert len({r.headers["authorization"] for r in fake_vertex.api_requests}) == 1


def test_a_batch_stays_under_the_request_token_limit(fake_vertex, static_token):
    wordy = ["a " * 7999 + f"{i}" for i in range(3)]  # 8,000 tokens each: 24,000 in one request is refused
    assert predict_problem(TEXT_MODEL, {"instances": [{"content": text} for text in wordy]}) is not None
    result = embed(fake_vertex, static_token, TEXT_MODEL, wordy)
    assert result.vectors == [vector(text, 768) for text in wordy]
    assert result.prompt_tokens == 24_000
    assert sent(fake_vertex) == [[text] for text in wordy]


def test_batches_are_cut_by_utf8_bytes_an_upper_bound_on_tokens():
    english = ["word " * 1599 + f"{i}" for i in range(3)]  # 7,996 bytes each
    assert [len(batch) for batch in batches(TEXT_MODEL, english)] == [2, 1]
    greek = ["λέξη " * 1000 + f"{i}" for i in range(3)]  # 9,001 bytes each: two bytes a letter
    assert [len(batch) for batch in batches(TEXT_MODEL, greek)] == [2, 1]
    short = [f"t {i}" for i in range(600)]
    assert [len(batch) for batch in batches(TEXT_MODEL, short)] == [250, 250, 100]


def test_an_input_over_the_whole_budget_goes_alone():
    texts = ["a 0", "b" * 30_000 + " 1", "c 2"]
    assert [list(batch) for batch in batches(TEXT_MODEL, texts)] == [["a 0"], [texts[1]], ["c 2"]]


def test_gemini_embedding_sends_one_instance_a_request(fake_vertex, static_token):
    texts = ["first 0", "second 1", "third 2"]
    result = embed(fake_vertex, static_token, "gemini-embedding-001", texts, dimensions=128)
    assert result.vectors == [vector(text, 128) for text in texts]
    assert result.prompt_tokens == 6
    assert sent(fake_vertex) == [[text] for text in texts]
    assert {r.path for r in fake_vertex.api_requests} == {PREDICT.format("gemini-embedding-001")}


def test_without_dimensions_no_parameters_are_sent(fake_vertex, static_token):
    result = embed(fake_vertex, static_token, "google/text-multilingual-embedding-002", ["hola 0"])
    assert result.vectors == [vector("hola 0", 768)]
    assert fake_vertex.api_requests[0].json() == {"instances": [{"content": "hola 0"}]}


def test_quota_exhaustion_is_a_retryable_429(fake_vertex, static_token):
    fake_vertex.scenario.status = 429
    error = refusal(fake_vertex, static_token, TEXT_MODEL, ["x 0"])
    assert (error.status, error.code, error.retryable) == (429, "upstream_rate_limited", True)
    assert (error.vendor_code, error.vendor_status) == ("RESOURCE_EXHAUSTED", 429)
    assert "Quota exceeded" in error.detail and error.message == UPSTREAM_MESSAGES["upstream_rate_limited"]


def test_an_invalid_argument_is_a_400_that_is_not_retried(fake_vertex, static_token):
    error = refusal(fake_vertex, static_token, TEXT_MODEL, ["x 0"], dimensions=1000)  # the model has 768
    assert (error.status, error.code, error.retryable) == (400, "upstream_invalid_request", False)
    assert (error.vendor_code, error.vendor_status) == ("INVALID_ARGUMENT", 400)
    assert "Unsupported output dimensionality 1000" in error.detail
    assert "1000" not in error.message


def test_a_failing_request_among_several_fails_the_whole_call(fake_vertex, static_token):
    fake_vertex.scenario.status = 429
    fake_vertex.scenario.predictions_before_failure = 1
    error = refusal(fake_vertex, static_token, "gemini-embedding-001", ["a 0", "b 1", "c 2"])
    assert error.status == 429 and fake_vertex.predictions >= 2


def test_token_arrays_are_refused_before_any_request(fake_vertex, static_token):
    error = refusal(fake_vertex, static_token, TEXT_MODEL, [(101, 102)])
    assert (error.status, error.code, error.param, error.unsent) == (400, "unsupported_request", "input", True)
    assert error.message == "This model cannot take the request as sent (it takes strings, not token arrays)."
    assert fake_vertex.api_requests == []


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "anthropic/claude-sonnet-4@20250514", "multimodalembedding@001"])
def test_a_model_that_is_not_a_text_embedding_model_is_a_clear_502(fake_vertex, static_token, model):
    error = refusal(fake_vertex, static_token, model, ["x 0"])
    assert (error.status, error.code) == (502, "unsupported_upstream_model")
    assert fake_vertex.api_requests == []


def test_a_rejected_token_is_the_router_credentials_failure(fake_vertex):
    error = refusal(fake_vertex, {"access_token": "ya29.never-issued"}, TEXT_MODEL, ["x 0"])
    assert (error.status, error.code, error.vendor_status) == (502, "vendor_auth_failed", 401)
