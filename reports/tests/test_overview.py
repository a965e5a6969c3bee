"""The overview page: the range against the period before it, top spenders, spend per key, key budgets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import UsageStatus
from billing.services import api_key_create
from reports import overview
from reports.tests.conftest import NOW, People, record

URL = "/usage/overview/"


def _get(client, user, **params):
    client.force_login(user)
    return client.get(reverse("reports:overview"), params)


def test_url_and_login(client, people: People):
    assert reverse("reports:overview") == URL
    response = client.get(URL)
    assert response.status_code == 302 and "login" in response["Location"]


def test_totals_against_the_previous_period_of_the_same_length(client, people: People, frozen_now):
    key = people.owner_key
    # This week (2025-03-08 .. 03-14): 3 requests, $6, 600 tokens; the week before: 2 requests, $4, 200 tokens.
    for hours in (1, 30, 140):
        record(key, NOW - timedelta(hours=hours), cost=Decimal("2"), prompt_tokens=150, completion_tokens=50)
    for days in (8, 13):
        record(key, NOW - timedelta(days=days), cost=Decimal("2"), prompt_tokens=80, completion_tokens=20)
    record(key, NOW - timedelta(days=15), cost=Decimal("100"))  # before both periods

    response = _get(client, people.staff)

    assert response.status_code == 200
    assert response.context["window"].first_day.isoformat() == "2025-03-08"
    comparison = dict((name, change) for name, _, change in response.context["comparisons"])
    assert (comparison["spend"].current, comparison["spend"].previous) == (Decimal("6"), Decimal("4"))
    assert comparison["spend"].difference == Decimal("2") and comparison["spend"].percent == 50.0
    assert (comparison["requests"].current, comparison["requests"].previous) == (3, 2)
    assert (comparison["tokens"].current, comparison["tokens"].previous) == (600, 200)
    assert comparison["tokens"].percent == 200.0
    page = response.content.decode()
    spend_box = page.split('data-compare="spend"')[1].split("</div>")[0]
    assert (
        "$6.00" in spend_box
        and '+<span class="money" title="$2.00000000">$2.00</span>' in spend_box
        and "+50.0%" in spend_box
        and "$4.00" in spend_box
    )
    tokens_box = page.split('data-compare="tokens"')[1].split("</div>")[0]
    assert "+400" in tokens_box and "+200.0%" in tokens_box


def test_an_empty_previous_period_shows_a_dash(client, people: People, frozen_now):
    record(people.owner_key, NOW - timedelta(hours=2), cost=Decimal("1.5"))

    response = _get(client, people.staff, range="today")

    comparison = dict((name, change) for name, _, change in response.context["comparisons"])
    assert comparison["spend"].previous_empty and comparison["spend"].difference is None
    box = response.content.decode().split('data-compare="spend"')[1].split("</div>")[0]
    assert "<span data-change>—</span>" in box and "%" not in box


@pytest.mark.parametrize(
    ("choice", "first_day", "selected"),
    [("", "2025-03-08", "7d"), ("today", "2025-03-14", "today"), ("30d", "2025-02-13", "30d")],
)
def test_the_range_control_shows_the_range_displayed(client, people: People, frozen_now, choice, first_day, selected):
    response = _get(client, people.staff, **({"range": choice} if choice else {}))

    assert response.context["window"].first_day.isoformat() == first_day
    assert f'<option value="{selected}" selected>' in response.content.decode()


def test_an_invalid_range_shows_the_error_and_no_overview(client, people: People):
    response = _get(client, people.staff, range="<b>year</b>")

    assert response.status_code == 400
    page = response.content.decode()
    assert "Select a valid choice" in page and "<b>year</b>" not in page and 'id="comparison"' not in page


def test_top_keys_models_and_vendors_by_spend_with_daily_trend(client, people: People, frozen_now):
    record(people.owner_key, NOW, cost=Decimal("1"), model_name="m/cheap", vendor_name="v-one")
    record(people.owner_key, NOW - timedelta(days=2), cost=Decimal("3"), model_name="m/dear", vendor_name="v-two")
    record(people.outsider_key, NOW - timedelta(days=1), cost=Decimal("5"), model_name="m/dear", vendor_name="v-two")

    response = _get(client, people.staff)

    tables = {table_id: rows for _, table_id, rows in response.context["top_tables"]}
    keys = [(s.label, s.spend) for s, _ in tables["top-keys"]]
    assert keys == [("mallory-key", Decimal("5")), ("alice-key", Decimal("4"))]
    assert [(s.label, s.spend) for s, _ in tables["top-models"]] == [
        ("m/dear", Decimal("8")),
        ("m/cheap", Decimal("1")),
    ]
    assert [s.label for s, _ in tables["top-vendors"]] == ["v-two", "v-one"]
    alice, points = tables["top-keys"][1]
    assert alice.daily == (0, 0, 0, 0, Decimal("3"), 0, Decimal("1"))  # 03-08 .. 03-14
    # An SVG polyline over the week: 7 points, the highest day at the top, the empty ones at the bottom.
    assert points.split() == ["0.0,26.0", "16.0,26.0", "32.0,26.0", "48.0,26.0", "64.0,2.0", "80.0,26.0", "96.0,18.0"]
    page = response.content.decode()
    assert f'points="{points}"' in page and "style=" not in page


def test_top_lists_stop_at_ten(client, people: People, frozen_now):
    for i in range(12):
        record(people.owner_key, NOW, cost=Decimal(i + 1), model_name=f"m/{i:02d}")

    response = _get(client, people.staff)

    models = next(rows for _, table_id, rows in response.context["top_tables"] if table_id == "top-models")
    assert [s.label for s, _ in models] == [f"m/{i:02d}" for i in range(11, 1, -1)]


def test_spend_per_key_chart_has_every_key_and_folds_beyond_eight(client, people: People, frozen_now):
    for i in range(10):
        key, _ = api_key_create(f"key-{i}")
        record(key, NOW - timedelta(days=i % 3), cost=Decimal(10 + i))

    response = _get(client, people.staff)

    page = response.content.decode()
    data = json.loads(page.split('<script id="key-chart-data" type="application/json">')[1].split("</script>")[0])
    labels = [s["label"] for s in data["series"]]
    assert len(labels) == 9 and labels[-1] == overview.OTHER_KEYS
    assert labels[0] == "key-9"  # the biggest first; names alone while they are unique
    assert sum(data["series"][-1]["spend"]) == 10 + 11  # key-0 and key-1
    assert len(data["days"]) == 7 and 'id="chart-key-spend"' in page


def test_keys_sharing_a_name_are_told_apart_in_the_chart(client, people: People, frozen_now):
    twin, _ = api_key_create("alice-key")
    record(people.owner_key, NOW, cost=Decimal("2"))
    record(twin, NOW, cost=Decimal("1"))

    response = _get(client, people.staff)

    labels = [s["label"] for s in response.context["key_chart"]["series"]]
    assert labels == [f"alice-key ({people.owner_key.prefix}…)", f"alice-key ({twin.prefix}…)"]


def test_budget_is_spent_plus_held_in_the_current_period(client, people: People, frozen_now):
    key, _ = api_key_create("budgeted", owner=people.owner, credit_limit=Decimal("10"), limit_reset="weekly")
    record(key, NOW - timedelta(days=1), cost=Decimal("2"))  # this week (it began Monday 03-10)
    record(key, NOW - timedelta(days=6), cost=Decimal("50"))  # last week: not in this period
    record(
        key, NOW, status=UsageStatus.IN_PROGRESS, reserved_cost=Decimal("3"), reserved_until=NOW + timedelta(minutes=5)
    )
    record(
        key, NOW, status=UsageStatus.IN_PROGRESS, reserved_cost=Decimal("7"), reserved_until=NOW - timedelta(minutes=1)
    )

    response = _get(client, people.owner)

    budget = next(b for b in response.context["budgets"] if b.name == "budgeted")
    assert (budget.spent, budget.held, budget.used_percent) == (Decimal("2"), Decimal("3"), 50.0)
    assert budget.resets_at == datetime(2025, 3, 17, tzinfo=UTC)
    row = response.content.decode().split(f'data-key="{key.prefix}"')[1].split("</tr>")[0]
    assert 'class="budget-spent" x="0" y="0" width="20.00"' in row
    assert 'class="budget-held" x="20.00" y="0" width="30.00"' in row
    assert "50%" in row and "2025-03-17 00:00 UTC" in row and "$10.00" in row
    plain = response.content.decode().split(f'data-key="{people.owner_key.prefix}"')[1].split("</tr>")[0]
    assert "no limit" in plain and "<svg" not in plain


def test_owner_sees_only_their_own_keys(client, people: People, frozen_now):
    record(people.owner_key, NOW, cost=Decimal("1"), model_name="m/mine", vendor_name="v-mine")
    record(people.outsider_key, NOW, cost=Decimal("9"), model_name="m/theirs", vendor_name="v-theirs")

    response = _get(client, people.owner)

    page = response.content.decode()
    assert "mallory-key" not in page and "m/theirs" not in page and "v-theirs" not in page
    assert people.outsider_key.prefix not in page
    comparison = dict((name, change) for name, _, change in response.context["comparisons"])
    assert comparison["spend"].current == Decimal("1") and comparison["requests"].current == 1
    assert [b.name for b in response.context["budgets"]] == ["alice-key"]


# session + user, where the rollups stand, the sums per day, key, model and vendor (no rollups yet: raw
# records only), the keys' names, budgets.
PAGE_QUERIES = 6


@pytest.mark.parametrize("count", [3, 60])
@pytest.mark.parametrize("who", ["staff", "owner"])
def test_overview_costs_a_fixed_number_of_queries(client, people: People, django_assert_num_queries, count, who):
    for i in range(count):
        record(
            people.owner_key if i % 2 else people.outsider_key,
            NOW - timedelta(hours=5 * i),
            model_name=f"m/{i % 4}",
            vendor_name=f"v-{i % 3}",
            cost=Decimal("0.25"),
        )
    for i in range(count // 3):
        api_key_create(f"extra-{i}", owner=people.owner, credit_limit=Decimal("5"), limit_reset="daily")
    client.force_login(getattr(people, who))

    with django_assert_num_queries(PAGE_QUERIES):
        response = client.get(URL, {"range": "30d"})
    assert response.status_code == 200
