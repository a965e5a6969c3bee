"""The operator's admin pages in headless Chromium: the usage-record list at desktop width, the vendor form.

Screenshots go to artifacts/. Each test starts its own router process: the admin's change form
caches content-type ids in the process that renders it, and the shared ``live_router`` would
keep them past the flush that ends a transactional test (a later test's admin log entry would
then point at a content type that no longer exists).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from playwright.sync_api import ViewportSize

from billing.models import UsageApi, UsageRecord, UsageStatus
from billing.services import api_key_create
from conftest import ARTIFACTS
from reports.tests.test_browser import CSP_VIOLATIONS, PASSWORD, _require_browser, browser_page
from routing.models import Vendor

DESKTOP: ViewportSize = {"width": 1400, "height": 900}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@contextmanager
def admin_page(base_url: str, viewport: ViewportSize):
    """A fresh Chromium page of ``viewport`` size, logged in to the admin as the operator."""
    user = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    # The live router runs with the real settings' hashers, not the test settings' MD5.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "browsersalt", iterations=1000)
    user.save()
    ARTIFACTS.mkdir(exist_ok=True)
    CSP_VIOLATIONS.clear()
    with browser_page(base_url, viewport) as page:
        yield page


# Where each column's cells end, and whether the results table scrolls sideways.
COLUMN_EDGES = """() => {
  const edges = {};
  for (const cell of document.querySelectorAll("#result_list tbody td, #result_list tbody th")) {
    const name = [...cell.classList].find(c => c.startsWith("field-"));
    if (name) edges[name.slice(6)] = Math.max(edges[name.slice(6)] || 0, cell.getBoundingClientRect().right);
  }
  const results = document.querySelector(".results");
  return {edges, viewport: window.innerWidth, page: document.documentElement.scrollWidth,
          results: results.scrollWidth - results.clientWidth};
}"""


def _busy_records() -> None:
    """Records with long names and large figures: the widest the list's cells get."""
    now = datetime.now(UTC)
    keys = [api_key_create(name)[0] for name in ("production-backend-service", "nightly-batch-summaries")]
    statuses = list(UsageStatus)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            generation_id=f"gen-{0x19A2B3C4D5E + i:011x}{i:016x}",
            api_key=keys[i % 2],
            model_name=("openai/gpt-4o-mini-2024-07-18", "anthropic/claude-3-7-sonnet-latest")[i % 2],
            vendor_name="azure-sweden-central-production",
            upstream_model="gpt-4o-mini-2024-07-18-global-standard",
            status=statuses[i % len(statuses)],
            api=UsageApi.values[i % len(UsageApi.values)],  # the widest name in the column too
            streamed=bool(i % 2),
            http_status=200,
            prompt_tokens=1_234_567 + i,
            completion_tokens=987_654 + i,
            cost=Decimal("1234.56789012"),
            first_token_ms=12_345,
            duration_ms=123_456,
            created_at=now - timedelta(minutes=i),
        )
        for i in range(20)
    )


def test_usage_record_list_fits_1400_px_with_status_tokens_and_cost(server_factory, transactional_db):
    _require_browser()
    _busy_records()
    base = server_factory().url

    with admin_page(base, DESKTOP) as page:
        page.goto(base + "/admin/billing/usagerecord/")
        page.wait_for_selector("#result_list tbody tr")
        seen = page.evaluate(COLUMN_EDGES)
        page.screenshot(path=str(ARTIFACTS / "admin-usage-records-1400.png"), full_page=True)
        page.click("#result_list tbody tr:first-child a")
        page.wait_for_selector("fieldset")
        headings = page.locator("fieldset h2").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "admin-usage-record-detail.png"), full_page=True)

    assert CSP_VIOLATIONS == []
    for column in ("status", "cost_usd", "tokens"):
        assert column in seen["edges"] and seen["edges"][column] <= seen["viewport"], (column, seen)
    assert seen["page"] <= seen["viewport"] and seen["results"] <= 0, seen  # nothing to scroll sideways to
    assert [h.strip().lower() for h in headings[:6]] == [
        "request", "tokens", "cost", "timing", "vendor and attempts", "errors"
    ]  # fmt: skip


def test_vendor_form_switches_kind_and_shows_errors_at_their_fields(server_factory, transactional_db):
    _require_browser()
    base = server_factory().url

    with admin_page(base, DESKTOP) as page:
        page.goto(base + "/admin/routing/vendor/add/?kind=openai")
        assert page.input_value("#id_kind") == "openai"
        page.select_option("#id_kind", "azure")  # the page's script loads the Azure form
        page.wait_for_url("**kind=azure**")
        page.wait_for_selector("#id_option_api_style")
        assert page.input_value("#id_option_api_style") == "deployment"
        assert page.input_value("#id_option_stream_usage") == "auto"
        assert "RESOURCE.openai.azure.com" in page.inner_text(".field-base_url")
        page.fill("#id_name", "azure-west")
        page.fill("#id_option_api_version", "latest")
        page.fill("#id_secret_api_key", "sk-browser-typed-secret-0123")
        page.click("input[name=_save]")
        page.wait_for_selector(".errornote")
        base_url_error = page.inner_text(".field-base_url .errorlist")
        version_error = page.inner_text(".field-option_api_version .errorlist")
        key_error = page.inner_text(".field-secret_api_key .errorlist")
        nonfield = page.locator(".errorlist.nonfield").count()
        typed = page.input_value("#id_secret_api_key")
        html = page.content()
        page.screenshot(path=str(ARTIFACTS / "admin-vendor-form-errors.png"), full_page=True)

    assert CSP_VIOLATIONS == []
    assert "Base URL is required for Azure" in base_url_error
    assert "API version must look like" in version_error
    assert "Enter this again" in key_error
    assert nonfield == 0 and "--" not in base_url_error + version_error
    assert typed == "" and "sk-browser-typed-secret-0123" not in html
    assert not Vendor.objects.exists()
