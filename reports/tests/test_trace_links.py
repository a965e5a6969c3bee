"""From /usage/ to the trace: a record's trace id on its page (a link with SIRAYA_TRACE_URL) and in the exports."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.urls import reverse

from reports.tests.conftest import People, record
from reports.tests.test_generation_log import json_rows
from reports.tests.test_usage_reports import csv_rows

pytestmark = pytest.mark.usefixtures("frozen_now")

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_generation_page_shows_the_trace_id(client, people: People):
    traced, untraced = record(people.owner_key, trace_id=TRACE), record(people.owner_key)
    client.force_login(people.owner)
    page = client.get(reverse("reports:generation", args=[traced.generation_id])).content.decode()
    assert f'<code id="trace-id">{TRACE}</code>' in page
    page = client.get(reverse("reports:generation", args=[untraced.generation_id])).content.decode()
    assert 'id="trace-id"' not in page and 'id="trace-link"' not in page


@override_settings(SIRAYA_TRACE_URL="https://traces.example.com/trace/{trace_id}?from=siraya")
def test_generation_page_links_to_the_trace_viewer(client, people: People):
    traced = record(people.owner_key, trace_id=TRACE)
    client.force_login(people.staff)
    page = client.get(reverse("reports:generation", args=[traced.generation_id])).content.decode()
    assert f'<a href="https://traces.example.com/trace/{TRACE}?from=siraya" id="trace-link"' in page


def test_exports_carry_the_trace_id(client, people: People):
    traced = record(people.owner_key, trace_id=TRACE)
    client.force_login(people.staff)
    rows = csv_rows(client.get(reverse("reports:csv")))
    assert [(r["generation_id"], r["trace_id"]) for r in rows] == [(traced.generation_id, TRACE)]
    rows = json_rows(client.get(reverse("reports:json")))
    assert [(r["generation_id"], r["trace_id"]) for r in rows] == [(traced.generation_id, TRACE)]


def test_admin_usage_record_page_shows_the_trace_id(client, people: People):
    traced = record(people.owner_key, trace_id=TRACE)
    client.force_login(people.staff)
    page = client.get(reverse("admin:billing_usagerecord_change", args=[traced.pk])).content.decode()
    assert "Trace ID" in page and TRACE in page
