"""No page echoes what it was sent as live HTML: every URL of the URLconf, every parameter, an HTML payload.

The URLs come from the URLconf itself (a new view or admin is swept without touching this file);
the parameters from the pages themselves (every form field and every query-string key of every
link), plus the admin's and the reports' well-known ones. Each is sent with a payload that would
run script if it came back unescaped, as a staff user and as a key owner, by GET and, where the page
has a form that posts, by POST. A response may carry the payload only as ``text/plain``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls import path as url_path
from django.urls.exceptions import Resolver404

from billing.models import ApiKey, UsageRecord
from reports.tests.conftest import People, record
from routing.models import RouterModel, Vendor
from routing.services import model_create, vendor_create

# Sent in query strings and form bodies; the fragments below must never come back raw.
PAYLOAD = "\"'><script>alert(1)</script><svg onload=alert(2)>"
# Path segments cannot hold "/": the same attack without the closing tag.
PATH_PAYLOAD = "\"'><svg onload=alert(3)>"
RAW = ("<script>alert(1)</script>", "<svg onload=alert(2)>", "<svg onload=alert(3)>")

# Parameters read by views that no page links to: the admin's changelist and popup machinery,
# the reports' pager, login redirects, the vendor kind chooser, the autocomplete endpoint.
KNOWN_PARAMETERS = [
    "q",
    "o",
    "p",
    "e",
    "all",
    "_to_field",
    "_popup",
    "_changelist_filters",
    "page",
    "before",
    "after",
    "next",
    "kind",
    "term",
    "app_label",
    "model_name",
    "field_name",
    "range",
    "start",
    "end",
    "key",
    "model",
    "vendor",
    "status",
    "error_code",
    "generation",
    "refresh",
    "id",
]

# Pages reached only through a link with a query: swept as well (the vendor form of one kind).
EXTRA_PAGES = ["/admin/routing/vendor/add/?kind=demo"]


def _routes(resolver: URLResolver, prefix: str = "") -> Iterator[str]:
    """The route text of every URL pattern, with its parents' prefixes."""
    for pattern in resolver.url_patterns:
        text = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern, text)
        else:
            assert isinstance(pattern, URLPattern)
            yield text


_ROUTE_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def _parameters(route: str) -> list[str]:
    return _REGEX_GROUP.findall(route) + _ROUTE_PARAM.findall(_REGEX_GROUP.sub("", route))


