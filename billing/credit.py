"""Credit limits: hold a request's worst-case cost at admission, settle it into daily totals.

The rule the data obeys: a key's spend in a period is the sum of the ``KeyUsageDay`` rows
of the period's days, which equals the sum of its settled usage records' cost by
``created_at`` (both change in the same transaction). Money in flight is the sum of the
``reserved_cost`` of its ``in_progress`` records whose hold has not expired.

Every writer of a key's holds or daily totals (admission, settlement, refusal) locks the
key's row first (``SELECT ... FOR NO KEY UPDATE`` on
PostgreSQL; on SQLite every write transaction starts with ``BEGIN IMMEDIATE``, which
serialises them), so the check "spend + held + this request <= limit" and the hold it
places happen with no other admission or settlement of the key in between.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from billing import hotsql, known_spend, outage
from billing.cost import Prices, TokenCounts, cost_compute
from billing.errors import CreditExceeded, CreditTerms
from billing.models import KeyUsageDay, UsageRecord, UsageStatus
from billing.periods import day_of, midnight, period_bounds
from billing.terms import ModelTerms
from lib import tokens

ZERO = Decimal("0")


@dataclass(frozen=True, slots=True)
class Ask:
    """What a request asks for, as far as its worst-case cost goes."""

    messages: list[dict[str, Any]]
    tools: list[Any] | None = None
    max_tokens: int | None = None
    # ``max_tokens`` came as the client's ``max_tokens`` alone, not ``max_completion_tokens``.
    max_tokens_only: bool = False
    # Already counted before admission (``billing.counting.ask_counted``), else counted here.
    prompt_tokens: int | None = None
    # The requested model's completion ceiling, resolved with the count (for the rate limiter).
    completion_ceiling: int | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    amount: Decimal  # USD
    until: datetime | None


NO_HOLD = Hold(ZERO, None)


def ask_tokens(terms: ModelTerms, ask: Ask) -> tuple[int, int]:
    """Return (prompt tokens counted locally, most completion tokens the request may produce).

    The prompt includes the estimates for its images, audio and files (``lib.tokens.part_tokens``).
    The completion ceiling is the request's ``max_tokens`` (or ``max_completion_tokens``),
    else the model's ``max_output_tokens``.
    """
    prompt = ask.prompt_tokens
    if prompt is None:
        prompt = tokens.count_messages(ask.messages, terms.encoding, ask.tools)
    return prompt, completion_ceiling(terms, ask)


def completion_ceiling(terms: ModelTerms, ask: Ask) -> int:
    """Return the most completion tokens ``ask`` may produce on ``terms``.

    The request's limit, else the model's ``max_output_tokens``. Where a deployment's vendor
    bounds only the answer by ``max_tokens`` (ModelArk), its reasoning may add up to the
    model's ceiling on top.
    """
    if not ask.max_tokens:
        return terms.max_output_tokens
    if ask.max_tokens_only and not terms.max_tokens_bounds_reasoning:
        return ask.max_tokens + terms.max_output_tokens
    return ask.max_tokens


def worst_case_cost(prices: Prices, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """Return the most a request can cost: every token at the dearer of its two prices."""
    dearest = Prices(
        input=max(prices.input, prices.cached_input),
        output=max(prices.output, prices.reasoning),
        cached_input=max(prices.input, prices.cached_input),
        reasoning=max(prices.output, prices.reasoning),
        request=prices.request,
    )
    return cost_compute(dearest, TokenCounts(prompt_tokens, completion_tokens))


def ask_worst_case(terms: ModelTerms, ask: Ask) -> Decimal:
    return worst_case_cost(terms.prices, *ask_tokens(terms, ask))


def key_lock(key_id: int) -> tuple[Decimal | None, str]:
    """Lock the key's row for the rest of the transaction; return its (credit_limit, limit_reset).

    ``FOR NO KEY UPDATE``: it serialises admissions and settlements of the key, yet does not
    block the foreign-key checks (``FOR KEY SHARE``, deferred to COMMIT by Django) of other
    transactions inserting rows that point at the key.
    """
    return hotsql.key_lock(key_id)


def spend_in_period(key_id: int, reset: str, now: datetime) -> Decimal:
    """Return the USD the key spent in the period ``now`` is in (settled requests only)."""
    usage_days_flush()
    start, end = period_bounds(reset, now)
    days = KeyUsageDay.objects.filter(api_key_id=key_id)
    if start is not None:
        days = days.filter(day__gte=start, day__lt=end)
    return days.aggregate(total=Sum("cost"))["total"] or ZERO


def held(key_id: int, now: datetime) -> Decimal:
    """Return the USD held by the key's requests in flight whose hold has not expired."""
    holds = UsageRecord.objects.filter(api_key_id=key_id, status=UsageStatus.IN_PROGRESS, reserved_until__gt=now)
    return holds.aggregate(total=Sum("reserved_cost"))["total"] or ZERO


