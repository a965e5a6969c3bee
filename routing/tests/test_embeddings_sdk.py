"""POST /v1/embeddings with the official openai SDK against a live router over real sockets.

The vendor is the in-repo fake OpenAI (``fakevendors.openai``): deterministic vectors, sent in
reverse order (the router orders them by ``index``), ``EMBEDDING_TOKENS`` prompt tokens per input.
"""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from billing.services import api_key_create
from conftest import Cast
from fakevendors.openai import EMBEDDING_DIMENSIONS, EMBEDDING_TOKENS, FakeOpenAI, fake_vector
from lib import tokens
from routing.models import Vendor
from routing.selectors import model_route
from routing.services import model_create, vendor_create

EMBEDDER = "test/embed"
PRICE = Decimal("2")  # USD per million input tokens


@pytest.fixture
def embed_cast(cast: Cast) -> Cast:
    """``cast`` (chat model ``test/fake`` on the fake OpenAI) with embedding model ``test/embed`` on the same vendor."""
    vendor = Vendor.objects.get(name="fake")
    model_create(EMBEDDER, deployments=[(vendor, "fake-embed", 0, 1)], input_price=PRICE, mode="embedding")
    return cast


def client_for(cast: Cast, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=cast.url + "/v1", api_key=key or cast.key, max_retries=0)


def sent(fake: FakeOpenAI) -> dict[str, Any]:
    body: dict[str, Any] = fake.last().json()
    return body


def test_sdk_embeds_a_string_and_the_record_bills_the_input_at_the_input_price(embed_cast, fake_openai):
    raw = client_for(embed_cast).embeddings.with_raw_response.create(model=EMBEDDER, input="hello")
    answer = raw.parse()
    assert answer.model == EMBEDDER and answer.object == "list"
    assert [d.embedding for d in answer.data] == [fake_vector("hello", EMBEDDING_DIMENSIONS)]
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (EMBEDDING_TOKENS, EMBEDDING_TOKENS)
    upstream = sent(fake_openai)
    assert fake_openai.last().path == "/v1/embeddings"
    assert upstream["model"] == "fake-embed" and upstream["input"] == ["hello"]
    assert upstream["encoding_format"] == "float"  # the SDK asked the router for base64
    record = embed_cast.record(raw.headers["x-generation-id"])
    assert (record.status, record.http_status, record.model_name) == ("completed", 200, EMBEDDER)
    assert (record.prompt_tokens, record.completion_tokens, record.usage_source) == (EMBEDDING_TOKENS, 0, "vendor")
    assert (record.vendor_prompt_tokens, record.vendor_name, record.upstream_model) == (7, "fake", "fake-embed")
    assert record.streamed is False
    assert record.cost == EMBEDDING_TOKENS * PRICE / 1_000_000
    assert record.input_price == PRICE


def test_float_answer_is_openais_exact_shape(embed_cast):
    response = httpx.post(
        embed_cast.url + "/v1/embeddings",
        json={"model": EMBEDDER, "input": "hello", "encoding_format": "float"},
        headers=embed_cast.headers(),
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": fake_vector("hello", EMBEDDING_DIMENSIONS)}],
        "model": EMBEDDER,
        "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS},
    }
    assert response.headers["x-generation-id"].startswith("gen-")


def test_base64_answer_is_little_endian_float32(embed_cast):
    answer = client_for(embed_cast).embeddings.create(model=EMBEDDER, input="hello", encoding_format="base64")
    packed = answer.data[0].embedding
    assert isinstance(packed, str)
    raw = base64.b64decode(packed)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == fake_vector("hello", EMBEDDING_DIMENSIONS)


def test_dimensions_are_passed_to_the_vendor(embed_cast, fake_openai):
    answer = client_for(embed_cast).embeddings.create(model=EMBEDDER, input="hello", dimensions=3, user="u-1")
    assert answer.data[0].embedding == fake_vector("hello", 3)
    upstream = sent(fake_openai)
    assert (upstream["dimensions"], upstream["user"]) == (3, "u-1")


def test_several_inputs_come_back_in_input_order(embed_cast, fake_openai):
    texts = ["one", "two", "three"]
    answer = client_for(embed_cast).embeddings.create(model=EMBEDDER, input=texts)
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert [d.embedding for d in answer.data] == [fake_vector(t, EMBEDDING_DIMENSIONS) for t in texts]
    assert answer.usage.prompt_tokens == 3 * EMBEDDING_TOKENS
    assert len(fake_openai.requests) == 1  # one vendor call for up to 2048 inputs


