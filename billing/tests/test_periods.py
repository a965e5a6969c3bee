"""Limit periods reset at 00:00 UTC; weeks start on Monday; months end when they end."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import time_machine

from billing import credit
from billing.credit import Ask
from billing.models import UsageStatus
from billing.periods import period_bounds
from billing.selectors import api_key_load
from billing.services import api_key_create, generation_id_new
from billing.settlement import Outcome
from billing.tests.admitting import admit as admit_request
from billing.tests.admitting import settle as settle_record
from billing.tests.test_credit import model  # noqa: F401  (fixture)

T = datetime


@pytest.mark.parametrize(
    ("reset", "moment", "bounds"),
    [
        ("daily", T(2026, 5, 6, 0, 0, 0, tzinfo=UTC), (date(2026, 5, 6), date(2026, 5, 7))),
        ("daily", T(2026, 5, 6, 23, 59, 59, 999999, tzinfo=UTC), (date(2026, 5, 6), date(2026, 5, 7))),
        # 01:30 in UTC+02:00 is still the previous day in UTC.
        ("daily", T(2026, 5, 7, 1, 30, tzinfo=timezone(timedelta(hours=2))), (date(2026, 5, 6), date(2026, 5, 7))),
        ("weekly", T(2026, 5, 4, 0, 0, tzinfo=UTC), (date(2026, 5, 4), date(2026, 5, 11))),  # a Monday
        ("weekly", T(2026, 5, 10, 23, 59, 59, tzinfo=UTC), (date(2026, 5, 4), date(2026, 5, 11))),  # Sunday
        ("weekly", T(2026, 1, 1, 12, tzinfo=UTC), (date(2025, 12, 29), date(2026, 1, 5))),  # across a year
        ("monthly", T(2026, 2, 28, 23, 59, 59, tzinfo=UTC), (date(2026, 2, 1), date(2026, 3, 1))),
        ("monthly", T(2028, 2, 29, 12, tzinfo=UTC), (date(2028, 2, 1), date(2028, 3, 1))),  # leap year
        ("monthly", T(2026, 12, 31, 23, 59, tzinfo=UTC), (date(2026, 12, 1), date(2027, 1, 1))),
        ("monthly", T(2027, 1, 1, 0, 0, tzinfo=UTC), (date(2027, 1, 1), date(2027, 2, 1))),
        ("never", T(2026, 5, 6, tzinfo=UTC), (None, None)),
    ],
)
def test_period_bounds(reset, moment, bounds):
    assert period_bounds(reset, moment) == bounds


def spend_one(info, prompt: int) -> Decimal:
    admission = admit_request(info, "acme/m", False, generation_id_new(), Ask([{"role": "user", "content": "x"}]))
    outcome = Outcome(status=UsageStatus.COMPLETED, vendor_prompt_tokens=prompt, vendor_completion_tokens=0)
    return settle_record(admission.record_id, outcome)


@pytest.mark.parametrize(
    ("reset", "before", "after"),
    [
        ("daily", T(2026, 5, 6, 23, 59, 59, tzinfo=UTC), T(2026, 5, 7, 0, 0, 0, tzinfo=UTC)),
        ("weekly", T(2026, 5, 10, 23, 59, 59, tzinfo=UTC), T(2026, 5, 11, 0, 0, 0, tzinfo=UTC)),  # Sun -> Mon
        ("monthly", T(2026, 4, 30, 23, 59, 59, tzinfo=UTC), T(2026, 5, 1, 0, 0, 0, tzinfo=UTC)),
    ],
)
def test_spend_resets_at_the_period_boundary(model, reset, before, after):  # noqa: F811
    api_key, _ = api_key_create("k", credit_limit=Decimal("0.01"), limit_reset=reset)
    info = api_key_load(api_key.key_hash)
    with time_machine.travel(before, tick=False):
        # $0.001 request price + prompt at $1/Mtok: spend most of the limit just before the boundary.
        first = spend_one(info, 8000)
        assert credit.spend_in_period(api_key.pk, reset, before) == first == Decimal("0.009")
        with pytest.raises(Exception, match="Credit limit reached"):
            spend_one(info, 10)
    with time_machine.travel(after, tick=False):
        assert credit.spend_in_period(api_key.pk, reset, after) == 0
        second = spend_one(info, 10)  # a new period: the limit is whole again
        assert credit.spend_in_period(api_key.pk, reset, after) == second
    # Within the same period (one second before the end) both periods still read right.
    assert credit.spend_in_period(api_key.pk, reset, before) == first
    never_spent = credit.spend_in_period(api_key.pk, "never", after)
    assert never_spent == first + second


def test_request_settled_after_midnight_counts_in_the_period_it_started(model):  # noqa: F811
    api_key, _ = api_key_create("k", credit_limit=Decimal("1"), limit_reset="daily")
    info = api_key_load(api_key.key_hash)
    before = T(2026, 5, 6, 23, 59, 59, tzinfo=UTC)
    with time_machine.travel(before, tick=False):
        admission = admit_request(info, "acme/m", False, generation_id_new(), Ask([{"role": "user", "content": "x"}]))
    with time_machine.travel(before + timedelta(seconds=2), tick=False):
        outcome = Outcome(status=UsageStatus.COMPLETED, vendor_prompt_tokens=1000, vendor_completion_tokens=0)
        cost = settle_record(admission.record_id, outcome)
        assert credit.spend_in_period(api_key.pk, "daily", before + timedelta(seconds=2)) == 0
    assert credit.spend_in_period(api_key.pk, "daily", before) == cost
