"""The overview page in headless Chromium: the chart draws, trend lines and budget bars show, no CSP violation.

Screenshots at desktop width (light) and phone width (dark) go to artifacts/.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.utils import timezone

from billing.models import RouterInstance, UsageStatus
from billing.services import api_key_create
from conftest import ARTIFACTS
from reports.tests.conftest import record
from reports.tests.test_browser import (
    CANVAS_PIXELS,
    CSP_VIOLATIONS,
    PASSWORD,
    _require_browser,
    chromium_page,
)
from reports.tests.test_browser_look import LUMINANCE, _fits

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _operator_and_keys() -> str:
    """An operator and ten keys with a week of spend, one with a limit and a request in flight; its prefix."""
    user = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "overviewsalt", iterations=1000)
    user.save()
    now = timezone.now()
    budgeted, _ = api_key_create("budgeted-key", credit_limit=Decimal("100"), limit_reset="monthly")
    # A request in flight on another, live router process: the live router's reconciler leaves it alone.
    elsewhere = RouterInstance.objects.create(
        id="overview-elsewhere", hostname="another-host", pid=1, started_at=now, heartbeat_at=now + timedelta(days=1)
    )
    record(budgeted, now - timedelta(minutes=1), cost=Decimal("0"), status=UsageStatus.IN_PROGRESS,
           instance_id=elsewhere.id, reserved_cost=Decimal("10"), reserved_until=now + timedelta(hours=1))  # fmt: skip
    record(budgeted, now - timedelta(minutes=2), cost=Decimal("20"), model_name="m/dear", vendor_name="v-two")
    for i in range(10):
        key, _ = api_key_create(f"key-{i}")
        for day in range(7):
            record(key, now - timedelta(days=day, minutes=3), cost=Decimal(i + day % 3), prompt_tokens=100 * i)
    return budgeted.prefix


@pytest.mark.parametrize(("scheme", "viewport"), [("light", {"width": 1360, "height": 1000}),
                                                  ("dark", {"width": 390, "height": 844})])  # fmt: skip
def test_overview_draws_its_chart_trends_and_budgets(live_router, transactional_db, scheme, viewport):
    _require_browser()
    CSP_VIOLATIONS.clear()
    prefix = _operator_and_keys()
    ARTIFACTS.mkdir(exist_ok=True)
    base, width = live_router.url, viewport["width"]

    with chromium_page(viewport, scheme) as page:
        page.goto(base + "/accounts/login/?next=/usage/overview/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("#login-form input[type=submit]")
        page.wait_for_url(base + "/usage/overview/")
        page.wait_for_selector("body[data-charts-ready=true]")

        assert page.input_value("#id_range") == "7d"  # the control shows the range displayed
        pixels = page.evaluate(CANVAS_PIXELS, "chart-key-spend")
        labels = page.evaluate("Chart.getChart('chart-key-spend').data.datasets.map(d => d.label)")
        trends = page.locator("#top-keys svg.trend polyline").count()
        trend_stroke = page.evaluate("getComputedStyle(document.querySelector('#top-keys polyline')).stroke")
        bar = page.locator(f'tr[data-key="{prefix}"] svg.budget')
        bar_box = bar.bounding_box()
        spent_width = bar.locator(".budget-spent").get_attribute("width")
        held_width = bar.locator(".budget-held").get_attribute("width")
        percent = page.inner_text(f'tr[data-key="{prefix}"] .budget-percent')
        dark = page.evaluate(LUMINANCE, ".card") < 0.3
        _fits(page, width)
        page.screenshot(path=str(ARTIFACTS / f"overview-{scheme}-{width}.png"), full_page=True)

    assert CSP_VIOLATIONS == []
    assert pixels["width"] > 100 and pixels["coloured"] > 200, pixels  # lines and areas drawn, not bare axes
    assert len(labels) == 9 and labels[-1] == "other keys", labels
    assert trends == 10 and trend_stroke not in ("", "none")
    assert bar_box is not None and bar_box["width"] > 100
    assert (spent_width, held_width, percent) == ("20.00", "10.00", "30%")
    assert dark is (scheme == "dark")
