"""One look everywhere: the money and count formats, chart series and colours, empty charts, login, 404, favicon."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.urls import reverse

from billing.models import UsageStatus
from billing.services import api_key_create
from lib.numbers import count, usd, usd_exact, usd_html
from reports.charts import MODEL_PALETTE, OTHER_COLOUR, STATUS_COLOURS, series_colour
from reports.selectors import OTHER_MODELS
from reports.tests.conftest import NOW, People, record
from routing.models import RouterModel

# The formatter


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "\u2013"),
        (Decimal("0"), "$0.00"),
        (Decimal("0.00000000"), "$0.00"),
        (0, "$0.00"),
        (Decimal("0.00000001"), "<$0.0001"),
        (Decimal("0.00009999"), "<$0.0001"),
        (Decimal("0.0001"), "$0.0001"),
        (Decimal("0.00012345"), "$0.0001235"),  # four significant digits below a dollar, rounded half up
        (Decimal("0.012345"), "$0.01235"),
        (Decimal("0.5"), "$0.50"),  # at least two decimals
        (Decimal("0.50000000"), "$0.50"),
        (Decimal("0.12345678"), "$0.1235"),
        (Decimal("0.999"), "$1.00"),
        (Decimal("1"), "$1.00"),
        (Decimal("1.005"), "$1.01"),
        (Decimal("1234567.891"), "$1,234,567.89"),
        (Decimal("-0.5"), "-$0.50"),
        (Decimal("-1234.5"), "-$1,234.50"),
        (Decimal("-0.00000001"), ">-$0.0001"),
        (12, "$12.00"),
    ],
)
def test_money_is_usd_rounded_once_for_reading(value, shown):
    assert usd(value) == shown


@pytest.mark.parametrize(
    ("value", "exact"),
    [
        (None, "\u2013"),
        (Decimal("0E-8"), "$0.00000000"),
        (Decimal("0.00001234"), "$0.00001234"),
        (Decimal("-0.50000000"), "-$0.50000000"),
        (Decimal("1234567.12345678"), "$1234567.12345678"),
    ],
)
def test_exact_money_keeps_every_stored_digit(value, exact):
    assert usd_exact(value) == exact


def test_money_on_a_page_carries_the_exact_figure_in_its_title():
    assert usd_html(Decimal("0.12000003")) == '<span class="money" title="$0.12000003">$0.12</span>'
    assert usd_html(None) == "\u2013"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "\u2013"), (0, "0"), (7, "7"), (1234, "1,234"), (12345678, "12,345,678"), (-1000, "-1,000")],
)
def test_counts_have_thousands_separators(value, shown):
    assert count(value) == shown


# Pages show the formats


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", html)


@pytest.mark.usefixtures("frozen_now")
def test_usage_page_shows_money_and_counts_in_the_one_format(client, people: People):
    RouterModel.objects.create(name="m/alpha")
    record(
        people.owner_key, prompt_tokens=12345, completion_tokens=1000, cost=Decimal("1234.56789"), first_token_ms=1500
    )
    record(people.owner_key, prompt_tokens=5, completion_tokens=5, cost=Decimal("0.00000002"))
    client.force_login(people.owner)

    html = _text(client.get(reverse("reports:usage")).content.decode())

    assert 'data-total="requests">2<' in html
    assert 'data-total="prompt_tokens">12,350<' in html
    assert 'data-total="completion_tokens">1,005<' in html
    assert '<span class="money" title="$1234.56789002">$1,234.57</span>' in html  # the total
    assert '<span class="money" title="$1234.56789000">$1,234.57</span>' in html  # the generation's row
    assert '<span class="money" title="$0.00000002">&lt;$0.0001</span>' in html
    assert '<td class="num">12,345</td>' in html and '<td class="num">1,500</td>' in html
    shown = re.sub(r'<script id="chart-data".*?</script>|title="[^"]*"', "", html)  # no bare figures elsewhere
    assert "0.00000002" not in shown and "1234.5678" not in shown and "12345<" not in shown


@pytest.mark.usefixtures("frozen_now")
def test_generation_detail_shows_money_and_counts_in_the_one_format(client, people: People):
    mine = record(
        people.owner_key,
        prompt_tokens=123456,
        completion_tokens=7890,
        duration_ms=12500,
        cost=Decimal("0.5"),
        input_price=Decimal("150"),
        output_price=Decimal("0.15"),
    )
    client.force_login(people.owner)

    html = _text(client.get(reverse("reports:generation", args=[mine.generation_id])).content.decode())

    assert "<dd>123,456</dd>" in html and "<dd>7,890</dd>" in html and "12,500 ms" in html
    assert '<strong><span class="money" title="$0.50000000">$0.50</span></strong>' in html
    assert 'input <span class="money" title="$150.000000">$150.00</span>' in html
    assert 'output <span class="money" title="$0.150000">$0.15</span>' in html


def test_admin_lists_show_money_and_counts_in_the_one_format(admin_client, people: People):
    api_key, _ = api_key_create("limited", credit_limit=Decimal("5"))
    record(api_key, prompt_tokens=1234, completion_tokens=56789, cost=Decimal("0.5"))
    RouterModel.objects.create(
        name="m/priced", input_price=Decimal("150"), output_price=Decimal("0.6"), context_length=128000
    )

    keys = _text(admin_client.get(reverse("admin:billing_apikey_changelist")).content.decode())
    records = _text(admin_client.get(reverse("admin:billing_usagerecord_changelist")).content.decode())
    models = _text(admin_client.get(reverse("admin:routing_routermodel_changelist")).content.decode())

    assert '<td class="field-credit_limit_display"><span class="money" title="$5.000000">$5.00</span></td>' in keys
    assert '<td class="field-spend_this_period"><span class="money" title="$0.50000000">$0.50</span></td>' in keys
    assert "0.500000" not in keys.replace('title="$0.50000000"', "")
    assert '<td class="field-tokens">1,234 / 56,789</td>' in records
    assert '<td class="field-cost_usd"><span class="money" title="$0.50000000">$0.50</span></td>' in records
    assert '<td class="field-input_price_display"><span class="money" title="$150.000000">$150.00</span></td>' in models
    assert '<td class="field-output_price_display"><span class="money" title="$0.600000">$0.60</span></td>' in models
    assert '<td class="field-context_length_display">128,000</td>' in models
    assert "Input / 1M tokens" in models


# Chart series and colours


@pytest.mark.usefixtures("frozen_now")
def test_unknown_model_names_fold_into_one_series_with_fixed_colours(client, people: People):
    RouterModel.objects.create(name="m/alpha")
    RouterModel.objects.create(name="m/beta")
    key = people.owner_key
    record(key, model_name="m/alpha", prompt_tokens=1, cost=Decimal("1"))
    record(key, model_name="m/beta", prompt_tokens=10, cost=Decimal("2"))
    record(key, model_name="demo/ech0", prompt_tokens=100, cost=Decimal("4"))
    record(key, model_name="", prompt_tokens=1000, status=UsageStatus.ERROR)
    record(key, NOW - timedelta(days=1), model_name="typo", prompt_tokens=10000)
    client.force_login(people.owner)

    chart = client.get(reverse("reports:usage")).context["chart_data"]

    assert chart["models"] == ["m/alpha", "m/beta", OTHER_MODELS]
    assert chart["tokens"][OTHER_MODELS][-2:] == [10000, 1100]
    assert chart["cost"][OTHER_MODELS][-1] == 4.0
    assert chart["colours"][OTHER_MODELS] == OTHER_COLOUR
    assert set(chart["colours"]) == set(chart["models"])
    # A model keeps its colour whatever the filter shows beside it.
    only_beta = client.get(reverse("reports:usage"), {"model": "m/beta"}).context["chart_data"]
    assert only_beta["models"] == ["m/beta"]
    assert only_beta["colours"]["m/beta"] == chart["colours"]["m/beta"] == series_colour("m/beta")
    # Status colours are reserved: the status chart uses them, no model ever does.
    status = dict(zip(chart["status"]["labels"], chart["status"]["colours"], strict=True))
    assert status == STATUS_COLOURS
    assert not set(MODEL_PALETTE) & set(STATUS_COLOURS.values())
    assert OTHER_COLOUR not in MODEL_PALETTE and OTHER_COLOUR not in STATUS_COLOURS.values()


def test_model_colours_are_spread_over_the_palette_and_stable():
    names = [f"vendor/model-{i}" for i in range(200)]
    colours = [series_colour(n) for n in names]
    assert colours == [series_colour(n) for n in names]
    assert set(colours) == set(MODEL_PALETTE)


@pytest.mark.usefixtures("frozen_now")
def test_empty_charts_say_no_data_instead_of_drawing_bare_axes(client, people: People):
    client.force_login(people.owner)

    empty = client.get(reverse("reports:usage")).content.decode()
    assert empty.count("No data for this range.") == 4
    assert "<canvas" not in empty

    record(people.owner_key, prompt_tokens=3, status=UsageStatus.ERROR)  # free: tokens but no cost
    some = client.get(reverse("reports:usage")).content.decode()
    assert 'id="no-data-cost"' in some
    assert 'id="chart-tokens"' in some and 'id="chart-status"' in some and 'id="chart-api"' in some


# Login, 404, favicon


def test_both_login_pages_are_the_admins_with_one_name(client):
    admin_login = client.get(reverse("admin:login")).content.decode()
    login = client.get(reverse("login")).content.decode()
    for html in (admin_login, login):
        assert '<div id="site-name"><a href="/admin/">Siraya Model Router</a></div>' in html
        assert 'id="login-form"' in html and "admin/css/login.css" in html
        assert "Django administration" not in html
    assert "Key owners and operators" in login
    assert 'rel="icon"' in login


def test_login_page_posts_and_logs_in(client, people: People):
    wrong = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert "Please enter a correct username and password" in wrong.content.decode()
    assert 'class="errornote"' in wrong.content.decode()
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302 and response["Location"] == reverse("reports:usage")


def test_page_not_found_is_the_sites_own_page(client, people: People):
    assert not settings.DEBUG
    anonymous = client.get("/no-such-page/")
    assert anonymous.status_code == 404
    html = anonymous.content.decode()
    assert "Page not found" in html and "reports/usage.css" in html and 'rel="icon"' in html
    assert f'href="{reverse("login")}"' in html
    client.force_login(people.owner)
    assert f'href="{reverse("reports:usage")}"' in client.get("/no-such-page/").content.decode()
    # The API keeps its own JSON errors.
    assert client.get("/v1/no-such-thing").json()["error"]["code"] == "not_found"


def test_favicon_is_served_and_linked(client, people: People):
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"].endswith("/favicon.ico")
    ico = finders.find("favicon.ico")
    svg = finders.find("favicon.svg")
    assert ico and open(ico, "rb").read(4) == b"\0\0\1\0"  # an ICO header
    assert svg and "<svg" in open(svg).read()
    client.force_login(people.owner)
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get(reverse("reports:usage")).content.decode()
