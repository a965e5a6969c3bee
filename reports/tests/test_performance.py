"""The performance report: percentiles, throughput, errors, fallbacks and cooldowns per model and deployment."""

from __future__ import annotations

import random
import statistics
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.urls import reverse

from billing.shared_redis import POLICIES
from lib.redisclient import RedisClient
from reports import performance
from reports.tests.conftest import NOW, People, record
from routing import health
from routing.health import MemoryCooldowns, RedisCooldowns
from routing.models import Deployment, RouterModel, Vendor

pytestmark = pytest.mark.usefixtures("frozen_now")
URL = "/usage/performance/"


@pytest.fixture
def deployments(db: None) -> tuple[Deployment, Deployment]:
    model = RouterModel.objects.create(name="m/alpha")
    first = Deployment.objects.create(model=model, vendor=Vendor.objects.create(name="vendor-a", kind="openai"),
                                      upstream_model="up-a")  # fmt: skip
    second = Deployment.objects.create(model=model, vendor=Vendor.objects.create(name="vendor-b", kind="openai"),
                                       upstream_model="up-b")  # fmt: skip
    return first, second


@pytest.fixture
def memory_store(monkeypatch: pytest.MonkeyPatch) -> MemoryCooldowns:
    store = MemoryCooldowns(failures=2, window=60, cooldown=60)
    monkeypatch.setattr(performance, "cooldowns", lambda: store)
    return store


def _on(deployment: Deployment, **fields: Any) -> dict[str, Any]:
    return {"deployment": deployment, "vendor_name": deployment.vendor.name, "upstream_model": deployment.upstream_model,
            **fields}  # fmt: skip


