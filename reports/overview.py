"""Reads behind the overview page: a range against the one before it, top spenders, key budgets.

Every figure is aggregated in the database and each function is one query, so the page costs
a fixed number of queries whatever the number of records. Ranges are whole UTC days ending today.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import DecimalField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.models import UsageRecord, UsageStatus
from billing.periods import midnight, period_bounds
from billing.selectors import api_keys_with_period_spend
from reports import selectors, sources
from reports.selectors import COST_PLACES, ZERO

_MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=18, decimal_places=8)

# The range control's choices: value -> (label, days).
TOP = 10
# Keys drawn as their own series in the spend-per-key chart; the rest fold into OTHER_KEYS.
CHART_KEYS = 8
OTHER_KEYS = "other keys"


@dataclass(frozen=True, slots=True)
class Window:
    """The range shown, [start, end), and the previous period of the same length, [previous_start, start)."""

    first_day: date
    last_day: date

    @classmethod
    def ending(cls, today: date, days: int) -> Window:
        return cls(today - timedelta(days=days - 1), today)

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range((self.last_day - self.first_day).days + 1)]

    @property
    def start(self) -> datetime:
        return midnight(self.first_day)

    @property
    def end(self) -> datetime:
        return midnight(self.last_day + timedelta(days=1))

    @property
    def previous_start(self) -> datetime:
        return self.start - (self.end - self.start)


# Totals against the previous period


@dataclass(frozen=True, slots=True)
class Change:
    """One figure of the range and of the previous period; the change is None when there was nothing before."""

    current: Decimal | int
    previous: Decimal | int
    previous_empty: bool

    @property
    def difference(self) -> Decimal | int | None:
        return None if self.previous_empty else self.current - self.previous

    @property
    def percent(self) -> float | None:
        if self.previous_empty or not self.previous:
            return None
        return float((self.current - self.previous) / self.previous * 100)


@dataclass(frozen=True, slots=True)
class Comparison:
    spend: Change
    requests: Change
    tokens: Change


# The overview's one grouping: every figure of the page is summed from these rows. Keys are grouped by
# id alone and named by ``key_labels``: grouping by their name and prefix too (a join) made PostgreSQL
# sort the rows by every column instead of hashing them.
_GROUP = ("day", "api_key_id", "model_name", "vendor_name")
_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost")
Rows = dict[tuple[Any, ...], dict[str, Any]]


def overview_rows(user: AbstractBaseUser | AnonymousUser, window: Window, covered_until: datetime | None) -> Rows:
    """Requests, tokens and cost per day, key, model and vendor over ``window`` and the period before it.

    One grouped query per part (daily rollups, hourly rollups, raw records).
    """
    parts = sources.split(window.previous_start, window.end, sources.user_filters(user), covered_until)
    return sources.grouped(parts, _GROUP, _SUMS)


def key_labels(user: AbstractBaseUser | AnonymousUser) -> dict[int, tuple[str, str]]:
    """The name and prefix of every key ``user`` may see, by id. One query."""
    return {pk: (name, prefix) for pk, name, prefix in selectors.visible_keys(user).values_list("pk", "name", "prefix")}


def compare_periods(rows: Rows, window: Window) -> Comparison:
    """Spend, requests and tokens in ``window`` and in the period before it."""
    cost = {True: ZERO, False: ZERO}  # keyed by "in the window" (False: the period before)
    requests = {True: 0, False: 0}
    tokens = {True: 0, False: 0}
    for key, sums in rows.items():
        current = key[0] >= window.first_day
        cost[current] += sums["cost"]
        requests[current] += sums["requests"]
        tokens[current] += sums["prompt_tokens"] + sums["completion_tokens"]
    empty = requests[False] == 0
    return Comparison(
        spend=Change(cost[True].quantize(COST_PLACES), cost[False].quantize(COST_PLACES), empty),
        requests=Change(requests[True], requests[False], empty),
        tokens=Change(tokens[True], tokens[False], empty),
    )


# Top spenders with their daily spend


@dataclass(frozen=True, slots=True)
class Spender:
    """A key, model or vendor with its spend in the range and its spend per day (oldest first)."""

    label: str
    detail: str
    spend: Decimal
    daily: tuple[Decimal, ...]


def _daily_spend(rows: Rows, window: Window, field: str) -> dict[Any, dict[date, Decimal]]:
    """Spend per ``field`` value and UTC day in ``window``."""
    at = _GROUP.index(field)
    spend: dict[Any, dict[date, Decimal]] = defaultdict(dict)
    for key, sums in rows.items():
        day = key[0]
        if day >= window.first_day:
            days = spend[key[at]]
            days[day] = days.get(day, ZERO) + sums["cost"]
    return spend


def _ranked(spend: dict[Any, dict[date, Decimal]], window: Window, labels: dict[Any, tuple[str, str]]) -> list[Spender]:
    """``spend`` as Spenders labelled by ``labels`` (label, detail), the biggest first."""
    spenders = [
        Spender(
            label=labels[name][0],
            detail=labels[name][1],
            spend=sum(days.values(), ZERO),
            daily=tuple(days.get(day, ZERO) for day in window.days),
        )
        for name, days in spend.items()
    ]
    return sorted(spenders, key=lambda s: (-s.spend, s.label, s.detail))


def spend_by_key(rows: Rows, window: Window, labels: dict[int, tuple[str, str]]) -> list[Spender]:
    """Every key with usage in ``window``, most spent first; ``labels`` from ``key_labels``."""
    return _ranked(_daily_spend(rows, window, "api_key_id"), window, labels)


def _named(spend: dict[Any, dict[date, Decimal]]) -> dict[Any, tuple[str, str]]:
    return {name: (name or "(none)", "") for name in spend}


def spend_by_model(rows: Rows, window: Window) -> list[Spender]:
    spend = _daily_spend(rows, window, "model_name")
    return _ranked(spend, window, _named(spend))


def spend_by_vendor(rows: Rows, window: Window) -> list[Spender]:
    spend = _daily_spend(rows, window, "vendor_name")
    return _ranked(spend, window, _named(spend))


def fold_keys(spenders: list[Spender], shown: int = CHART_KEYS) -> list[Spender]:
    """The first ``shown`` spenders as they are, the rest summed into one OTHER_KEYS series."""
    if len(spenders) <= shown:
        return spenders
    rest = spenders[shown:]
    daily = tuple(sum(day, ZERO) for day in zip(*(s.daily for s in rest), strict=True))
    return [*spenders[:shown], Spender(OTHER_KEYS, f"{len(rest)} keys", sum(daily, ZERO), daily)]


# Trend lines


TREND_WIDTH = 96
TREND_HEIGHT = 28


def trend_points(values: tuple[Decimal, ...], width: int = TREND_WIDTH, height: int = TREND_HEIGHT) -> str:
    """The ``points`` of an SVG polyline of ``values`` across ``width`` x ``height``, highest at the top."""
    if not values:
        return ""
    top = max(values) or Decimal(1)
    step = width / (len(values) - 1) if len(values) > 1 else 0.0
    margin = 2  # keeps the stroke inside the box
    usable = height - 2 * margin
    return " ".join(
        f"{i * step:.1f},{margin + usable - float(value / top) * usable:.1f}" for i, value in enumerate(values)
    )


# Budgets


@dataclass(frozen=True, slots=True)
class Budget:
    key_id: int
    name: str
    prefix: str
    limit: Decimal | None
    limit_reset: str
    spent: Decimal
    held: Decimal
    resets_at: datetime | None

    @property
    def used(self) -> Decimal:
        return self.spent + self.held

    def _percent(self, amount: Decimal) -> float:
        if not self.limit:
            return 0.0
        return min(100.0, float(amount / self.limit * 100))

    @property
    def used_percent(self) -> float:
        return self._percent(self.used)

    @property
    def spent_percent(self) -> float:
        return self._percent(self.spent)

    @property
    def held_percent(self) -> float:
        return max(0.0, self.used_percent - self.spent_percent)

    @property
    def over(self) -> bool:
        return self.limit is not None and self.used >= self.limit


def key_budgets(user: AbstractBaseUser | AnonymousUser, now: datetime, covered_until: datetime | None) -> list[Budget]:
    """Every unrevoked key ``user`` may see with its spend this limit period and what it holds now. One query."""
    held = (
        UsageRecord.objects.filter(api_key=OuterRef("pk"), status=UsageStatus.IN_PROGRESS, reserved_until__gt=now)
        .order_by()
        .values("api_key")
        .annotate(total=Sum("reserved_cost"))
        .values("total")
    )
    keys = api_keys_with_period_spend(
        selectors.visible_keys(user).filter(revoked_at__isnull=True), now, covered_until
    ).annotate(held=Coalesce(Subquery(held, output_field=_MONEY), Value(ZERO), output_field=_MONEY))
    budgets = []
    for key in keys:
        _, next_start = period_bounds(key.limit_reset, now)
        budgets.append(
            Budget(
                key_id=key.pk,
                name=key.name,
                prefix=key.prefix,
                limit=key.credit_limit,
                limit_reset=key.get_limit_reset_display(),
                spent=Decimal(getattr(key, "period_spend", ZERO)).quantize(COST_PLACES),
                held=key.held.quantize(COST_PLACES),
                resets_at=midnight(next_start) if next_start is not None else None,
            )
        )
    return budgets
