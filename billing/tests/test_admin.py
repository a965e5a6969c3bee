from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils.text import capfirst

from billing import keys
from billing.admin.usage_records import CappedCountPaginator
from billing.models import ApiKey, UsageRecord, UsageStatus
from billing.services import api_key_create

NOW = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)  # a Friday
KEY_PATTERN = re.compile(r"sk-siraya-[A-Za-z0-9_-]{20,}")


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def spend(api_key: ApiKey, when: datetime, cost: str) -> None:
    UsageRecord.objects.create(
        generation_id=f"gen-{api_key.pk}-{when.timestamp()}-{cost}",
        api_key=api_key,
        model_name="m",
        status=UsageStatus.COMPLETED,
        cost=Decimal(cost),
        created_at=when,
    )


def test_admin_creates_a_key_and_shows_its_plaintext_exactly_once(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:billing_apikey_add"),
        {"name": "ci-bot", "owner": admin_user.pk, "credit_limit": "12.5", "limit_reset": "monthly"},
        follow=True,
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    plaintext = KEY_PATTERN.search(response.content.decode()).group(0)
    api_key = ApiKey.objects.get()
    assert api_key.key_hash == keys.hash_key(plaintext)
    assert (api_key.name, api_key.owner, api_key.credit_limit) == ("ci-bot", admin_user, Decimal("12.5"))
    assert plaintext.startswith(api_key.prefix)
    for url in (
        reverse("admin:billing_apikey_created", args=[api_key.pk]),
        reverse("admin:billing_apikey_change", args=[api_key.pk]),
        reverse("admin:billing_apikey_changelist"),
        reverse("admin:billing_apikey_history", args=[api_key.pk]),
        reverse("admin:index"),
    ):
        page = admin_client.get(url).content.decode()
        assert plaintext not in page
        assert plaintext[len(api_key.prefix) :][:12] not in page
    assert api_key.prefix in admin_client.get(reverse("admin:billing_apikey_changelist")).content.decode()


def test_adding_a_key_redirects_so_a_reload_neither_creates_nor_shows_a_key(admin_client, admin_user):
    """Post/redirect/get: the POST creates the key and redirects; the page it leads to shows the key once."""
    posted = admin_client.post(reverse("admin:billing_apikey_add"), {"name": "ci-bot", "limit_reset": "never"})

    api_key = ApiKey.objects.get()
    created_url = reverse("admin:billing_apikey_created", args=[api_key.pk])
    assert posted.status_code == 302 and posted["Location"] == created_url
    assert not KEY_PATTERN.search(posted.content.decode())
    # Until the page is read the session holds the key sealed (Fernet), never in clear.
    assert "sk-siraya-" not in str(dict(admin_client.session))

    shown = admin_client.get(created_url)
    plaintext = KEY_PATTERN.search(shown.content.decode()).group(0)
    assert api_key.key_hash == keys.hash_key(plaintext)
    assert 'id="copy-api-key"' in shown.content.decode()
    assert plaintext not in str(dict(admin_client.session))  # read once, then dropped from the session

    reloaded = admin_client.get(created_url)
    html = reloaded.content.decode()
    assert reloaded.status_code == 200 and "no-store" in reloaded["Cache-Control"]
    assert not KEY_PATTERN.search(html) and plaintext not in html
    assert 'id="key-already-shown"' in html and "was already shown" in html
    assert ApiKey.objects.count() == 1


def test_each_new_key_is_shown_on_its_own_page(admin_client):
    """Two keys added before either page was read (two tabs): each page shows its own key."""
    for name in ("first", "second"):
        admin_client.post(reverse("admin:billing_apikey_add"), {"name": name, "limit_reset": "never"})
    for api_key in ApiKey.objects.order_by("-pk"):
        html = admin_client.get(reverse("admin:billing_apikey_created", args=[api_key.pk])).content.decode()
        assert api_key.key_hash == keys.hash_key(KEY_PATTERN.search(html).group(0))


def test_created_page_of_another_session_shows_no_key(admin_client, admin_user, client):
    admin_client.post(reverse("admin:billing_apikey_add"), {"name": "ci-bot", "limit_reset": "never"})
    api_key = ApiKey.objects.get()
    other = User.objects.create_user("other-admin", password="pw", is_staff=True, is_superuser=True)
    client.force_login(other)

    html = client.get(reverse("admin:billing_apikey_created", args=[api_key.pk])).content.decode()

    assert not KEY_PATTERN.search(html) and "was already shown" in html
    assert client.get(reverse("admin:billing_apikey_created", args=[api_key.pk + 1000])).status_code == 404


def test_key_page_links_to_its_usage(admin_client):
    api_key, _ = api_key_create("linked")

    html = admin_client.get(reverse("admin:billing_apikey_change", args=[api_key.pk])).content.decode()

    usage_url = f"{reverse('reports:usage')}?key={api_key.pk}"
    assert f'href="{usage_url}"' in html
    report = admin_client.get(usage_url)
    assert report.status_code == 200 and report.context["form"].cleaned_data["key"] == api_key.pk


def test_key_list_shows_spend_of_the_current_period(admin_client, frozen):
    daily, _ = api_key_create("daily", limit_reset="daily", credit_limit=Decimal("5"))
    weekly, _ = api_key_create("weekly", limit_reset="weekly")
    monthly, _ = api_key_create("monthly", limit_reset="monthly")
    forever, _ = api_key_create("forever")
    for api_key in (daily, weekly, monthly, forever):
        spend(api_key, NOW - timedelta(hours=1), "1")  # today
        spend(api_key, NOW - timedelta(days=2), "10")  # Wednesday this week
        spend(api_key, NOW - timedelta(days=6), "100")  # Saturday, the week before; this month
        spend(api_key, NOW - timedelta(days=40), "1000")  # last month

    page = admin_client.get(reverse("admin:billing_apikey_changelist"))

    spent = {k.name: k.period_spend for k in page.context["cl"].result_list}
    assert spent == {
        "daily": Decimal("1"),
        "weekly": Decimal("11"),
        "monthly": Decimal("111"),
        "forever": Decimal("1111"),
    }
    assert "111.00000000" in page.content.decode()


@pytest.mark.parametrize("count", [2, 15])
def test_key_list_costs_a_fixed_number_of_queries(admin_client, django_assert_num_queries, count):
    for i in range(count):
        api_key, _ = api_key_create(f"k{i}", limit_reset="daily")
        spend(api_key, datetime.now(UTC), "0.5")
    # session, user, owner filter choices, filtered and full count, keys with their spend, and where the
    # usage rollups stand, read each time the admin builds the list's queryset (twice)
    with django_assert_num_queries(8):
        page = admin_client.get(reverse("admin:billing_apikey_changelist"))
    assert len(page.context["cl"].result_list) == count


def test_revoke_and_reenable_actions(admin_client):
    first, _ = api_key_create("first")
    second, _ = api_key_create("second")
    url = reverse("admin:billing_apikey_changelist")

    admin_client.post(url, {"action": "revoke_keys", "_selected_action": [first.pk, second.pk]})
    assert ApiKey.objects.filter(revoked_at__isnull=False).count() == 2
    revoked = admin_client.get(url, {"status": "revoked"}).context["cl"].result_list
    assert {k.name for k in revoked} == {"first", "second"}

    admin_client.post(url, {"action": "enable_keys", "_selected_action": [first.pk]})
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is None and second.revoked_at is not None
    assert [k.name for k in admin_client.get(url, {"status": "active"}).context["cl"].result_list] == ["first"]
    assert [k.name for k in admin_client.get(url, {"q": "seco"}).context["cl"].result_list] == ["second"]


def _records(api_key: ApiKey, count: int) -> None:
    UsageRecord.objects.bulk_create(
        UsageRecord(
            generation_id=f"gen-admin-{i}",
            api_key=api_key,
            model_name="m",
            vendor_name="v",
            status=UsageStatus.ERROR if i % 3 == 0 else UsageStatus.COMPLETED,
            streamed=i % 2 == 0,
            created_at=NOW - timedelta(minutes=i),
        )
        for i in range(count)
    )


@pytest.mark.parametrize("count", [5, 150])
def test_usage_record_list_costs_a_fixed_number_of_queries(admin_client, django_assert_num_queries, count):
    api_key, _ = api_key_create("k")
    _records(api_key, count)
    # session, user, date hierarchy (min/max, then days), capped count, one page with its keys,
    # key / model / vendor filter choices
    with django_assert_num_queries(9):
        page = admin_client.get(reverse("admin:billing_usagerecord_changelist"))
    assert len(page.context["cl"].result_list) == min(count, 100)


def test_usage_record_list_filters_and_never_counts_past_the_cap(admin_client, monkeypatch):
    api_key, _ = api_key_create("k")
    _records(api_key, 12)
    url = reverse("admin:billing_usagerecord_changelist")

    errors = admin_client.get(url, {"status__exact": "error", "streamed__exact": "1"}).context["cl"].result_list
    assert {(r.status, r.streamed) for r in errors} == {("error", True)}
    assert len(errors) == 2  # i = 0 and 6

    monkeypatch.setattr(CappedCountPaginator, "CAP", 5)
    page = admin_client.get(url)
    assert page.context["cl"].result_count == 6  # counted up to CAP + 1, not 12
    assert "more than 5 usage records" in page.content.decode()


def test_usage_records_are_read_only(admin_client):
    api_key, _ = api_key_create("k")
    _records(api_key, 1)
    record = UsageRecord.objects.get()
    change_url = reverse("admin:billing_usagerecord_change", args=[record.pk])

    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(change_url, {"status": "completed"}).status_code == 403
    assert admin_client.get(reverse("admin:billing_usagerecord_add")).status_code == 403
    assert admin_client.post(reverse("admin:billing_usagerecord_delete", args=[record.pk])).status_code == 403


def _searchable_records() -> None:
    alpha, _ = api_key_create("alpha-team")
    beta, _ = api_key_create("beta-team")
    rows = [
        ("gen-0192aa01", alpha, "demo/echo"),
        ("gen-0192aa02", beta, "openai/gpt-4o"),
        ("gen-0193bb03", beta, "demo/echo"),
        ("xgen-0192aa04", beta, "openai/gpt-4o-mini"),  # holds the prefix, but not at its start
    ]
    UsageRecord.objects.bulk_create(
        UsageRecord(generation_id=g, api_key=k, model_name=m, status=UsageStatus.COMPLETED, created_at=NOW)
        for g, k, m in rows
    )


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("gen-0192aa01", {"gen-0192aa01"}),  # a whole id
        ("gen-0192", {"gen-0192aa01", "gen-0192aa02"}),  # its start
        ("alpha", {"gen-0192aa01"}),  # a key's name
        ("beta-team", {"gen-0192aa02", "gen-0193bb03", "xgen-0192aa04"}),
        ("openai/gpt-4o-mini", {"xgen-0192aa04"}),  # a model, as clients name it
        ("gpt-4o", {"gen-0192aa02", "xgen-0192aa04"}),  # part of a model's name
        ("beta demo/echo", {"gen-0193bb03"}),  # every word must match
    ],
)
def test_usage_record_search_by_id_prefix_key_name_and_model(admin_client, django_assert_num_queries, query, found):
    from routing.models import RouterModel

    _searchable_records()
    for name in ("demo/echo", "openai/gpt-4o", "openai/gpt-4o-mini"):
        RouterModel.objects.create(name=name)
    words = len(query.split())
    # the list's 9 queries, and per word: the keys and the models whose names hold it
    with django_assert_num_queries(9 + 2 * words) as captured:
        page = admin_client.get(reverse("admin:billing_usagerecord_changelist"), {"q": query})
    assert {r.generation_id for r in page.context["cl"].result_list} == found
    usage_sql = [q["sql"] for q in captured.captured_queries if 'FROM "billing_usagerecord"' in q["sql"]]
    # An id's start is a plain prefix match, which an index on generation_id serves (not UPPER(...) LIKE).
    assert usage_sql and not any("UPPER(" in sql for sql in usage_sql)
    assert all('"generation_id"' in sql and "LIKE" in sql for sql in usage_sql if "ORDER BY" in sql)


