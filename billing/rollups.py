"""Hourly and daily rollups of the usage records, kept by an idempotent job.

``usage_rollups_refresh`` recomputes whole UTC hours from the raw records (delete and insert, one
transaction per batch of hours) and each day touched from its hours. The hours redone are the ones
never rolled up before the current hour, and those holding a record settled since the last run, so
a late settlement reaches its hour at the next run. The router runs it every
SIRAYA_ROLLUP_SECONDS (``routing.relay.lifecycle``); ``manage.py usage rollup`` runs it by hand.

Reports read the rollups for the hours before ``covered_until`` and the raw records after it, so
their figures are live; a record settled since the last run shows in its (rolled up) hour after
the next one: that is the rollups' lag.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import (
    Aggregate,
    Count,
    ExpressionWrapper,
    F,
    Field,
    Func,
    IntegerField,
    Model,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate, TruncHour
from django.utils import timezone

from billing.models import (
    LATENCY_BOUNDS_MS,
    LATENCY_METRICS,
    ROLLUP_DIMENSIONS,
    UsageDay,
    UsageHour,
    UsageRecord,
    UsageRollupState,
    UsageStatus,
    latency_bucket_fields,
)

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
# Hours recomputed per transaction: a day's worth keeps each transaction short.
HOURS_PER_BATCH = 24
# A settlement stamped just before a run may commit just after it reads: look back this much further.
SETTLE_MARGIN = timedelta(minutes=5)
# Serialises refreshes across router processes on PostgreSQL (an arbitrary constant of this job).
_LOCK_ID = 0x51_4159_0001
# New hours one call from the router rolls up at most.
ROUTER_BATCH_HOURS = 6
_MONEY_ZERO = Value(Decimal("0"))

# What counts into stream_tokens / stream_ms: the output-tokens-per-second figure's requests.
THROUGHPUT = Q(status=UsageStatus.COMPLETED, streamed=True, first_token_ms__isnull=False, duration_ms__isnull=False)
# The sums every rollup row carries, in the order they are written.
ROLLUP_SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "fallbacks",
    "stream_tokens",
    "stream_ms",
    "first_token_count",
    "first_token_ms_sum",
    "duration_count",
    "duration_ms_sum",
    *(name for metric in LATENCY_METRICS for name in latency_bucket_fields(metric)),
)


class JSONArrayLength(Func):
    """The number of elements of a JSON array column (``json_array_length`` / ``jsonb_array_length``)."""

    function = "json_array_length"
    output_field = IntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # jsonb_array_length fails on a non-array; SQLite's json_array_length answers 0 there, and so does this.
        template = (
            "CASE WHEN jsonb_typeof(%(expressions)s) = 'array' THEN jsonb_array_length(%(expressions)s) ELSE 0 END"
        )
        return self.as_sql(compiler, connection, template=template, **extra)


class BucketCount(Aggregate):
    """The number of rows whose ``metric`` lies in [low, high) (from ``low`` up when ``high`` is None).

    What ``Count("pk", filter=Q(metric__gte=low, metric__lt=high))`` writes, without its lookups: a
    report's raw part counts 92 buckets, and resolving 92 filters cost more CPU than the database
    spent on the query. The bounds are LATENCY_BOUNDS_MS's integers, written as literals. PostgreSQL
    and SQLite both have FILTER (SQLite from 3.30; Django 5.2 needs 3.31).
    """

    function = "COUNT"
    output_field = IntegerField()

    def __init__(self, metric: str, low: int, high: int | None) -> None:
        below = f" AND %(expressions)s < {int(high)}" if high is not None else ""
        super().__init__(F(metric), template=f"COUNT(*) FILTER (WHERE %(expressions)s >= {int(low)}{below})")


def _bucket_counts(metric: str) -> dict[str, Any]:
    bounds = (*LATENCY_BOUNDS_MS[1:], None)
    names = latency_bucket_fields(metric)
    return {
        name: BucketCount(metric, low, high) for name, low, high in zip(names, LATENCY_BOUNDS_MS, bounds, strict=True)
    }


def record_sums() -> dict[str, Any]:
    """ROLLUP_SUMS as aggregates of usage records (annotated with ``attempt_count``), named by ``total``."""
    stream_ms = ExpressionWrapper(F("duration_ms") - F("first_token_ms"), output_field=IntegerField())
    sums: dict[str, Any] = {
        "requests": Count("pk"),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "cached_tokens": Coalesce(Sum("cached_tokens"), 0),
        "reasoning_tokens": Coalesce(Sum("reasoning_tokens"), 0),
        "cost": Coalesce(Sum("cost"), _MONEY_ZERO, output_field=UsageRecord._meta.get_field("cost")),
        "fallbacks": Count("pk", filter=Q(attempt_count__gt=1)),
        "stream_tokens": Coalesce(Sum("completion_tokens", filter=THROUGHPUT), 0),
        "stream_ms": Coalesce(Sum(stream_ms, filter=THROUGHPUT), 0),
        "first_token_count": Count("first_token_ms"),
        "first_token_ms_sum": Coalesce(Sum("first_token_ms"), 0),
        "duration_count": Count("duration_ms"),
        "duration_ms_sum": Coalesce(Sum("duration_ms"), 0),
    }
    for metric in LATENCY_METRICS:
        sums.update(_bucket_counts(metric))
    return {total(name): aggregate for name, aggregate in sums.items()}


def rollup_sums(names: Sequence[str] = ROLLUP_SUMS) -> dict[str, Any]:
    """``names`` as sums of rollup rows, named as ``record_sums`` names them."""
    return {total(name): Sum(name) for name in names}


def total(name: str) -> str:
    """The name of the aggregate of ``name`` (apart from the field's own: Django refuses a clash)."""
    return f"total_{name}"


def records_with_attempt_count(records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
    return records.annotate(attempt_count=JSONArrayLength("attempts"))


# The job


@dataclass(frozen=True, slots=True)
class RollupRefresh:
    """What one run did: the hours it recomputed and where the rollups now stand."""

    hours: int
    days: int
    covered_until: datetime | None
    skipped: bool = False


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def rollup_state() -> UsageRollupState:
    state, _ = UsageRollupState.objects.get_or_create(pk=1)
    return state


def covered_until() -> datetime | None:
    """The hour before which every hour is rolled up (None before the first run). One query."""
    return UsageRollupState.objects.filter(pk=1).values_list("covered_until", flat=True).first()


@contextmanager
def _refresh_lock() -> Iterator[bool]:
    """Hold the job's lock if no other process does: True when held. (SQLite serialises writers itself.)"""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_ID])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_ID])


