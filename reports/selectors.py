"""Reads behind the usage reports. Every figure is aggregated in the database.

Each function is one query (the SQLite median is the one exception, documented below), so a
report page costs a fixed number of queries whatever the number of records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DecimalField,
    FloatField,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate, TruncHour

from billing.models import ApiKey, UsageRecord, UsageStatus

ZERO = Decimal("0")
# Costs are stored to 8 decimal places; SQLite sums come back with float noise digits.
COST_PLACES = Decimal("0.00000001")
_MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=18, decimal_places=8)


# Usage reports


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """What a report covers: a half-open time range [start, end) and optional key, model, vendor."""

    start: datetime
    end: datetime
    api_key_id: int | None = None
    model_name: str = ""
    vendor_name: str = ""
    status: str = ""
    error_code: str = ""
    generation_prefix: str = ""


def visible_keys(user: AbstractBaseUser | AnonymousUser) -> QuerySet[ApiKey]:
    """Return the keys ``user`` may read usage of: all for staff, their own otherwise."""
    keys = ApiKey.objects.order_by("name", "pk")
    if getattr(user, "is_staff", False):
        return keys
    return keys.filter(owner_id=user.pk) if user.is_authenticated else keys.none()


def visible_records(user: AbstractBaseUser | AnonymousUser) -> QuerySet[UsageRecord]:
    if getattr(user, "is_staff", False):
        return UsageRecord.objects.all()
    if not user.is_authenticated:
        return UsageRecord.objects.none()
    return UsageRecord.objects.filter(api_key__owner_id=user.pk)


def filtered_records(user: AbstractBaseUser | AnonymousUser, spec: ReportFilter) -> QuerySet[UsageRecord]:
    records = visible_records(user).filter(created_at__gte=spec.start, created_at__lt=spec.end)
    if spec.api_key_id is not None:
        records = records.filter(api_key_id=spec.api_key_id)
    if spec.model_name:
        records = records.filter(model_name=spec.model_name)
    if spec.vendor_name:
        records = records.filter(vendor_name=spec.vendor_name)
    if spec.status:
        records = records.filter(status=spec.status)  # usage_status_created (status, created_at)
    if spec.error_code:
        records = records.filter(error_code=spec.error_code)
    if spec.generation_prefix:
        records = records.filter(generation_id__startswith=spec.generation_prefix)
    return records


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate ``percentile_cont(f) WITHIN GROUP (ORDER BY x)``."""

    function = "percentile_cont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, percentile: float, **extra: Any) -> None:
        super().__init__(expression, percentile=float(percentile), **extra)


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    cancelled: int
    errors: int
    median_first_token_ms: float | None

    @property
    def cancelled_share(self) -> float:
        return self.cancelled / self.requests if self.requests else 0.0

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def cancelled_percent(self) -> float:
        return 100 * self.cancelled_share

    @property
    def error_percent(self) -> float:
        return 100 * self.error_share


