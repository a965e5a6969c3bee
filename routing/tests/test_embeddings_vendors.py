"""POST /v1/embeddings on each OpenAI-shaped vendor kind, against its in-repo fake, with the openai SDK.

Each fake speaks its vendor's embeddings wire format: the URL, the authentication, the batch
limit and the error bodies (``fakevendors/``).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.azure import FakeAzure
from fakevendors.byteplus import MAX_EMBEDDING_TEXTS, FakeBytePlus
from fakevendors.onerouter import FakeOneRouter
from fakevendors.openai import EMBEDDING_DIMENSIONS, EMBEDDING_TOKENS, FakeOpenAI, fake_vector
from fakevendors.server import FakeServer
from routing.errors import UpstreamError
from routing.services import model_create, vendor_create
from routing.vendors.openai import embeddings_of

MODEL = "test/embed"


def embedding_cast(
    router_url: str, base_url: str, kind: str, credentials: dict[str, Any], options: dict[str, Any] | None = None
) -> Cast:
    """A vendor of ``kind``, embedding model ``test/embed`` on it (upstream ``fake-embed``), and a key."""
    vendor = vendor_create("fake", kind, base_url, options or {}, credentials)
    model_create(MODEL, deployments=[(vendor, "fake-embed", 0, 1)], input_price=Decimal("1"), mode="embedding")
    api_key, plaintext = api_key_create("tester")
    return Cast(router_url, plaintext, api_key, MODEL)


def client_for(cast: Cast) -> openai.OpenAI:
    return openai.OpenAI(base_url=cast.url + "/v1", api_key=cast.key, max_retries=0)


# kind -> (the fake, the vendor's base URL under the fake's, credentials, options, the path embeddings go to)
KINDS: dict[str, tuple[Callable[[], FakeServer], str, dict[str, Any], dict[str, Any], str]] = {
    "openai": (FakeOpenAI, "/v1", {"api_key": "sk-vendor"}, {}, "/v1/embeddings"),
    "azure": (
        lambda: FakeAzure(api_key="az-key"), "", {"api_key": "az-key"}, {},
        "/openai/deployments/fake-embed/embeddings",
    ),
    "azure-v1": (FakeAzure, "", {"api_key": "azure-test-key"}, {"api_style": "v1"}, "/openai/v1/embeddings"),
    "byteplus": (lambda: FakeBytePlus(api_key="ark-key"), "", {"api_key": "ark-key"}, {}, "/api/v3/embeddings"),
    "onerouter": (lambda: FakeOneRouter(api_key="or-key"), "/v1", {"api_key": "or-key"}, {}, "/v1/embeddings"),
}  # fmt: skip


@pytest.fixture(params=sorted(KINDS))
def kind_cast(request: Any, live_router: Any, transactional_db: None) -> Iterator[tuple[Cast, Any, str]]:
    make, suffix, credentials, options, path = KINDS[request.param]
    with make() as fake:
        kind = request.param.split("-")[0]
        yield embedding_cast(live_router.url, fake.url + suffix, kind, credentials, options), fake, path
        wait_settled()


def test_each_kind_embeds_through_its_own_wire_format(kind_cast):
    cast, fake, path = kind_cast
    texts = ["one", "two", "three"]
    raw = client_for(cast).embeddings.with_raw_response.create(model=MODEL, input=texts)
    answer = raw.parse()
    assert [d.embedding for d in answer.data] == [fake_vector(t, EMBEDDING_DIMENSIONS) for t in texts]
    assert answer.usage.prompt_tokens == 3 * EMBEDDING_TOKENS
    request = fake.last()
    assert request.path == path
    assert request.json()["input"] == texts
    record = cast.record(raw.headers["x-generation-id"])
    assert (record.status, record.prompt_tokens, record.usage_source) == ("completed", 3 * EMBEDDING_TOKENS, "vendor")
    assert record.cost == Decimal(3 * EMBEDDING_TOKENS) / 1_000_000


@pytest.fixture
def byteplus(live_router: Any, transactional_db: None) -> Iterator[tuple[Cast, FakeBytePlus]]:
    with FakeBytePlus(api_key="ark-key") as fake:
        yield embedding_cast(live_router.url, fake.url, "byteplus", {"api_key": "ark-key"}), fake
        wait_settled()


def test_byteplus_batches_at_modelarks_limit_and_sums_the_usage(byteplus):
    cast, fake = byteplus
    texts = [f"text {i}" for i in range(MAX_EMBEDDING_TEXTS + 44)]
    answer = client_for(cast).embeddings.create(model=MODEL, input=texts)
    assert [len(r.json()["input"]) for r in fake.requests] == [MAX_EMBEDDING_TEXTS, 44]
    assert [d.index for d in answer.data] == list(range(len(texts)))
    assert answer.data[-1].embedding == fake_vector(texts[-1], EMBEDDING_DIMENSIONS)
    assert answer.usage.prompt_tokens == len(texts) * EMBEDDING_TOKENS


def test_byteplus_rate_limit_is_the_routers_429(byteplus):
    cast, fake = byteplus
    fake.fail_with("RateLimitExceeded.EndpointTPMExceeded")
    with pytest.raises(openai.RateLimitError) as refused:
        client_for(cast).embeddings.create(model=MODEL, input="hi")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "upstream_rate_limited"
    assert "Request id" not in error["message"]  # the vendor's words stay in the record


def test_onerouter_out_of_credits_is_the_operators_problem_not_the_clients(live_router, transactional_db):
    with FakeOneRouter(api_key="or-key") as fake:
        cast = embedding_cast(live_router.url, fake.url + "/v1", "onerouter", {"api_key": "or-key"})
        fake.fail_with(402, "Insufficient credits")
        with pytest.raises(openai.APIStatusError) as refused:
            client_for(cast).embeddings.create(model=MODEL, input="hi")
        wait_settled()
    assert refused.value.status_code == 502
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "vendor_account_refused"


def test_azure_wrong_key_is_a_502_naming_no_secret(live_router, transactional_db):
    with FakeAzure(api_key="right") as fake:
        cast = embedding_cast(live_router.url, fake.url, "azure", {"api_key": "wrong"})
        with pytest.raises(openai.APIStatusError) as refused:
            client_for(cast).embeddings.create(model=MODEL, input="hi")
        assert fake.last().query["api-version"] == ["2024-10-21"]
        wait_settled()
    assert refused.value.status_code == 502
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "vendor_auth_failed" and "wrong" not in error["message"]


def test_a_vendors_answer_is_ordered_by_index_and_checked():
    packed = base64.b64encode(struct.pack("<2f", 0.5, -1.0)).decode()
    data = [{"index": 1, "embedding": [1, 2.5]}, {"index": 0, "embedding": packed}]
    vectors, prompt = embeddings_of({"data": data, "usage": {"prompt_tokens": 9}}, 2, "v")
    assert (vectors, prompt) == ([[0.5, -1.0], [1.0, 2.5]], 9)
    assert embeddings_of({"data": data}, 2, "v")[1] is None
    for broken in (
        {"data": data[:1]},  # a vector missing
        {"data": [data[0], {**data[0]}]},  # an index twice
        {"data": [data[0], {"index": 0, "embedding": "not base64!"}]},
        {"data": [data[0], {"index": 0, "embedding": ["x"]}]},
        {"data": [data[0], {"index": 0, "embedding": []}]},
        {"error": {"message": "quota"}},
    ):
        with pytest.raises(UpstreamError) as failed:
            embeddings_of(broken, 2, "v")
        assert failed.value.status == 502