def _cont(values: list[float], p: float) -> float:
    """percentile_cont as Python computes it: statistics.quantiles' inclusive method."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(p * 100) - 1]


def _row(rows: list[performance.PerformanceRow], **match: Any) -> performance.PerformanceRow:
    (found,) = [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]
    return found


def test_percentiles_match_pythons_on_the_same_data(client, people: People, deployments, memory_store):
    first, second = deployments
    rng = random.Random(17)
    data: dict[Deployment, tuple[list[float], list[float]]] = {first: ([], []), second: ([], [])}
    for i, deployment in enumerate([first] * 23 + [second] * 10):
        ttft, duration = rng.randint(50, 3000), rng.randint(3000, 20000)
        data[deployment][0].append(ttft)
        data[deployment][1].append(duration)
        record(
            people.owner_key, NOW - timedelta(minutes=i), **_on(deployment, first_token_ms=ttft, duration_ms=duration)
        )
    record(people.owner_key, **_on(first, first_token_ms=None, duration_ms=None))  # no figures: not in percentiles
    client.force_login(people.staff)

    response = client.get(URL)

    assert response.status_code == 200
    rows = response.context["deployments"]
    for deployment, (ttfts, durations) in data.items():
        row = _row(rows, deployment_id=deployment.pk)
        assert row.ttft_p50 == pytest.approx(_cont(ttfts, 0.5))
        assert row.ttft_p95 == pytest.approx(_cont(ttfts, 0.95))
        assert row.duration_p50 == pytest.approx(_cont(durations, 0.5))
        assert row.duration_p95 == pytest.approx(_cont(durations, 0.95))
    (model,) = response.context["models"]
    everything = data[first][0] + data[second][0]
    assert model.requests == 34
    assert model.ttft_p95 == pytest.approx(_cont(everything, 0.95))
    body = response.content.decode()
    assert f"{round(_cont(data[first][0], 0.95)):,} ms" in body


def test_tokens_per_second_counts_completed_streamed_requests_only(client, people: People, deployments, memory_store):
    first, _ = deployments
    record(people.owner_key, **_on(first, streamed=True, completion_tokens=300, first_token_ms=500, duration_ms=2500))
    record(people.owner_key, **_on(first, streamed=True, completion_tokens=100, first_token_ms=1000, duration_ms=2000))
    # Not counted: not streamed; cancelled.
    record(people.owner_key, **_on(first, streamed=False, completion_tokens=9000, first_token_ms=10, duration_ms=20))
    record(people.owner_key, **_on(first, streamed=True, status="cancelled", completion_tokens=9000,
                                   first_token_ms=10, duration_ms=20))  # fmt: skip
    client.force_login(people.staff)

    response = client.get(URL)

    row = _row(response.context["deployments"], deployment_id=first.pk)
    assert row.tokens_per_second == pytest.approx(400 / 3.0)  # 400 tokens over (2000 + 1000) ms
    assert "133.3" in response.content.decode()


def test_error_rate_codes_and_fallback_rate(client, people: People, deployments, memory_store):
    first, second = deployments
    failed = {"deployment": first.pk, "vendor": "vendor-a", "outcome": "error", "code": "upstream_unavailable"}
    answered = {"deployment": second.pk, "vendor": "vendor-b", "outcome": "ok"}
    for _ in range(3):
        record(people.owner_key, **_on(second, attempts=[failed, answered]))  # fell back from first to second
    record(people.owner_key, **_on(second, attempts=[answered]))
    for code, n in (("rate_limited", 3), ("upstream_timeout", 2), ("bad_gateway", 1), ("zz_rare", 1)):
        for _ in range(n):
            record(people.owner_key, **_on(first, status="error", error_code=code, attempts=[failed]))
    client.force_login(people.staff)

    response = client.get(URL)

    second_row = _row(response.context["deployments"], deployment_id=second.pk)
    assert (second_row.requests, second_row.fallbacks, second_row.fallback_percent) == (4, 3, 75.0)
    first_row = _row(response.context["deployments"], deployment_id=first.pk)
    assert (first_row.requests, first_row.errors, first_row.error_percent, first_row.fallbacks) == (7, 7, 100.0, 0)
    assert first_row.top_error_codes == [("rate_limited", 3), ("upstream_timeout", 2), ("bad_gateway", 1),
                                         ("other codes", 1)]  # fmt: skip
    (model,) = response.context["models"]
    assert (model.requests, model.errors, model.fallbacks) == (11, 7, 3)
    assert model.error_percent == pytest.approx(700 / 11)
    body = response.content.decode()
    assert 'rate_limited <span class="muted">(3)</span>' in body
    assert "63.6%" in body and "75.0%" in body
    assert "more than one attempt" in body  # the page says how the rate is computed


def test_cooldown_shown_after_failures_are_recorded(client, people: People, deployments, memory_store):
    first, second = deployments
    record(people.owner_key, **_on(first))
    record(people.owner_key, **_on(second))
    client.force_login(people.staff)

    async def fail_twice() -> None:
        await memory_store.record_failure(first.pk, None)
        await memory_store.record_failure(first.pk, None)

    assert _row(client.get(URL).context["deployments"], deployment_id=first.pk).cooling is False
    async_to_sync(fail_twice)()
    response = client.get(URL)

    assert _row(response.context["deployments"], deployment_id=first.pk).cooling is True
    assert _row(response.context["deployments"], deployment_id=second.pk).cooling is False
    body = response.content.decode()
    assert f'<td data-cooldown="{first.pk}"><span class="status status-error">in cooldown</span>' in body
    assert f'<td data-cooldown="{second.pk}"><span class="status status-completed">no</span>' in body


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
def test_cooldown_in_redis_is_shown(client, people: People, deployments, monkeypatch):
    """Through the real store of routing.health.cooldowns(): Redis, shared by every router process."""
    first, second = deployments
    monkeypatch.setattr(health, "_stores", {})
    monkeypatch.setattr(settings, "SIRAYA_REDIS_PREFIX", f"test-perf-{first.pk}-{id(client)}:")
    record(people.owner_key, **_on(first))
    record(people.owner_key, **_on(second))

    async def fail() -> None:
        await health.cooldowns().record_failure(first.pk, 30.0)  # a 429's Retry-After cools at once

    async_to_sync(fail)()
    client.force_login(people.staff)

    response = client.get(URL)

    assert _row(response.context["deployments"], deployment_id=first.pk).cooling is True
    assert _row(response.context["deployments"], deployment_id=second.pk).cooling is False


def test_unreachable_redis_shows_unknown(client, people: People, deployments, monkeypatch):
    first, _ = deployments
    dead = RedisClient("redis://127.0.0.1:1/0", 0.2, POLICIES)
    store = RedisCooldowns(dead, "x:", 2, 60, 60)
    monkeypatch.setattr(performance, "cooldowns", lambda: store)
    record(people.owner_key, **_on(first))
    client.force_login(people.staff)

    response = client.get(URL)

    assert _row(response.context["deployments"], deployment_id=first.pk).cooling is None
    assert f'<td data-cooldown="{first.pk}"><span class="status">unknown</span>' in response.content.decode()


def test_range_defaults_to_seven_days_and_the_control_shows_it(client, people: People, deployments, memory_store):
    first, _ = deployments
    record(people.owner_key, NOW - timedelta(days=3), **_on(first))
    record(people.owner_key, NOW - timedelta(days=20), **_on(first))
    client.force_login(people.staff)

    default = client.get(URL)
    assert default.context["models"][0].requests == 1
    assert '<option value="7d" selected>Last 7 days</option>' in default.content.decode()
    assert client.get(URL, {"range": "today"}).context["models"] == []
    assert client.get(URL, {"range": "30d"}).context["models"][0].requests == 2
    invalid = client.get(URL, {"range": "<b>x</b>"})
    assert invalid.status_code == 400 and "<b>x</b>" not in invalid.content.decode()


def test_key_owners_get_404_and_visitors_the_login(client, people: People):
    client.force_login(people.owner)
    assert client.get(URL).status_code == 404
    assert 'href="/usage/performance/"' not in client.get(reverse("reports:usage")).content.decode()
    client.logout()
    response = client.get(URL)
    assert response.status_code == 302 and "login" in response["Location"]


def _page_queries() -> int:
    # session + user, where the rollups stand (none yet: raw records only), then per model, per deployment
    # and errors by code; SQLite adds one window-function query per grouping for the exact percentiles
    # (PostgreSQL computes them inside the grouped aggregates).
    return 6 if connection.vendor == "postgresql" else 8


@pytest.mark.parametrize("count", [3, 60])
def test_performance_page_costs_a_fixed_number_of_queries(
    client, people: People, deployments, memory_store, django_assert_num_queries, count
):
    for i in range(count):
        deployment = deployments[i % 2]
        record(people.owner_key, NOW - timedelta(hours=i), model_name=f"m/{i % 3}",
               **_on(deployment, first_token_ms=i, duration_ms=10 * i, status="error" if i % 5 == 0 else "completed",
                     error_code=f"code-{i % 4}"))  # fmt: skip
    client.force_login(people.staff)

    with django_assert_num_queries(_page_queries()):
        response = client.get(URL)
    assert sum(r.requests for r in response.context["models"]) == count


def test_attempts_that_are_not_a_list_count_as_no_fallback(client, people: People, deployments, memory_store):
    first, _ = deployments
    record(people.owner_key, **_on(first, attempts={"deployment": first.pk}))
    record(people.owner_key, **_on(first, attempts=[{"outcome": "error"}, {"outcome": "ok"}]))
    client.force_login(people.staff)

    row = _row(client.get(URL).context["deployments"], deployment_id=first.pk)

    assert (row.requests, row.fallbacks) == (2, 1)
