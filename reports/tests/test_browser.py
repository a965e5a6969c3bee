"""The operator's whole journey in headless Chromium against a live router.

Log in to the admin, add a vendor, a model with its deployment and a key (its plaintext shown
once), send a few requests with that key, then read /usage/: charts drawn, totals equal to the
records. Screenshots go to artifacts/.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from decimal import Decimal
from typing import Literal

import httpx
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.db.models import Count, Sum
from playwright.sync_api import ViewportSize

from billing.models import ApiKey, UsageRecord
from conftest import ARTIFACTS, wait_settled

# What Chromium reports as prefers-color-scheme (Playwright's new_context argument).
ColorScheme = Literal["light", "dark", "no-preference"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery-staple"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser() -> None:
    missing = []
    if not shutil.which(CHROMIUM):
        missing.append(CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("SIRAYA_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


# What Chromium reports, on the console and as page errors, when the Content-Security-Policy blocks something.
CSP_VIOLATIONS: list[str] = []


def _watch_for_csp_violations(page) -> None:
    def console(message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            CSP_VIOLATIONS.append(f"{page.url}: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda error: CSP_VIOLATIONS.append(f"{page.url}: page error {error}"))
    # The DOM event fires for every blocked resource, even where the console stays quiet.
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "'Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
    )


@contextmanager
def chromium_page(viewport: ViewportSize | None = None, color_scheme: ColorScheme | None = None):
    """A fresh headless Chromium page (1360 x 1000 unless ``viewport``), watched for CSP violations."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport=viewport or {"width": 1360, "height": 1000}, color_scheme=color_scheme
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            _watch_for_csp_violations(page)
            yield page
        finally:
            browser.close()


