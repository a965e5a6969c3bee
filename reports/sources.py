"""Where a report's figures come from: the daily and hourly rollups for what they cover, raw records for the rest.

A report over [start, end) reads whole UTC days from UsageDay and whole hours from UsageHour up to
the rollups' ``covered_until`` (see ``billing.rollups``), and the usage records after it, so its
figures are those of the records themselves, live. A filter the rollups cannot answer (a generation
ID prefix) reads raw records only. Each part is one grouped query; ``grouped`` adds them up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.functions import TruncDate, TruncHour

from billing.models import LATENCY_BOUNDS_MS, UsageDay, UsageHour, UsageRecord
from billing.rollups import HOUR, floor_hour, record_sums, records_with_attempt_count, rollup_sums, total

_DAY = timedelta(days=1)
# Costs are stored to 8 decimal places; SQLite sums come back with float noise digits.
COST_PLACES = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class Sources:
    """The parts of one report: raw records, and the rollups' hours and days (None when not used)."""

    raw: QuerySet[UsageRecord]
    hours: QuerySet[UsageHour] | None = None
    days: QuerySet[UsageDay] | None = None

    @property
    def rolled(self) -> bool:
        return self.hours is not None or self.days is not None


@dataclass(frozen=True, slots=True)
class Filters:
    """The record filters a report applies besides its time range; all but ``generation_prefix`` are in the rollups."""

    owner_id: int | None = None  # a key owner sees their keys' usage; None: every key (staff)
    api_key_id: int | None = None
    model_name: str = ""
    vendor_name: str = ""
    status: str = ""
    error_code: str = ""
    generation_prefix: str = ""
    api: str = ""

    def q(self) -> Q:
        """The filters as a Q on a usage record or a rollup row (the same field names)."""
        q = Q()
        if self.owner_id is not None:
            q &= Q(api_key__owner_id=self.owner_id)
        for name in ("api_key_id", "model_name", "vendor_name", "status", "error_code", "api"):
            if value := getattr(self, name):
                q &= Q(**{name: value})
        return q


def user_filters(user: AbstractBaseUser | AnonymousUser, **filters: Any) -> Filters | None:
    """``filters`` for what ``user`` may read; None when nothing (a visitor who has not logged in)."""
    if getattr(user, "is_staff", False):
        return Filters(**filters)
    if not user.is_authenticated:
        return None
    return Filters(owner_id=user.pk, **filters)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _ceil_hour(moment: datetime) -> datetime:
    hour = floor_hour(moment)
    return hour if hour == moment else hour + HOUR


def _ceil_day(moment: datetime) -> datetime:
    day = _midnight(moment.astimezone(UTC).date())
    return day if day == moment else day + _DAY


def split(
    start: datetime, end: datetime, filters: Filters | None, covered_until: datetime | None, *, by_hour: bool = False
) -> Sources:
    """The parts of [start, end): days then hours from the rollups up to ``covered_until``, raw records after.

    ``by_hour`` leaves the daily rollups out (a report drawn by hour).
    """
    if filters is None:
        return Sources(raw=UsageRecord.objects.none())
    raw = UsageRecord.objects.filter(filters.q())
    if filters.generation_prefix:
        raw = raw.filter(generation_id__startswith=filters.generation_prefix)
    rolled_from, rolled_to = _ceil_hour(start), min(end, covered_until) if covered_until is not None else start
    if filters.generation_prefix or rolled_to <= rolled_from:
        return Sources(raw=raw.filter(created_at__gte=start, created_at__lt=end))
    raw = raw.filter(_within("created_at", (start, rolled_from), (rolled_to, end)))
    days_from, days_to = _ceil_day(rolled_from), _midnight(floor_hour(rolled_to).date())
    if by_hour or days_to <= days_from:
        return Sources(raw=raw, hours=UsageHour.objects.filter(filters.q(), hour__gte=rolled_from, hour__lt=rolled_to))
    hours = UsageHour.objects.filter(_within("hour", (rolled_from, days_from), (days_to, rolled_to)), filters.q())
    days = UsageDay.objects.filter(filters.q(), day__gte=days_from.date(), day__lt=days_to.date())
    return Sources(raw=raw, hours=hours, days=days)


def _within(field: str, before: tuple[datetime, datetime], after: tuple[datetime, datetime]) -> Q:
    """``field`` in the span ``before`` or in the span ``after`` (the second alone when the first is empty).

    A report of whole days has nothing before: one range then reads along the index (the
    covering one of the rollups, alone), where an OR of two made PostgreSQL OR two bitmaps and
    read the rows. An empty ``after`` stays, so that the part is still one (empty) query.
    """
    later = Q(**{f"{field}__gte": after[0], f"{field}__lt": after[1]})
    if before[0] >= before[1]:
        return later
    return Q(**{f"{field}__gte": before[0], f"{field}__lt": before[1]}) | later


