"""``POST /v1/embeddings`` in process: a request a deployment's model cannot take is not sent to it.

Token arrays to a Bedrock or Vertex model that takes text, ``dimensions`` to a model whose
vectors have one size: the router refuses to send them (``UpstreamError.unsent``). Another
deployment may serve the request, and the refused one is healthy: it does not cool down.
The relay and the ledger are the real ones; Bedrock is the fake on loopback (which checks
every request's signature), the second deployment the fake OpenAI.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from fakevendors.bedrock import REGION, FakeBedrock
from fakevendors.openai import EMBEDDING_DIMENSIONS, EMBEDDING_TOKENS, FakeOpenAI, fake_vector
from fakevendors.vectors import tokens, vector
from routing.health import cooldowns
from routing.models import Deployment, Vendor
from routing.services import model_create, vendor_create
from routing.tests.bedrock_helpers import SIGV4
from routing.tests.inprocess import Exchange, InProcessRelay, attempts

TITAN_V2 = "amazon.titan-embed-text-v2:0"
TITAN_V1 = "amazon.titan-embed-text-v1"


@pytest.fixture
def bedrock(relay: InProcessRelay, settings: Any) -> Iterator[Vendor]:
    """A Bedrock vendor on the fake; one failure is enough to cool a deployment down."""
    settings.SIRAYA_COOLDOWN_FAILURES = 1
    with FakeBedrock() as fake:
        yield vendor_create("aws", "bedrock", fake.url, {"region": REGION}, SIGV4)
        assert fake.errors == [] and fake.auth_failures == []


def openai_vendor(fake: FakeOpenAI) -> Vendor:
    return vendor_create("fake", "openai", fake.url + "/v1", credentials={"api_key": "sk-vendor-secret-for-tests"})


def embed(relay: InProcessRelay, model: str, **body: Any) -> Exchange:
    payload = orjson.dumps({"model": model, **body})
    exchange = Exchange(payload, [(b"authorization", f"Bearer {relay.key}".encode())], path="/v1/embeddings")
    relay.loop.run_until_complete(exchange.run())
    return exchange


def cooling(relay: InProcessRelay, model: str) -> set[int]:
    """The model's deployments in cooldown, as this process's relay sees them."""
    ids = list(Deployment.objects.filter(model__name=model).values_list("pk", flat=True))

    async def looked_up() -> set[int]:
        return await cooldowns().cooling(ids)  # the store of the loop the relay runs on

    return relay.loop.run_until_complete(looked_up())


@pytest.mark.parametrize(
    ("upstream", "body", "param", "note"),
    [
        (TITAN_V2, {"input": [[101, 102], [103]]}, "input", "it takes strings, not token arrays"),
        (TITAN_V1, {"input": "hello", "dimensions": 256}, "dimensions", "it does not take dimensions"),
    ],
)
def test_a_request_the_only_deployment_cannot_take_is_a_clear_400_and_cools_nothing(
    relay, bedrock, upstream, body, param, note
):
    model_create("titan", deployments=[(bedrock, upstream, 0, 1)], input_price=Decimal("1"), mode="embedding")
    seen = embed(relay, "titan", **body)
    assert seen.status == 400, seen.raw
    error = seen.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "unsupported_request", param)
    assert error["message"].startswith("This model cannot take the request as sent (") and note in error["message"]
    assert "aws" not in error["message"] and upstream not in error["message"]  # the deployment stays the operator's
    assert cooling(relay, "titan") == set()  # a failure would have cooled it (SIRAYA_COOLDOWN_FAILURES = 1)
    record = relay.record(seen.generation_id)
    assert (record.status, record.http_status, record.error_code, record.cost) == (
        "error", 400, "unsupported_request", Decimal("0")
    )  # fmt: skip
    assert attempts(record) == [("aws", "error")] and record.attempts[0]["vendor_status"] is None
    assert "takes text" in record.error_message or "fixed dimension" in record.error_message  # the operator's account


def test_token_arrays_go_to_a_deployment_that_takes_them_and_bedrock_stays_first(relay, bedrock):
    with FakeOpenAI() as fake:
        deployments = [(bedrock, TITAN_V2, 0, 1), (openai_vendor(fake), "fake-embed", 1, 1)]
        model_create("mixed", deployments=deployments, input_price=Decimal("2"), mode="embedding")
        arrays = [[101, 102], [103]]
        seen = embed(relay, "mixed", input=arrays)
        assert seen.status == 200, seen.raw
        answer = seen.json()
        assert [d["embedding"] for d in answer["data"]] == [fake_vector(a, EMBEDDING_DIMENSIONS) for a in arrays]
        assert answer["usage"]["prompt_tokens"] == 2 * EMBEDDING_TOKENS
        assert fake.last().json()["input"] == arrays
        record = relay.record(seen.generation_id)
        assert attempts(record) == [("aws", "error"), ("fake", "ok")]
        assert record.attempts[0]["code"] == "unsupported_request"
        assert (record.status, record.vendor_name, record.prompt_tokens) == ("completed", "fake", 2 * EMBEDDING_TOKENS)
        assert record.cost == 2 * EMBEDDING_TOKENS * Decimal("2") / 1_000_000
        assert cooling(relay, "mixed") == set()
        # Bedrock was not cooled down: a text request goes to it first, as its priority says.
        text = embed(relay, "mixed", input=["plain text"])
        assert text.status == 200, text.raw
        assert text.json()["data"][0]["embedding"] == vector("plain text", 1024)
        assert text.json()["usage"]["prompt_tokens"] == tokens("plain text")
        assert attempts(relay.record(text.generation_id)) == [("aws", "ok")]
        assert len(fake.requests) == 1


def test_when_the_deployment_that_could_take_it_fails_the_client_hears_of_that_failure(relay, bedrock):
    with FakeOpenAI(status=503) as down:
        deployments = [(openai_vendor(down), "fake-embed", 0, 1), (bedrock, TITAN_V2, 1, 1)]
        model_create("mixed", deployments=deployments, input_price=Decimal("2"), mode="embedding")
        seen = embed(relay, "mixed", input=[[101, 102]])
        assert len(down.requests) == 1
    record = relay.record(seen.generation_id)
    assert attempts(record) == [("fake", "error"), ("aws", "error")]
    sent, unsent = record.attempts
    assert unsent["code"] == "unsupported_request"
    # Not "this model cannot take it": a deployment can, and it failed (worth a retry).
    assert (seen.status, seen.json()["error"]["code"]) == (sent["status"], sent["code"]) != (400, "unsupported_request")
    assert record.error_code == sent["code"]
