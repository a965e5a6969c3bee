"""How an operator gets to the reports and moves through them: the controls say what the page shows,
``/`` leads to the reports, filters travel to a generation and back, a bad filter is answered at its field.
"""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from reports.tests.conftest import NOW, People, record
from reports.tests.test_reflected_input import PAYLOAD, assert_not_reflected

pytestmark = pytest.mark.usefixtures("frozen_now")
TODAY = NOW.date()


class _Controls(HTMLParser):
    """What the filter form shows: each field's value as a browser would submit it, and hrefs by id.

    A select with no option marked selected shows (and submits) its first option, as browsers do.
    """

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.generation_links: list[str] = []
        self._select: str | None = None
        self._selected: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("name"):
            self.values[a["name"]] = a.get("value", "")
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select:
            if "selected" in a:
                self.values[self._select] = a["value"]
                self._selected.add(self._select)
            elif self._select not in self._selected:
                self.values.setdefault(self._select, a["value"])
        elif tag == "a" and a.get("id"):
            self.links[a["id"]] = a["href"]
        elif tag == "a" and "/usage/generations/" in a.get("href", ""):
            self.generation_links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def controls(response) -> _Controls:
    parsed = _Controls()
    parsed.feed(response.content.decode())
    return parsed


def test_controls_show_the_default_range_the_page_displays(client, people: People):
    record(people.owner_key, NOW - timedelta(days=3), prompt_tokens=10)
    client.force_login(people.owner)

    page = client.get(reverse("reports:usage"))

    shown = controls(page).values
    assert shown["range"] == "7d"
    assert (page.context["first_day"], page.context["last_day"]) == (TODAY - timedelta(days=6), TODAY)
    assert (shown["start"], shown["end"]) == ((TODAY - timedelta(days=6)).isoformat(), TODAY.isoformat())
    # Another filter without a range: still the default range, and shown as such.
    assert controls(client.get(reverse("reports:usage"), {"model": ""})).values["range"] == "7d"


@pytest.mark.parametrize(
    "query", [{}, {"range": "today"}, {"range": "30d"}, {"range": "custom", "start": "2025-02-01", "end": "2025-02-10"}]
)
def test_applying_the_controls_as_shown_keeps_the_report(client, people: People, query):
    """Pressing Apply without touching anything submits what the controls show: the same days come back."""
    record(people.owner_key, NOW - timedelta(days=3), prompt_tokens=10)
    client.force_login(people.owner)
    first = client.get(reverse("reports:usage"), query)

    submitted = {k: v for k, v in controls(first).values.items() if k != "csrfmiddlewaretoken"}
    if submitted["range"] != "custom":
        del submitted["start"], submitted["end"]  # the page's script disables them: a browser does not send them
    again = client.get(reverse("reports:usage"), submitted)

    assert again.status_code == 200
    days = (again.context["first_day"], again.context["last_day"])
    assert days == (first.context["first_day"], first.context["last_day"])
    assert again.context["totals"].prompt_tokens == first.context["totals"].prompt_tokens


def test_dates_sent_with_a_named_range_are_ignored(client, people: People):
    record(people.owner_key, NOW - timedelta(days=3), prompt_tokens=10)
    record(people.owner_key, NOW, prompt_tokens=1)
    client.force_login(people.owner)

    page = client.get(reverse("reports:usage"), {"range": "today", "start": "not a date", "end": "2020-01-01"})

    assert page.status_code == 200
    assert page.context["totals"].prompt_tokens == 1
    assert (controls(page).values["start"], controls(page).values["end"]) == (TODAY.isoformat(), TODAY.isoformat())


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"range": "custom", "start": "2025-03-10", "end": "2025-03-01"}, "start", "must not be after"),
        ({"range": "custom", "start": "2025-03-10"}, "end", "needs an end date"),
        ({"range": "custom", "end": "2025-03-10"}, "start", "needs a start date"),
        ({"range": "custom", "start": "2023-01-01", "end": "2025-03-01"}, "end", "at most 366 days"),
        ({"range": "custom", "start": "yesterday", "end": "2025-03-01"}, "start", "Enter a valid date"),
    ],
)
def test_invalid_custom_range_is_answered_at_its_field_without_a_report(client, people: People, query, field, message):
    record(people.owner_key, NOW - timedelta(days=3), prompt_tokens=10)
    client.force_login(people.owner)

    page = client.get(reverse("reports:usage"), query)

    html = page.content.decode()
    assert page.status_code == 400
    assert message in " ".join(page.context["form"].errors[field])
    assert not page.context["form"].non_field_errors()
    label = html.split(f'<label class="{field}">', 1)[1].split("</label>", 1)[0]
    assert message in label  # at the field, not above the form
    assert "totals" not in page.context and 'id="totals"' not in html and 'id="filter-invalid"' in html
    assert controls(page).values["range"] == "custom"


