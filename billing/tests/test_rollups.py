"""The hourly and daily rollups equal the raw usage records, whatever order records arrive and settle in."""

from __future__ import annotations

import io
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.core.management import call_command

from billing.models import (
    LATENCY_BOUNDS_MS,
    LATENCY_METRICS,
    ROLLUP_DIMENSIONS,
    ApiKey,
    KeyUsageDay,
    UsageApi,
    UsageDay,
    UsageHour,
    UsageRecord,
    UsageRollupState,
    UsageStatus,
    latency_bucket_fields,
)
from billing.rollups import (
    ROLLUP_SUMS,
    ROUTER_BATCH_HOURS,
    usage_records_prune,
    usage_rollups_refresh,
    usage_rollups_refresh_due,
)
from billing.services import api_key_create
from routing.models import Deployment, RouterModel, Vendor

START = datetime(2025, 3, 10, 0, 0, tzinfo=UTC)
_STATUSES = [UsageStatus.COMPLETED] * 6 + [UsageStatus.CANCELLED, UsageStatus.ERROR, UsageStatus.INTERRUPTED]
_ERRORS = ("upstream_error", "timeout", "rate_limited")


def _bucket(value: int) -> int:
    return max(i for i, bound in enumerate(LATENCY_BOUNDS_MS) if value >= bound)