@pytest.mark.postgres
def test_usage_record_id_prefix_search_is_an_index_scan_on_postgresql(rf, admin_user):
    from django.contrib import admin
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    _searchable_records()
    request = rf.get("/", {"q": "gen-0192"})
    request.user = admin_user
    model_admin = admin.site._registry[UsageRecord]
    found, _ = model_admin.get_search_results(request, UsageRecord.objects.all(), "gen-0192")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a few rows: ask whether an index can serve it
        plan = found.explain()
    assert "Seq Scan" not in plan and "Index" in plan and "generation_id" in plan and "_like" in plan, plan


def test_usage_record_search_over_many_matching_keys_misses_none(admin_client, monkeypatch):
    from billing.admin import usage_records

    _searchable_records()
    monkeypatch.setattr(usage_records, "SEARCH_NAMES", 1)  # "team" names two keys: matched by a subquery
    page = admin_client.get(reverse("admin:billing_usagerecord_changelist"), {"q": "team"})
    assert len(page.context["cl"].result_list) == 4


def test_usage_record_search_says_what_it_matches(admin_client):
    page = admin_client.get(reverse("admin:billing_usagerecord_changelist")).content.decode()
    assert "A generation ID or its start, a key&#x27;s name, or a model." in page


def test_usage_record_list_keeps_to_narrow_columns(admin_client):
    api_key, _ = api_key_create("k")
    _records(api_key, 1)
    page = admin_client.get(reverse("admin:billing_usagerecord_changelist"))
    headers = [capfirst(h["text"]) for h in page.context["result_headers"] if h["text"]]  # as the page shows them
    assert headers == [
        "Started (UTC)",
        "Generation ID",
        "API key",
        "Model / API",
        "Status",
        "Tokens (in / out)",
        "Cost",
    ]


