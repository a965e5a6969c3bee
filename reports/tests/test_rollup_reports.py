"""Report pages served from the rollups give the figures they give from the raw records, and keep them after pruning."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from billing.models import LATENCY_BOUNDS_MS, UsageDay, UsageHour, UsageRecord, UsageRollupState, UsageStatus
from billing.rollups import usage_records_prune, usage_rollups_refresh
from reports import performance
from reports.tests.conftest import NOW, People, record
from routing.health import MemoryCooldowns
from routing.models import Deployment, RouterModel, Vendor

# The page is read 40 minutes into the hour after the rollups' last run: that part comes from raw records.
LATER = NOW + timedelta(minutes=40)
USAGE_QUERIES = [
    {},
    {"range": "today"},
    {"range": "30d"},
    {"range": "custom", "start": "2025-02-20", "end": "2025-03-14"},
    {"range": "custom", "start": "2025-03-13", "end": "2025-03-14"},  # two days: by hour
    {"range": "30d", "model": "m/alpha"},
    {"range": "30d", "vendor": "vendor-b"},
    {"range": "30d", "status": "error"},
    {"range": "30d", "error_code": "timeout"},
    {"range": "30d", "api": "messages"},
    {"range": "custom", "start": "2025-03-13", "end": "2025-03-14", "api": "responses"},
    {"range": "30d", "generation": "gen-test0000"},  # not in the rollups: raw records only
]


@pytest.fixture
def history(people: People) -> Iterator[None]:
    """Five weeks of varied records up to LATER, with time frozen at LATER."""
    model = RouterModel.objects.create(name="m/alpha")
    deployments = [
        Deployment.objects.create(
            model=model, vendor=Vendor.objects.create(name=name, kind="openai"), upstream_model=f"up-{name}"
        )
        for name in ("vendor-a", "vendor-b")
    ]
    rng = random.Random(29)
    # Spread over five weeks, denser over the last two days (the hourly part), one at each hour's edge.
    moments = [rng.randint(0, 35 * 86_400) for _ in range(300)] + [rng.randint(0, 2 * 86_400) for _ in range(150)]
    moments += [40 * 60, 40 * 60 + 1, 15 * 3600 + 40 * 60, 15 * 3600 + 40 * 60 + 1]
    for seconds_ago in moments:
        status = rng.choice([UsageStatus.COMPLETED] * 5 + [UsageStatus.ERROR, UsageStatus.CANCELLED])
        first_token = rng.choice([None, rng.randint(1, 4_000)])
        deployment = rng.choice([*deployments, None])
        record(
            rng.choice([people.owner_key, people.outsider_key]),
            LATER - timedelta(seconds=seconds_ago),
            model_name=rng.choice(["m/alpha", "m/alpha", "typo/ech0"]),
            api=rng.choice(["chat_completions", "chat_completions", "messages", "responses"]),
            deployment=deployment,
            vendor_name=deployment.vendor.name if deployment else "",
            upstream_model=deployment.upstream_model if deployment else "",
            status=status,
            error_code=rng.choice(["timeout", "upstream_error"]) if status == UsageStatus.ERROR else "",
            streamed=rng.random() < 0.7,
            prompt_tokens=rng.randint(0, 3_000),
            completion_tokens=rng.randint(0, 900),
            cost=Decimal(rng.randint(0, 10**6)) / Decimal(10**8),
            attempts=[{}] * rng.choice([1, 1, 2]),
            first_token_ms=first_token,
            duration_ms=None if first_token is None else first_token + rng.randint(0, 30_000),
        )
    with time_machine.travel(LATER, tick=False):
        yield


@pytest.fixture
def cooldowns(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryCooldowns(failures=2, window=60, cooldown=60)
    monkeypatch.setattr(performance, "cooldowns", lambda: store)


def _within_bucket_error(exact: float | None, estimate: float | None) -> bool:
    """Whether ``estimate`` is as close to ``exact`` as the histogram promises (README, "Reports at scale").

    Each ranked value is estimated inside its own bucket, whose width is at most half its lower bound
    (10 ms for the first); interpolating two such estimates keeps the error below 0.5·exact + 10 ms.
    """
    if exact is None or estimate is None:
        return exact is estimate
    assert exact < LATENCY_BOUNDS_MS[-1]  # the open last bucket promises nothing
    return abs(estimate - exact) < 0.5 * exact + 10


def _usage(client: Client, query: dict[str, str]) -> dict[str, Any]:
    context = client.get(reverse("reports:usage"), query).context
    totals = context["totals"]
    return {
        "totals": (
            totals.requests,
            totals.prompt_tokens,
            totals.completion_tokens,
            totals.cost,
            totals.cancelled,
            totals.errors,
        ),
        "median": totals.median_first_token_ms,
        "daily": context["daily"],
        "status": context["status"],
        "apis": context["apis"],
        "chart": context["chart_data"],
        "rows": [r.generation_id for r in context["page"].records],
    }


def _overview(client: Client, query: dict[str, str]) -> dict[str, Any]:
    context = client.get(reverse("reports:overview"), query).context
    return {key: context[key] for key in ("comparisons", "top_tables", "key_chart", "budgets")}


def _performance(client: Client, query: dict[str, str]) -> list[dict[str, Any]]:
    context = client.get(reverse("reports:performance"), query).context
    rows = [*context["models"], *context["deployments"]]
    return [
        {"key": r.key, "requests": r.requests, "errors": r.errors, "fallbacks": r.fallbacks,
         "stream": (r.stream_tokens, r.stream_ms), "codes": r.error_codes, "percentiles": r.percentiles}
        for r in rows
    ]  # fmt: skip


def _assert_usage_equal(raw: dict[str, Any], rolled: dict[str, Any]) -> None:
    median_raw, median_rolled = raw.pop("median"), rolled.pop("median")
    assert rolled == raw
    assert _within_bucket_error(median_raw, median_rolled)


def test_usage_pages_from_rollups_equal_those_from_raw_records(client: Client, people: People, history: None) -> None:
    client.force_login(people.staff)
    raw = [_usage(client, q) for q in USAGE_QUERIES]
    done = usage_rollups_refresh(LATER)
    assert done.covered_until == NOW and done.hours > 24 * 30
    for query, before in zip(USAGE_QUERIES, raw, strict=True):
        _assert_usage_equal(before, _usage(client, query))
    client.force_login(people.owner)  # a key owner: only their key, from the rollups too
    usage_rollups_refresh(LATER)
    owner_rolled = _usage(client, {"range": "30d"})
    assert (
        owner_rolled["totals"][0]
        == UsageRecord.objects.filter(
            api_key=people.owner_key, created_at__gte=LATER.replace(hour=0, minute=0) - timedelta(days=29)
        ).count()
    )


def test_overview_from_rollups_equals_the_one_from_raw_records(client: Client, people: People, history: None) -> None:
    for who in (people.staff, people.owner):
        client.force_login(who)
        raw = [_overview(client, q) for q in ({}, {"range": "30d"}, {"range": "today"})]
        usage_rollups_refresh(LATER)
        assert [_overview(client, q) for q in ({}, {"range": "30d"}, {"range": "today"})] == raw
        UsageRollupState.objects.all().delete()
        UsageHour.objects.all().delete()
        UsageDay.objects.all().delete()


def test_performance_from_rollups_equals_raw_within_a_latency_bucket(
    client: Client, people: People, history: None, cooldowns: None
) -> None:
    client.force_login(people.staff)
    raw = [_performance(client, q) for q in ({}, {"range": "30d"})]
    usage_rollups_refresh(LATER)
    for query, before in zip(({}, {"range": "30d"}), raw, strict=True):
        after = _performance(client, query)
        assert [{k: v for k, v in r.items() if k != "percentiles"} for r in after] == [
            {k: v for k, v in r.items() if k != "percentiles"} for r in before
        ]
        for exact, estimate in zip(before, after, strict=True):
            for name, value in exact["percentiles"].items():
                assert _within_bucket_error(value, estimate["percentiles"][name]), (
                    name,
                    value,
                    estimate["percentiles"][name],
                )


def test_report_pages_keep_their_figures_after_pruning(client: Client, people: People, history: None) -> None:
    client.force_login(people.staff)
    usage_rollups_refresh(LATER)
    queries = [{"range": "30d"}, {"range": "custom", "start": "2025-02-10", "end": "2025-03-14"}]
    before = [_usage(client, q) for q in queries], _overview(client, {"range": "30d"})
    pruned = usage_records_prune(LATER, older_than_days=3)
    assert pruned.records > 250
    after = [_usage(client, q) for q in queries], _overview(client, {"range": "30d"})
    for old, new in zip(before[0], after[0], strict=True):
        # The generation log lists raw records: only the last 3 days' are left.
        assert set(new.pop("rows")) <= set(old.pop("rows"))
        _assert_usage_equal(old, new)
    assert after[1] == before[1]


# With rollups: + the daily and the hourly parts (7 days: whole days, today's hours, the raw hour).
@pytest.mark.parametrize(
    ("url", "query", "queries"),
    [
        # session, user, 3 filter choices, rollups' state, 3 parts, their latency histograms, a page of rows
        ("reports:usage", {}, 13),
        ("reports:usage", {"range": "today"}, 11),  # by hour: no daily part
        ("reports:overview", {"range": "30d"}, 8),  # session, user, rollups' state, 3 parts, key names, budgets
        ("reports:performance", {"range": "30d"}, 6),  # session, user, rollups' state, 3 parts
    ],
)
def test_pages_from_rollups_cost_a_fixed_number_of_queries(
    client: Client, people: People, history: None, cooldowns: None, django_assert_num_queries: Any, url: str,
    query: dict[str, str], queries: int,
) -> None:  # fmt: skip
    usage_rollups_refresh(LATER)
    client.force_login(people.staff)
    with django_assert_num_queries(queries):
        assert client.get(reverse(url), query).status_code == 200
