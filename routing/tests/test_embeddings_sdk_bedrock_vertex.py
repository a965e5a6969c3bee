"""``POST /v1/embeddings`` to Bedrock and Vertex AI models, with the official openai SDK against a
live router over real sockets.

The vendors are the in-repo fakes on loopback: the fake Bedrock checks every ``InvokeModel``
request's SigV4 signature and each embedding model's body schema (Titan one text a call,
Cohere at most 96); the fake Vertex issues tokens only for the test service account and
refuses ``:predict`` bodies past Google's limits (250 instances and 20,000 tokens for
``text-embedding-*``, one instance for ``gemini-embedding-*``). Both report one token per
word (``fakevendors.vectors.tokens``), a count the router's own tokenizer does not give, so a
``usage.prompt_tokens`` equal to it is the vendor's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from billing.models import UsageApi, UsageRecord
from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.bedrock import REGION, FakeBedrock
from fakevendors.vectors import tokens, vector
from fakevendors.vertex import FakeVertex
from lib import tokens as router_tokens
from routing.models import Vendor
from routing.selectors import model_route
from routing.services import model_create, vendor_create
from routing.tests.bedrock_helpers import SIGV4

MODEL = "test/embed"
PRICE = Decimal("0.13")  # USD per million input tokens
TEXTS = ["alpha", "beta gamma", "delta epsilon zeta", "eta", "theta iota kappa lambda"]


@pytest.fixture
def vendors(
    live_router: Any, fake_vertex: FakeVertex, service_account: dict[str, Any], transactional_db: None
) -> Iterator[dict[str, Any]]:
    """A Bedrock vendor ``aws`` on a fake Bedrock, a Vertex vendor ``vertex`` on the fake Vertex, and a key."""
    with FakeBedrock() as bedrock:
        options = {"project": fake_vertex.project, "location": fake_vertex.location}
        api_key, plaintext = api_key_create("tester")
        yield {
            "aws": vendor_create("aws", "bedrock", bedrock.url, {"region": REGION}, SIGV4),
            "vertex": vendor_create(
                "vertex", "vertex", fake_vertex.url, options, {"credentials_json": service_account}
            ),
            "bedrock": bedrock,
            "fake_vertex": fake_vertex,
            "cast": Cast(live_router.url, plaintext, api_key, MODEL),
        }
        wait_settled()
        assert bedrock.errors == [] and bedrock.auth_failures == []


def deploy(*deployments: tuple[Vendor, str]) -> None:
    """Embedding model ``test/embed`` served by ``deployments`` in order (priority 0, 1, ...)."""
    served = [(vendor, upstream, priority, 1) for priority, (vendor, upstream) in enumerate(deployments)]
    model_create(MODEL, deployments=served, input_price=PRICE, mode="embedding")


def embeddings(cast: Cast, texts: list[str], **options: Any) -> tuple[list[list[float]], int, UsageRecord]:
    """Ask for ``texts``' embeddings with the SDK; return the vectors, the usage's prompt tokens and the record.

    Floats unless ``encoding_format`` says otherwise (the SDK's own default is base64: float32)."""
    options.setdefault("encoding_format", "float")
    client = openai.OpenAI(base_url=cast.url + "/v1", api_key=cast.key, max_retries=0)
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=texts, **options)
    answer = raw.parse()
    assert answer.model == MODEL and [d.index for d in answer.data] == list(range(len(texts)))
    assert answer.usage.total_tokens == answer.usage.prompt_tokens
    vectors = [list(d.embedding) for d in answer.data]
    return vectors, answer.usage.prompt_tokens, cast.record(raw.headers["x-generation-id"])