def test_token_arrays_reach_the_vendor_as_token_arrays(embed_cast, fake_openai):
    answer = client_for(embed_cast).embeddings.create(model=EMBEDDER, input=[[1, 2, 3], [4, 5]])
    assert sent(fake_openai)["input"] == [[1, 2, 3], [4, 5]]
    assert [d.embedding for d in answer.data] == [fake_vector(t, EMBEDDING_DIMENSIONS) for t in ([1, 2, 3], [4, 5])]


def test_without_vendor_usage_the_router_counts_the_input(embed_cast, fake_openai):
    fake_openai.scenario.report_usage = False
    raw = client_for(embed_cast).embeddings.with_raw_response.create(model=EMBEDDER, input=["a cat sat", "on a mat"])
    counted = tokens.count_inputs(["a cat sat", "on a mat"], model_route(EMBEDDER).encoding)
    assert raw.parse().usage.prompt_tokens == counted
    record = embed_cast.record(raw.headers["x-generation-id"])
    assert (record.prompt_tokens, record.vendor_prompt_tokens, record.usage_source) == (counted, None, "router")
    assert record.cost == counted * PRICE / 1_000_000


def test_a_failing_deployment_falls_back_to_the_next(embed_cast, fake_openai):
    with FakeOpenAI(status=503) as down:
        broken = vendor_create("down", "openai", down.url + "/v1", credentials={"api_key": "sk-down"})
        healthy = Vendor.objects.get(name="fake")
        model_create("test/embed2", deployments=[(broken, "e", 0, 1), (healthy, "fake-embed", 1, 1)], mode="embedding")
        raw = client_for(embed_cast).embeddings.with_raw_response.create(model="test/embed2", input="hello")
        assert raw.parse().data[0].embedding == fake_vector("hello", EMBEDDING_DIMENSIONS)
        assert down.last().path == "/v1/embeddings"
    record = embed_cast.record(raw.headers["x-generation-id"])
    assert [a["outcome"] for a in record.attempts] == ["error", "ok"]
    assert [a["vendor"] for a in record.attempts] == ["down", "fake"]
    assert record.vendor_name == "fake"


def test_the_vendors_refusal_of_the_request_is_not_retried_elsewhere(embed_cast, fake_openai):
    with FakeOpenAI() as other:
        second = vendor_create("other", "openai", other.url + "/v1", credentials={"api_key": "sk-other"})
        first = Vendor.objects.get(name="fake")
        # The first deployment's vendor answers 400: the request is at fault, not the deployment.
        deployments = [(first, "m?status=400", 0, 1), (second, "m", 1, 1)]
        model_create("test/embed3", deployments=deployments, mode="embedding")
        with pytest.raises(openai.BadRequestError) as refused:
            client_for(embed_cast).embeddings.create(model="test/embed3", input="hi")
        assert other.requests == []
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "upstream_invalid_request"


def test_embeddings_of_a_chat_model_is_a_400_for_the_embeddings_sdk(embed_cast):
    with pytest.raises(openai.BadRequestError) as refused:
        client_for(embed_cast).embeddings.create(model=embed_cast.model, input="hello")
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("model_mode_mismatch", "model")
    assert "is a chat model" in error["message"]


def test_chat_with_an_embedding_model_is_a_400_for_the_chat_sdk(embed_cast, fake_openai):
    with pytest.raises(openai.BadRequestError) as refused:
        client_for(embed_cast).chat.completions.create(model=EMBEDDER, messages=[{"role": "user", "content": "hi"}])
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("model_mode_mismatch", "model")
    assert "is an embedding model" in error["message"] and "/v1/embeddings" in error["message"]
    assert fake_openai.requests == []


def test_credit_exhaustion_is_a_402_in_openais_shape(embed_cast, fake_openai):
    _, poor = api_key_create("poor", credit_limit=Decimal("0.000001"))
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(embed_cast, poor).embeddings.create(model=EMBEDDER, input="word " * 100)
    assert refused.value.status_code == 402
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "credit_limit_exceeded"
    assert fake_openai.requests == []


def test_rate_limit_is_a_429_in_openais_shape(embed_cast):
    _, hasty = api_key_create("hasty", requests_per_minute=1)
    client = client_for(embed_cast, hasty)
    client.embeddings.create(model=EMBEDDER, input="one")
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model=EMBEDDER, input="two")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "rate_limit_exceeded"
    assert "retry-after" in refused.value.response.headers


def test_models_list_shows_each_models_mode(embed_cast):
    modes = {model.id: model.model_extra["mode"] for model in client_for(embed_cast).models.list()}  # type: ignore[index]
    assert modes == {embed_cast.model: "chat", EMBEDDER: "embedding"}
