"""Several deployments per model: cooldowns shared by several router processes, and the plan itself.

The relay's fallback rules (which failure moves to the next deployment, timeouts, cooldowns in one
process, provider preferences, weights) are tested in process: ``test_relay_inprocess_fallbacks``.
"""

from __future__ import annotations

import os
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command

from billing.cost import Prices
from billing.services import api_key_create
from conftest import Cast, wait_settled
from fakevendors.openai import FakeOpenAI
from routing.errors import NoEligibleProvider, refusal_error
from routing.models import Deployment, RouterModel
from routing.selection import attempt_plan, deployment_order, weighted_order
from routing.selectors import ModelRoute, Target
from routing.services import model_create, vendor_create
from routing.vendors.base import VendorConfig


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


def test_empty_plan_is_refused_by_planning_too():
    route = _route(_target(1, 0, 1, vendor="v"))
    with pytest.raises(NoEligibleProvider) as refused:
        attempt_plan([route], {"order": ["nope"], "allow_fallbacks": False}, set(), random.Random(1))
    error = refusal_error(refused.value)
    assert (error.status, error.code, error.param) == (400, "no_eligible_provider", "provider.order")


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