def test_invalid_range_errors_are_escaped(client, people: People):
    client.force_login(people.owner)

    page = client.get(reverse("reports:usage"), {"range": "custom", "start": PAYLOAD, "end": PAYLOAD})

    assert page.status_code == 400
    text = assert_not_reflected(page, "GET /usage/ with a custom range")
    assert "Enter a valid date" in text


def test_invalid_filter_page_costs_a_fixed_number_of_queries(client, people: People, django_assert_num_queries):
    client.force_login(people.staff)
    # session + user, key / model / vendor choices; no report queries
    with django_assert_num_queries(5):
        page = client.get(reverse("reports:usage"), {"range": "custom", "start": "2025-03-10"})
    assert page.status_code == 400


def test_usage_page_still_costs_a_fixed_number_of_queries_with_the_default_range(
    client, people: People, django_assert_num_queries
):
    record(people.owner_key, NOW, first_token_ms=5)
    client.force_login(people.staff)
    with django_assert_num_queries(9):
        client.get(reverse("reports:usage"))


def test_root_leads_to_the_reports(client, people: People):
    usage = reverse("reports:usage")

    anonymous = client.get("/")
    assert anonymous.status_code == 302
    assert anonymous["Location"] == f"{reverse('login')}?next={usage}"

    for user in (people.owner, people.staff):
        client.force_login(user)
        response = client.get("/")
        assert (response.status_code, response["Location"]) == (302, usage)


def test_admin_view_site_and_header_lead_to_the_reports(client, people: People):
    client.force_login(people.staff)

    html = client.get(reverse("admin:index")).content.decode()

    assert '<a href="/usage/">View site</a>' in html
    assert '<a id="site-usage-link" href="/usage/">Usage reports</a>' in html
    client.logout()
    assert "site-usage-link" not in client.get(reverse("admin:login")).content.decode()


def test_filters_travel_to_a_generation_and_back(client, people: People):
    mine = record(people.owner_key, NOW - timedelta(days=10))
    client.force_login(people.owner)
    # A generation log cursor (the page of records older than it) travels too: back is the same page.
    cursor = f"{NOW:%Y%m%dT%H%M%S.%f}Z-999999"
    query = {"range": "30d", "key": str(people.owner_key.pk), "model": "", "before": cursor, "utm": "x"}

    page = client.get(reverse("reports:usage"), query)

    [link] = controls(page).generation_links
    assert urlsplit(link).path == reverse("reports:generation", args=[mine.generation_id])
    carried = parse_qs(urlsplit(link).query)
    assert carried == {"range": ["30d"], "key": [str(people.owner_key.pk)], "before": [cursor]}
    assert parse_qs(urlsplit(controls(page).links["csv-link"]).query) == {
        "range": ["30d"],
        "key": [str(people.owner_key.pk)],
    }

    detail = client.get(link)
    back = controls(detail).links["back-to-usage"]
    assert urlsplit(back).path == reverse("reports:usage")
    assert parse_qs(urlsplit(back).query) == carried
    assert client.get(back).context["totals"].requests == 1


def test_back_link_carries_only_report_parameters_escaped(client, people: People):
    mine = record(people.owner_key)
    client.force_login(people.owner)

    detail = client.get(
        reverse("reports:generation", args=[mine.generation_id]),
        {"range": PAYLOAD, "model": "a&b=c", "next": "https://evil.example/"},
    )

    text = assert_not_reflected(detail, "GET a generation with report parameters")
    back = controls(detail).links["back-to-usage"]
    assert parse_qs(urlsplit(back).query) == {"range": [PAYLOAD], "model": ["a&b=c"]}
    assert "evil.example" not in text
