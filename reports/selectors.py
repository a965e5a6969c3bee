"""Reads behind the usage reports and the admin key list. Every figure is aggregated in the database.

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
    DecimalField,
    FloatField,
    Q,
    QuerySet,
)

from billing import rollups
from billing.models import (
    ApiKey,
    UsageApi,
    UsageRecord,
    UsageStatus,
    latency_bucket_fields,
)
from reports import sources
from reports.sources import COST_PLACES, Sources

ZERO = Decimal("0")
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
    api: str = ""  # the client API (a UsageApi value)


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
    if spec.api:
        records = records.filter(api=spec.api)
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
    values = (
        records.filter(first_token_ms__isnull=False)
        .order_by("first_token_ms")
        .values_list("first_token_ms", flat=True)[(count - 1) // 2 : count // 2 + 1]
    )
    middle = [v for v in values if v is not None]
    return sum(middle) / len(middle)


def _exact_median_first_token(records: QuerySet[UsageRecord], count: int) -> float | None:
    """The median time to first token of ``records`` (``count`` of them have one). One query, none when 0."""
    if count == 0:
        return None
    if connection.vendor == "postgresql":
        return records.order_by().aggregate(m=PercentileCont("first_token_ms", 0.5))["m"]
    return _median_ordered(records, count)


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

    @property
    def label(self) -> str:
        """The bucket as the table shows it: ``2025-03-14``, or ``2025-03-14 15:00`` for an hour (UTC).

        Formatted here rather than by the template's ``date`` filter, which cost more than the rest of
        a 90-day table's row."""
        return f"{self.day:%Y-%m-%d %H:%M}" if isinstance(self.day, datetime) else self.day.isoformat()


@dataclass(frozen=True, slots=True)
class ApiUsage:
    """Usage through one client API (``api``: a UsageApi value)."""

    api: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal

    @property
    def label(self) -> str:
        return UsageApi(self.api).label if self.api in UsageApi.values else self.api


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """What the usage page draws: totals, usage per day (or hour) and model, requests per status and per API."""

    totals: Totals
    daily: list[DailyModelUsage]
    status: dict[str, int]  # every status, zero when none
    apis: list[ApiUsage]  # the APIs with requests, in UsageApi's order


_SUMMARY_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost", "first_token_count")


def report_sources(user: AbstractBaseUser | AnonymousUser, spec: ReportFilter, *, hourly: bool = False) -> Sources:
    """The parts ``spec``'s report reads (rollups, raw records) for ``user``. One query (where the rollups stand)."""
    filters = sources.user_filters(
        user,
        api_key_id=spec.api_key_id,
        model_name=spec.model_name,
        vendor_name=spec.vendor_name,
        status=spec.status,
        error_code=spec.error_code,
        generation_prefix=spec.generation_prefix,
        api=spec.api,
    )
    return sources.split(spec.start, spec.end, filters, rollups.covered_until(), by_hour=hourly)


def usage_summary(parts: Sources, *, hourly: bool = False) -> UsageSummary:
    """Totals, usage per day (or UTC hour) and model, and requests per status: one grouped query per part.

    The median time to first token is exact (one more query) over raw records alone, and read from the
    latency histogram where rollups take part (within the bucket of the exact value; one more query per part).
    """
    group = ("hour" if hourly else "day", "model_name", "status", "api")
    rows = sources.grouped(parts, group, _SUMMARY_SUMS)
    status = dict.fromkeys(UsageStatus.values, 0)
    by_model: dict[tuple[date, str], list[Any]] = {}
    by_api: dict[str, list[Any]] = {}
    for (bucket, model_name, state, api), sums in rows.items():
        status[state] = status.get(state, 0) + sums["requests"]
        seen = by_model.setdefault((bucket, model_name), [0, 0, 0, ZERO])
        through = by_api.setdefault(api, [0, 0, 0, ZERO])
        for i, name in enumerate(("requests", "prompt_tokens", "completion_tokens", "cost")):
            seen[i] += sums[name]
            through[i] += sums[name]
    overall = {name: sum(sums[name] for sums in rows.values()) for name in _SUMMARY_SUMS}
    if parts.rolled:
        # The histogram is summed apart, once per part: carried on every group's row it was most of the
        # rows' width, and of the time spent reading them.
        histogram = latency_bucket_fields("first_token_ms")
        counts = sources.summed(parts, histogram)
        median = sources.percentile([counts[name] for name in histogram], 0.5)
    else:
        median = _exact_median_first_token(parts.raw, overall["first_token_count"])
    totals = Totals(
        requests=overall["requests"],
        prompt_tokens=overall["prompt_tokens"],
        completion_tokens=overall["completion_tokens"],
        cost=Decimal(overall["cost"]).quantize(COST_PLACES),
        cancelled=status[UsageStatus.CANCELLED],
        errors=status[UsageStatus.ERROR],
        median_first_token_ms=median,
    )
    daily = [DailyModelUsage(day, model, *figures) for (day, model), figures in sorted(by_model.items())]
    order = {api: i for i, api in enumerate(UsageApi.values)}
    apis = [
        ApiUsage(api, *figures) for api, figures in sorted(by_api.items(), key=lambda a: order.get(a[0], len(order)))
    ]
    return UsageSummary(totals, daily, status, apis)


# CSV export: (column header, UsageRecord field path), in column order; one list so they cannot drift.
_CSV = (
    ("generation_id", "generation_id"),
    ("trace_id", "trace_id"),
    ("created_at", "created_at"),
    ("finished_at", "finished_at"),
    ("key_name", "api_key__name"),
    ("key_prefix", "api_key__prefix"),
    ("api", "api"),
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
    """The rows of the CSV export, newest first, as tuples in ``CSV_COLUMNS`` order and then the record's pk."""
    return records.order_by("-created_at", "-pk").values_list(*_CSV_FIELDS, "pk")


# Where created_at sits in a CSV row (the export pages on it and the pk).
CSV_CREATED_AT = _CSV_FIELDS.index("created_at")


def csv_rows_after(
    query: QuerySet[UsageRecord, tuple[Any, ...]], after: tuple[Any, ...] | None, limit: int
) -> list[tuple[Any, ...]]:
    """The next ``limit`` rows of ``csv_rows_query`` after the row ``after`` (from the start when None).

    Pages by (created_at, pk), each page one indexed query: a server-side cursor outside a
    transaction is WITH HOLD on PostgreSQL, which computes the whole result before the first row.
    """
    if after is not None:
        created_at, pk = after[CSV_CREATED_AT], after[-1]
        query = query.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk))
    return list(query[:limit])


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