def _fill(route: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        return quote(values[match.group(1)], safe="")

    path = _ROUTE_PARAM.sub(value, _REGEX_GROUP.sub(value, route))
    return "/" + path.replace("^", "").replace("$", "")


def _admin_model(route: str) -> type[Model] | None:
    parts = route.split("/")
    if parts[0] == "admin" and len(parts) > 2:
        try:
            return apps.get_model(parts[1], parts[2])
        except (LookupError, ValueError):
            return None
    return None


@dataclass
class Cast:
    people: People
    objects: dict[type[Model], Model]
    generation_id: str

    def real_values(self, route: str, name: str) -> list[str]:
        """Values of an existing object for the path parameter ``name`` of ``route``."""
        model = _admin_model(route)
        if name == "object_id" and model is not None and model in self.objects:
            return [str(self.objects[model].pk)]
        table: dict[str, list[str]] = {
            "id": [str(self.people.owner.pk)],
            "content_type_id": [str(ContentType.objects.get_for_model(ApiKey).pk)],
            "object_id": [str(self.people.owner_key.pk)],
            "app_label": ["billing", "routing", "auth"],
            "generation_id": [self.generation_id],
        }
        return table.get(name, [])


def _resolves_to(path: str, route: str) -> bool:
    try:
        return resolve(urlsplit(path).path).route == route.replace("^", "")
    except Resolver404:
        return False


def swept_paths(cast: Cast) -> list[str]:
    """Every URL of the URLconf: with the payload in each path parameter, and with real objects."""
    paths: list[str] = []
    unfillable: list[str] = []
    for route in sorted(set(_routes(get_resolver()))):
        names = _parameters(route)
        if not names:
            paths.append(_fill(route, {}))
            continue
        variants = [dict.fromkeys(names, PATH_PAYLOAD)]
        real = {name: cast.real_values(route, name) for name in names}
        if all(real.values()):
            variants += [{name: values[i % len(values)] for name, values in real.items()} for i in range(3)]
        filled = [p for p in dict.fromkeys(_fill(route, v) for v in variants) if _resolves_to(p, route)]
        if not filled:
            unfillable.append(route)
        paths += filled
    assert not unfillable, f"teach Cast.real_values how to fill the parameters of {unfillable}"
    return paths + EXTRA_PAGES


class _FormsAndLinks(HTMLParser):
    """The names of every form field (split by the form's method) and every link's query keys."""

    def __init__(self) -> None:
        super().__init__()
        self.get_names: set[str] = set()
        self.post_names: set[str] = set()
        self.select_options: dict[str, list[str]] = {}
        self._method = "get"
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._method = a.get("method", "get").lower()
        elif tag in ("input", "select", "textarea", "button") and a.get("name"):
            (self.post_names if self._method == "post" else self.get_names).add(a["name"])
            if tag == "select":
                self._select = a["name"]
        elif tag == "option" and self._select and a.get("value"):
            self.select_options.setdefault(self._select, []).append(a["value"])
        elif tag == "a" and "?" in a.get("href", ""):
            self.get_names.update(k for k, _ in parse_qsl(urlsplit(a["href"]).query, keep_blank_values=True))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._method = "get"
        elif tag == "select":
            self._select = None


def body(response: Any) -> str:
    if response.streaming:

        async def collect() -> bytes:
            return b"".join([part async for part in response.streaming_content])

        return async_to_sync(collect)().decode(errors="replace")
    return response.content.decode(errors="replace")


def assert_not_reflected(response: HttpResponseBase, what: str) -> str:
    text = body(response)
    content_type = response.get("Content-Type", "")
    if not content_type.startswith("text/plain"):
        echoed = [fragment for fragment in RAW if fragment in text]
        assert not echoed, f"{what} answered {response.status_code} {content_type} echoing {echoed}"
    return text


@pytest.fixture
def sweep_cast(people: People) -> Cast:
    vendor = vendor_create("sweep-vendor", "demo")
    model = model_create("sweep/model", deployments=[(vendor, "echo", 0, 1)], input_price=Decimal("1"))
    usage = record(people.owner_key)
    group = Group.objects.create(name="sweepers")
    objects: dict[type[Model], Model] = {
        ApiKey: people.owner_key,
        UsageRecord: usage,
        Vendor: vendor,
        RouterModel: model,
        User: people.owner,
        Group: group,
    }
    return Cast(people, objects, usage.generation_id)


def _login(client: Client, user: User) -> None:
    """Log in again if a swept logout or password change ended the session."""
    if client.session.get("_auth_user_id") != str(user.pk):
        client.force_login(user)


def _sweep(client: Client, user: User, path: str) -> None:
    def get(params: dict[str, Any]) -> HttpResponseBase:
        _login(client, user)
        response = client.get(path, params, follow=True)
        assert_not_reflected(response, f"GET {path} {sorted(params)} as {user.username}")
        return response

    _login(client, user)
    first = client.get(path)
    if first.status_code in (301, 302):
        # Sent on before it read anything (to log in, or away from an object that does not exist):
        # the parameters reach only the page it sends to, and travel together.
        get(dict.fromkeys(KNOWN_PARAMETERS, PAYLOAD))
        return
    page = _FormsAndLinks()
    page.feed(body(get({})))
    for name in sorted(page.get_names | set(KNOWN_PARAMETERS)):
        get({name: PAYLOAD})
    if page.post_names:
        get(dict.fromkeys(page.post_names, PAYLOAD))  # an add form takes its initial values from the query
        if "/delete/" not in path or quote(PATH_PAYLOAD, safe="") in path:
            _post(client, user, path, page)


def _post(client: Client, user: User, path: str, page: _FormsAndLinks) -> None:
    """Post the page's form with the payload in every field; on a changelist, run each action on it."""
    bodies: list[dict[str, Any]] = [dict.fromkeys(page.post_names, PAYLOAD)]
    for action in page.select_options.get("action", []):
        bodies.append({"action": action, "_selected_action": [PAYLOAD], "index": PAYLOAD, "select_across": PAYLOAD})
    for data in bodies:
        _login(client, user)
        response = client.post(path, data, follow=True)
        assert_not_reflected(response, f"POST {path} {sorted(data)} as {user.username}")


def test_sweep_covers_the_reports_and_the_admin(sweep_cast: Cast):
    paths = swept_paths(sweep_cast)
    for expected in ("/usage/", "/usage/export.csv", "/admin/billing/apikey/", "/admin/routing/vendor/"):
        assert expected in paths
    assert any(p.startswith("/usage/generations/") and sweep_cast.generation_id in p for p in paths)
    assert any(p.startswith("/admin/billing/apikey/") and "%3Csvg" in p for p in paths)


def planted_view(request: HttpRequest, slug: str) -> HttpResponse:
    """A page that echoes a parameter only its own form names: what the sweep must find."""
    return HttpResponse(f"<form><input name=greeting></form>Hello {request.GET.get('greeting', '')}")


urlpatterns = [url_path("planted/<str:slug>/", planted_view)]


@override_settings(ROOT_URLCONF=__name__)
def test_sweep_finds_a_planted_reflection_on_a_new_url(client, sweep_cast: Cast):
    paths = swept_paths(sweep_cast)
    assert paths[0] == "/planted/" + quote(PATH_PAYLOAD, safe="") + "/"
    with pytest.raises(AssertionError, match=r"GET /planted/.* \['greeting'\] .* echoing"):
        _sweep(client, sweep_cast.people.owner, paths[0])


def test_csv_export_answers_an_invalid_filter_with_the_escaped_form(client, people: People):
    client.force_login(people.owner)
    response = client.get("/usage/export.csv", {"key": PAYLOAD, "model": PAYLOAD})
    assert response.status_code == 400
    text = assert_not_reflected(response, "GET /usage/export.csv")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the form says what was wrong, escaped


@pytest.mark.slow
# Hundreds of requests (every URL, every parameter, every admin action): over a minute on a
# quiet machine, several on a loaded one. The suite's 120 s timeout is for a single scenario.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("who", ["staff", "owner"])
def test_no_url_echoes_a_parameter_as_html(client, sweep_cast: Cast, who: str):
    user = sweep_cast.people.staff if who == "staff" else sweep_cast.people.owner
    for path in swept_paths(sweep_cast):
        _sweep(client, user, path)
