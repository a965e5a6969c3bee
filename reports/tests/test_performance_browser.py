"""The performance report in headless Chromium: reached from the nav, readable at desktop and phone widths, dark mode.

Screenshots go to artifacts/ (performance-*.png).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from billing.services import api_key_create
from conftest import ARTIFACTS
from reports.tests.test_browser import CSP_VIOLATIONS, _operator, _require_browser, browser_page
from routing.models import Deployment, RouterModel, Vendor

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _traffic() -> None:
    key, _ = api_key_create("perf-key")
    model = RouterModel.objects.create(name="demo/perf")
    plans = [
        Deployment.objects.create(
            model=model, vendor=Vendor.objects.create(name=name, kind="openai"), upstream_model=up
        )
        for name, up in (("vendor-fast", "fast-1"), ("vendor-slow", "slow-1"))
    ]
    now = timezone.now()
    for i in range(40):
        deployment = plans[i % 2]
        failed = i % 7 == 0
        attempts = [{"deployment": deployment.pk, "vendor": deployment.vendor.name, "outcome": "ok"}]
        if i % 4 == 1:
            attempts.insert(0, {"deployment": plans[0].pk, "vendor": "vendor-fast", "outcome": "error", "code": "x"})
        UsageRecord.objects.create(
            generation_id=f"gen-perf{i:04d}",
            api_key=key,
            model=model,
            model_name=model.name,
            deployment=deployment,
            vendor=deployment.vendor,
            vendor_name=deployment.vendor.name,
            upstream_model=deployment.upstream_model,
            status="error" if failed else "completed",
            error_code="upstream_timeout" if failed else "",
            streamed=True,
            completion_tokens=0 if failed else 200 + i,
            first_token_ms=None if failed else 100 + 20 * i,
            duration_ms=1500 + 100 * i,
            attempts=attempts,
            created_at=now - timedelta(hours=i),
        )


def test_operator_reads_the_performance_report(live_router, transactional_db):
    _require_browser()
    CSP_VIOLATIONS.clear()
    _operator()
    _traffic()
    ARTIFACTS.mkdir(exist_ok=True)
    base = live_router.url

    with browser_page(base) as page:
        page.goto(base + "/usage/")
        page.click("header.top nav a:text('Performance')")
        page.wait_for_url(base + "/usage/performance/")
        assert page.input_value("#id_range") == "7d"  # the control shows the range displayed
        models = page.locator("#table-models tbody tr")
        assert models.count() == 1 and "demo/perf" in models.first.inner_text()
        deployments = page.locator("#table-deployments tbody tr")
        assert deployments.count() == 2
        text = page.inner_text("#table-deployments")
        assert "vendor-fast" in text and "slow-1" in text and "upstream_timeout" in text
        assert page.locator("#table-deployments [data-cooldown]").count() == 2
        assert "more than one attempt" in page.inner_text("#definitions")
        page.screenshot(path=str(ARTIFACTS / "performance.png"), full_page=True)

        page.select_option("#id_range", "today")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/usage/performance/?range=today")
        assert page.input_value("#id_range") == "today"

        # Phone width: the tables scroll inside their cards, the page does not widen.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(base + "/usage/performance/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(ARTIFACTS / "performance-phone.png"), full_page=True)

        page.emulate_media(color_scheme="dark")
        page.set_viewport_size({"width": 1360, "height": 1000})
        page.reload()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background != "rgb(255, 255, 255)"
        page.screenshot(path=str(ARTIFACTS / "performance-dark.png"), full_page=True)

    assert CSP_VIOLATIONS == []
