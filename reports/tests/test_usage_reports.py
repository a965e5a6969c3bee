from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from billing.models import UsageStatus
from reports.tests.conftest import NOW, People, record

pytestmark = pytest.mark.usefixtures("frozen_now")


def csv_body(response) -> str:
    async def collect() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(collect)().decode()


def csv_rows(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(csv_body(response))))


def test_anonymous_visitor_is_sent_to_login(client, people: People):
    mine = record(people.owner_key)
    for url in (
        reverse("reports:usage"),
        reverse("reports:csv"),
        reverse("reports:generation", args=[mine.generation_id]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_outsider_sees_nothing_of_another_owners_usage(client, people: People):
    theirs = record(people.owner_key, prompt_tokens=111, completion_tokens=222, cost=Decimal("1.5"))
    mine = record(people.outsider_key, prompt_tokens=7, completion_tokens=3, cost=Decimal("0.25"))
    client.force_login(people.outsider)

    page = client.get(reverse("reports:usage"))
    html = page.content.decode()
    assert page.status_code == 200
    assert page.context["totals"].requests == 1
    assert page.context["totals"].prompt_tokens == 7
    assert mine.generation_id in html
    assert theirs.generation_id not in html
    assert "alice-key" not in html and people.owner_key.prefix not in html

    assert client.get(reverse("reports:generation", args=[theirs.generation_id])).status_code == 404
    assert client.get(reverse("reports:generation", args=[mine.generation_id])).status_code == 200

    rows = csv_rows(client.get(reverse("reports:csv")))
    assert [r["generation_id"] for r in rows] == [mine.generation_id]


def test_outsider_cannot_filter_by_another_owners_key(client, people: People):
    record(people.owner_key, prompt_tokens=111)
    client.force_login(people.outsider)

    page = client.get(reverse("reports:usage"), {"key": people.owner_key.pk})
    assert page.status_code == 400
    assert page.context["form"].errors["key"]
    assert "totals" not in page.context  # no report at all, rather than one the controls do not describe
    assert "alice-key" not in page.content.decode()

    export = client.get(reverse("reports:csv"), {"key": people.owner_key.pk})
    assert export.status_code == 400
    assert "alice" not in export.content.decode()


def test_staff_see_every_key(client, people: People):
    record(people.owner_key, prompt_tokens=10)
    record(people.outsider_key, prompt_tokens=20)
    client.force_login(people.staff)

    page = client.get(reverse("reports:usage"))
    assert page.context["totals"].requests == 2
    assert page.context["totals"].prompt_tokens == 30
    only_alice = client.get(reverse("reports:usage"), {"key": people.owner_key.pk})
    assert only_alice.context["totals"].prompt_tokens == 10


def test_totals_count_tokens_cost_shares_and_median_first_token(client, people: People):
    key = people.owner_key
    record(key, prompt_tokens=10, completion_tokens=5, cost=Decimal("0.10000000"), first_token_ms=100)
    record(
        key,
        prompt_tokens=20,
        completion_tokens=0,
        cost=Decimal("0.02000001"),
        first_token_ms=300,
        status=UsageStatus.CANCELLED,
    )
    record(key, prompt_tokens=0, completion_tokens=0, status=UsageStatus.ERROR)
    record(key, prompt_tokens=1, completion_tokens=1, cost=Decimal("0.00000002"), first_token_ms=250)
    client.force_login(people.owner)

    totals = client.get(reverse("reports:usage")).context["totals"]

    assert totals.requests == 4
    assert (totals.prompt_tokens, totals.completion_tokens) == (31, 6)
    assert totals.cost == Decimal("0.12000003")
    assert totals.cancelled_share == 0.25
    assert totals.error_share == 0.25
    assert totals.median_first_token_ms == 250  # of 100, 250, 300; the error has none


def test_median_of_an_even_count_is_the_mean_of_the_middle_two(client, people: People):
    for ms in (40, 10, 30, 20):
        record(people.owner_key, first_token_ms=ms)
    client.force_login(people.owner)
    assert client.get(reverse("reports:usage")).context["totals"].median_first_token_ms == 25


def test_date_range_filters_by_utc_day(client, people: People):
    key = people.owner_key
    record(key, NOW, prompt_tokens=1)
    record(key, NOW - timedelta(days=3), prompt_tokens=10)
    record(key, NOW - timedelta(days=20), prompt_tokens=100)
    record(key, NOW - timedelta(days=45), prompt_tokens=1000)
    client.force_login(people.owner)

    def prompt(**query: str) -> int:
        return client.get(reverse("reports:usage"), query).context["totals"].prompt_tokens

    assert prompt(range="today") == 1
    assert prompt(range="7d") == 11
    assert prompt() == 11  # the default is the last 7 days
    assert prompt(range="30d") == 111
    day = (NOW - timedelta(days=20)).date().isoformat()
    assert prompt(range="custom", start=day, end=day) == 100
    bad = client.get(reverse("reports:usage"), {"range": "custom", "start": "2025-03-10", "end": "2025-03-01"})
    assert "must not be after" in bad.content.decode()


def test_model_and_vendor_filters(client, people: People):
    from routing.models import RouterModel, Vendor

    RouterModel.objects.create(name="m/alpha")
    RouterModel.objects.create(name="m/beta")
    Vendor.objects.create(name="vendor-a", kind="demo")
    Vendor.objects.create(name="vendor-b", kind="demo")
    key = people.owner_key
    record(key, model_name="m/alpha", vendor_name="vendor-a", prompt_tokens=1)
    record(key, model_name="m/beta", vendor_name="vendor-a", prompt_tokens=10)
    record(key, model_name="m/beta", vendor_name="vendor-b", prompt_tokens=100)
    client.force_login(people.owner)

    def prompt(**query: str) -> int:
        return client.get(reverse("reports:usage"), query).context["totals"].prompt_tokens

    assert prompt(model="m/beta") == 110
    assert prompt(vendor="vendor-a") == 11
    assert prompt(model="m/beta", vendor="vendor-b") == 100
    rows = csv_rows(client.get(reverse("reports:csv"), {"model": "m/beta", "vendor": "vendor-a"}))
    assert [(r["model"], r["vendor"], r["prompt_tokens"]) for r in rows] == [("m/beta", "vendor-a", "10")]


def test_daily_table_splits_by_model_and_charts_cover_every_day(client, people: People):
    from routing.models import RouterModel

    RouterModel.objects.create(name="m/alpha")
    RouterModel.objects.create(name="m/beta")
    key = people.owner_key
    record(key, NOW, model_name="m/alpha", cost=Decimal("1"), prompt_tokens=1, completion_tokens=2)
    record(key, NOW, model_name="m/alpha", cost=Decimal("2"), prompt_tokens=3, completion_tokens=4)
    record(key, NOW, model_name="m/beta", cost=Decimal("4"), prompt_tokens=5, completion_tokens=6)
    record(key, NOW - timedelta(days=2), model_name="m/beta", cost=Decimal("8"), prompt_tokens=7, completion_tokens=8)
    client.force_login(people.owner)

    page = client.get(reverse("reports:usage"), {"range": "7d"})
    daily = [(r.day.isoformat(), r.model_name, r.requests, r.tokens, r.cost) for r in page.context["daily"]]
    assert daily == [
        ("2025-03-12", "m/beta", 1, 15, Decimal("8")),
        ("2025-03-14", "m/alpha", 2, 10, Decimal("3")),
        ("2025-03-14", "m/beta", 1, 11, Decimal("4")),
    ]
    chart = page.context["chart_data"]
    assert chart["days"][0] == "2025-03-08" and chart["days"][-1] == "2025-03-14"
    assert chart["cost"]["m/beta"] == [0, 0, 0, 0, 8.0, 0, 4.0]
    assert chart["tokens"]["m/alpha"] == [0, 0, 0, 0, 0, 0, 10]
    assert dict(zip(chart["status"]["labels"], chart["status"]["counts"], strict=True))["Completed"] == 4


def test_csv_holds_every_filtered_record_newest_first(client, people: People):
    key = people.owner_key
    old = record(
        key,
        NOW - timedelta(hours=2),
        prompt_tokens=3,
        completion_tokens=4,
        cost=Decimal("0.00001234"),
        streamed=True,
        first_token_ms=42,
        duration_ms=900,
        upstream_model="up-1",
    )
    new = record(key, NOW - timedelta(hours=1), status=UsageStatus.ERROR, error_code="upstream_error", http_status=502)
    client.force_login(people.owner)

    response = client.get(reverse("reports:csv"), {"range": "today"})

    assert response.streaming
    assert response["Content-Type"] == "text/csv"
    assert 'filename="usage-2025-03-14-2025-03-14.csv"' in response["Content-Disposition"]
    rows = csv_rows(response)
    assert [r["generation_id"] for r in rows] == [new.generation_id, old.generation_id]
    assert rows[1] == {
        "generation_id": old.generation_id,
        "trace_id": "",
        "created_at": "2025-03-14T13:00:00+00:00",
        "finished_at": "",
        "key_name": "alice-key",
        "key_prefix": key.prefix,
        "api": "chat_completions",
        "model": "m/alpha",
        "vendor": "vendor-a",
        "upstream_model": "up-1",
        "status": "completed",
        "streamed": "true",
        "http_status": "",
        "error_code": "",
        "finish_reason": "",
        "prompt_tokens": "3",
        "completion_tokens": "4",
        "cached_tokens": "0",
        "reasoning_tokens": "0",
        "usage_source": "none",
        "cost_usd": "0.00001234",
        "first_token_ms": "42",
        "duration_ms": "900",
    }
    assert (rows[0]["status"], rows[0]["http_status"], rows[0]["error_code"]) == ("error", "502", "upstream_error")


def test_generation_detail_shows_the_full_record_with_attempts(client, people: People):
    attempts = [
        {"vendor": "vendor-a", "upstream_model": "up-1", "outcome": "error", "status": 503},
        {"vendor": "vendor-b", "upstream_model": "up-2", "outcome": "ok"},
    ]
    mine = record(people.owner_key, attempts=attempts, prompt_tokens=12, cost=Decimal("0.5"), error_message="")
    client.force_login(people.owner)

    html = client.get(reverse("reports:generation", args=[mine.generation_id])).content.decode()

    assert mine.generation_id in html
    for text in ("vendor-b", "up-2", "503", "0.50000000", "alice-key"):
        assert text in html


def test_generation_detail_names_attempt_fields_for_people(client, people: People):
    attempts = [
        {"vendor": "vendor-a", "upstream_model": "up-1", "outcome": "error", "latency_ms": 1500, "status": 503,
         "code": "upstream_unavailable", "vendor_status": 529, "vendor_code": "overloaded"},
        {"vendor": "vendor-b", "upstream_model": "up-2", "outcome": "ok", "latency_ms": 40},
    ]  # fmt: skip
    mine = record(people.owner_key, attempts=attempts)
    url = reverse("reports:generation", args=[mine.generation_id])

    client.force_login(people.staff)
    staff_table = client.get(url).content.decode().split('id="table-attempts"')[1].split("</table>")[0]
    client.force_login(people.owner)
    owner_table = client.get(url).content.decode().split('id="table-attempts"')[1].split("</table>")[0]

    for table in (staff_table, owner_table):
        for text in ("<th>Vendor</th>", "<th>Upstream model</th>", "<th>Latency</th>", "<th>HTTP status</th>",
                     "<th>Error code</th>", "<td>1,500 ms</td>", "<td>vendor-b</td>"):  # fmt: skip
            assert text in table, text
        assert "latency_ms" not in table and "upstream_model" not in table
    assert "<th>Vendor&#x27;s HTTP status</th>" in staff_table and "<td>529</td>" in staff_table
    assert "Vendor&#x27;s" not in owner_table and "overloaded" not in owner_table  # the vendor's words are for staff


def _page_queries() -> int:
    # session + user, key / model / vendor choices, where the rollups stand, the sums per day, model and
    # status (no rollups yet: raw records only), the exact median, one page of rows.
    return 9


def _pager_link(response, link_id: str) -> dict[str, str] | None:
    """The query of the generation log's pager link ``link_id``, None when the page has none."""
    found = re.search(rf'<a href="\?([^"]*)" id="{link_id}"', response.content.decode())
    return None if found is None else {k: v[0] for k, v in parse_qs(found[1].replace("&amp;", "&")).items()}


@pytest.mark.parametrize("count", [3, 60, 101])
def test_generations_are_paged_newest_first_by_cursor(client, people: People, count):
    for i in range(count):
        record(people.owner_key, NOW - timedelta(minutes=i), prompt_tokens=i)
    client.force_login(people.owner)

    first = client.get(reverse("reports:usage"), {"status": "completed"})
    assert [r.prompt_tokens for r in first.context["page"].records] == list(range(min(count, 50)))
    assert _pager_link(first, "pager-newer") is None
    older = _pager_link(first, "pager-older")
    if count <= 50:
        assert older is None
        return
    assert older is not None and older["status"] == "completed"  # the filters travel with the cursor
    second = client.get(reverse("reports:usage"), older)
    assert [r.prompt_tokens for r in second.context["page"].records] == list(range(50, min(count, 100)))
    newer = _pager_link(second, "pager-newer")
    assert newer is not None and set(newer) == {"status", "after"}
    back = client.get(reverse("reports:usage"), newer)
    assert [r.prompt_tokens for r in back.context["page"].records] == list(range(50))
    assert _pager_link(back, "pager-newer") is None  # the newest page again
    assert (_pager_link(second, "pager-older") is not None) == (count > 100)


def test_generation_pages_split_records_of_the_same_instant_by_id(client, people: People):
    """Records created in the same microsecond: the cursor's id keeps every one on exactly one page."""
    made = [record(people.owner_key, NOW - timedelta(hours=1)) for _ in range(120)]
    client.force_login(people.owner)

    seen: list[str] = []
    query: dict[str, str] | None = {}
    while query is not None:
        page = client.get(reverse("reports:usage"), query)
        seen += [r.generation_id for r in page.context["page"].records]
        query = _pager_link(page, "pager-older")
    assert seen == [r.generation_id for r in reversed(made)]


@pytest.mark.parametrize("cursor", ["2", "20261207T101112.123456Z", "x" * 40, "99999999T999999.999999Z-1"])
def test_a_malformed_generation_cursor_is_a_400_at_the_form(client, people: People, cursor):
    client.force_login(people.owner)
    for name in ("before", "after"):
        response = client.get(reverse("reports:usage"), {name: cursor})
        assert response.status_code == 400
        assert "page link is not valid" in response.content.decode()


def test_csv_neutralises_formulas_in_every_text_cell_and_keeps_numbers_numbers(client, people: People):
    """OWASP "CSV Injection": text a client or vendor chose may not start a formula in a spreadsheet."""
    from billing.models import ApiKey

    ApiKey.objects.filter(pk=people.owner_key.pk).update(name="=cmd|' /C calc'!A0")
    record(
        people.owner_key,
        NOW - timedelta(hours=1),
        model_name='=HYPERLINK("http://evil.example","x")',
        vendor_name="+vendor",
        upstream_model="-2+3",
        error_code="@SUM(A1:A9)",
        finish_reason="\tstop",
        status=UsageStatus.ERROR,
        cost=Decimal("-0.5"),
        http_status=502,
        prompt_tokens=7,
    )
    record(people.owner_key, NOW - timedelta(hours=2), model_name="\r=1+1", vendor_name="plain-vendor")
    client.force_login(people.owner)

    first, second = csv_rows(client.get(reverse("reports:csv"), {"range": "today"}))

    assert first["key_name"] == "'=cmd|' /C calc'!A0"
    assert first["model"] == '\'=HYPERLINK("http://evil.example","x")'
    assert (first["vendor"], first["upstream_model"]) == ("'+vendor", "'-2+3")
    assert (first["error_code"], first["finish_reason"]) == ("'@SUM(A1:A9)", "'\tstop")
    assert (second["model"], second["vendor"]) == ("'\r=1+1", "plain-vendor")
    # Numbers are written as numbers, a negative one too: never quoted, never prefixed.
    assert (first["cost_usd"], first["http_status"], first["prompt_tokens"]) == ("-0.50000000", "502", "7")
    numeric = ("http_status", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd")
    for row in (first, second):
        assert all(row[c] == "" or re.fullmatch(r"-?\d+(\.\d+)?", row[c]) for c in numeric), row
    assert '"-0.50000000"' not in csv_body(client.get(reverse("reports:csv"), {"range": "today"}))