@contextmanager
def browser_page(base_url: str, viewport: ViewportSize | None = None):
    """A fresh Chromium page (``chromium_page``), logged in to the admin as the operator."""
    with chromium_page(viewport) as page:
        page.goto(base_url + "/admin/login/?next=/admin/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(base_url + "/admin/")
        yield page


# Counts pixels of a canvas that are drawn (not transparent) and that carry a series colour.
CANVAS_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0, coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0) drawn++;
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (data[i + 3] > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 80) coloured++;
  }
  return {width: canvas.width, height: canvas.height, drawn, coloured};
}"""


def test_operator_sets_up_from_the_browser_and_reads_costs(live_router, transactional_db):
    _require_browser()
    CSP_VIOLATIONS.clear()
    user = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    # The live router runs with the real settings' hashers, not the test settings' MD5.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "browsersalt", iterations=1000)
    user.save()
    ARTIFACTS.mkdir(exist_ok=True)
    base = live_router.url

    with browser_page(base) as page:
        # A vendor: choose the kind, then fill in that kind's fields.
        page.goto(base + "/admin/routing/vendor/add/")
        page.click("text=Demo (local, no network)")
        page.fill("#id_name", "local-demo")
        page.fill("#id_option_token_delay", "0")
        page.click("input[name=_save]")
        assert "was added successfully" in page.inner_text(".messagelist")

        # A model with prices and its deployment on that vendor.
        page.goto(base + "/admin/routing/routermodel/add/")
        page.fill("#id_name", "demo/browser")
        page.fill("#id_input_price", "150")
        page.fill("#id_output_price", "600")
        page.select_option("#id_deployments-0-vendor", label="local-demo")
        page.fill("#id_deployments-0-upstream_model", "echo")
        page.click("input[name=_save]")
        assert "was added successfully" in page.inner_text(".messagelist")

        # A key: its plaintext is on the next page, once.
        page.goto(base + "/admin/billing/apikey/add/")
        page.fill("#id_name", "browser-key")
        page.fill("#id_credit_limit", "5")
        page.click("input[name=_save]")
        plaintext = page.input_value("#new-api-key")
        assert plaintext.startswith("sk-siraya-")
        page.click("#new-api-key")  # the page's script (a static file, as the CSP requires) selects it
        assert page.evaluate("document.activeElement.id") == "new-api-key"
        assert page.evaluate("getComputedStyle(document.getElementById('new-api-key')).fontFamily") == "monospace"
        page.screenshot(path=str(ARTIFACTS / "admin-key-created.png"), mask=[page.locator("#new-api-key")])
        page.click("text=Done: go to the key")
        assert plaintext not in page.content()
        page.goto(base + "/admin/billing/apikey/")
        assert plaintext not in page.content()
        assert "browser-key" in page.content()
        assert page.evaluate("getComputedStyle(document.querySelector('.key-status-active')).color") == (
            "rgb(22, 101, 52)"
        )
        page.screenshot(path=str(ARTIFACTS / "admin-keys.png"), full_page=True)

    # A few requests with the new key, one of them streamed.
    headers = {"Authorization": f"Bearer {plaintext}"}
    for text, stream in (("hello there", False), ("what does this cost", False), ("stream me a few words", True)):
        body = {"model": "demo/browser", "messages": [{"role": "user", "content": text}], "stream": stream}
        response = httpx.post(base + "/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
    # And one through the Messages API, as Anthropic's SDKs send it: the report tells the APIs apart.
    body = {"model": "demo/browser", "max_tokens": 50, "messages": [{"role": "user", "content": "hi from claude code"}]}
    response = httpx.post(base + "/v1/messages", json=body, headers={"x-api-key": plaintext}, timeout=30)
    assert response.status_code == 200, response.text
    wait_settled()
    api_key = ApiKey.objects.get(name="browser-key")
    expected = UsageRecord.objects.filter(api_key=api_key).aggregate(
        requests=Count("pk"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cost=Sum("cost")
    )
    assert expected["requests"] == 4 and expected["cost"] > 0

    with browser_page(base) as page:
        page.goto(base + "/usage/?range=7d")
        page.wait_for_selector("body[data-charts-ready=true]")
        charts = ("chart-cost", "chart-tokens", "chart-status", "chart-api")
        pixels = {c: page.evaluate(CANVAS_PIXELS, c) for c in charts}
        totals = {
            name: page.inner_text(f"[data-total={name}]")
            for name in ("requests", "prompt_tokens", "completion_tokens", "cost")
        }
        exact_cost = page.get_attribute("[data-total=cost] .money", "title")  # shown rounded, exact on hover
        daily_rows = page.locator("#table-daily tbody tr").all_inner_texts()
        api_rows = page.locator("#table-api tbody tr").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "usage-report.png"), full_page=True)
        # Narrowed to the Messages API: the filter stays in the URL, the controls and the export links.
        page.select_option("#id_api", "messages")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/usage/?*api=messages*")
        page.wait_for_selector("body[data-charts-ready=true]")
        messages_only = page.inner_text("[data-total=requests]"), page.input_value("#id_api")
        messages_csv = page.get_attribute("#csv-link", "href")
        page.goto(base + "/usage/?range=7d")
        page.click("#table-generations tbody tr:first-child a")
        detail = page.inner_text("main")
        page.screenshot(path=str(ARTIFACTS / "usage-generation.png"), full_page=True)
        page.goto(base + "/admin/billing/usagerecord/")
        assert "browser-key" in page.inner_text("#result_list")
        page.goto(base + "/usage/export.csv?range=nope")  # an invalid filter: the usage page, errors shown
        assert "Select a valid choice" in page.inner_text(".filters")

    assert CSP_VIOLATIONS == []

    for canvas, seen in pixels.items():
        assert seen["width"] > 100 and seen["height"] > 100, (canvas, seen)
        assert seen["coloured"] > 200, (canvas, seen)  # bars in a series colour, not just axes
    assert totals["requests"] == f"{expected['requests']:,}"
    assert totals["prompt_tokens"] == f"{expected['prompt']:,}"
    assert totals["completion_tokens"] == f"{expected['completion']:,}"
    assert totals["cost"].startswith("$") and Decimal(exact_cost.removeprefix("$")) == expected["cost"]
    assert len(daily_rows) == 1 and "demo/browser" in daily_rows[0] and "\t4\t" in daily_rows[0]
    assert [row.split("\t")[:2] for row in api_rows] == [["Chat completions", "3"], ["Messages", "1"]]
    assert messages_only == ("1", "messages") and "api=messages" in (messages_csv or "")
    assert "local-demo" in detail and "Attempts" in detail


def _operator() -> None:
    user = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "browsersalt", iterations=1000)
    user.save()


def test_report_controls_show_the_range_and_take_dates_only_when_custom(live_router, transactional_db):
    _require_browser()
    CSP_VIOLATIONS.clear()
    _operator()
    ARTIFACTS.mkdir(exist_ok=True)
    base = live_router.url

    with browser_page(base) as page:
        page.click("#site-usage-link")  # the admin header leads to the reports
        page.wait_for_url(base + "/usage/")
        page.wait_for_selector("body[data-controls-ready=true]")
        # The page shows the last 7 days, and so do the controls; the dates are the range's, not editable.
        assert page.input_value("#id_range") == "7d"
        first, last = page.input_value("#id_start"), page.input_value("#id_end")
        assert first and last and first < last and first in page.inner_text("h1") and last in page.inner_text("h1")
        assert page.is_disabled("#id_start") and page.is_disabled("#id_end")
        background = "getComputedStyle(document.getElementById('id_start')).backgroundColor"
        disabled_background = page.evaluate(background)
        page.screenshot(path=str(ARTIFACTS / "usage-controls-default.png"), full_page=True)

        page.select_option("#id_range", "custom")
        assert page.is_enabled("#id_start") and page.is_enabled("#id_end")
        assert page.evaluate(background) != disabled_background  # they look editable only when they are
        page.select_option("#id_range", "today")
        assert page.is_disabled("#id_start") and page.is_disabled("#id_end")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/usage/?*range=today*")
        page.wait_for_selector("body[data-controls-ready=true]")
        assert "start=" not in page.url and "end=" not in page.url  # disabled inputs are not sent
        assert page.input_value("#id_range") == "today"
        assert page.input_value("#id_start") == page.input_value("#id_end") == last

        # A custom range the wrong way round: the error at its field, the controls as sent, no report.
        page.select_option("#id_range", "custom")
        page.fill("#id_start", "2025-03-10")
        page.fill("#id_end", "2025-03-01")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/usage/?*range=custom*")
        page.wait_for_selector("body[data-controls-ready=true]")
        assert "must not be after" in page.inner_text("#filters label.start .error")
        assert page.input_value("#id_range") == "custom" and page.is_enabled("#id_start")
        assert page.locator("#totals").count() == 0 and page.is_visible("#filter-invalid")
        page.screenshot(path=str(ARTIFACTS / "usage-controls-invalid-range.png"), full_page=True)

    assert CSP_VIOLATIONS == []


def test_new_key_is_copied_with_feedback_and_a_reload_shows_it_no_more(server_factory, transactional_db):
    _require_browser()
    CSP_VIOLATIONS.clear()
    _operator()
    ARTIFACTS.mkdir(exist_ok=True)
    # A router of its own: the session's router caches content type ids, which the flush after an
    # earlier test that used the admin renumbers, and the admin's log entry of the new key needs them.
    base = server_factory().url

    with browser_page(base) as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page.goto(base + "/admin/billing/apikey/add/")
        page.fill("#id_name", "copied-key")
        page.click("input[name=_save]")
        page.wait_for_url("**/created/")
        plaintext = page.input_value("#new-api-key")
        assert plaintext.startswith("sk-siraya-")
        assert page.inner_text("#copy-api-key") == "Copy"

        page.click("#copy-api-key")
        page.wait_for_selector("#copy-api-key.copied")
        assert page.inner_text("#copy-api-key") == "Copied"
        assert page.inner_text("#copy-api-key-status") == "Copied to the clipboard."
        assert page.evaluate("navigator.clipboard.readText()") == plaintext
        page.screenshot(path=str(ARTIFACTS / "admin-key-copied.png"), mask=[page.locator("#new-api-key")])
        page.wait_for_selector("#copy-api-key:not(.copied)")  # the button says Copy again after a moment
        assert page.inner_text("#copy-api-key") == "Copy"

        page.reload()
        assert page.is_visible("#key-already-shown")
        assert page.locator("#new-api-key").count() == 0 and plaintext not in page.content()
        page.screenshot(path=str(ARTIFACTS / "admin-key-already-shown.png"))

        page.click("text=Done: go to the key")
        page.click("#api-key-usage")
        page.wait_for_url("**/usage/?key=*")
        usage_url, selected_key = page.url, page.input_value("#id_key")

    assert CSP_VIOLATIONS == []
    [api_key] = ApiKey.objects.filter(name="copied-key")  # the reload created nothing
    assert usage_url.endswith(f"/usage/?key={api_key.pk}") and selected_key == str(api_key.pk)
