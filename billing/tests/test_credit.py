"""Credit holds at admission and their settlement, whatever way a request ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from billing import credit
from billing.cost import Prices, TokenCounts, cost_compute
from billing.credit import Ask
from billing.errors import CreditExceeded
from billing.models import ApiKey, KeyUsageDay, UsageRecord, UsageStatus
from billing.selectors import api_key_load, key_overview
from billing.services import api_key_create, generation_id_new
from billing.settlement import Outcome
from billing.tests.admitting import admit as admit_request
from billing.tests.admitting import settle as settle_record
from lib import tokens
from routing.errors import UnknownModel, refusal_error
from routing.models import RouterModel
from routing.services import model_create, vendor_create

MESSAGES = [{"role": "user", "content": "Write a haiku about billing."}]
PROMPT = tokens.count_messages(MESSAGES, "cl100k_base")
# $1 / Mtok in, $2 / Mtok out, $0.001 per request.
PRICES = Prices(Decimal(1), Decimal(2), Decimal(1), Decimal(2), Decimal("0.001"))


@pytest.fixture
def model(db):
    vendor = vendor_create("acme", "openai", "http://127.0.0.1:1/v1", credentials={"api_key": "sk-x"})
    return model_create(
        "acme/m",
        deployments=[(vendor, "m", 0, 1)],
        input_price=PRICES.input,
        output_price=PRICES.output,
        request_price=PRICES.request,
        max_output_tokens=1000,
    )


def limited_key(limit: str | None, reset: str = "never"):
    api_key, _ = api_key_create("k", credit_limit=Decimal(limit) if limit else None, limit_reset=reset)
    return api_key, api_load(api_key)


def api_load(api_key: ApiKey):
    info = api_key_load(api_key.key_hash)
    assert info is not None
    return info


def admit(info, max_tokens: int | None = 100):
    return admit_request(info, "acme/m", True, generation_id_new(), Ask(MESSAGES, None, max_tokens))


def worst(max_tokens: int) -> Decimal:
    return cost_compute(PRICES, TokenCounts(PROMPT, max_tokens))


def settle(admission, status: str, **fields) -> Decimal:
    outcome = Outcome(status=status, messages=MESSAGES, **fields)
    return settle_record(admission.record_id, outcome)


def held(api_key: ApiKey) -> Decimal:
    return credit.held(api_key.pk, datetime.now(UTC))


def test_admission_holds_worst_case_of_prompt_and_max_tokens(model):
    api_key, info = limited_key("1")
    admission = admit(info, max_tokens=100)
    record = UsageRecord.objects.get(pk=admission.record_id)
    assert record.reserved_cost == worst(100) == Decimal(PROMPT + 200) / 1_000_000 + Decimal("0.001")
    assert record.reserved_until > record.created_at
    assert held(api_key) == worst(100)


def test_without_max_tokens_the_model_ceiling_is_held(model):
    _, info = limited_key("1")
    record = UsageRecord.objects.get(pk=admit(info, max_tokens=None).record_id)
    assert record.reserved_cost == worst(1000)


def test_key_without_limit_holds_nothing(model):
    _, info = limited_key(None)
    record = UsageRecord.objects.get(pk=admit(info).record_id)
    assert (record.reserved_cost, record.reserved_until) == (Decimal(0), None)


def test_completed_request_releases_hold_and_bills_vendor_usage(model):
    api_key, info = limited_key("1")
    admission = admit(info)
    cost = settle(admission, UsageStatus.COMPLETED, vendor_prompt_tokens=20, vendor_completion_tokens=30)
    assert cost == cost_compute(PRICES, TokenCounts(20, 30))
    record = UsageRecord.objects.get(pk=admission.record_id)
    assert (record.status, record.cost, record.reserved_cost, record.reserved_until) == (
        "completed",
        cost,
        Decimal(0),
        None,
    )
    assert held(api_key) == 0
    assert credit.spend_in_period(api_key.pk, "never", datetime.now(UTC)) == cost


def test_cancelled_request_bills_delivered_text_and_releases_hold(model):
    api_key, info = limited_key("1")
    admission = admit(info)
    cost = settle(admission, UsageStatus.CANCELLED, delivered_text=" the cat sat")
    assert cost == cost_compute(PRICES, TokenCounts(PROMPT, 3))
    assert held(api_key) == 0
    assert credit.spend_in_period(api_key.pk, "never", datetime.now(UTC)) == cost


def test_failed_request_without_completion_costs_nothing_and_releases_hold(model):
    api_key, info = limited_key("1")
    admission = admit(info)
    cost = settle(admission, UsageStatus.ERROR, http_status=502, error_code="upstream_error")
    assert cost == 0
    assert held(api_key) == 0
    day = KeyUsageDay.objects.get(api_key=api_key)
    assert (day.requests, day.cost) == (1, Decimal(0))


def test_settling_twice_bills_once(model):
    api_key, info = limited_key("1")
    admission = admit(info)
    first = settle(admission, UsageStatus.COMPLETED, vendor_prompt_tokens=20, vendor_completion_tokens=30)
    again = settle(admission, UsageStatus.COMPLETED, vendor_prompt_tokens=99, vendor_completion_tokens=99)
    assert first == again
    assert KeyUsageDay.objects.get(api_key=api_key).cost == first
    assert KeyUsageDay.objects.get(api_key=api_key).requests == 1


def test_refused_request_gets_402_with_remaining_credit_and_one_error_record(model):
    api_key, info = limited_key("0.0015")  # room for one hold of about $0.0012
    admit(info)
    generation_id = generation_id_new()
    with pytest.raises(CreditExceeded) as refused:
        admit_request(info, "acme/m", False, generation_id, Ask(MESSAGES, None, 100))
    error = refusal_error(refused.value)
    left = Decimal("0.0015") - worst(100)
    assert (error.status, error.code, error.type) == (402, "credit_limit_exceeded", "insufficient_quota")
    assert f"${left.normalize()} of this key's $0.0015 limit remains" in error.message
    assert f"may cost up to ${worst(100).normalize()}" in error.message
    record = UsageRecord.objects.get(generation_id=generation_id)
    assert (record.status, record.http_status, record.error_code, record.reserved_cost) == (
        "error",
        402,
        "credit_limit_exceeded",
        Decimal(0),
    )
    assert UsageRecord.objects.filter(api_key=api_key).count() == 2


def test_limit_set_after_the_key_was_cached_holds_and_refuses(model):
    """The key cache says "no limit"; admission still finds the limit the database has now."""
    api_key, info = limited_key(None)
    ApiKey.objects.filter(pk=api_key.pk).update(credit_limit=Decimal("0.0015"))
    first = admit(info)
    assert UsageRecord.objects.get(pk=first.record_id).reserved_cost == worst(100)
    with pytest.raises(CreditExceeded):
        admit(info)
    assert UsageRecord.objects.filter(api_key=api_key).count() == 2


def test_released_hold_makes_room_again(model):
    _, info = limited_key("0.0015")
    first = admit(info)
    with pytest.raises(CreditExceeded):
        admit(info)
    settle(first, UsageStatus.ERROR, http_status=502)  # cost 0: the whole limit is free again
    admit(info)


def test_spend_counts_against_the_limit(model):
    limit = Decimal("0.0026")
    _, info = limited_key(str(limit))
    spent = settle(admit(info), UsageStatus.COMPLETED, vendor_prompt_tokens=100, vendor_completion_tokens=100)
    assert spent == Decimal("0.0013")
    admit(info)  # $0.0013 left covers one worst case of about $0.0012
    with pytest.raises(CreditExceeded) as refused:
        admit(info)
    left = limit - spent - worst(100)
    assert f"${left.normalize()} of this key's $0.0026 limit remains" in refused.value.message


def test_killed_request_hold_expires_and_stops_counting(model, settings):
    """A process killed mid-request leaves its record in_progress: its hold must not block the key forever."""
    settings.SIRAYA_RESERVATION_SECONDS = 60
    api_key, info = limited_key("0.0015")
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        killed = admit(info)  # its process "dies": nobody settles it
        with pytest.raises(CreditExceeded):
            admit(info)
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        assert held(api_key) == 0
        later = admit(info)  # admitted although the dead request was never settled
        assert credit.reservations_reconcile() == 1
    record = UsageRecord.objects.get(pk=killed.record_id)
    assert (record.status, record.reserved_cost) == ("in_progress", Decimal(0))
    # The reliability sweep then settles it as interrupted through the same path.
    cost = settle(killed, UsageStatus.INTERRUPTED, delivered_text=" the cat")
    assert cost == cost_compute(PRICES, TokenCounts(PROMPT, 2))
    record.refresh_from_db()
    assert (record.status, record.cost) == ("interrupted", cost)
    assert credit.spend_in_period(api_key.pk, "never", datetime.now(UTC)) == cost
    assert UsageRecord.objects.get(pk=later.record_id).reserved_cost == worst(100)


def test_reconcile_leaves_live_holds_alone(model):
    api_key, info = limited_key("1")
    admit(info)
    assert credit.reservations_reconcile() == 0
    assert held(api_key) == worst(100)


def test_price_change_applies_to_requests_that_start_after_it(model):
    _, info = limited_key(None)
    before = admit(info)
    RouterModel.objects.filter(pk=model.pk).update(input_price=Decimal(10), output_price=Decimal(20))
    after = admit(info)
    usage = {"vendor_prompt_tokens": 1000, "vendor_completion_tokens": 1000}
    old_cost = settle(before, UsageStatus.COMPLETED, **usage)  # settled after the change
    new_cost = settle(after, UsageStatus.COMPLETED, **usage)
    assert old_cost == Decimal("0.001") + Decimal("0.003")
    assert new_cost == Decimal("0.001") + Decimal("0.030")
    assert UsageRecord.objects.get(pk=before.record_id).input_price == Decimal(1)
    assert UsageRecord.objects.get(pk=after.record_id).input_price == Decimal(10)


def test_daily_totals_equal_the_sum_of_usage_records(model):
    """The per-day counters are a cache of the records; they must agree to the last digit."""
    api_key, info = limited_key("100", "monthly")
    start = datetime(2026, 3, 31, 23, 59, 58, tzinfo=UTC)
    for i in range(12):
        with time_machine.travel(start + timedelta(minutes=10 * i), tick=False):
            admission = admit(info)
            status = [UsageStatus.COMPLETED, UsageStatus.CANCELLED, UsageStatus.ERROR][i % 3]
            settle(admission, status, vendor_prompt_tokens=17 + i, vendor_completion_tokens=i, delivered_text=" a" * i)
    with pytest.raises(UnknownModel):
        admit_request(info, "no/such-model", False, generation_id_new(), Ask(MESSAGES))
    records = (
        UsageRecord.objects.filter(api_key=api_key)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("id"), p=Sum("prompt_tokens"), c=Sum("completion_tokens"), cost=Sum("cost"))
        .order_by("day")
    )
    days = KeyUsageDay.objects.filter(api_key=api_key).order_by("day")
    assert [(r["day"], r["n"], r["p"], r["c"], r["cost"]) for r in records] == [
        (d.day, d.requests, d.prompt_tokens, d.completion_tokens, d.cost) for d in days
    ]
    assert len(days) >= 2  # the records straddle midnight


def test_overview_reports_spend_held_and_remaining(model):
    api_key, info = limited_key("1", "daily")
    done = admit(info)
    cost = settle(done, UsageStatus.COMPLETED, vendor_prompt_tokens=100, vendor_completion_tokens=50)
    admit(info)  # in flight
    overview = key_overview(api_key.pk, datetime.now(UTC))
    assert (overview.spend, overview.held) == (cost, worst(100))
    assert overview.remaining == Decimal(1) - cost - worst(100)
    assert (overview.today.requests, overview.today.prompt_tokens, overview.today.cost) == (1, 100, cost)


def test_key_endpoint_query_count(model, client, django_assert_num_queries):
    _, plaintext = api_key_create("k", credit_limit=Decimal("1"), limit_reset="weekly")
    # Key lookup, key row, daily totals, holds.
    with django_assert_num_queries(4):
        response = client.get("/v1/key", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 200
    assert response.json()["data"]["remaining"] == "1.00000000"


def settle_answered(admission, deployment) -> None:
    """Settle as completed by ``deployment``, naming it as the relay does (routing.relay.request.Ending.outcome)."""
    settle(
        admission,
        UsageStatus.COMPLETED,
        vendor_prompt_tokens=PROMPT,
        vendor_completion_tokens=3,
        deployment_id=deployment.pk,
        vendor_id=deployment.vendor_id,
        vendor_name=deployment.vendor.name,
        upstream_model=deployment.upstream_model,
    )


def answering(admission) -> tuple:
    record = UsageRecord.objects.get(pk=admission.record_id)
    return record.deployment_id, record.vendor_id, record.vendor_name, record.upstream_model


@pytest.mark.parametrize("limit", [None, "10"])
def test_single_deployment_record_names_it_from_admission_to_settlement(model, limit):
    deployment = model.deployments.get()
    named = (deployment.pk, deployment.vendor_id, "acme", "m")
    _, info = limited_key(limit)
    admission = admit(info)
    assert answering(admission) == named  # in progress: the only deployment it can go to
    settle_answered(admission, deployment)
    record = UsageRecord.objects.get(pk=admission.record_id)
    assert (record.status, record.completion_tokens) == (UsageStatus.COMPLETED, 3)
    assert answering(admission) == named


def test_request_that_never_reached_the_deployment_settles_without_it(model):
    _, info = limited_key(None)
    admission = admit(info)
    refused = Outcome(status=UsageStatus.ERROR, http_status=429, error_code="too_many_streams", messages=MESSAGES)
    settle_record(admission.record_id, refused)
    assert answering(admission) == (None, None, "", "")
    assert UsageRecord.objects.get(pk=admission.record_id).status == UsageStatus.ERROR


def test_record_of_a_model_with_two_deployments_names_the_one_that_answered(model):
    second = vendor_create("bolt", "openai", "http://127.0.0.1:2/v1", credentials={"api_key": "sk-y"})
    model.deployments.create(vendor=second, upstream_model="m2", priority=1, weight=1)  # clears the route cache
    _, info = limited_key(None)
    admission = admit(info)
    assert answering(admission) == (None, None, "", "")  # not known until one answers
    deployment = model.deployments.get(vendor=second)
    settle_answered(admission, deployment)
    assert answering(admission) == (deployment.pk, second.pk, "bolt", "m2")


def test_settlement_writes_the_error_code_only_when_there_is_one(model, monkeypatch):
    """A completed request leaves the empty error code admission wrote out of its UPDATE (so
    the ``usage_error_created`` index entry is not rewritten); a failed one writes its code."""
    from billing import hotsql

    updated: list[tuple[str, ...]] = []
    record_update = hotsql.record_update

    def spy(record_id, status, fields, *rest):
        updated.append(tuple(fields))
        return record_update(record_id, status, fields, *rest)

    monkeypatch.setattr(hotsql, "record_update", spy)
    _, info = limited_key(None)
    completed, failed = admit(info), admit(info)
    settle(completed, UsageStatus.COMPLETED, vendor_prompt_tokens=PROMPT, vendor_completion_tokens=3)
    settle(failed, UsageStatus.ERROR, http_status=502, error_code="vendor_error")
    assert "error_code" not in updated[0] and "status" in updated[0]
    assert "error_code" in updated[1]
    records = {r.pk: r for r in UsageRecord.objects.filter(pk__in=[completed.record_id, failed.record_id])}
    assert (records[completed.record_id].status, records[completed.record_id].error_code) == ("completed", "")
    assert (records[failed.record_id].status, records[failed.record_id].error_code) == ("error", "vendor_error")