# Grouped sums over the parts

# A group field that is a time bucket: its expression on each part (None: the part's own field).
_BUCKETS: dict[str, dict[str, Any]] = {
    "day": {"raw": TruncDate("created_at", tzinfo=UTC), "hours": TruncDate("hour", tzinfo=UTC), "days": None},
    "hour": {"raw": TruncHour("created_at", tzinfo=UTC), "hours": None},
}


def _parts(sources: Sources) -> list[tuple[str, QuerySet[Any]]]:
    parts: list[tuple[str, QuerySet[Any]]] = [
        (name, query) for name, query in (("days", sources.days), ("hours", sources.hours)) if query is not None
    ]
    return [*parts, ("raw", records_with_attempt_count(sources.raw))]


def grouped(sources: Sources, group: Sequence[str], sums: Sequence[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """ROLLUP_SUMS ``sums`` of every part per value of ``group`` (field names, or "day" / "hour"), added up.

    One query per part. A group with no rows is absent.
    """
    found: dict[tuple[Any, ...], list[Any]] = {}
    width = len(group)
    for part, query in _parts(sources):
        for row in _part_rows(part, query, group, sums):
            key, figures = row[:width], row[width:]
            seen = found.get(key)
            found[key] = list(figures) if seen is None else [a + b for a, b in zip(seen, figures, strict=True)]
    result = {key: dict(zip(sums, figures, strict=True)) for key, figures in found.items()}
    if "cost" in sums:
        for figures_of_group in result.values():
            figures_of_group["cost"] = Decimal(figures_of_group["cost"]).quantize(COST_PLACES)
    return result


def summed(sources: Sources, sums: Sequence[str]) -> dict[str, Any]:
    """ROLLUP_SUMS ``sums`` over every part, added up (a latency histogram). One query per part."""
    found = dict.fromkeys(sums, 0)
    for part, query in _parts(sources):
        aggregates = rollup_sums(sums) if part != "raw" else {total(s): _RECORD_SUMS[total(s)] for s in sums}
        row = query.order_by().aggregate(**aggregates)
        for s in sums:
            found[s] += row[total(s)] or 0
    return found


def part_query(part: str, query: QuerySet[Any], group: Sequence[str], sums: Sequence[str]) -> QuerySet[Any]:
    """The grouped query of one part ("days", "hours" or "raw"): tuples of the group's values, then the sums."""
    buckets = {g: _BUCKETS[g][part] for g in group if g in _BUCKETS and _BUCKETS[g][part] is not None}
    aggregates = rollup_sums(sums) if part != "raw" else {total(s): _RECORD_SUMS[total(s)] for s in sums}
    rows = query.order_by().annotate(**buckets).values(*group).annotate(**aggregates)
    return rows.values_list(*group, *aggregates)


def _part_rows(part: str, query: QuerySet[Any], group: Sequence[str], sums: Sequence[str]) -> list[tuple[Any, ...]]:
    """One part's rows as tuples: the group's values, then the sums (0 for none), in the order asked."""
    found = part_query(part, query, group, sums)
    at = [i for i, g in enumerate(group) if g in _BUCKETS]
    width = len(group)
    if not at or connection.vendor != "sqlite":
        return [(*row[:width], *(v or 0 for v in row[width:])) for row in found]
    return [
        (*(_bucket_value(v) if i in at else v for i, v in enumerate(row[:width])), *(v or 0 for v in row[width:]))
        for row in found
    ]


_RECORD_SUMS = record_sums()


def _bucket_value(value: Any) -> Any:
    """A day or hour bucket as the same type from every part and database (SQLite's hours come back naive)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# Percentiles from the latency histogram


def percentile(counts: Sequence[int], p: float) -> float | None:
    """``percentile_cont``'s value at ``p`` estimated from bucket counts of LATENCY_BOUNDS_MS.

    The position p·(n-1) is found among the sorted values as percentile_cont finds it; a value's
    place within its bucket is taken as evenly spread, so the estimate stays in the bucket of the
    exact value. The open last bucket answers its lower bound.
    """
    n = sum(counts)
    if n == 0:
        return None
    position = p * (n - 1)
    low = math.floor(position)
    value_low, value_high = _ranked_value(counts, low), _ranked_value(counts, min(low + 1, n - 1))
    return value_low + (value_high - value_low) * (position - low)


def _ranked_value(counts: Sequence[int], rank: int) -> float:
    before = 0
    for i, count in enumerate(counts):
        if rank < before + count:
            if i + 1 == len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[i])
            low, high = LATENCY_BOUNDS_MS[i], LATENCY_BOUNDS_MS[i + 1]
            return low + (high - low) * (rank - before + 0.5) / count
        before += count
    raise ValueError("rank beyond the counts")
