"""Reads behind the performance report: latency percentiles, throughput, errors and fallbacks per model and deployment.

Every figure is computed in the database with a fixed number of queries, whatever the number of records:
PostgreSQL computes the percentiles with ``percentile_cont`` inside each grouped aggregate (3 queries);
SQLite picks the rows around each percentile with window functions, one query per grouping (5 queries).

Definitions (the page states them too):

- percentiles are ``percentile_cont``'s: sort the n values, take position p·(n-1) and interpolate
  linearly between the values either side (Python's ``statistics.quantiles(method="inclusive")``);
  over the records that have the figure (time to first token only exists once a token arrived);
- output tokens per second: the completion tokens of completed streamed requests divided by their
  time from first token to the end, both summed over those requests (a token-weighted rate);
- a request fell back when its attempts list holds more than one attempt: the first deployment
  tried did not answer (the answering deployment, if any, is the last one in the list).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Count, ExpressionWrapper, F, IntegerField, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from billing.models import LATENCY_BOUNDS_MS, UsageRecord, UsageStatus, latency_bucket_fields
from billing.rollups import THROUGHPUT, JSONArrayLength
from reports import sources
from reports.selectors import PercentileCont
from reports.sources import Sources
from routing.health import RedisCooldowns, cooldowns

PERCENTILES = (("p50", 0.5), ("p95", 0.95))
METRICS = ("first_token_ms", "duration_ms")
# Error codes listed per row; the rest are summed into "other codes".
TOP_ERROR_CODES = 3

MODEL_GROUP = ("model_name",)
DEPLOYMENT_GROUP = ("deployment_id", "vendor_name", "upstream_model")


_THROUGHPUT = THROUGHPUT


@dataclass
class PerformanceRow:
    """One model, or one deployment (vendor + upstream model), over the report's range."""

    key: tuple[Any, ...]
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    stream_tokens: int = 0
    stream_ms: int = 0
    percentiles: dict[str, float | None] = field(default_factory=dict)  # "first_token_ms_p50" -> ms
    error_codes: dict[str, int] = field(default_factory=dict)
    # Deployments only: True / False, or None when the cooldown store could not be read.
    cooling: bool | None = None

    @property
    def model_name(self) -> str:
        return str(self.key[0])

    @property
    def deployment_id(self) -> int | None:
        return self.key[0] if len(self.key) == 3 else None

    @property
    def vendor_name(self) -> str:
        return str(self.key[1])

    @property
    def upstream_model(self) -> str:
        return str(self.key[2])

    @property
    def error_percent(self) -> float:
        return 100 * self.errors / self.requests if self.requests else 0.0

    @property
    def fallback_percent(self) -> float:
        return 100 * self.fallbacks / self.requests if self.requests else 0.0

    @property
    def tokens_per_second(self) -> float | None:
        return self.stream_tokens * 1000 / self.stream_ms if self.stream_ms > 0 else None

    @property
    def ttft_p50(self) -> float | None:
        return self.percentiles.get("first_token_ms_p50")

    @property
    def ttft_p95(self) -> float | None:
        return self.percentiles.get("first_token_ms_p95")

    @property
    def duration_p50(self) -> float | None:
        return self.percentiles.get("duration_ms_p50")

    @property
    def duration_p95(self) -> float | None:
        return self.percentiles.get("duration_ms_p95")

    @property
    def top_error_codes(self) -> list[tuple[str, int]]:
        ranked = sorted(self.error_codes.items(), key=lambda item: (-item[1], item[0]))
        shown = ranked[:TOP_ERROR_CODES]
        rest = sum(n for _, n in ranked[TOP_ERROR_CODES:])
        return [*shown, ("other codes", rest)] if rest else shown


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    models: list[PerformanceRow]
    deployments: list[PerformanceRow]


