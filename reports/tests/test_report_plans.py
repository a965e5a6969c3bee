"""On PostgreSQL, the reports' reads of the rollups and the generation log's pages read the indexes they were built for.

The plans are read with sequential and bitmap scans turned off: on a test's few rows the planner
would scan the table anyway, and what matters here is which index can answer each query. The
covering indexes must carry every column the usage and overview reports group, filter and sum,
or their reads fall back to the rows, whose width is mostly the latency histograms.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection

from billing.rollups import covered_until, usage_rollups_refresh
from reports import generations, overview, selectors, sources
from reports.tests.conftest import NOW, People, record

pytestmark = pytest.mark.usefixtures("frozen_now")

USAGE_GROUP = ("day", "model_name", "status")
# Every filter the usage page offers that the rollups answer, at once.
EVERY_FILTER = {"model_name": "m/alpha", "vendor_name": "vendor-a", "status": "error", "error_code": "timeout"}


@pytest.fixture
def rolled(people: People) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's plans")
    for hours_ago in range(0, 24 * 10, 5):
        record(people.owner_key, NOW - timedelta(hours=hours_ago), status="error", error_code="timeout")
    usage_rollups_refresh(NOW)


def _plan(query: Any) -> str:
    with connection.cursor() as cursor:  # the test's transaction keeps these to the test
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
    return str(query.explain())


@pytest.mark.parametrize(
    ("group", "sums", "filters"),
    [
        (USAGE_GROUP, selectors._SUMMARY_SUMS, {}),
        (USAGE_GROUP, selectors._SUMMARY_SUMS, EVERY_FILTER),
        (overview._GROUP, overview._SUMS, {}),
    ],
)
def test_report_reads_of_the_rollups_scan_their_covering_index_alone(rolled, people: People, group, sums, filters):
    start = NOW.replace(hour=0) - timedelta(days=7)
    parts = sources.split(start, NOW + timedelta(hours=1), sources.Filters(**filters), covered_until())
    assert parts.days is not None and parts.hours is not None
    for part, query, index in (
        ("days", parts.days, "usage_day_day_sums"),
        ("hours", parts.hours, "usage_hour_hour_sums"),
    ):
        plan = _plan(sources.part_query(part, query, group, sums))
        assert f"Index Only Scan using {index}" in plan, plan


def test_generation_pages_either_way_start_their_index_scan_at_the_cursor(rolled, people: People):
    """Keyset pages: the cursor bounds the created_at index scan itself, so no newer (older) record is read."""
    records = selectors.filtered_records(
        people.staff, selectors.ReportFilter(start=NOW - timedelta(days=30), end=NOW + timedelta(days=1))
    )
    at = NOW - timedelta(days=3)
    cursor = generations.parse_cursor(f"{at:%Y%m%dT%H%M%S.%f}Z-1000000")
    for query, scan, bound in (
        (generations.older_than(records, cursor), "Index Scan Backward using billing_usagerecord_created_at", "<="),
        (generations.newer_than(records, cursor), "Index Scan using billing_usagerecord_created_at", ">="),
    ):
        plan = _plan(query[: generations.PAGE_SIZE + 1])
        [condition] = [line for line in plan.splitlines() if "Index Cond" in line]
        assert scan in plan and f"created_at {bound} '{at:%Y-%m-%d %H:%M:%S}+00'" in condition, plan