def _hour_range(start: datetime, end: datetime) -> list[datetime]:
    hours, hour = [], start
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return hours


def _hours_to_redo(state: UsageRollupState, until: datetime, max_new: int | None) -> tuple[list[datetime], datetime]:
    """Hours holding a record settled since the last run, then at most ``max_new`` hours never rolled up
    before ``until``; and the hour the rollups will cover up to once they are done."""
    if state.covered_until is None:
        first = UsageRecord.objects.order_by("created_at").values_list("created_at", flat=True).first()
        new = _hour_range(floor_hour(first), until) if first is not None else []
    else:
        new = _hour_range(state.covered_until, until)
    if max_new is not None and len(new) > max_new:
        new, until = new[:max_new], new[max_new]
    settled: set[datetime] = set()
    if state.covered_until is not None and state.refreshed_at is not None:
        records = UsageRecord.objects.filter(
            finished_at__gte=state.refreshed_at - SETTLE_MARGIN, created_at__lt=state.covered_until
        )
        if state.pruned_before is not None:
            records = records.filter(created_at__gte=state.pruned_before)
        found = records.order_by().annotate(h=TruncHour("created_at", tzinfo=UTC)).values_list("h", flat=True)
        settled.update(floor_hour(h) for h in found.distinct())
    return sorted(settled.union(new)), until


def _column(model: type[Model], name: str) -> str:
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column is not None
    return field.column


def _insert_select(model: type[Model], query: QuerySet[Any, Any]) -> None:
    """INSERT INTO ``model``'s table the rows of a ``values().annotate()`` query, by column name."""
    columns = [*query.query.values_select, *(a.removeprefix("total_") for a in query.query.annotation_select)]
    select_sql, params = query.query.sql_with_params()
    quote = connection.ops.quote_name
    names = ", ".join(quote(_column(model, c)) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(model._meta.db_table)} ({names}) {select_sql}", params)


def _rollup_hours(hours: Sequence[datetime]) -> None:
    """Recompute the UsageHour rows of ``hours`` (contiguous or not) from the raw records."""
    UsageHour.objects.filter(hour__in=hours).delete()
    within = Q()
    for start, end in _spans(hours):
        within |= Q(created_at__gte=start, created_at__lt=end)
    query = (
        records_with_attempt_count(UsageRecord.objects.filter(within))
        .order_by()
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values(*ROLLUP_DIMENSIONS, "hour")
        .annotate(**record_sums())
    )
    _insert_select(UsageHour, query)