def _median_ordered(records: QuerySet[UsageRecord], count: int) -> float | None:
    """Median by one ordered query with OFFSET: the middle one or two values of ``count`` non-null ones."""
    if count == 0:
        return None
    values = (
        records.filter(first_token_ms__isnull=False)
        .order_by("first_token_ms")
        .values_list("first_token_ms", flat=True)[(count - 1) // 2 : count // 2 + 1]
    )
    middle = [v for v in values if v is not None]
    return sum(middle) / len(middle)


def usage_totals(records: QuerySet[UsageRecord]) -> Totals:
    """Totals of ``records``; one query on PostgreSQL (median in the same aggregate), two elsewhere."""
    postgres = connection.vendor == "postgresql"
    aggregates: dict[str, Any] = {
        "requests": Count("pk"),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "cost": Coalesce(Sum("cost"), Value(ZERO), output_field=_MONEY),
        "cancelled": Count("pk", filter=Q(status=UsageStatus.CANCELLED)),
        "errors": Count("pk", filter=Q(status=UsageStatus.ERROR)),
        "ttft_count": Count("first_token_ms"),
    }
    if postgres:
        aggregates["median_ttft"] = PercentileCont("first_token_ms", 0.5)
    row = records.order_by().aggregate(**aggregates)
    median = row["median_ttft"] if postgres else _median_ordered(records, row["ttft_count"])
    return Totals(
        requests=row["requests"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost=row["cost"].quantize(COST_PLACES),
        cancelled=row["cancelled"],
        errors=row["errors"],
        median_first_token_ms=median,
    )


@dataclass(frozen=True, slots=True)
class DailyModelUsage:
    """Usage of one model in one bucket: ``day`` is the UTC day, or the UTC hour's start (a datetime) by hour."""

    day: date
    model_name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_by_day_and_model(records: QuerySet[UsageRecord], *, hourly: bool = False) -> list[DailyModelUsage]:
    """Requests, tokens and cost per UTC day (or UTC hour) and model, oldest first. One query."""
    bucket = TruncHour("created_at", tzinfo=UTC) if hourly else TruncDate("created_at")
    rows = (
        records.order_by()
        .annotate(day=bucket)
        .values("day", "model_name")
        .annotate(
            requests=Count("pk"),
            prompt=Coalesce(Sum("prompt_tokens"), 0),
            completion=Coalesce(Sum("completion_tokens"), 0),
            spent=Coalesce(Sum("cost"), Value(ZERO), output_field=_MONEY),
        )
        .order_by("day", "model_name")
    )
    return [
        DailyModelUsage(
            r["day"], r["model_name"], r["requests"], r["prompt"], r["completion"], r["spent"].quantize(COST_PLACES)
        )
        for r in rows
    ]


def requests_by_status(records: QuerySet[UsageRecord]) -> dict[str, int]:
    """Number of requests per status, every status present (zero when none). One query."""
    counts = dict.fromkeys(UsageStatus.values, 0)
    for row in records.order_by().values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    return counts


# CSV export: (column header, UsageRecord field path), in column order; one list so they cannot drift.
_CSV = (
    ("generation_id", "generation_id"),
    ("trace_id", "trace_id"),
    ("created_at", "created_at"),
    ("finished_at", "finished_at"),
    ("key_name", "api_key__name"),
    ("key_prefix", "api_key__prefix"),
    ("model", "model_name"),
    ("vendor", "vendor_name"),
    ("upstream_model", "upstream_model"),
    ("status", "status"),
    ("streamed", "streamed"),
    ("http_status", "http_status"),
    ("error_code", "error_code"),
    ("finish_reason", "finish_reason"),
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("cached_tokens", "cached_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
    ("usage_source", "usage_source"),
    ("cost_usd", "cost"),
    ("first_token_ms", "first_token_ms"),
    ("duration_ms", "duration_ms"),
)
CSV_COLUMNS = tuple(column for column, _ in _CSV)
_CSV_FIELDS = tuple(field for _, field in _CSV)


def csv_rows_query(records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord, tuple[Any, ...]]:
    """The rows of the CSV export, newest first, as tuples in ``CSV_COLUMNS`` order."""
    return records.order_by("-created_at", "-pk").values_list(*_CSV_FIELDS)


def generation_page(records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
    return records.select_related("api_key").order_by("-created_at", "-pk")


# A spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """Return ``text`` safe for a spreadsheet: a leading formula character is quoted with ``'`` (OWASP)."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def csv_value(value: Any) -> str:
    """One CSV cell: numbers as numbers (a negative stays a number), text neutralised by ``csv_text``."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int):
        return str(value)
    return csv_text(str(value))


def json_value(value: Any) -> Any:
    """One JSON export value: exact figures (a Decimal as its string), times in ISO 8601, the rest as is."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def iter_days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def iter_hours(start: date, end: date) -> Iterator[datetime]:
    """Every UTC hour's start from ``start``'s midnight to the last hour of ``end``."""
    hour = datetime(start.year, start.month, start.day, tzinfo=UTC)
    stop = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    while hour < stop:
        yield hour
        hour += timedelta(hours=1)


# Chart series

# The one series for every model name that is not a configured model (typos, retired models, none given).
OTHER_MODELS = "Other / unknown model"


def fold_unknown_models(daily: list[DailyModelUsage], known_models: Collection[str]) -> list[DailyModelUsage]:
    """Return ``daily`` with every row of a name not in ``known_models`` (or empty) summed into ``OTHER_MODELS``.

    Clients choose model names: charting them as they come would give a series per typo.
    """
    known = set(known_models)
    folded: dict[tuple[date, str], DailyModelUsage] = {}
    for row in daily:
        name = row.model_name if row.model_name in known else OTHER_MODELS
        seen = folded.get((row.day, name))
        folded[(row.day, name)] = (
            DailyModelUsage(row.day, name, row.requests, row.prompt_tokens, row.completion_tokens, row.cost)
            if seen is None
            else DailyModelUsage(
                row.day,
                name,
                seen.requests + row.requests,
                seen.prompt_tokens + row.prompt_tokens,
                seen.completion_tokens + row.completion_tokens,
                seen.cost + row.cost,
            )
        )
    return sorted(folded.values(), key=lambda r: (r.day, r.model_name))
