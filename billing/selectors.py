"""Reads of the billing domain."""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as day_time
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Case, DecimalField, ExpressionWrapper, OuterRef, Q, QuerySet, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing import credit, keys
from billing.errors import KeyRefused
from billing.models import ApiKey, KeyUsageDay, LimitReset, UsageDay, UsageHour, UsageRecord
from billing.periods import day_of, midnight, month_start, period_bounds, week_start


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    revoked: bool
    expires_at: datetime | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent_streams: int | None
    # USD; None means no limit. Admission reads the locked row again, so a stale cache entry
    # only decides whether the prompt is counted before or inside the admission transaction.
    credit_limit: Decimal | None = None
    limit_reset: str = "never"


class KeyCache:
    """Recent key lookups, bounded: known keys and misses are two LRU tables of ``size`` entries.

    Kept apart so that a spray of unknown keys evicts only older misses, never a key in use,
    and a remembered miss spares the database a query per repeated unknown key. Read on the
    event loop and written from the database thread, hence the lock.
    """

    def __init__(self) -> None:
        # key hash -> (KeyInfo, or None for a miss; monotonic expiry)
        self._known: OrderedDict[str, tuple[KeyInfo | None, float]] = OrderedDict()
        self._misses: OrderedDict[str, tuple[KeyInfo | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> tuple[bool, KeyInfo | None]:
        now = time.monotonic()
        with self._lock:
            for table in (self._known, self._misses):
                entry = table.get(key_hash)
                if entry is None:
                    continue
                if entry[1] <= now:
                    if table is self._misses:
                        del table[key_hash]
                    return False, None  # an expired key stays until replaced: see ``last_known``
                table.move_to_end(key_hash)
                return True, entry[0]
        return False, None

    def put(self, key_hash: str, info: KeyInfo | None, seconds: float, size: int) -> None:
        table, other = (self._known, self._misses) if info is not None else (self._misses, self._known)
        with self._lock:
            other.pop(key_hash, None)
            table[key_hash] = (info, time.monotonic() + seconds)
            table.move_to_end(key_hash)
            while len(table) > size:
                table.popitem(last=False)

    def last_known(self, key_hash: str) -> KeyInfo | None:
        """The key as last loaded, expired or not (admission during a database outage)."""
        with self._lock:
            entry = self._known.get(key_hash)
        return None if entry is None else entry[0]

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._known.pop(key_hash, None)
            self._misses.pop(key_hash, None)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self._misses.clear()

    def sizes(self) -> tuple[int, int]:
        """How many known keys and misses are held."""
        return len(self._known), len(self._misses)


_cache = KeyCache()


def api_key_cache_forget(key_hash: str) -> None:
    _cache.forget(key_hash)


def _lookup(key_hash: str) -> KeyInfo | None:
    row = ApiKey.objects.filter(key_hash=key_hash).first()
    # The index found the row by hash; compare again in constant time before trusting it.
    if row is None or not hmac.compare_digest(row.key_hash, key_hash):
        return None
    return KeyInfo(
        id=row.pk,
        name=row.name,
        prefix=row.prefix,
        revoked=row.revoked_at is not None,
        expires_at=row.expires_at,
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        max_concurrent_streams=row.max_concurrent_streams,
        credit_limit=row.credit_limit,
        limit_reset=row.limit_reset,
    )


def api_key_cached(key_hash: str) -> tuple[bool, KeyInfo | None]:
    """Return (hit, info) from the in-process cache without touching the database (info None: a miss)."""
    return _cache.get(key_hash)


def api_key_last_known(key_hash: str) -> KeyInfo | None:
    """The key as this process last loaded it, however long ago (None: never, or evicted)."""
    return _cache.last_known(key_hash)


def api_key_load(key_hash: str) -> KeyInfo | None:
    info = _lookup(key_hash)
    # A key is created with a new random secret, so no miss can have been remembered for it:
    # remembering misses never delays a new key.
    seconds = settings.SIRAYA_KEY_CACHE_SECONDS if info is not None else settings.SIRAYA_KEY_CACHE_MISS_SECONDS
    if seconds > 0:
        _cache.put(key_hash, info, seconds, settings.SIRAYA_KEY_CACHE_SIZE)
    return info


def api_key_check(info: KeyInfo | None, now: datetime | None = None) -> KeyInfo:
    """Raise ``KeyRefused`` unless ``info`` is a usable key."""
    if info is None:
        raise KeyRefused("invalid")
    if info.revoked:
        raise KeyRefused("revoked")
    if info.expires_at is not None and info.expires_at <= (now or timezone.now()):
        raise KeyRefused("expired")
    return info


def authorization_hash(authorization: str) -> str:
    token = keys.bearer_token(authorization)
    if token is None:
        raise KeyRefused("missing")
    return keys.hash_key(token)


def usage_record_for_key(key_id: int, generation_id: str) -> UsageRecord | None:
    if "\x00" in generation_id:  # no id holds one, and PostgreSQL refuses it in a query
        return None
    return UsageRecord.objects.filter(api_key_id=key_id, generation_id=generation_id).first()


@dataclass(frozen=True, slots=True)
class UsageTotals:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal  # USD


@dataclass(frozen=True, slots=True)
class KeyOverview:
    name: str
    prefix: str
    credit_limit: Decimal | None
    limit_reset: str
    period_start: datetime | None
    period_end: datetime | None  # when the spend resets (exclusive)
    spend: Decimal  # USD, settled requests of the current period
    held: Decimal  # USD, worst case of the requests in flight
    remaining: Decimal | None  # USD a new request may still be held against; None: no limit
    requests_per_minute: int | None
    tokens_per_minute: int | None
    today: UsageTotals
    this_week: UsageTotals
    this_month: UsageTotals


def _totals_since(start: date | None) -> dict[str, Any]:
    where = Q() if start is None else Q(day__gte=start)
    return {
        "requests": Sum("requests", filter=where, default=0),
        "prompt_tokens": Sum("prompt_tokens", filter=where, default=0),
        "completion_tokens": Sum("completion_tokens", filter=where, default=0),
        "cost": Sum("cost", filter=where, default=Decimal("0")),
    }


def key_overview(key_id: int, now: datetime) -> KeyOverview:
    """Return what a key's owner asks first: spent, left, limits, and recent totals (three queries)."""
    row = ApiKey.objects.get(pk=key_id)
    start, end = period_bounds(row.limit_reset, now)
    starts = {"today": day_of(now), "week": week_start(now), "month": month_start(now), "period": start}
    sums: dict[str, Any] = {}
    for label, since in starts.items():
        sums.update({f"{label}_{name}": agg for name, agg in _totals_since(since).items()})
    figures = KeyUsageDay.objects.filter(api_key_id=key_id).aggregate(**sums)
    held = credit.held(key_id, now)
    spend = figures["period_cost"]
    remaining = None if row.credit_limit is None else max(row.credit_limit - spend - held, Decimal("0"))

    def totals(label: str) -> UsageTotals:
        return UsageTotals(
            *(figures[f"{label}_{name}"] for name in ("requests", "prompt_tokens", "completion_tokens", "cost"))
        )

    return KeyOverview(
        name=row.name,
        prefix=row.prefix,
        credit_limit=row.credit_limit,
        limit_reset=row.limit_reset,
        period_start=midnight(start) if start else None,
        period_end=midnight(end) if end else None,
        spend=spend,
        held=held,
        remaining=remaining,
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        today=totals("today"),
        this_week=totals("week"),
        this_month=totals("month"),
    )


_MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=18, decimal_places=8)


def period_starts(now: datetime) -> dict[str, datetime]:
    """Return where the current limit period began for each kind of ``limit_reset`` that has one."""
    resets = (LimitReset.DAILY, LimitReset.WEEKLY, LimitReset.MONTHLY)
    return {reset: midnight(start) for reset in resets if (start := period_bounds(reset, now)[0]) is not None}


def api_keys_with_period_spend(
    queryset: QuerySet[ApiKey], now: datetime, covered_until: datetime | None
) -> QuerySet[ApiKey]:
    """Annotate ``period_spend``: USD of the key's usage since its limit period began (all time for "never").

    In the same query as the list itself: per row, the daily rollups of the whole days the rollups
    cover (``covered_until``, from ``billing.rollups.covered_until``), the hourly ones of the rest they
    cover, and the raw records after. One set of subqueries per kind of period, each with its start
    as a literal: PostgreSQL runs only the matching one, and plans it knowing how much it reads (a
    start it cannot see made it scan every key's rollups by date).
    """
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    spends = [
        When(limit_reset=reset, then=_spend_since(start, covered_until)) for reset, start in period_starts(now).items()
    ]
    return queryset.annotate(
        period_spend=Case(*spends, default=_spend_since(epoch, covered_until), output_field=_MONEY)
    )


def _spend_since(start: datetime, covered_until: datetime | None) -> Any:
    """A key's spend from ``start`` (a midnight) on: rollups up to ``covered_until``, raw records after."""
    if covered_until is None or covered_until <= start:
        return _key_spend(UsageRecord.objects.filter(created_at__gte=start))
    covered_day = max(start, datetime.combine(covered_until.astimezone(UTC).date(), day_time.min, tzinfo=UTC))
    days = _key_spend(UsageDay.objects.filter(day__gte=start.date(), day__lt=covered_day.date()))
    hours = _key_spend(UsageHour.objects.filter(hour__gte=covered_day, hour__lt=covered_until))
    raw = _key_spend(UsageRecord.objects.filter(created_at__gte=covered_until))
    return ExpressionWrapper(days + hours + raw, output_field=_MONEY)


def _key_spend(part: QuerySet[Any]) -> Coalesce:
    spend = part.filter(api_key=OuterRef("pk")).order_by().values("api_key").annotate(total=Sum("cost")).values("total")
    return Coalesce(Subquery(spend, output_field=_MONEY), Value(Decimal(0)), output_field=_MONEY)