def _expected(records: list[UsageRecord], period: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rollups computed here from the records themselves, one dict of sums per period and dimensions."""
    sums: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: dict.fromkeys(ROLLUP_SUMS, 0))
    for r in records:
        at = r.created_at.astimezone(UTC)
        when = at.replace(minute=0, second=0, microsecond=0) if period == "hour" else at.date()
        row = sums[(when, *(getattr(r, d) for d in ROLLUP_DIMENSIONS))]
        row["requests"] += 1
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost"):
            row[name] += getattr(r, name)
        row["fallbacks"] += len(r.attempts) > 1
        if (
            r.status == UsageStatus.COMPLETED
            and r.streamed
            and r.first_token_ms is not None
            and r.duration_ms is not None
        ):
            row["stream_tokens"] += r.completion_tokens
            row["stream_ms"] += r.duration_ms - r.first_token_ms
        for metric, short in zip(LATENCY_METRICS, ("first_token", "duration"), strict=True):
            value = getattr(r, metric)
            if value is not None:
                row[f"{short}_count"] += 1
                row[f"{metric}_sum"] += value
                row[latency_bucket_fields(metric)[_bucket(value)]] += 1
    return {k: dict(v) for k, v in sums.items()}


def _stored(model: type[UsageHour] | type[UsageDay], period: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {
        (row[period], *(row[d] for d in ROLLUP_DIMENSIONS)): {name: row[name] for name in ROLLUP_SUMS}
        for row in model.objects.values(period, *ROLLUP_DIMENSIONS, *ROLLUP_SUMS)
    }


def _assert_rollups_equal_records() -> None:
    records = list(UsageRecord.objects.all())
    assert _stored(UsageHour, "hour") == _expected(records, "hour")
    assert _stored(UsageDay, "day") == _expected(records, "day")


def _random_record(rng: random.Random, keys: list[ApiKey], n: int, created_at: datetime) -> UsageRecord:
    status = rng.choice(_STATUSES)
    first_token = rng.choice([None, rng.randint(0, 2_000), rng.randint(0, 900_000)])
    duration = None if first_token is None else first_token + rng.randint(0, 60_000)
    return UsageRecord.objects.create(
        generation_id=f"gen-roll-{n:06d}",
        api_key=rng.choice(keys),
        api=rng.choice(UsageApi.values),
        model_name=rng.choice(["m/alpha", "m/beta", "", "typo/ech0"]),
        vendor_name=rng.choice(["vendor-a", "vendor-b", ""]),
        deployment_id=rng.choice([None, *Deployment.objects.values_list("pk", flat=True)]),
        upstream_model=rng.choice(["up-1", "up-2"]),
        status=status,
        error_code=rng.choice(_ERRORS) if status == UsageStatus.ERROR else "",
        streamed=rng.random() < 0.7,
        prompt_tokens=rng.randint(0, 5_000),
        completion_tokens=rng.randint(0, 2_000),
        cached_tokens=rng.randint(0, 100),
        reasoning_tokens=rng.randint(0, 100),
        cost=Decimal(rng.randint(0, 10**7)) / Decimal(10**8),
        attempts=[{}] * rng.choice([0, 1, 1, 2, 3]),
        first_token_ms=first_token,
        duration_ms=duration,
        created_at=created_at,
        finished_at=created_at + timedelta(seconds=rng.randint(0, 90)),
    )


@pytest.fixture
def keys(db: None) -> list[ApiKey]:
    model = RouterModel.objects.create(name="m/alpha")
    for vendor in ("vendor-a", "vendor-b"):
        Deployment.objects.create(model=model, vendor=Vendor.objects.create(name=vendor, kind="openai"))
    return [api_key_create(f"key-{i}")[0] for i in range(3)]


def test_rollups_equal_the_records_through_late_settlements_and_reruns(keys: list[ApiKey]) -> None:
    rng = random.Random(17)
    for n in range(300):
        _random_record(rng, keys, n, START + timedelta(seconds=rng.randint(0, 3 * 86_400)))
    now = START + timedelta(days=3, minutes=30)
    done = usage_rollups_refresh(now)
    assert done.covered_until == START + timedelta(days=3)
    assert done.hours == 72 and done.days == 3
    _assert_rollups_equal_records()

    # A record still in progress at the run, settled later in an hour long rolled up.
    late = UsageRecord.objects.create(
        generation_id="gen-late", api_key=keys[0], model_name="m/alpha", created_at=START + timedelta(hours=5)
    )
    # Records of the current hour, and one that arrived in a rolled-up hour after the run read it.
    for n in range(300, 320):
        _random_record(rng, keys, n, now + timedelta(minutes=rng.randint(0, 29)))
    later = now + timedelta(minutes=40)
    late.status, late.completion_tokens, late.cost, late.finished_at = (
        UsageStatus.COMPLETED,
        42,
        Decimal("0.5"),
        later,
    )
    late.save()
    done = usage_rollups_refresh(now + timedelta(hours=1, minutes=1))
    assert done.hours == 2  # the late record's hour and the hour just ended
    _assert_rollups_equal_records()

    before = _stored(UsageHour, "hour"), _stored(UsageDay, "day")
    again = usage_rollups_refresh(now + timedelta(hours=1, minutes=2))
    assert again.hours == 0
    assert (_stored(UsageHour, "hour"), _stored(UsageDay, "day")) == before


def test_rollups_from_scratch_equal_incremental_ones(keys: list[ApiKey]) -> None:
    rng = random.Random(3)
    for n in range(200):
        _random_record(rng, keys, n, START + timedelta(seconds=rng.randint(0, 2 * 86_400)))
    for step in range(1, 9):
        usage_rollups_refresh(START + timedelta(hours=6 * step, minutes=7))
    incremental = _stored(UsageHour, "hour"), _stored(UsageDay, "day")
    UsageRollupState.objects.all().delete()
    UsageHour.objects.all().delete()
    UsageDay.objects.all().delete()
    with time_machine.travel(START + timedelta(days=2, minutes=7), tick=False):
        call_command("usage", "rollup", stdout=io.StringIO())  # from scratch
    assert (_stored(UsageHour, "hour"), _stored(UsageDay, "day")) == incremental
    _assert_rollups_equal_records()


def test_prune_deletes_old_settled_records_and_keeps_their_sums(keys: list[ApiKey]) -> None:
    rng = random.Random(5)
    for n in range(120):
        _random_record(rng, keys, n, START + timedelta(seconds=rng.randint(0, 4 * 86_400)))
    stuck = UsageRecord.objects.create(
        generation_id="gen-stuck", api_key=keys[0], model_name="m/alpha", created_at=START + timedelta(hours=1)
    )
    KeyUsageDay.objects.create(api_key=keys[0], day=START.date(), requests=7, cost=Decimal("1.5"))
    now = START + timedelta(days=4, hours=2)
    usage_rollups_refresh(now)
    hours, days = _stored(UsageHour, "hour"), _stored(UsageDay, "day")
    cutoff = START + timedelta(days=2, hours=2)

    pruned = usage_records_prune(now, older_than_days=2, batch=7)

    assert pruned.before == cutoff
    left = UsageRecord.objects.all()
    assert not left.filter(created_at__lt=cutoff).exclude(pk=stuck.pk).exists()
    assert left.filter(pk=stuck.pk).exists()  # in progress: never pruned
    assert pruned.records == 120 - left.exclude(pk=stuck.pk).count()
    assert pruned.records > 0
    assert KeyUsageDay.objects.get(api_key=keys[0], day=START.date()).requests == 7
    # A later run (even one that sees a settlement in a pruned hour) leaves the pruned hours' sums as they were.
    UsageRecord.objects.filter(pk=stuck.pk).update(status=UsageStatus.INTERRUPTED, finished_at=now)
    usage_rollups_refresh(now + timedelta(minutes=5))
    assert (_stored(UsageHour, "hour"), _stored(UsageDay, "day")) == (hours, days)


def test_prune_command_refuses_a_zero_age(db: None) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="at least 1"):
        call_command("usage", "prune", "--older-than-days", "0")


def test_router_catches_up_a_few_hours_per_heartbeat(keys: list[ApiKey], settings: Any) -> None:
    settings.SIRAYA_ROLLUP_SECONDS = 60
    rng = random.Random(11)
    for n in range(60):
        _random_record(rng, keys, n, START + timedelta(seconds=rng.randint(0, 86_400 - 1)))
    _random_record(rng, keys, 60, START)
    now = START + timedelta(days=1, minutes=3)
    covered = []
    while (done := usage_rollups_refresh_due(now)) is not None:
        assert done.hours <= ROUTER_BATCH_HOURS
        covered.append(done.covered_until)
        now += timedelta(seconds=5)  # the next heartbeat
    assert covered == [START + timedelta(hours=h) for h in range(6, 25, 6)]
    _assert_rollups_equal_records()
    assert usage_rollups_refresh_due(now + timedelta(seconds=30)) is None  # caught up, and not yet due
    assert usage_rollups_refresh_due(now + timedelta(seconds=61)) is not None


def test_router_leaves_the_rollups_alone_when_told(keys: list[ApiKey], settings: Any) -> None:
    """SIRAYA_ROLLUP_SECONDS=0: an operator who runs ``manage.py usage rollup`` from cron (and the
    test suite's shared router, whose database every test empties) turns the router's refresh off."""
    settings.SIRAYA_ROLLUP_SECONDS = 0
    _random_record(random.Random(3), keys, 0, START)
    assert usage_rollups_refresh_due(START + timedelta(days=1)) is None
    assert not UsageHour.objects.exists()
