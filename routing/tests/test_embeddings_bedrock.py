"""Bedrock embeddings: the adapter's ``embed`` against the fake Bedrock's ``InvokeModel`` on loopback.

The fake checks every request's SigV4 signature (recomputed from what it received) and each
model's body schema, so every answer here also proves the router signed and shaped exactly
what it sent. Titan takes one text per call, Cohere up to 96.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from fakevendors.bedrock import API_KEY, FakeBedrock
from fakevendors.vectors import tokens, vector
from routing.errors import UPSTREAM_MESSAGES, UpstreamError
from routing.tests.bedrock_helpers import config
from routing.vendors import http
from routing.vendors.base import EmbeddingCall, Embeddings
from routing.vendors.bedrock import BedrockAdapter
from routing.vendors.bedrock.embeddings import family_of

TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
TEXTS = ["alpha", "beta gamma", "delta epsilon zeta", "eta", "theta iota kappa lambda"]


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeBedrock]]:
    fakes: list[FakeBedrock] = []

    def make(**options: Any) -> FakeBedrock:
        fakes.append(FakeBedrock(**options).start())
        return fakes[-1]

    yield make
    for one in fakes:
        one.stop()
        assert one.errors == []


def embed(
    fake: FakeBedrock, model: str, inputs: Any, credentials: dict[str, str] | None = None, **call: Any
) -> Embeddings:
    adapter = BedrockAdapter(config(credentials, base_url=fake.url))
    return run(lambda: adapter.embed(EmbeddingCall(tuple(inputs), model, "gen-embed-1", **call)))


def run(make: Callable[[], Awaitable[Embeddings]]) -> Embeddings:
    async def scenario() -> Embeddings:
        try:
            return await make()
        finally:
            await http.close_loop_client()

    return asyncio.run(scenario())


def refusal(fake: FakeBedrock, model: str, inputs: Any, **call: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as raised:
        embed(fake, model, inputs, **call)
    return raised.value


def bodies(fake: FakeBedrock) -> list[dict[str, Any]]:
    return [request.json() for request in fake.requests]


def test_titan_embeds_each_input_in_a_call_of_its_own_and_keeps_input_order(fake):
    bedrock = fake()
    result = embed(bedrock, TITAN, TEXTS, dimensions=256)
    assert result.vectors == [vector(text, 256) for text in TEXTS]
    assert result.prompt_tokens == sum(tokens(text) for text in TEXTS)
    assert bedrock.invocations == 5 and bedrock.auth_failures == []
    assert sorted(bodies(bedrock), key=lambda b: TEXTS.index(b["inputText"])) == [
        {"inputText": text, "normalize": True, "dimensions": 256} for text in TEXTS
    ]
    assert {request.path for request in bedrock.requests} == {"/model/amazon.titan-embed-text-v2%3A0/invoke"}
    assert all(request.headers["authorization"].startswith("AWS4-HMAC-SHA256 ") for request in bedrock.requests)


def test_titan_v1_takes_no_dimensions_or_normalize(fake):
    bedrock = fake()
    result = embed(bedrock, "amazon.titan-embed-text-v1", ["one text"])
    assert result.vectors == [vector("one text", 1536)] and result.prompt_tokens == 2
    assert bodies(bedrock) == [{"inputText": "one text"}]


def test_cohere_sends_at_most_96_texts_a_call_and_joins_the_answers_in_order(fake):
    bedrock = fake()
    texts = [f"text number {i}" for i in range(200)]
    result = embed(bedrock, COHERE, texts)
    assert result.vectors == [vector(text, 1024) for text in texts]
    # Cohere's body reports no usage: the count is the X-Amzn-Bedrock-Input-Token-Count header's.
    assert result.prompt_tokens == sum(tokens(text) for text in texts)
    sent = sorted(bodies(bedrock), key=lambda b: texts.index(b["texts"][0]))
    assert [b["texts"] for b in sent] == [texts[:96], texts[96:192], texts[192:]]
    assert all(b["input_type"] == "search_document" and b["embedding_types"] == ["float"] for b in sent)
    assert bedrock.auth_failures == []


def test_cohere_v4_takes_dimensions_as_output_dimension(fake):
    bedrock = fake()
    result = embed(bedrock, "us.cohere.embed-v4:0", ["a", "b"], dimensions=512)
    assert result.vectors == [vector("a", 512), vector("b", 512)]
    assert bodies(bedrock)[0]["output_dimension"] == 512


def test_a_model_arn_is_one_path_segment_and_picks_the_family(fake):
    bedrock = fake()
    arn = "arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-multilingual-v3"
    assert embed(bedrock, arn, ["hola"]).vectors == [vector("hola", 1024)]
    assert bedrock.requests[0].path == "/model/" + arn.replace(":", "%3A").replace("/", "%2F") + "/invoke"


def test_api_key_mode_sends_the_bearer_key(fake):
    bedrock = fake(api_key=API_KEY)
    assert embed(bedrock, TITAN, ["x"], credentials={"api_key": API_KEY}).vectors == [vector("x", 1024)]
    assert bedrock.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("model", ["amazon.titan-embed-text-v1", COHERE])
def test_dimensions_for_a_fixed_size_model_are_refused_before_any_call(fake, model):
    bedrock = fake()
    error = refusal(bedrock, model, ["x"], dimensions=256)
    assert (error.status, error.code, error.param, error.unsent) == (400, "unsupported_request", "dimensions", True)
    assert error.message == (
        "This model cannot take the request as sent (its vectors have one size: it does not take dimensions)."
    )
    assert bedrock.requests == []


@pytest.mark.parametrize("model", [TITAN, COHERE])
def test_token_arrays_are_refused_before_any_call(fake, model):
    bedrock = fake()
    error = refusal(bedrock, model, [(1, 2, 3), (4, 5)])
    assert (error.status, error.code, error.param, error.unsent) == (400, "unsupported_request", "input", True)
    assert error.message == "This model cannot take the request as sent (it takes strings, not token arrays)."
    assert bedrock.requests == []


def test_a_model_that_is_not_an_embedding_model_is_a_clear_502(fake):
    bedrock = fake()
    error = refusal(bedrock, "anthropic.claude-3-5-haiku-20241022-v1:0", ["x"])
    assert (error.status, error.code) == (502, "unsupported_upstream_model")
    assert bedrock.requests == []


def test_throttling_is_a_retryable_429_with_retry_after(fake):
    bedrock = fake(status=429, error_type="ThrottlingException", retry_after="2")
    error = refusal(bedrock, COHERE, ["x"])
    assert (error.status, error.code, error.retryable, error.retry_after) == (429, "upstream_rate_limited", True, 2.0)
    assert error.vendor_code == "throttlingException" and error.vendor_status == 429
    assert error.headers["Retry-After"] == "2"
    assert error.message == UPSTREAM_MESSAGES["upstream_rate_limited"]


def test_a_validation_exception_is_a_400_that_is_not_retried(fake):
    bedrock = fake()
    error = refusal(bedrock, TITAN, ["x"], dimensions=100)  # Titan v2 takes 256, 512 or 1024
    assert (error.status, error.code, error.retryable, error.unsent) == (400, "upstream_invalid_request", False, False)
    assert (error.vendor_code, error.vendor_status) == ("validationException", 400)
    assert "#/dimensions: 100 is not a valid enum value" in error.detail  # the operator's
    assert "dimensions" not in error.message  # never the client's


def test_wrong_keys_are_the_router_credentials_failure(fake):
    bedrock = fake()
    wrong = {"aws_access_key_id": "AKIAFAKEBEDROCK00001", "aws_secret_access_key": "not-the-secret-key-at-all"}
    with pytest.raises(UpstreamError) as raised:
        embed(bedrock, TITAN, ["x"], credentials=wrong)
    error = raised.value
    assert (error.status, error.code, error.vendor_status) == (502, "vendor_auth_failed", 403)
    assert bedrock.auth_failures == ["signature mismatch"]


def test_a_failing_call_among_several_fails_the_whole_request(fake):
    bedrock = fake(status=429, error_type="ThrottlingException", invocations_before_failure=2)
    error = refusal(bedrock, TITAN, TEXTS)
    assert (error.status, error.retryable) == (429, True)
    assert bedrock.invocations >= 3  # two answered, then the throttling one


@pytest.mark.parametrize(
    ("model", "vendor", "batch", "dimensions"),
    [("amazon.titan-embed-text-v2:0", "titan", 1, True), ("amazon.titan-embed-g1-text-02", "titan", 1, False),
     ("cohere.embed-multilingual-v3", "cohere", 96, False), ("global.cohere.embed-v4:0", "cohere", 96, True)],
)  # fmt: skip
def test_model_ids_pick_their_family(model, vendor, batch, dimensions):
    family = family_of(model)
    assert family is not None and (family.vendor, family.batch, family.takes_dimensions) == (vendor, batch, dimensions)
    assert family_of("amazon.titan-embed-image-v1") is None and family_of("meta.llama3-8b-instruct-v1:0") is None


def test_cancelling_the_call_drops_every_vendor_connection_at_once(fake):
    bedrock = fake(first_token_delay=60)  # the answers never come in time
    adapter = BedrockAdapter(config(base_url=bedrock.url))

    def received_three() -> bool:
        deadline = time.monotonic() + 10
        while len(bedrock.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(bedrock.requests) == 3  # all three calls in flight

    async def scenario() -> list[float | None]:
        task = asyncio.create_task(adapter.embed(EmbeddingCall(tuple(TEXTS[:3]), TITAN, "gen-embed-1")))
        try:
            assert await asyncio.to_thread(received_three)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Before the pool is closed: the adapter itself dropped each connection.
            return [await asyncio.to_thread(bedrock.wait_closed, request, 10) for request in bedrock.requests]
        finally:
            await http.close_loop_client()

    assert None not in asyncio.run(scenario())
    assert bedrock.invocations == 3
