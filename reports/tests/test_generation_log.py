"""The generation log: filters kept in the URL, links both ways with keys and models, JSON export, hourly buckets."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from billing.models import UsageStatus
from reports import selectors, views
from reports.tests.conftest import NOW, People, record
from reports.tests.test_usage_reports import csv_rows
from routing.models import RouterModel

pytestmark = pytest.mark.usefixtures("frozen_now")


def pieces(response: Any) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [part async for part in response.streaming_content]

    return async_to_sync(collect)()


def json_rows(response: Any) -> list[dict[str, Any]]:
    return json.loads(b"".join(pieces(response)))


@pytest.fixture
def mixed(people: People) -> dict[str, Any]:
    """Records of every kind the new filters tell apart, all today."""
    key = people.owner_key
    return {
        "ok": record(key, NOW - timedelta(hours=1), prompt_tokens=1, cost=Decimal("0.10000001")),
        "timeout": record(
            key, NOW - timedelta(hours=2), prompt_tokens=10, status=UsageStatus.ERROR, error_code="upstream_timeout"
        ),
        "unavailable": record(
            key, NOW - timedelta(hours=3), prompt_tokens=100, status=UsageStatus.ERROR, error_code="upstream_error"
        ),
        "cancelled": record(key, NOW - timedelta(hours=4), prompt_tokens=1000, status=UsageStatus.CANCELLED),
    }


def _everywhere(client: Any, query: dict[str, str]) -> dict[str, Any]:
    """What the page's totals, chart, table and both exports show for ``query``."""
    page = client.get(reverse("reports:usage"), query)
    assert page.status_code == 200, page.content
    chart = page.context["chart_data"]
    return {
        "prompt": page.context["totals"].prompt_tokens,
        "chart_requests": sum(chart["status"]["counts"]),
        "table": sorted(r.generation_id for r in page.context["page"].records),
        "csv": sorted(r["generation_id"] for r in csv_rows(client.get(reverse("reports:csv"), query))),
        "json": sorted(r["generation_id"] for r in json_rows(client.get(reverse("reports:json"), query))),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "error"}, ["timeout", "unavailable"]),
        ({"status": "cancelled"}, ["cancelled"]),
        ({"error_code": "upstream_timeout"}, ["timeout"]),
        ({"error_code": "upstream_timeout", "status": "completed"}, []),
        ({"error_code": "no_such_code"}, []),
    ],
)
def test_status_and_error_code_filters_apply_to_totals_charts_table_and_exports(
    client, people: People, mixed, query, expected
):
    client.force_login(people.owner)
    seen = _everywhere(client, {"range": "today", **query})
    ids = sorted(mixed[name].generation_id for name in expected)
    prompt = sum(mixed[name].prompt_tokens for name in expected)
    assert seen == {"prompt": prompt, "chart_requests": len(ids), "table": ids, "csv": ids, "json": ids}


def test_generation_id_prefix_filter_matches_the_start_only(client, people: People):
    from billing.models import UsageRecord

    wanted = record(people.owner_key, NOW, prompt_tokens=5)
    other = record(people.owner_key, NOW, prompt_tokens=7)
    UsageRecord.objects.filter(pk=wanted.pk).update(generation_id="gen-abc123")
    UsageRecord.objects.filter(pk=other.pk).update(generation_id="gen-abd123")
    client.force_login(people.owner)

    seen = _everywhere(client, {"range": "today", "generation": "gen-abc"})
    assert seen["table"] == seen["csv"] == seen["json"] == ["gen-abc123"]
    assert seen["prompt"] == 5
    assert _everywhere(client, {"range": "today", "generation": "gen-ab"})["prompt"] == 12
    # Only the start: a middle part of the id matches nothing.
    assert _everywhere(client, {"range": "today", "generation": "abc123"})["table"] == []


def test_filters_stay_in_the_form_links_and_pager(client, people: People, mixed):
    client.force_login(people.owner)
    query = {
        "range": "today",
        "status": "error",
        "error_code": "upstream_timeout",
        "generation": "gen-",
        "refresh": "30",
    }
    page = client.get(reverse("reports:usage"), query)
    html = page.content.decode()

    form = page.context["form"]
    assert {name: form[name].value() for name in query} == query  # the controls show the URL's filters
    for link_id in ("csv-link", "json-link"):
        href = html.split(f'id="{link_id}" href="')[1].split('"')[0].replace("&amp;", "&")
        assert {k: v[0] for k, v in parse_qs(urlsplit(href).query).items()} == query