def _rollup_days(days: Sequence[date]) -> None:
    """Recompute the UsageDay rows of ``days`` from their UsageHour rows."""
    UsageDay.objects.filter(day__in=days).delete()
    within = Q()
    for day in days:
        within |= Q(hour__gte=_midnight(day), hour__lt=_midnight(day + timedelta(days=1)))
    query = (
        UsageHour.objects.filter(within)
        .order_by()
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values(*ROLLUP_DIMENSIONS, "day")
        .annotate(**rollup_sums())
    )
    _insert_select(UsageDay, query)


def _spans(hours: Sequence[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted ``hours`` as [start, end) spans of consecutive hours."""
    spans: list[tuple[datetime, datetime]] = []
    for hour in sorted(hours):
        if spans and spans[-1][1] == hour:
            spans[-1] = (spans[-1][0], hour + HOUR)
        else:
            spans.append((hour, hour + HOUR))
    return spans


def _batches(hours: list[datetime]) -> Iterator[list[datetime]]:
    for i in range(0, len(hours), HOURS_PER_BATCH):
        yield hours[i : i + HOURS_PER_BATCH]


def usage_rollups_refresh(now: datetime, max_new_hours: int | None = None) -> RollupRefresh:
    """Bring the rollups up to the start of ``now``'s hour; safe to run again at any time, from any process.

    ``max_new_hours`` bounds a run's work: the rollups then cover that many more hours, and the next
    run goes on from there.
    """
    with _refresh_lock() as held:
        if not held:
            return RollupRefresh(0, 0, covered_until(), skipped=True)
        state = rollup_state()
        until = floor_hour(now)
        if state.covered_until is not None and state.covered_until > until:
            until = state.covered_until  # a clock that went back never un-covers hours
        hours, until = _hours_to_redo(state, until, max_new_hours)
        days: set[date] = set()
        for batch in _batches(hours):
            batch_days = sorted({h.date() for h in batch})
            with transaction.atomic():
                _rollup_hours(batch)
                _rollup_days(batch_days)
            days.update(batch_days)
        UsageRollupState.objects.filter(pk=state.pk).update(covered_until=until, refreshed_at=now)
        return RollupRefresh(len(hours), len(days), until)


def usage_rollups_refresh_due(now: datetime | None = None) -> RollupRefresh | None:
    """Refresh when the last run is SIRAYA_ROLLUP_SECONDS old, or behind (the router calls this on every heartbeat).

    Each call rolls up at most ROUTER_BATCH_HOURS new hours: it runs in the router's database thread, so a
    long history is caught up a few hours per heartbeat (``manage.py usage rollup`` does it in one go).
    A failure is logged and left for the next call: the reports read raw records past the rollups meanwhile.
    SIRAYA_ROLLUP_SECONDS = 0 turns this off: the rollups are then ``manage.py usage rollup``'s alone.
    """
    if settings.SIRAYA_ROLLUP_SECONDS <= 0:
        return None
    now = now or timezone.now()
    state = UsageRollupState.objects.filter(pk=1).values("refreshed_at", "covered_until").first()
    if (
        state is not None
        and state["refreshed_at"] is not None
        and state["covered_until"] == floor_hour(now)
        and (now - state["refreshed_at"]).total_seconds() < settings.SIRAYA_ROLLUP_SECONDS
    ):
        return None
    try:
        return usage_rollups_refresh(now, max_new_hours=ROUTER_BATCH_HOURS)
    except DatabaseError:
        logger.exception("usage rollups refresh failed")
        return None


# Retention


@dataclass(frozen=True, slots=True)
class Pruned:
    records: int
    before: datetime


PRUNE_BATCH = 10_000


def usage_records_prune(now: datetime, older_than_days: int, batch: int = PRUNE_BATCH) -> Pruned:
    """Delete settled usage records created before the hour ``older_than_days`` ago; the rollups keep their sums.

    The rollups are brought up to date first, and the pruned hours are never recomputed afterwards.
    In-progress records stay; KeyUsageDay (credit spend) is not touched. Deletes ``batch`` records per
    transaction, so the table is never locked for long.
    """
    if older_than_days < 1:
        raise ValueError("--older-than-days must be at least 1")
    before = floor_hour(now - timedelta(days=older_than_days))
    usage_rollups_refresh(now)
    UsageRollupState.objects.filter(Q(pruned_before__isnull=True) | Q(pruned_before__lt=before), pk=1).update(
        pruned_before=before
    )
    old = UsageRecord.objects.filter(created_at__lt=before).exclude(status=UsageStatus.IN_PROGRESS)
    deleted = 0
    while ids := list(old.order_by("created_at").values_list("pk", flat=True)[:batch]):
        with transaction.atomic():
            deleted += UsageRecord.objects.filter(pk__in=ids).delete()[0]
    return Pruned(deleted, before)
