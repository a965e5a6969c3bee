"""Several deployments per model: fallbacks before the first byte, cooldowns, timeouts."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from django.core.management import call_command

from billing.cost import Prices
from billing.models import ApiKey, UsageRecord
from billing.services import api_key_create
from conftest import Cast, free_port, wait_settled
from fakevendors.openai import PROMPT_TOKENS, FakeOpenAI, words
from routing.errors import NoEligibleProvider, refusal_error
from routing.models import Deployment, RouterModel
from routing.selection import attempt_plan, deployment_order, weighted_order
from routing.selectors import ModelRoute, Target
from routing.services import model_create, vendor_create
from routing.tests.sse_client import RawStream, content_of
from routing.vendors.base import VendorConfig

CLOSE_BOUND = 0.100


@pytest.fixture
def fakes() -> Iterator[Any]:
    started: list[FakeOpenAI] = []

    def make(**scenario: Any) -> FakeOpenAI:
        fake = FakeOpenAI(**scenario).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


def deploy(model: str, *targets: tuple[str, str, int, int], price: str = "1", **timeouts: float) -> RouterModel:
    """Create ``model`` served by (vendor name, base url, priority, weight) targets."""
    deployments = []
    for name, url, priority, weight in targets:
        vendor = vendor_create(name, "openai", url, credentials={"api_key": f"sk-{name}"})
        deployments.append((vendor, f"up-{name}", priority, weight))
    created = model_create(model, deployments=deployments, input_price=Decimal(price), output_price=Decimal(price))
    if timeouts:
        Deployment.objects.filter(model=created).update(**timeouts)
    return created


@pytest.fixture
def client(live_router: Any, transactional_db: None) -> Iterator[Cast]:
    _, plaintext = api_key_create("fallback tester")
    from billing.models import ApiKey

    yield Cast(live_router.url, plaintext, ApiKey.objects.get(name="fallback tester"), "m")
    wait_settled()


def stream_text(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    chunks = [orjson.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
    return "".join(content_of(c) for c in chunks), chunks


def attempts(record: UsageRecord) -> list[tuple[str, str]]:
    return [(a["vendor"], a["outcome"]) for a in record.attempts]


@pytest.mark.parametrize("stream", [True, False])
def test_dead_port_falls_back_to_next_priority(client, fakes, stream):
    healthy = fakes(tokens=3)
    deploy("m", ("dead", dead_url(), 0, 1), ("good", healthy.url + "/v1", 1, 1))
    response = client.chat(stream=stream)
    assert response.status_code == 200
    text = stream_text(response)[0] if stream else response.json()["choices"][0]["message"]["content"]
    assert text == "".join(words(3))
    record = client.record(response.headers["x-generation-id"])
    assert attempts(record) == [("dead", "error"), ("good", "ok")]
    assert record.attempts[0]["code"] == "upstream_unreachable"
    assert record.vendor_name == "good" and record.upstream_model == "up-good"
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", PROMPT_TOKENS, 3)
    assert record.cost == Decimal(PROMPT_TOKENS + 3) / 1_000_000  # only the answer is billed


def test_vendor_500_falls_back(client, fakes):
    broken, healthy = fakes(status=500), fakes(tokens=2)
    deploy("m", ("broken", broken.url + "/v1", 0, 1), ("good", healthy.url + "/v1", 0, 0))
    response = client.chat(stream=True)
    assert stream_text(response)[0] == "".join(words(2))
    record = client.record(response.headers["x-generation-id"])
    assert attempts(record) == [("broken", "error"), ("good", "ok")]
    assert record.attempts[0]["vendor_status"] == 500


def test_429_retry_after_cools_the_deployment_until_it_expires(client, fakes):
    limited, healthy = fakes(status=429, retry_after="1"), fakes(tokens=2)
    deploy("m", ("limited", limited.url + "/v1", 0, 1), ("good", healthy.url + "/v1", 1, 1))
    first = client.chat()
    assert attempts(client.record(first.headers["x-generation-id"])) == [("limited", "error"), ("good", "ok")]
    second = client.chat()
    assert attempts(client.record(second.headers["x-generation-id"])) == [("good", "ok")]
    assert len(limited.requests) == 1  # skipped while cooling down
    limited.scenario.status = 200
    time.sleep(1.2)
    third = client.chat()
    assert attempts(client.record(third.headers["x-generation-id"])) == [("limited", "ok")]


def test_hang_before_first_byte_times_out_and_falls_back(client, fakes):
    hanging, healthy = fakes(hang_after=0), fakes(tokens=2)
    deploy("m", ("hanging", hanging.url + "/v1", 0, 1), ("good", healthy.url + "/v1", 1, 1))
    Deployment.objects.filter(vendor__name="hanging").update(first_byte_timeout=0.3)
    response = client.chat(stream=True)
    assert stream_text(response)[0] == "".join(words(2))
    record = client.record(response.headers["x-generation-id"])
    assert attempts(record) == [("hanging", "error"), ("good", "ok")]
    assert record.attempts[0]["code"] == "upstream_timeout"
    assert hanging.wait_closed(hanging.last()) is not None  # the hung connection was closed


def test_error_event_before_first_content_falls_back(client, fakes):
    flaky, healthy = fakes(error_after=0), fakes(tokens=2)
    deploy("m", ("flaky", flaky.url + "/v1", 0, 1), ("good", healthy.url + "/v1", 1, 1))
    response = client.chat(stream=True)
    text, chunks = stream_text(response)
    assert text == "".join(words(2))
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("role")) == 1  # no duplicate role
    record = client.record(response.headers["x-generation-id"])
    assert attempts(record) == [("flaky", "error"), ("good", "ok")]


def test_failure_after_first_chunk_never_splices_vendors(client, fakes):
    failing, healthy = fakes(tokens=5, error_after=2), fakes(tokens=5)
    deploy("m", ("failing", failing.url + "/v1", 0, 1), ("good", healthy.url + "/v1", 1, 1))
    response = client.chat(stream=True)
    text, chunks = stream_text(response)
    assert text == "".join(words(2))
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"
    assert response.text.rstrip().endswith("data: [DONE]")
    assert healthy.requests == []
    record = client.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("error", 2)
    assert attempts(record) == [("failing", "error")]


def test_idle_gap_ends_stream_with_error_and_closes_upstream(client, fakes):
    stalling = fakes(tokens=5, hang_after=2)
    deploy("m", ("stalling", stalling.url + "/v1", 0, 1))
    Deployment.objects.update(idle_timeout=0.3)
    response = client.chat(stream=True)
    text, chunks = stream_text(response)
    assert text == "".join(words(2))
    assert chunks[-1]["error"]["code"] == "upstream_timeout"
    assert stalling.wait_closed(stalling.last()) is not None
    record = client.record(response.headers["x-generation-id"])
    assert (record.status, record.completion_tokens) == ("error", 2)


def test_client_disconnect_cancels_the_fallback_attempt(client, fakes):
    broken, slow = fakes(status=500), fakes(first_token_delay=5.0)
    deploy("m", ("broken", broken.url + "/v1", 0, 1), ("slow", slow.url + "/v1", 1, 1))
    stream = RawStream(
        client.url, client.key, {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    request = slow.last()
    closed = stream.close()
    seen = slow.wait_closed(request)
    assert seen is not None and seen - closed < CLOSE_BOUND
    wait_settled()
    record = UsageRecord.objects.get(api_key=client.api_key)
    assert record.status == "cancelled"
    assert attempts(record) == [("broken", "error"), ("slow", "cancelled")]


def test_request_level_models_bill_the_model_that_answered(client, fakes):
    healthy = fakes(tokens=4)
    deploy("a", ("dead", dead_url(), 0, 1), price="1")
    deploy("b", ("good", healthy.url + "/v1", 0, 1), price="3")
    response = client.chat(model="a", models=["a", "b"])
    assert response.status_code == 200
    assert response.json()["model"] == "b"
    record = client.record(response.headers["x-generation-id"])
    assert record.model_name == "b" and record.input_price == Decimal(3)
    assert record.cost == Decimal(3 * (PROMPT_TOKENS + 4)) / 1_000_000
    unknown = client.chat(model="a", models=["a", "zzz"])
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (404, "models")


def test_provider_order_and_no_fallbacks(client, fakes):
    one, two = fakes(tokens=1), fakes(status=503)
    deploy("m", ("one", one.url + "/v1", 0, 1), ("two", two.url + "/v1", 0, 1))
    preferred = client.chat(provider={"order": ["two", "one"]})
    assert attempts(client.record(preferred.headers["x-generation-id"])) == [("two", "error"), ("one", "ok")]
    strict = client.chat(provider={"order": ["two"], "allow_fallbacks": False})
    assert strict.status_code == 502
    assert attempts(client.record(strict.headers["x-generation-id"])) == [("two", "error")]
    bad = client.chat(provider={"order": "two"})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "provider.order")


def test_provider_order_naming_no_vendor_of_the_model_is_400_and_bills_nothing(client, fakes):
    one, other = fakes(tokens=1), fakes(tokens=1)
    deploy("m", ("one", one.url + "/v1", 0, 1))
    deploy("n", ("other", other.url + "/v1", 0, 1))
    ApiKey.objects.filter(pk=client.api_key.pk).update(credit_limit=Decimal("1"))  # admission would hold
    for provider, models in (
        ({"order": ["nope"], "allow_fallbacks": False}, None),
        ({"order": ["one"], "allow_fallbacks": False}, ["n"]),
    ):
        body: dict[str, Any] = {"provider": provider}
        if models:
            body.update(model=models[0], models=models)
        response = client.chat(**body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "provider.order",
            "no_eligible_provider",
        )
        assert "allow_fallbacks" in error["message"]
        record = client.record(response.headers["x-generation-id"])
        assert (record.status, record.http_status, record.error_code) == ("error", 400, "no_eligible_provider")
        assert (record.cost, record.reserved_cost, record.prompt_tokens, record.completion_tokens) == (0, 0, 0, 0)
    assert one.requests == [] and other.requests == []
    # The same request naming a vendor that serves the model, or allowing fallbacks, is served.
    assert client.chat(provider={"order": ["one"], "allow_fallbacks": False}).status_code == 200
    assert client.chat(provider={"order": ["nope"]}).status_code == 200
    assert len(one.requests) == 2


def test_empty_plan_is_refused_by_planning_too():
    route = _route(_target(1, 0, 1, vendor="v"))
    with pytest.raises(NoEligibleProvider) as refused:
        attempt_plan([route], {"order": ["nope"], "allow_fallbacks": False}, set(), random.Random(1))
    error = refusal_error(refused.value)
    assert (error.status, error.code, error.param) == (400, "no_eligible_provider", "provider.order")


def test_weighted_choice_over_live_requests(client, fakes):
    light, heavy = fakes(tokens=1), fakes(tokens=1)
    deploy("m", ("light", light.url + "/v1", 0, 1), ("heavy", heavy.url + "/v1", 0, 3))
    with httpx.Client(timeout=10) as http:
        for _ in range(400):
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            assert (
                http.post(client.url + "/v1/chat/completions", json=body, headers=client.headers()).status_code == 200
            )
    share = len(heavy.requests) / 400
    assert abs(share - 0.75) < 0.06, share


def test_cooldown_after_repeated_failures_expires(server_factory, transactional_db, fakes):
    server = server_factory(
        {"SIRAYA_COOLDOWN_FAILURES": "2", "SIRAYA_COOLDOWN_WINDOW_SECONDS": "10", "SIRAYA_COOLDOWN_SECONDS": "1"}
    )
    broken, healthy = fakes(status=500), fakes(tokens=1)
    deploy("m", ("broken", broken.url + "/v1", 0, 1), ("good", healthy.url + "/v1", 1, 1))
    _, key = api_key_create("cooldown")
    cast = Cast(server.url, key, None, "m")  # type: ignore[arg-type]
    for _ in range(4):
        assert cast.chat().status_code == 200
    assert len(broken.requests) == 2  # then cooled down
    time.sleep(1.2)
    assert cast.chat().status_code == 200
    assert len(broken.requests) == 3
    wait_settled()


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=1).ping())
    except Exception:
        return False


def test_cooldowns_are_shared_through_redis(server_factory, transactional_db, fakes):
    if not redis_available():
        if os.environ.get("SIRAYA_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis is required (SIRAYA_REQUIRE_SERVICES=1) but unreachable")
        pytest.skip("Redis not reachable on 127.0.0.1:6379")
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0", "SIRAYA_REDIS_PREFIX": f"test-{uuid.uuid4().hex}:"}
    first, second = server_factory(env, name="router-a"), server_factory(env, name="router-b")
    limited, healthy = fakes(status=429, retry_after="30"), fakes(tokens=1)
    deploy("m", ("limited", limited.url + "/v1", 0, 1), ("good", healthy.url + "/v1", 1, 1))
    _, key = api_key_create("shared")
    assert Cast(first.url, key, None, "m").chat().status_code == 200  # type: ignore[arg-type]
    assert len(limited.requests) == 1
    assert Cast(second.url, key, None, "m").chat().status_code == 200  # type: ignore[arg-type]
    assert len(limited.requests) == 1  # the other process knew about the cooldown
    wait_settled()


# -- the plan itself, without a server ---------------------------------------------------------


def _target(deployment_id: int, priority: int, weight: int, vendor: str = "v") -> Target:
    config = VendorConfig(deployment_id, vendor, "openai", "", {}, {}, 1.0, 1.0, 1.0)
    return Target(deployment_id, f"up{deployment_id}", priority, weight, config)


def _route(*targets: Target) -> ModelRoute:
    zero = Decimal(0)
    return ModelRoute(
        model_id=1,
        name="m",
        encoding="cl100k_base",
        max_output_tokens=100,
        context_length=None,
        prices=Prices(zero, zero, zero, zero, zero),
        targets=targets,
    )


def test_weighted_order_follows_weights():
    rng = random.Random(7)
    targets = [_target(1, 0, 1), _target(2, 0, 3), _target(3, 0, 6)]
    firsts = Counter(weighted_order(targets, rng)[0].deployment_id for _ in range(20000))
    for deployment_id, weight in ((1, 0.1), (2, 0.3), (3, 0.6)):
        assert abs(firsts[deployment_id] / 20000 - weight) < 0.015


def test_priorities_first_cooling_last():
    route = _route(_target(1, 0, 1), _target(2, 0, 1), _target(3, 1, 1))
    order = [t.deployment_id for t in deployment_order(route, {1}, random.Random(1))]
    assert order == [2, 3, 1]
    plan = attempt_plan([route], {"order": ["v"], "allow_fallbacks": False}, set(), random.Random(1))
    assert len(plan) == 3  # every deployment is on vendor "v"


def test_model_add_with_deployments(db, capsys):
    vendor_create("va", "openai", "http://127.0.0.1:1/v1")
    vendor_create("vb", "openai", "http://127.0.0.1:2/v1")
    call_command("model", "add", "multi", "--deployment", "va:up-a:0:3", "--deployment", "vb:up-b:1")
    rows = list(
        Deployment.objects.filter(model__name="multi").values_list(
            "vendor__name", "upstream_model", "priority", "weight"
        )
    )
    assert rows == [("va", "up-a", 0, 3), ("vb", "up-b", 1, 1)]