def test_filters_reject_what_they_cannot_mean(client, people: People):
    client.force_login(people.owner)
    for query, field in (
        ({"status": "lost"}, "status"),
        ({"refresh": "1"}, "refresh"),
        ({"generation": "g" * 41}, "generation"),
    ):
        page = client.get(reverse("reports:usage"), query)
        assert page.status_code == 400 and field in page.context["form"].errors, query
        assert client.get(reverse("reports:json"), query).status_code == 400


def test_key_and_model_cells_link_to_the_report_narrowed_to_them(client, people: People):
    RouterModel.objects.create(name="m/alpha")
    record(people.owner_key, NOW, model_name="m/alpha")
    record(people.owner_key, NOW, model_name="typed/by-a-client")
    client.force_login(people.owner)

    html = client.get(reverse("reports:usage"), {"range": "today", "status": "completed", "model": "m/alpha"}).content
    text = html.decode()
    key_link = f'href="?range=today&amp;model=m%2Falpha&amp;status=completed&amp;key={people.owner_key.pk}"'
    assert key_link in text
    client_html = client.get(reverse("reports:usage"), {"range": "today", "key": people.owner_key.pk}).content.decode()
    assert f'href="?range=today&amp;key={people.owner_key.pk}&amp;model=m%2Falpha"' in client_html
    # A name no model is configured under is not a filter the form accepts: no link for it.
    assert "model=typed" not in client_html and "typed/by-a-client" in client_html


def test_json_export_holds_exact_figures_of_the_filtered_rows(client, people: People):
    key = people.owner_key
    row = record(
        key,
        NOW - timedelta(hours=1),
        prompt_tokens=3,
        completion_tokens=4,
        cost=Decimal("0.00001234"),
        streamed=True,
        first_token_ms=42,
        model_name="m/</script><b>",
        status=UsageStatus.ERROR,
        error_code="upstream_error",
        http_status=502,
    )
    client.force_login(people.owner)

    response = client.get(reverse("reports:json"), {"range": "today"})

    assert response.streaming and response["Content-Type"] == "application/json"
    assert 'filename="usage-2025-03-14-2025-03-14.json"' in response["Content-Disposition"]
    body = b"".join(pieces(response)).decode()
    assert "</script>" not in body  # written as \u003c/script\u003e: still the same string to a reader
    (data,) = json.loads(body)
    assert list(data) == list(csv_rows(client.get(reverse("reports:csv"), {"range": "today"}))[0])
    assert data["generation_id"] == row.generation_id
    assert data["cost_usd"] == "0.00001234"  # the Decimal, not a float
    assert (data["prompt_tokens"], data["http_status"], data["streamed"], data["finished_at"]) == (3, 502, True, None)
    assert data["created_at"] == "2025-03-14T14:00:00+00:00"
    assert (data["model"], data["key_name"]) == ("m/</script><b>", "alice-key")


def test_json_export_gives_a_key_owner_only_their_keys(client, people: People):
    mine = record(people.outsider_key)
    record(people.owner_key)
    client.force_login(people.outsider)

    assert [r["generation_id"] for r in json_rows(client.get(reverse("reports:json")))] == [mine.generation_id]
    refused = client.get(reverse("reports:json"), {"key": people.owner_key.pk})
    assert refused.status_code == 400 and "alice" not in refused.content.decode()
    client.logout()
    assert client.get(reverse("reports:json")).status_code == 302


def test_json_export_streams_in_bounded_pieces(client, people: People, monkeypatch):
    monkeypatch.setattr(views, "CSV_FETCH_ROWS", 5)
    monkeypatch.setattr(views, "CSV_FLUSH_BYTES", 2000)
    made = [record(people.owner_key, NOW - timedelta(minutes=i)) for i in range(60)]
    client.force_login(people.owner)
    fetched: list[int] = []
    next_rows = selectors.csv_rows_after

    def counted(*args: Any) -> list[tuple[Any, ...]]:
        fetched.append(1)
        return next_rows(*args)

    monkeypatch.setattr(selectors, "csv_rows_after", counted)

    parts = pieces(client.get(reverse("reports:json"), {"range": "today"}))

    rows = json.loads(b"".join(parts))
    assert [r["generation_id"] for r in rows] == [r.generation_id for r in made]
    assert len(fetched) == 13  # 60 rows, 5 a round trip, and the empty read that ends it
    # Many pieces, each about a flush's worth: at most one batch of rows past the threshold.
    assert len(parts) > 5
    one_row = len(b"".join(parts)) // len(rows)
    assert max(len(p) for p in parts) < 2000 + 5 * one_row + 100