def test_usage_record_detail_groups_fields_under_names_for_people(admin_client):
    api_key, _ = api_key_create("k")
    UsageRecord.objects.create(
        generation_id="gen-detail",
        api_key=api_key,
        model_name="demo/echo",
        status=UsageStatus.ERROR,
        http_status=502,
        first_token_ms=420,
        duration_ms=1234,
        created_at=NOW,
        attempts=[
            {"vendor": "v-a", "upstream_model": "up-1", "outcome": "error", "latency_ms": 1200, "status": 503,
             "vendor_status": 529, "code": "upstream_overloaded", "vendor_code": "overloaded", "message": "busy"},
            {"vendor": "v-b", "upstream_model": "up-2", "outcome": "ok", "latency_ms": 34},
        ],
    )  # fmt: skip
    record = UsageRecord.objects.get()
    response = admin_client.get(reverse("admin:billing_usagerecord_change", args=[record.pk]))
    fieldsets = [fieldset.name for fieldset in response.context["adminform"]]
    assert fieldsets == ["Request", "Tokens", "Cost", "Timing", "Vendor and attempts", "Errors", "Process"]
    labels = [
        field.field["label"] if isinstance(field.field, dict) else field.field.label
        for fieldset in response.context["adminform"]
        for line in fieldset
        for field in line
    ]
    assert len(labels) == len(set(labels)) and "Id" not in labels
    for label in ("Generation ID", "API key", "HTTP status", "Time to first token", "Duration", "Attempts"):
        assert label in labels
    assert not [label for label in labels if "ms" in label.split() or "_" in label or label.startswith("Http")]

    page = response.content.decode()
    assert "1,234 ms" in page and "420 ms" in page
    for raw in ("latency_ms", "Http status", "First token ms", "Duration ms", "Tokens delivered"):
        assert raw not in page, raw
    table = page[page.index('<table class="attempts">') :]
    table = table[: table.index("</table>")]
    for text in ("<th>Vendor</th>", "<th>Latency</th>", "<th>HTTP status</th>", "<th>Vendor&#x27;s HTTP status</th>",
                 "<td>1,200 ms</td>", "<td>529</td>", "<td>busy</td>", "<td>v-b</td>"):  # fmt: skip
        assert text in table, text
    assert "_" not in table.replace("upstream_overloaded", "")  # no field's machine name


@pytest.fixture
def viewer_client(client, django_user_model):
    """A staff user who may only view keys."""
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client.force_login(viewer)
    return client


def test_view_only_staff_are_neither_offered_nor_can_post_key_actions(viewer_client):
    active, _ = api_key_create("active")
    revoked, _ = api_key_create("revoked")
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=NOW)
    url = reverse("admin:billing_apikey_changelist")

    for action in ("revoke_keys", "enable_keys"):
        viewer_client.post(url, {"action": action, "_selected_action": [active.pk, revoked.pk], "index": "0"})
        assert ApiKey.objects.get(pk=active.pk).revoked_at is None, action
        assert ApiKey.objects.get(pk=revoked.pk).revoked_at is not None, action

    page = viewer_client.get(url)
    assert page.status_code == 200 and "active" in page.content.decode()
    assert page.context["action_form"] is None or not page.context["action_form"].fields["action"].choices[1:]
    assert "revoke_keys" not in page.content.decode() and "enable_keys" not in page.content.decode()