def float32(values: list[float]) -> list[float]:
    """``values`` as the base64 encoding carries them: little-endian float32."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def assert_billed_as_the_vendor_counted(record: UsageRecord, texts: list[str], vendor: str, upstream: str) -> None:
    counted = sum(tokens(text) for text in texts)
    route = model_route(MODEL)
    assert route is not None and counted != router_tokens.count_inputs(texts, route.encoding)  # the vendor's figure
    assert (record.status, record.http_status, record.api, record.streamed) == (
        "completed", 200, UsageApi.EMBEDDINGS, False
    )  # fmt: skip
    assert (record.vendor_name, record.upstream_model, record.model_name) == (vendor, upstream, MODEL)
    assert (record.prompt_tokens, record.vendor_prompt_tokens, record.completion_tokens) == (counted, counted, 0)
    assert record.usage_source == "vendor"
    assert (record.input_price, record.cost) == (PRICE, counted * PRICE / 1_000_000)


def test_titan_v2_with_dimensions_answers_each_input_in_order(vendors):
    upstream = "amazon.titan-embed-text-v2:0"
    deploy((vendors["aws"], upstream))
    got, prompt, record = embeddings(vendors["cast"], TEXTS, dimensions=256)
    assert got == [vector(text, 256) for text in TEXTS]
    assert prompt == sum(tokens(text) for text in TEXTS)  # Titan's inputTextTokenCount, summed
    sent = sorted((r.json() for r in vendors["bedrock"].requests), key=lambda b: TEXTS.index(b["inputText"]))
    assert sent == [{"inputText": text, "normalize": True, "dimensions": 256} for text in TEXTS]  # one call each
    assert_billed_as_the_vendor_counted(record, TEXTS, "aws", upstream)


def test_cohere_takes_more_than_96_inputs_in_batches_and_keeps_their_order(vendors):
    upstream = "cohere.embed-english-v3"
    deploy((vendors["aws"], upstream))
    texts = [f"passage number {i}" for i in range(200)]
    got, prompt, record = embeddings(vendors["cast"], texts)
    assert got == [vector(text, 1024) for text in texts]
    # Cohere's body has no usage: the count is the X-Amzn-Bedrock-Input-Token-Count header's, summed.
    assert prompt == sum(tokens(text) for text in texts)
    batches = sorted((r.json()["texts"] for r in vendors["bedrock"].requests), key=lambda b: texts.index(b[0]))
    assert batches == [texts[:96], texts[96:192], texts[192:]]
    assert_billed_as_the_vendor_counted(record, texts, "aws", upstream)


def test_vertex_text_embedding_batches_several_inputs_and_keeps_their_order(vendors):
    deploy((vendors["vertex"], "text-embedding-005"))
    texts = [f"document {i}" for i in range(300)]
    got, prompt, record = embeddings(vendors["cast"], texts, dimensions=64)
    assert got == [vector(text, 64) for text in texts]
    assert prompt == sum(tokens(text) for text in texts)  # each prediction's statistics.token_count, summed
    requests = vendors["fake_vertex"].api_requests
    sizes = sorted(len(r.json()["instances"]) for r in requests)
    assert sizes == [50, 250] and all(r.path.endswith("/text-embedding-005:predict") for r in requests)
    assert_billed_as_the_vendor_counted(record, texts, "vertex", "text-embedding-005")


def test_vertex_gemini_embedding_sends_one_input_a_request(vendors):
    deploy((vendors["vertex"], "gemini-embedding-001"))
    got, prompt, record = embeddings(vendors["cast"], TEXTS, encoding_format=openai.NOT_GIVEN)  # the SDK's base64
    assert got == [float32(vector(text, 3072)) for text in TEXTS]
    assert prompt == sum(tokens(text) for text in TEXTS)
    sent = sorted(r.json()["instances"][0]["content"] for r in vendors["fake_vertex"].api_requests)
    assert sent == sorted(TEXTS) and len(vendors["fake_vertex"].api_requests) == len(TEXTS)
    assert_billed_as_the_vendor_counted(record, TEXTS, "vertex", "gemini-embedding-001")


def test_throttled_bedrock_falls_back_to_vertex(vendors):
    bedrock = vendors["bedrock"]
    bedrock.scenario.status, bedrock.scenario.error_type = 429, "ThrottlingException"
    deploy((vendors["aws"], "cohere.embed-english-v3"), (vendors["vertex"], "text-embedding-005"))
    got, prompt, record = embeddings(vendors["cast"], TEXTS)
    assert got == [vector(text, 768) for text in TEXTS]
    assert prompt == sum(tokens(text) for text in TEXTS)
    assert len(bedrock.requests) == 1  # the one Cohere call, throttled
    assert [(a["vendor"], a["outcome"]) for a in record.attempts] == [("aws", "error"), ("vertex", "ok")]
    assert (record.attempts[0]["code"], record.attempts[0]["vendor_status"]) == ("upstream_rate_limited", 429)
    assert_billed_as_the_vendor_counted(record, TEXTS, "vertex", "text-embedding-005")


def test_throttled_vertex_falls_back_to_bedrock(vendors):
    vendors["fake_vertex"].scenario.status = 429  # RESOURCE_EXHAUSTED
    deploy((vendors["vertex"], "gemini-embedding-001"), (vendors["aws"], "amazon.titan-embed-text-v2:0"))
    got, _, record = embeddings(vendors["cast"], TEXTS, dimensions=512)
    assert got == [vector(text, 512) for text in TEXTS]
    assert [(a["vendor"], a["outcome"]) for a in record.attempts] == [("vertex", "error"), ("aws", "ok")]
    assert record.attempts[0]["vendor_code"] == "RESOURCE_EXHAUSTED"
    assert_billed_as_the_vendor_counted(record, TEXTS, "aws", "amazon.titan-embed-text-v2:0")
