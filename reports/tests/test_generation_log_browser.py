"""The generation log in headless Chromium: auto-refresh reloads the same filtered view; keys and models link both ways.

Screenshots go to artifacts/.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.db import connection

from billing.models import ApiKey, UsageRecord, UsageStatus
from billing.services import api_key_create
from conftest import ARTIFACTS
from reports.tests.test_browser import CSP_VIOLATIONS, PASSWORD, _require_browser, browser_page
from routing.models import RouterModel

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _operator() -> None:
    user = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    # The live router runs with the real settings' hashers, not the test settings' MD5.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "browsersalt", iterations=1000)
    user.save()


def _record(key: ApiKey, n: int, **fields: Any) -> UsageRecord:
    fields.setdefault("model_name", "m/alpha")
    fields.setdefault("status", UsageStatus.COMPLETED)
    return UsageRecord.objects.create(
        generation_id=f"gen-browser{n:06d}",
        api_key=key,
        vendor_name="vendor-a",
        created_at=datetime.now(UTC) - timedelta(seconds=n),
        **fields,
    )


def _in_a_thread(work: Callable[[], object]) -> None:
    """Run database work outside Playwright's event loop (Django refuses it inside one)."""

    def run() -> None:
        try:
            work()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_auto_refresh_reloads_the_same_filtered_view(server_factory, transactional_db):
    _require_browser()
    _operator()
    key, _ = api_key_create("batch-key")
    RouterModel.objects.create(name="m/alpha")
    _record(key, 1)
    _record(key, 2, status=UsageStatus.ERROR, error_code="upstream_error")
    base = server_factory().url
    ARTIFACTS.mkdir(exist_ok=True)
    CSP_VIOLATIONS.clear()
    url = f"{base}/usage/?range=today&status=completed&refresh=30"

    with browser_page(base) as page:
        page.clock.install()  # the page's timers run on a clock the test moves: no waiting 30 s
        loads: list[str] = []
        page.on("load", lambda loaded: loads.append(loaded.url))
        page.goto(url)
        page.wait_for_selector("body[data-refresh-seconds='30']")
        assert page.input_value("#id_refresh") == "30" and page.input_value("#id_status") == "completed"
        before = page.inner_text("[data-total=requests]")
        page.evaluate("window.notReloaded = true")
        _in_a_thread(lambda: _record(key, 3))  # arrives while the operator watches

        page.clock.run_for(29_000)
        assert page.evaluate("window.notReloaded === true")  # not before its interval
        # Waiting for the reload as a navigation, not with wait_for_function: its string predicate
        # is polled through eval in the page, which the page's CSP reports as a violation.
        with page.expect_navigation():
            page.clock.run_for(2_000)
        assert page.evaluate("window.notReloaded === undefined")
        page.wait_for_selector("body[data-refresh-seconds='30']")
        after = page.inner_text("[data-total=requests]")
        reloaded_url = page.url
        page.screenshot(path=str(ARTIFACTS / "usage-auto-refresh.png"), full_page=True)

        # Editing a filter stops the reload: what the operator types is not thrown away.
        page.fill("#id_error_code", "upstream_")
        page.wait_for_selector("body[data-refresh-seconds='paused']")
        page.evaluate("window.editing = true")
        page.clock.run_for(61_000)
        kept_typing = page.evaluate("window.editing === true") and page.input_value("#id_error_code") == "upstream_"
        page.fill("#id_error_code", "")

        # Turned off, the page stays put.
        page.select_option("#id_refresh", "")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/usage/?**")
        page.wait_for_selector("#totals")
        page.evaluate("window.stayed = true")
        page.clock.run_for(120_000)
        stayed = page.evaluate("window.stayed === true")
        final_query = _query(page.url)

    assert CSP_VIOLATIONS == []
    assert (before, after) == ("1", "2")
    assert reloaded_url == url and loads[:2] == [url, url]
    assert kept_typing
    assert stayed and "refresh" not in final_query


def test_key_and_model_links_lead_between_admin_and_the_filtered_report(server_factory, transactional_db):
    _require_browser()
    _operator()
    key, _ = api_key_create("batch-key")
    other, _ = api_key_create("web-key")
    model = RouterModel.objects.create(name="m/alpha")
    RouterModel.objects.create(name="m/beta")
    _record(key, 1)
    _record(other, 2, model_name="m/beta")
    base = server_factory().url
    ARTIFACTS.mkdir(exist_ok=True)
    CSP_VIOLATIONS.clear()

    with browser_page(base) as page:
        # Admin key list -> the report of that key.
        page.goto(base + "/admin/billing/apikey/")
        page.click(f"#result_list a.usage-link[href$='key={key.pk}']")
        page.wait_for_selector("#table-generations")
        from_key_list = _query(page.url)
        generations = page.locator("#table-generations tbody tr").count()

        # A model cell of the report -> the report narrowed to that model too, the key kept.
        page.goto(base + "/usage/?range=today&status=completed")
        page.click("#table-generations a.filter-link:text('m/beta')")
        page.wait_for_url("**model=m%2Fbeta**")
        by_model = _query(page.url)
        model_shown = page.input_value("#id_model")
        page.click("#table-generations a.filter-link:text('web-key')")
        page.wait_for_url("**key=*")
        by_model_and_key = _query(page.url)
        page.screenshot(path=str(ARTIFACTS / "usage-filtered-by-links.png"), full_page=True)

        # The model's admin page -> its report.
        page.goto(f"{base}/admin/routing/routermodel/{model.pk}/change/")
        page.click("#model-usage")
        page.wait_for_selector("#table-generations")
        from_model_page = _query(page.url)
        model_rows = page.locator("#table-generations tbody tr").all_inner_texts()

    assert CSP_VIOLATIONS == []
    assert from_key_list == {"key": [str(key.pk)]} and generations == 1
    assert by_model == {"range": ["today"], "status": ["completed"], "model": ["m/beta"]} and model_shown == "m/beta"
    assert by_model_and_key == {
        "range": ["today"],
        "status": ["completed"],
        "model": ["m/beta"],
        "key": [str(other.pk)],
    }
    assert from_model_page == {"model": ["m/alpha"]}
    assert len(model_rows) == 1 and "batch-key" in model_rows[0]
