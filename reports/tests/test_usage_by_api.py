"""/usage/ by client API: the filter (kept in every link like the others), the breakdown chart and table,
the exports' column, the generation page, and the admin's list filter."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse

from billing.rollups import usage_rollups_refresh
from reports.tests.conftest import NOW, People, record
from reports.tests.test_usage_reports import csv_body, csv_rows

pytestmark = pytest.mark.usefixtures("frozen_now")


def _mixed(people: People) -> None:
    key = people.owner_key
    record(key, NOW - timedelta(hours=1), api="chat_completions", prompt_tokens=1, cost=Decimal("0.1"))
    record(key, NOW - timedelta(hours=2), api="messages", prompt_tokens=10, completion_tokens=5, cost=Decimal("0.2"))
    record(key, NOW - timedelta(days=2), api="messages", prompt_tokens=100, cost=Decimal("0.4"))
    record(key, NOW - timedelta(hours=3), api="responses", prompt_tokens=1000, status="error", error_code="timeout")


def test_api_filter_narrows_totals_generations_and_both_exports(client, people: People):
    _mixed(people)
    client.force_login(people.owner)

    page = client.get(reverse("reports:usage"), {"range": "7d", "api": "messages"})
    assert page.context["totals"].prompt_tokens == 110
    assert {r.api for r in page.context["page"].records} == {"messages"}
    rows = csv_rows(client.get(reverse("reports:csv"), {"range": "7d", "api": "messages"}))
    assert [(r["api"], r["prompt_tokens"]) for r in rows] == [("messages", "10"), ("messages", "100")]
    exported = json.loads(csv_body(client.get(reverse("reports:json"), {"range": "7d", "api": "responses"})))
    assert [(r["api"], r["prompt_tokens"], r["error_code"]) for r in exported] == [("responses", 1000, "timeout")]


def test_api_filter_is_kept_in_the_pages_links(client, people: People):
    _mixed(people)
    client.force_login(people.owner)
    html = client.get(reverse("reports:usage"), {"range": "7d", "api": "responses"}).content.decode()
    assert 'id="csv-link" href="/usage/export.csv?range=7d&amp;api=responses"' in html
    assert 'id="json-link" href="/usage/export.json?range=7d&amp;api=responses"' in html
    assert '<option value="responses" selected>Responses</option>' in html


def test_breakdown_by_api_in_table_and_chart(client, people: People):
    _mixed(people)
    client.force_login(people.owner)
    context = client.get(reverse("reports:usage"), {"range": "7d"}).context
    table = [(a.api, a.label, a.requests, a.prompt_tokens, a.completion_tokens, a.cost) for a in context["apis"]]
    assert table == [
        ("chat_completions", "Chat completions", 1, 1, 0, Decimal("0.1")),
        ("messages", "Messages", 2, 110, 5, Decimal("0.6")),
        ("responses", "Responses", 1, 1000, 0, Decimal("0")),
    ]
    chart = context["chart_data"]["apis"]
    assert (chart["labels"], chart["counts"]) == (["Chat completions", "Messages", "Responses"], [1, 2, 1])
    assert len(set(chart["colours"])) == 3
    # Narrowed to one API, the breakdown holds that API alone.
    narrowed = client.get(reverse("reports:usage"), {"range": "7d", "api": "responses"}).context["apis"]
    assert [(a.api, a.requests) for a in narrowed] == [("responses", 1)]


def test_unknown_api_is_a_form_error_not_a_report(client, people: People):
    client.force_login(people.owner)
    response = client.get(reverse("reports:usage"), {"api": "<script>"})
    assert response.status_code == 400
    assert (
        "&lt;script&gt;" in response.content.decode()
        and "<script>" not in response.context["form"].errors["api"][0][:0]
    )
    assert client.get(reverse("reports:csv"), {"api": "smtp"}).status_code == 400


# session + user, key / model / vendor choices, where the rollups stand, the sums per day, model, status and
# API (raw records only), the exact median, one page of rows: as many as without the filter.
@pytest.mark.parametrize("count", [3, 60])
def test_usage_page_by_api_costs_a_fixed_number_of_queries(client, people: People, django_assert_num_queries, count):
    for i in range(count):
        record(people.owner_key, NOW - timedelta(hours=i), api=["messages", "responses"][i % 2], first_token_ms=i)
    client.force_login(people.staff)
    with django_assert_num_queries(9):
        response = client.get(reverse("reports:usage"), {"range": "7d", "api": "messages"})
    assert response.context["totals"].requests == (count + 1) // 2


def test_api_filter_over_rolled_up_hours_equals_the_raw_records(client, people: People, django_assert_num_queries):
    _mixed(people)
    client.force_login(people.owner)
    queries = [{"range": "7d", "api": api} for api in ("messages", "responses", "chat_completions", "embeddings")]

    def figures(query: dict[str, str]) -> Any:
        context = client.get(reverse("reports:usage"), query).context
        return context["totals"], context["apis"], context["daily"]

    raw = [figures(q) for q in queries]
    usage_rollups_refresh(NOW)
    with django_assert_num_queries(13):  # + the daily and hourly rollup parts, the median histogram of each
        client.get(reverse("reports:usage"), queries[0])
    assert [figures(q) for q in queries] == raw
    assert raw[-1][0].requests == 0


def test_generation_page_names_the_api(client, people: People):
    mine = record(people.owner_key, api="messages")
    client.force_login(people.owner)
    html = client.get(reverse("reports:generation", args=[mine.generation_id])).content.decode()
    assert '<dd id="generation-api">Messages</dd>' in html


def test_admin_lists_and_filters_usage_by_api(admin_client, people: People):
    _mixed(people)
    url = reverse("admin:billing_usagerecord_changelist")
    listed = admin_client.get(url, {"api__exact": "messages"})
    assert listed.status_code == 200
    assert {r.api for r in listed.context["cl"].result_list} == {"messages"}
    assert listed.content.decode().count('<span class="client-api">Messages</span>') == 2
    one = listed.context["cl"].result_list[0]
    detail = admin_client.get(reverse("admin:billing_usagerecord_change", args=[one.pk])).content.decode()
    assert "Client API" in detail and "Messages" in detail