def test_a_range_of_up_to_two_days_is_charted_by_hour(client, people: People):
    RouterModel.objects.create(name="m/alpha")
    key = people.owner_key
    record(key, NOW - timedelta(minutes=50), cost=Decimal("1"), prompt_tokens=1)  # 14:10
    record(key, NOW - timedelta(minutes=10), cost=Decimal("2"), prompt_tokens=2)  # 14:50
    record(key, NOW - timedelta(hours=3), cost=Decimal("4"), prompt_tokens=4)  # 12:00
    record(key, NOW - timedelta(days=1, hours=1), cost=Decimal("8"), prompt_tokens=8)  # yesterday 14:00
    client.force_login(people.owner)

    today = client.get(reverse("reports:usage"), {"range": "today"})
    assert today.context["hourly"]
    chart = today.context["chart_data"]
    assert (
        len(chart["days"]) == 24 and chart["days"][0] == "2025-03-14 00:00" and chart["days"][14] == "2025-03-14 14:00"
    )
    cost = chart["cost"]["m/alpha"]
    assert (cost[12], cost[14], sum(cost)) == (4.0, 3.0, 7.0)
    table = [(r.day.isoformat(), r.requests, r.cost) for r in today.context["daily"]]
    assert table == [("2025-03-14T12:00:00+00:00", 1, Decimal("4")), ("2025-03-14T14:00:00+00:00", 2, Decimal("3"))]
    html = today.content.decode()
    assert "Cost per hour by model" in html and "<td>2025-03-14 14:00</td>" in html

    two_days = client.get(reverse("reports:usage"), {"range": "custom", "start": "2025-03-13", "end": "2025-03-14"})
    chart = two_days.context["chart_data"]
    assert len(chart["days"]) == 48 and chart["cost"]["m/alpha"][14] == 8.0 and chart["cost"]["m/alpha"][38] == 3.0

    three_days = client.get(reverse("reports:usage"), {"range": "custom", "start": "2025-03-12", "end": "2025-03-14"})
    assert not three_days.context["hourly"]
    assert three_days.context["chart_data"]["days"] == ["2025-03-12", "2025-03-13", "2025-03-14"]
    assert "Cost per day by model" in three_days.content.decode()


@pytest.mark.parametrize("count", [3, 60])
def test_filtered_hourly_page_costs_the_same_fixed_number_of_queries(
    client, people: People, django_assert_num_queries, count
):
    for i in range(count):
        record(
            people.owner_key,
            NOW - timedelta(minutes=10 * i),
            status=UsageStatus.ERROR if i % 2 else UsageStatus.COMPLETED,
            error_code="upstream_error" if i % 2 else "",
            first_token_ms=i,
        )
    client.force_login(people.staff)
    query = {"range": "today", "status": "error", "error_code": "upstream_error", "generation": "gen-", "refresh": "60"}

    # The same queries as the unfiltered page: the filters narrow each query, they add none.
    with django_assert_num_queries(9):
        response = client.get(reverse("reports:usage"), query)
    assert response.context["totals"].requests == count // 2


def test_admin_pages_of_keys_and_models_link_to_their_usage(client, people: People):
    model = RouterModel.objects.create(name="m/alpha beta")
    client.force_login(people.staff)
    key_url = f"/usage/?key={people.owner_key.pk}"
    model_url = "/usage/?model=m%2Falpha+beta"

    key_list = client.get(reverse("admin:billing_apikey_changelist")).content.decode()
    key_page = client.get(reverse("admin:billing_apikey_change", args=[people.owner_key.pk])).content.decode()
    model_list = client.get(reverse("admin:routing_routermodel_changelist")).content.decode()
    model_page = client.get(reverse("admin:routing_routermodel_change", args=[model.pk])).content.decode()
    model_add = client.get(reverse("admin:routing_routermodel_add"))

    assert f'<a href="{key_url}" class="usage-link">Usage</a>' in key_list
    assert f'href="{key_url}" id="api-key-usage"' in key_page
    assert f'<a href="{model_url}" class="usage-link">Usage</a>' in model_list
    assert f'<a href="{model_url}" id="model-usage">' in model_page
    assert model_add.status_code == 200 and "No usage yet" in model_add.content.decode()
    # The links lead to the report filtered by them.
    client.force_login(people.staff)
    assert client.get(model_url).context["form"]["model"].value() == "m/alpha beta"
