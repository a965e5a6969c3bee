"""One look in headless Chromium: every page at desktop and phone width, light and dark, screenshots in artifacts/.

At 390 px the report pages fit the screen (their tables scroll inside their cards); in the dark
colour scheme /usage/, its charts, the login pages and the admin are dark; empty charts say so;
the favicon is served; the two login pages are one.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.utils import timezone

from billing.models import UsageStatus
from billing.services import api_key_create
from conftest import ARTIFACTS
from reports.charts import OTHER_COLOUR, series_colour
from reports.selectors import OTHER_MODELS
from reports.tests.conftest import record
from reports.tests.test_browser import (
    CSP_VIOLATIONS,
    PASSWORD,
    _require_browser,
    chromium_page,
)
from routing.models import RouterModel

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP = {"width": 1360, "height": 1000}
PHONE = {"width": 390, "height": 844}

# Relative luminance (0 black .. 1 white) of a computed CSS colour "rgb(r, g, b)".
LUMINANCE = """(selector) => {
  const colour = getComputedStyle(document.querySelector(selector)).backgroundColor;
  const [r, g, b] = colour.match(/\\d+/g).map(Number);
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}"""


def _operator_and_usage() -> str:
    """An operator, one configured model, and a week of usage under several names; return a generation id."""
    user = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "looksalt", iterations=1000)
    user.save()
    RouterModel.objects.create(name="demo/look", input_price=Decimal("150"), output_price=Decimal("600"))
    api_key, _ = api_key_create("a-key-with-a-rather-long-name-for-a-phone", credit_limit=Decimal("1500"))
    now = timezone.now()
    detail = record(
        api_key,
        now - timedelta(minutes=5),
        model_name="demo/look",
        prompt_tokens=123456,
        completion_tokens=65432,
        cost=Decimal("1234.56789012"),
        first_token_ms=1234,
        duration_ms=54321,
        streamed=True,
        vendor_name="a-vendor-with-a-long-name",
        upstream_model="upstream-model-with-a-long-name-2025-01-01",
    )
    for day in range(1, 6):
        when = now - timedelta(days=day)
        record(
            api_key, when, model_name="demo/look", prompt_tokens=1000 * day, completion_tokens=500, cost=Decimal("0.75")
        )
        record(api_key, when, model_name="demo/ech0", prompt_tokens=700, completion_tokens=300, cost=Decimal("0.00002"))
        record(api_key, when, model_name="", prompt_tokens=50, status=UsageStatus.ERROR, error_code="no_model")
    return detail.generation_id


def _log_in(page, base: str) -> None:
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("#login-form input[type=submit]")
    page.wait_for_url(base + "/usage/")


# The outermost elements that reach past the right edge, to say what does not fit.
TOO_WIDE = """(width) => [...document.querySelectorAll("body *")]
  .filter(e => e.getBoundingClientRect().right > width && !(e.parentElement.getBoundingClientRect().right > width))
  .map(e => e.tagName + "#" + e.id + "." + e.className + " " + Math.round(e.getBoundingClientRect().right))"""


def _fits(page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} is {scroll} px wide at {width} px: {page.evaluate(TOO_WIDE, width)}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_page_in_one_look_at_each_width_and_scheme(live_router, transactional_db, scheme, viewport):
    _require_browser()
    CSP_VIOLATIONS.clear()
    generation_id = _operator_and_usage()
    ARTIFACTS.mkdir(exist_ok=True)
    base, width = live_router.url, viewport["width"]
    shot = f"look-{scheme}-{'phone' if width < 600 else 'desktop'}"
    dark = scheme == "dark"

    with chromium_page(viewport, scheme) as page:
        # Logged out: both login pages are the admin's, one name; the 404 page is the site's own.
        page.goto(base + "/admin/login/")
        admin_brand = page.inner_text("#site-name")
        page.screenshot(path=str(ARTIFACTS / f"{shot}-admin-login.png"), full_page=True)
        page.goto(base + "/accounts/login/")
        assert page.inner_text("#site-name") == admin_brand == "Siraya Model Router"
        assert (page.evaluate(LUMINANCE, "body") < 0.3) is dark
        _fits(page, width)
        page.screenshot(path=str(ARTIFACTS / f"{shot}-login.png"), full_page=True)
        page.goto(base + "/no-such-page/")
        assert page.inner_text("h1") == "Page not found"
        assert page.evaluate("getComputedStyle(document.querySelector('#not-found')).borderRadius") == "8px"
        assert (page.evaluate(LUMINANCE, "body") < 0.3) is dark
        _fits(page, width)
        page.screenshot(path=str(ARTIFACTS / f"{shot}-404.png"), full_page=True)
        favicon = page.evaluate(
            "fetch('/favicon.ico').then(r => [r.status, r.headers.get('content-type'), r.redirected])"
        )
        assert favicon[0] == 200 and "icon" in favicon[1], favicon

        _log_in(page, base)

        # The report: charts fit, one series per configured model plus one for the rest, dark when asked.
        page.goto(base + "/usage/?range=30d")
        page.wait_for_selector("body[data-charts-ready=true]")
        _fits(page, width)
        for table in ("#table-daily", "#table-api", "#table-generations"):
            card = page.evaluate(f"document.querySelector('{table}').closest('.card').getBoundingClientRect().right")
            assert card <= width, (table, card)
        for canvas in ("chart-cost", "chart-tokens", "chart-status", "chart-api"):
            assert page.evaluate(f"document.getElementById('{canvas}').getBoundingClientRect().right") <= width
        series = page.evaluate("Chart.getChart('chart-cost').data.datasets.map(d => [d.label, d.backgroundColor])")
        assert series == [["demo/look", series_colour("demo/look")], [OTHER_MODELS, OTHER_COLOUR]]
        assert (page.evaluate(LUMINANCE, "body") < 0.3) is dark
        assert (page.evaluate(LUMINANCE, ".card") < 0.3) is dark
        # Chart text follows the scheme: light grey on dark, dark grey on light.
        assert page.evaluate("Chart.defaults.color") == ("#9ca3af" if dark else "#6b7280")
        assert page.inner_text("[data-total=cost]") == "$1,238.32"
        assert page.get_attribute("[data-total=cost] .money", "title") == "$1238.31799012"
        assert page.inner_text("[data-total=prompt_tokens]") == "142,206"
        page.screenshot(path=str(ARTIFACTS / f"{shot}-usage.png"), full_page=True)

        # A range without data: a message, not bare axes.
        page.goto(base + "/usage/?range=custom&start=2020-01-01&end=2020-01-07")
        assert page.locator("canvas").count() == 0
        assert page.locator("text=No data for this range.").count() == 4
        _fits(page, width)
        page.screenshot(path=str(ARTIFACTS / f"{shot}-usage-empty.png"), full_page=True)

        page.goto(base + f"/usage/generations/{generation_id}/")
        _fits(page, width)
        assert "$1,234.57" in page.inner_text("main")
        page.screenshot(path=str(ARTIFACTS / f"{shot}-generation.png"), full_page=True)

        # The admin follows the same preference (its own CSS); screenshots of each list.
        for name, path in (
            ("admin", "/admin/"),
            ("admin-keys", "/admin/billing/apikey/"),
            ("admin-usage", "/admin/billing/usagerecord/"),
            ("admin-models", "/admin/routing/routermodel/"),
            ("admin-vendors", "/admin/routing/vendor/"),
        ):
            page.goto(base + path)
            assert (page.evaluate(LUMINANCE, "body") < 0.3) is dark, name
            page.screenshot(path=str(ARTIFACTS / f"{shot}-{name}.png"), full_page=True)
        assert "$1,500.00" in page.goto(base + "/admin/billing/apikey/").text()

    assert CSP_VIOLATIONS == []