def _grouped(
    records: QuerySet[UsageRecord], group: tuple[str, ...], postgres: bool
) -> dict[tuple[Any, ...], PerformanceRow]:
    """Counts, sums (and on PostgreSQL the percentiles) per group. One query."""
    stream_ms = ExpressionWrapper(F("duration_ms") - F("first_token_ms"), output_field=IntegerField())
    aggregates: dict[str, Any] = {
        "n": Count("pk"),
        "errors": Count("pk", filter=Q(status=UsageStatus.ERROR)),
        "fallbacks": Count("pk", filter=Q(attempt_count__gt=1)),
        "stream_tokens": Coalesce(Sum("completion_tokens", filter=_THROUGHPUT), 0),
        "stream_ms": Coalesce(Sum(stream_ms, filter=_THROUGHPUT), 0),
    }
    if postgres:
        for metric in METRICS:
            for name, p in PERCENTILES:
                aggregates[f"{metric}_{name}"] = PercentileCont(metric, p)
    rows = (
        records.order_by()
        .annotate(attempt_count=JSONArrayLength("attempts"))
        .values(*group)
        .annotate(**aggregates)
        .order_by(*group)
    )
    found: dict[tuple[Any, ...], PerformanceRow] = {}
    for r in rows:
        key = tuple(r[g] for g in group)
        found[key] = PerformanceRow(
            key=key,
            requests=r["n"],
            errors=r["errors"],
            fallbacks=r["fallbacks"],
            stream_tokens=r["stream_tokens"],
            stream_ms=r["stream_ms"],
            percentiles={f"{m}_{name}": r[f"{m}_{name}"] for m in METRICS for name, _ in PERCENTILES}
            if postgres
            else {},
        )
    return found


