"""Content-Security-Policy: every page the router renders allows only its own scripts and styles.

The header is checked here; that the pages carry nothing inline the policy would block is checked
on every page of the URLconf (as staff, who sees the most), and in Chromium by test_browser.py.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import Client

from reports.tests.conftest import People, record
from reports.tests.test_reflected_input import Cast, body, swept_paths
from reports.tests.test_reflected_input import sweep_cast as sweep_cast  # the fixture

# Types of <script> a browser does not run: data islands such as Django's json_script.
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json"}


def policy(response) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy", "")
    assert header, f"no Content-Security-Policy on {response.request['PATH_INFO']}"
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {d[0]: d[1:] for d in directives}


def assert_strict(directives: dict[str, list[str]]) -> None:
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    for name in ("object-src", "base-uri", "frame-ancestors"):
        assert directives[name] == ["'none'"], name
    assert directives["form-action"] == ["'self'"]
    everything = " ".join(" ".join(sources) for sources in directives.values())
    for loophole in ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "data:", "http:", "https:"):
        assert loophole not in everything.split(), loophole


class _Inline(HTMLParser):
    """What a strict policy would block: inline scripts, event-handler attributes, inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.handlers: list[str] = []
        self.style_attributes: list[str] = []
        self.styles: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.handlers += [f"<{tag} {name}>" for name in a if name.startswith("on")]
        if "style" in a:
            self.style_attributes.append(f"<{tag} style={a['style']!r}>")
        runs = tag == "script" and "src" not in a and (a.get("type") or "").lower() not in DATA_SCRIPT_TYPES
        self._in = "script" if runs else "style" if tag == "style" else None
        if self._in == "style":
            self.styles.append("")

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.scripts.append(data.strip()[:80])
        elif self._in == "style":
            self.styles[-1] += data

    def handle_endtag(self, tag: str) -> None:
        self._in = None


@pytest.mark.parametrize("path", ["/usage/", "/accounts/login/", "/admin/", "/admin/billing/usagerecord/"])
def test_pages_carry_a_strict_policy(client, people: People, path: str):
    record(people.owner_key)
    client.force_login(people.staff)
    if path == "/accounts/login/":
        client.logout()
    response = client.get(path)
    assert response.status_code == 200
    assert_strict(policy(response))


def test_csv_export_and_errors_carry_it_too(client, people: People):
    client.force_login(people.owner)
    assert_strict(policy(client.get("/usage/export.csv")))
    assert_strict(policy(client.get("/usage/export.csv", {"range": "nope"})))
    assert_strict(policy(client.get("/usage/generations/gen-none/")))


@pytest.mark.slow
def test_no_page_has_inline_script_or_style_the_policy_would_block(client, sweep_cast: Cast):
    checked = 0
    for path in swept_paths(sweep_cast):
        client.force_login(sweep_cast.people.staff)
        response = client.get(path, follow=True)
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        inline = _Inline()
        inline.feed(body(response))
        assert not inline.scripts, (path, inline.scripts)
        assert not inline.handlers, (path, inline.handlers)
        assert not inline.style_attributes, (path, inline.style_attributes)
        assert not inline.styles, (path, inline.styles)
        checked += 1
    assert checked > 40


def test_key_created_page_has_no_inline_script(client, people: People):
    """The page that shows a new key once used onclick handlers and a style attribute."""
    admin = Client()
    admin.force_login(people.staff)
    response = admin.post("/admin/billing/apikey/add/", {"name": "csp-key", "limit_reset": "never"}, follow=True)
    assert response.status_code == 200 and 'id="new-api-key"' in response.content.decode()
    inline = _Inline()
    inline.feed(response.content.decode())
    assert (inline.scripts, inline.handlers, inline.style_attributes) == ([], [], [])