def credit_refusal(limit: Decimal, reset: str, remaining: Decimal, worst: Decimal, now: datetime) -> CreditExceeded:
    _, end = period_bounds(reset, now)
    return CreditExceeded(CreditTerms(limit, reset, remaining, worst, midnight(end) if end else None))


def reserve(key_id: int, worst: Decimal | None, terms: ModelTerms, ask: Ask, now: datetime) -> Hold:
    """Inside the admission transaction: lock the key and hold ``worst`` USD, or raise ``CreditExceeded``.

    ``worst`` is counted before the transaction (counting a huge prompt takes milliseconds,
    and the lock should not wait for it); it is None when the key had no limit as far as
    the caller knew, and is counted here if the key has one after all.
    """
    limit, reset = key_lock(key_id)
    if limit is None:
        return NO_HOLD
    if worst is None:
        worst = ask_worst_case(terms, ask)
    noting = outage.admits_during_outage()  # the figure admission during an outage checks against
    since = known_spend.tick() if noting else 0
    remaining = limit - spend_in_period(key_id, reset, now) - held(key_id, now)
    if noting:
        known_spend.noted(key_id, limit - remaining + (worst if worst <= remaining else ZERO), since)
    if worst > remaining:
        raise credit_refusal(limit, reset, max(remaining, ZERO), worst, now)
    return Hold(worst, now + timedelta(seconds=settings.SIRAYA_RESERVATION_SECONDS))


def usage_day_add(key_id: int, created_at: datetime, prompt_tokens: int, completion_tokens: int, cost: Decimal) -> None:
    """Add one settled record to its key's total for the day it was created on."""
    day = day_of(created_at)
    days = _collected.days
    if days is None:
        # One upsert: creates the row or increments it in SQL (no lost update).
        hotsql.day_add(key_id, day, 1, prompt_tokens, completion_tokens, cost)
        return
    totals = days.get((key_id, day))
    if totals is None:
        days[key_id, day] = [1, prompt_tokens, completion_tokens, cost]
    else:
        totals[0] += 1
        totals[1] += prompt_tokens
        totals[2] += completion_tokens
        totals[3] += cost


class _Collected(threading.local):
    # (key id, day) -> [requests, prompt tokens, completion tokens, cost], while collecting.
    days: dict[tuple[int, date], list[Any]] | None = None


_collected = _Collected()


@contextlib.contextmanager
def usage_days_collected() -> Iterator[None]:
    """Within: ``usage_day_add`` adds its figures up per key and day; ``usage_days_flush`` writes them.

    For the group commit, whose settlements of one key on one day then cost one upsert. The
    caller flushes before its transaction commits; ``spend_in_period`` flushes before reading.
    """
    _collected.days = {}
    try:
        yield
    finally:
        _collected.days = None


def usage_days_flush() -> None:
    """Write the day totals collected so far (see ``usage_days_collected``)."""
    days = _collected.days
    if not days:
        return
    _collected.days = {}
    # In key order: concurrent batches of several processes lock the day rows in the same order.
    for (key_id, day), (requests, prompt, completion, cost) in sorted(days.items()):
        hotsql.day_add(key_id, day, requests, prompt, completion, cost)


def reservations_reconcile(now: datetime | None = None) -> int:
    """Release the holds of in-progress records whose hold expired; return how many.

    An expired hold already stops counting against its key's limit, so nothing waits for
    this; it makes the stored figures say so. The record itself stays ``in_progress`` until
    ``usage_record_settle`` settles it (e.g. as ``interrupted``), which bills it then.
    """
    return UsageRecord.objects.filter(
        status=UsageStatus.IN_PROGRESS, reserved_cost__gt=0, reserved_until__lte=now or timezone.now()
    ).update(reserved_cost=ZERO)