def _window_percentiles(
    records: QuerySet[UsageRecord], group: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, float | None]]:
    """Percentiles per group on a database without ``percentile_cont``: one query with window functions.

    Each metric's non-null values are numbered within their group (ROW_NUMBER) and counted (COUNT);
    only the rows next to each percentile's position p·(n-1) come back, and the value is interpolated here.
    """
    selects, params = [], []
    columns = ", ".join(f'"{g}"' for g in group)
    for metric in METRICS:
        inner, inner_params = (
            records.order_by().filter(**{f"{metric}__isnull": False}).values(*group, metric).query.sql_with_params()
        )
        near = " OR ".join(f"(rn - 1 BETWEEN {p!r} * (n - 1) - 1 AND {p!r} * (n - 1) + 1)" for _, p in PERCENTILES)
        selects.append(
            f"SELECT {columns}, %s AS metric, rn, n, value FROM ("
            f'SELECT {columns}, "{metric}" AS value, '
            f'ROW_NUMBER() OVER (PARTITION BY {columns} ORDER BY "{metric}") AS rn, '
            f"COUNT(*) OVER (PARTITION BY {columns}) AS n FROM ({inner}) numbered_source"
            f") numbered WHERE {near}"
        )
        params.extend([metric, *inner_params])
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(selects), params)
        rows = cursor.fetchall()
    values: dict[tuple[Any, ...], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    counts: dict[tuple[Any, tuple[Any, ...]], int] = {}
    width = len(group)
    for row in rows:
        key, (metric, rn, n, value) = tuple(row[:width]), row[width:]
        values[key][metric][rn - 1] = float(value)
        counts[(metric, key)] = n
    result: dict[tuple[Any, ...], dict[str, float | None]] = {}
    for key, by_metric in values.items():
        result[key] = {}
        for metric, at in by_metric.items():
            n = counts[(metric, key)]
            for name, p in PERCENTILES:
                result[key][f"{metric}_{name}"] = interpolate(at, n, p)
    return result


def interpolate(at: dict[int, float], n: int, p: float) -> float:
    """percentile_cont's value at ``p`` of ``n`` sorted values, ``at`` holding (at least) the two either side."""
    position = p * (n - 1)
    low = math.floor(position)
    fraction = position - low
    if fraction == 0 or low + 1 >= n:
        return at[low]
    return at[low] + (at[low + 1] - at[low]) * fraction


def _error_codes(records: QuerySet[UsageRecord]) -> list[dict[str, Any]]:
    """Errors per model, deployment and error code. One query."""
    return list(
        records.order_by()
        .filter(status=UsageStatus.ERROR)
        .values(*MODEL_GROUP, *DEPLOYMENT_GROUP, "error_code")
        .annotate(n=Count("pk"))
    )


def performance_report_of(parts: Sources) -> PerformanceReport:
    """Per model and per deployment figures; exact over raw records alone, from the rollups where they take part.

    With rollups: one grouped query per part, the percentiles read from the latency histograms (within
    the bucket of the exact value). Raw records alone: ``performance_report``.
    """
    if not parts.rolled:
        return performance_report(parts.raw)
    rows = sources.grouped(parts, _ROLLED_GROUP, _ROLLED_SUMS)
    tables: dict[tuple[str, ...], dict[tuple[Any, ...], PerformanceRow]] = {MODEL_GROUP: {}, DEPLOYMENT_GROUP: {}}
    histograms: dict[tuple[Any, ...], dict[str, list[int]]] = {}
    for key, sums in rows.items():
        found = dict(zip(_ROLLED_GROUP, key, strict=True))
        for group, table in tables.items():
            group_key = tuple(found[g] for g in group)
            row = table.setdefault(group_key, PerformanceRow(key=group_key))
            _add(row, found, sums)
            into = histograms.setdefault((group, *group_key), {m: [0] * len(LATENCY_BOUNDS_MS) for m in METRICS})
            for metric, names in _BUCKETS.items():
                buckets = into[metric]
                for i, name in enumerate(names):
                    buckets[i] += sums[name]
    for group, table in tables.items():
        for group_key, row in table.items():
            counts = histograms[(group, *group_key)]
            row.percentiles = {
                f"{m}_{name}": sources.percentile(counts[m], p) for m in METRICS for name, p in PERCENTILES
            }
    return _sorted_report(tables)


_ROLLED_GROUP = (*MODEL_GROUP, *DEPLOYMENT_GROUP, "status", "error_code")
_BUCKETS = {metric: latency_bucket_fields(metric) for metric in METRICS}
_ROLLED_SUMS = (
    "requests",
    "fallbacks",
    "stream_tokens",
    "stream_ms",
    *(name for metric in METRICS for name in latency_bucket_fields(metric)),
)


def _add(row: PerformanceRow, found: dict[str, Any], sums: dict[str, Any]) -> None:
    """Add one (model, deployment, status, error code) row's sums to a model's or a deployment's row."""
    row.requests += sums["requests"]
    row.fallbacks += sums["fallbacks"]
    row.stream_tokens += sums["stream_tokens"]
    row.stream_ms += sums["stream_ms"]
    if found["status"] == UsageStatus.ERROR:
        row.errors += sums["requests"]
        code = found["error_code"] or "(no code)"
        row.error_codes[code] = row.error_codes.get(code, 0) + sums["requests"]


def _sorted_report(tables: dict[tuple[str, ...], dict[tuple[Any, ...], PerformanceRow]]) -> PerformanceReport:
    models = sorted(tables[MODEL_GROUP].values(), key=lambda r: (-r.requests, r.model_name))
    deployments = sorted(
        tables[DEPLOYMENT_GROUP].values(),
        key=lambda r: (r.deployment_id is None, -r.requests, r.vendor_name, r.upstream_model),
    )
    return PerformanceReport(models=models, deployments=deployments)


def performance_report(records: QuerySet[UsageRecord]) -> PerformanceReport:
    """Per model and per deployment figures of ``records``; 3 queries on PostgreSQL, 5 on SQLite."""
    postgres = connection.vendor == "postgresql"
    tables: dict[tuple[str, ...], dict[tuple[Any, ...], PerformanceRow]] = {
        group: _grouped(records, group, postgres) for group in (MODEL_GROUP, DEPLOYMENT_GROUP)
    }
    if not postgres:
        for group, table in tables.items():
            for key, found in _window_percentiles(records, group).items():
                table[key].percentiles = found
    for row in _error_codes(records):
        code = row["error_code"] or "(no code)"
        for group, table in tables.items():
            entry = table[tuple(row[g] for g in group)]
            entry.error_codes[code] = entry.error_codes.get(code, 0) + row["n"]
    return _sorted_report(tables)


async def cooling_now(deployment_ids: Collection[int]) -> set[int] | None:
    """The deployments among ``deployment_ids`` in cooldown now; None when the shared store is unreachable.

    Routing fails open (an unreachable Redis means nothing is skipped), so the store's answer then
    would be "none cooling": the report says "unknown" instead of claiming that.
    """
    store = cooldowns()
    if isinstance(store, RedisCooldowns):
        return await store.cooling_known(deployment_ids)
    return await store.cooling(deployment_ids)


def mark_cooling(rows: Iterable[PerformanceRow], cooling: set[int] | None) -> None:
    for row in rows:
        if row.deployment_id is not None:
            row.cooling = None if cooling is None else row.deployment_id in cooling
